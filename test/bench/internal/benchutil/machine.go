package benchutil

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// SharedCoresNote is printed and stored with every result: the load
// generator and the system under test compete for the same CPUs, so
// neither number is the system's capacity on dedicated hardware.
const SharedCoresNote = "load generator and system under test share these cores"

// Machine describes where the numbers were taken.
type Machine struct {
	NProc      int    `json:"nproc"`
	Kernel     string `json:"kernel"`
	CPUModel   string `json:"cpu_model"`
	HugePages  string `json:"nr_hugepages"`
	ClockTicks int    `json:"clk_tck"`
	Wrk        string `json:"wrk"`
	Go         string `json:"go"`
	Revision   string `json:"spright_revision,omitempty"`
	LoadAvg    string `json:"loadavg_at_start"`
	Note       string `json:"note"`
}

// DescribeMachine fills a Machine; root is the module's directory (for the
// git revision; "" to skip it).
func DescribeMachine(root, wrkVersion string, tick time.Duration) Machine {
	m := Machine{
		NProc:      runtime.NumCPU(), // the affinity mask, as nproc(1) reports
		Kernel:     readTrimmed("/proc/sys/kernel/osrelease"),
		CPUModel:   cpuModel(),
		HugePages:  readTrimmed("/proc/sys/vm/nr_hugepages"),
		LoadAvg:    readTrimmed("/proc/loadavg"),
		ClockTicks: int(time.Second / tick),
		Wrk:        wrkVersion,
		Go:         runtime.Version(),
		Note:       SharedCoresNote,
	}
	if root != "" {
		// Best effort: results are only comparable with the code they ran.
		if out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			m.Revision = strings.TrimSpace(string(out))
		}
	}
	return m
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// cpuModel is the first "model name" of /proc/cpuinfo (x86; other
// architectures name it differently and get "unknown").
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
