package proc

import (
	"fmt"
	"os"
	"strconv"
)

// When memory runs out, the kernel's OOM killer must take the payload, never
// the runtime: a dead runtime loses the activity's state, its VPN and the
// ExeUnit's connection, and memory a payload filled (a RAM volume) is not
// freed by killing bystanders.
const (
	// OOMRuntime is the runtime's own oom_score_adj: well below every
	// ordinary process (0), so that it is about the last one chosen,
	// but not -1000, which would exempt it completely: a runtime that
	// leaks must still be stoppable by the kernel rather than the machine
	// hang. Lowering needs CAP_SYS_RESOURCE (root has it; a runtime with
	// only the file capabilities of docs/provider.md keeps 0).
	OOMRuntime = -500
	// OOMPayload is every payload process's: the kernel's first choice.
	// Raising is always allowed, also for an unprivileged process.
	OOMPayload = 1000
)

// SetOOMScoreAdj writes v to the oom_score_adj of process pid (0: the
// calling process). Children inherit it.
func SetOOMScoreAdj(pid, v int) error {
	who := "self"
	if pid != 0 {
		who = strconv.Itoa(pid)
	}
	f, err := os.OpenFile("/proc/"+who+"/oom_score_adj", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	_, err = f.WriteString(strconv.Itoa(v))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("oom_score_adj %d: %w", v, err)
	}
	return nil
}
