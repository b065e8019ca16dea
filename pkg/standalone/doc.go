// Package standalone runs a whole chain on one Linux box with no cluster
// (DESIGN §7, `spright run -f chain.yaml`): the gateway in this process,
// each function instance as its own process in its own network namespace
// joined to the host by a veth pair (a pod stand-in), the eBPF datapath
// loaded and pinned, and HTTP served on a local port. A function process
// that exits while the chain runs is restarted with back-off (supervisor.go,
// RestartPolicy). Stopping (Runner.Stop: `spright run` calls it on Ctrl-C,
// SIGTERM or SIGQUIT) drains HTTP, stops the functions, removes the
// namespaces and veths, and unpins the maps.
package standalone
