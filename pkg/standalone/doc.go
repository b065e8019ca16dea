// Package standalone runs a whole chain on one Linux box with no cluster
// (DESIGN §7, `spright run -f chain.yaml`): the gateway in this process,
// each function instance as its own process in its own network namespace
// joined to the host by a veth pair (a pod stand-in), the eBPF datapath
// loaded and pinned, and HTTP served on a local port. A function process
// that exits while the chain runs is restarted with back-off (supervisor.go,
// RestartPolicy). Stopping (Runner.Stop: `spright run` calls it on Ctrl-C,
// SIGTERM or SIGQUIT) drains HTTP, stops the functions, removes the
// namespaces and veths, and unpins the maps.
//
// Runner.Reload (reload.go; `spright run` calls it on SIGHUP, the admin
// listener on PUT /chain) applies a changed chain file while the chain
// serves: routes, topics, timeouts and concurrency through the gateway's
// UpdateChain (requests in flight finish on the routes they started with);
// added functions and extra instances start and register before the new
// routes are switched in; removed functions stop once no request from
// before the switch is in flight (Chain.WaitDrained) and are never
// restarted; surplus and replaced instances (command, behavior,
// serviceTime, workers or env changed: all new processes first, then the
// old ones one by one) leave after being taken out of routing and holding
// no slot for 100 ms. What the runner cannot change live — name, id, mode,
// listen, pool geometry and huge pages, protocol adapters and their
// listeners, redirect, gatewayNetns, clientNetns — is refused with
// ErrReloadRefused naming it, and a new process that cannot register
// rolls the reload back (ErrReloadFailed); either way the chain serves on
// as before.
//
// A chain split across nodes (nodes.go: chain.yaml's nodes, peerKeyFile
// and a function's node) runs as one Runner per node (Options.Node,
// `spright run --node`): each has its own gateway, pin dir (DefaultPinDir:
// bpffs, pool files and pin locks are shared by the network namespaces of
// a host) and pool, starts only the functions assigned to its node or to
// every node (ChainFile.forNode), serves the other nodes' gateways on its
// peer address and links to each of them (Gateway.ServePeers and
// ConnectPeer; the key from ReadPeerKey, refused when others may read
// it). Every node's route table has every function: a peer's instances
// are proxy instances in it, so a hop to a function this node lacks
// crosses to a node that has it (package peer). A reload may move a
// function between nodes (an instance count change on each: reload the
// target node first, then the source) but not change the nodes or the key.
package standalone
