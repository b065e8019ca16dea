package scenario

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// The cluster scenario counts the CPU of the whole node: on the one-node
// cluster every pod, kubelet, the apiserver, etcd and containerd run on the
// machine that is measured. Every process is put in one class; the node's
// CPU is /proc/stat's busy time minus the load generator (wrk), the
// benchmark driver and work foreign to the cluster (classOther).
const (
	classFunctions    = "functions"       // user containers of the measured services
	classGateway      = "gateway"         // the spright-gateway pod: Knative's ingress here, and SPRIGHT's chain entry
	classSprightCtl   = "spright-control" // spright-controller, spright-webhook
	classKnative      = "knative"         // knative-serving pods: activator, autoscaler, controller, webhook
	classKubernetes   = "kubernetes"      // host components (etcd, apiserver, kubelet, containerd + shims, ...), kube-system pods, pod sandboxes
	classKernel       = "kernel"          // kernel threads
	classUnattributed = "unattributed"    // busy time of no live process: irq/softirq, processes born and gone within the window
	classOther        = "other"           // foreign to the cluster: other namespaces' pods, other host processes (not counted)
)

// nodeProc is what the node's classification needs of one process.
type nodeProc struct {
	PID, PPID int
	Comm      string
	// PodUID and Container are from the process's kubepods cgroup ("" for
	// a process outside any pod).
	PodUID, Container string
}

// parseKubepodsCgroup finds the pod UID and container ID in the contents of
// /proc/<pid>/cgroup: cgroupfs paths (/kubepods/<qos>/pod<uid>/<id>) and
// systemd ones (kubepods-<qos>-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope).
func parseKubepodsCgroup(s string) (podUID, container string, ok bool) {
	for _, line := range strings.Split(s, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "kubepods") {
			continue
		}
		segs := strings.Split(strings.Trim(parts[2], "/"), "/")
		for i, seg := range segs {
			seg = strings.TrimSuffix(seg, ".slice")
			var uid string
			switch {
			case strings.HasPrefix(seg, "pod"):
				uid = seg[3:]
			case strings.HasPrefix(seg, "kubepods") && strings.Contains(seg, "-pod"):
				uid = seg[strings.LastIndex(seg, "-pod")+4:]
			default:
				continue
			}
			uid = strings.ReplaceAll(uid, "_", "-")
			if len(uid) < 8 {
				continue
			}
			c := ""
			if i+1 < len(segs) {
				c = segs[i+1]
				c = strings.TrimSuffix(c, ".scope")
				if k := strings.LastIndex(c, "-"); k >= 0 {
					c = c[k+1:] // cri-containerd-<id>, docker-<id>
				}
			}
			return uid, c, true
		}
	}
	return "", "", false
}

// kubePods is `kubectl get pods -A -o json`, the fields the scenario reads.
type kubePods struct {
	Items []kubePod `json:"items"`
}

type kubePod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct {
			Name  string `json:"name"`
			Image string `json:"image"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		PodIP             string `json:"podIP"`
		Conditions        []struct{ Type, Status string }
		ContainerStatuses []struct {
			Name         string `json:"name"`
			ContainerID  string `json:"containerID"`
			RestartCount int    `json:"restartCount"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func parseKubePods(b []byte) (*kubePods, error) {
	var p kubePods
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("pod list: %w", err)
	}
	return &p, nil
}

func (p *kubePod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// image is the image of the pod's container name ("" if none).
func (p *kubePod) image(name string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return c.Image
		}
	}
	return ""
}

func (p *kubePod) restarts() int {
	n := 0
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

// sidecarClass names a revision's queue sidecar by its image: EPROXY's
// ko image is .../eproxy-<hash>, anything else is Knative's queue-proxy.
func sidecarClass(image string) string {
	name := image
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if strings.HasPrefix(name, "eproxy") {
		return SysEProxy
	}
	return SysQueueProxy
}

// podClasses maps a pod UID and container ID to a class.
type podClasses struct {
	// byPod is the class of every container of a pod (by pod UID) that is
	// not in byContainer.
	byPod map[string]string
	// byContainer is the class of the measured services' containers.
	byContainer map[string]string
}

// classifyPods gives each pod of the list its class; the pods of benchNS
// are split by container (user-container: functions; queue-proxy: by its
// image; the sandbox: kubernetes).
func classifyPods(pods *kubePods, benchNS string) podClasses {
	pc := podClasses{byPod: map[string]string{}, byContainer: map[string]string{}}
	for _, p := range pods.Items {
		m := p.Metadata
		var class string
		switch m.Namespace {
		case benchNS:
			class = classKubernetes // the sandbox (pause) and anything unlisted
			for _, cs := range p.Status.ContainerStatuses {
				_, id, _ := strings.Cut(cs.ContainerID, "://")
				switch cs.Name {
				case "user-container":
					pc.byContainer[id] = classFunctions
				case "queue-proxy":
					pc.byContainer[id] = sidecarClass(p.image("queue-proxy"))
				}
			}
		case "spright-system":
			class = classSprightCtl
			if m.Labels["app"] == "spright-gateway" {
				class = classGateway
			}
		case "knative-serving":
			class = classKnative
		case "kube-system":
			class = classKubernetes
		default:
			class = classOther
		}
		pc.byPod[m.UID] = class
	}
	return pc
}

// classifyNode puts every process in a class: pods by their cgroup (a pod
// not in pc is foreign), kernel threads, the cluster's host components
// (components: the pids cluster-up started) and containerd's shims with
// their descendants; the rest is foreign. self and its descendants (the
// driver and wrk, measured apart) are left out. The groups are Exact, one
// per class, in class order.
func classifyNode(procs []nodeProc, pc podClasses, components []int, self int) []Group {
	byPID := map[int]nodeProc{}
	children := map[int][]int{}
	for _, p := range procs {
		byPID[p.PID] = p
		children[p.PPID] = append(children[p.PPID], p.PID)
	}
	class := map[int]string{}
	// Leave out the driver's tree.
	skip := map[int]bool{}
	for q := []int{self}; len(q) > 0; q = q[1:] {
		skip[q[0]] = true
		q = append(q, children[q[0]]...)
	}
	for _, p := range procs {
		switch {
		case skip[p.PID]:
		case p.PodUID != "":
			c, ok := pc.byContainer[p.Container]
			if !ok {
				if c, ok = pc.byPod[p.PodUID]; !ok {
					c = classOther // a pod the listing did not have
				}
			}
			class[p.PID] = c
		case p.PID == 2 || p.PPID == 2:
			class[p.PID] = classKernel
		}
	}
	// The cluster's host processes and their descendants outside pods.
	var roots []int
	roots = append(roots, components...)
	for _, p := range procs {
		if strings.HasPrefix(p.Comm, "containerd-shim") {
			roots = append(roots, p.PID)
		}
	}
	for q := roots; len(q) > 0; q = q[1:] {
		pid := q[0]
		if _, ok := byPID[pid]; !ok || skip[pid] {
			continue
		}
		if _, done := class[pid]; done {
			continue
		}
		class[pid] = classKubernetes
		q = append(q, children[pid]...)
	}
	groups := map[string][]int{}
	for _, p := range procs {
		if skip[p.PID] {
			continue
		}
		c, ok := class[p.PID]
		if !ok {
			c = classOther
		}
		groups[c] = append(groups[c], p.PID)
	}
	names := make([]string, 0, len(groups))
	for c := range groups {
		names = append(names, c)
	}
	sort.Strings(names)
	out := make([]Group, 0, len(names))
	for _, c := range names {
		out = append(out, Group{Class: c, PIDs: groups[c], Exact: true})
	}
	return out
}

// readNodeProcs lists every process of proc with its pod, if any.
func readNodeProcs(proc string) ([]nodeProc, error) {
	all, err := benchutil.ProcFS(proc).All()
	if err != nil {
		return nil, err
	}
	out := make([]nodeProc, 0, len(all))
	for _, st := range all {
		p := nodeProc{PID: st.PID, PPID: st.PPID, Comm: st.Comm}
		if b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(st.PID), "cgroup")); err == nil {
			p.PodUID, p.Container, _ = parseKubepodsCgroup(string(b))
		}
		out = append(out, p)
	}
	return out, nil
}

// clusterRunDir is hack/cluster-lib.sh's CLUSTER_RUN.
func clusterRunDir() string {
	if d := os.Getenv("SPRIGHT_CLUSTER_RUN"); d != "" {
		return d
	}
	return "/run/spright-cluster"
}

// componentPIDs are the host processes cluster-up started (its pid files).
func componentPIDs() []int {
	paths, _ := filepath.Glob(filepath.Join(clusterRunDir(), "pids", "*.pid"))
	var out []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// nodeGroups classifies the node's processes at each snapshot, with the
// pod classes pc (listed before the window: the measured pods are pinned).
func nodeGroups(pc podClasses) Groups {
	self := os.Getpid()
	return func() []Group {
		procs, err := readNodeProcs("/proc")
		if err != nil {
			return nil // all of it ends up unattributed
		}
		return classifyNode(procs, pc, componentPIDs(), self)
	}
}

// nodeAdjust turns a window's per-class CPU into the node's: the busy time
// no live process had is classUnattributed, and foreign work (classOther)
// leaves the classes, so that Total is the node's CPU without the load
// generator, the driver and foreign work — fillCPU then reports that
// foreign work as other_cpu_cores.
func nodeAdjust(u cpuUse, loadgen float64) cpuUse {
	by := map[string]float64{}
	var seen float64
	for c, v := range u.ByClass {
		seen += v
		if c != classOther {
			by[c] = v
		}
	}
	by[classUnattributed] = max(0, u.Host-seen-loadgen-u.Self)
	u.ByClass = by
	u.Total = 0
	for _, v := range by {
		u.Total += v
	}
	return u
}

// controlPlaneClasses are the cluster's own upkeep, the same for every
// system: the node's CPU without them is what the requests cost.
var controlPlaneClasses = []string{classKubernetes, classKnative, classSprightCtl}

// dataPathCores is the node's CPU (by class, as nodeAdjust leaves it)
// without the control planes: the gateway, the functions, the sidecars
// and the kernel's share (softirq networking, and the sockmap splicing
// that forwards EPROXY's connections, run in kernel threads or as
// unattributed time).
func dataPathCores(byClass map[string]float64) float64 {
	var dp float64
	for c, v := range byClass {
		if c != classOther && !slices.Contains(controlPlaneClasses, c) {
			dp += v
		}
	}
	return dp
}
