package cli

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
)

// limits are the agreement's limits from --cpu-cores, --mem-gib,
// --storage-gib and the operator's --pids-limit.
func (o *Options) limits() (limits.Limits, error) {
	return limits.Parse(o.CPUCores, o.MemGiB, o.StorageGiB, o.PidsLimit)
}

// checkEnforced logs the limits the host cannot enforce and says whether
// the activity may go on: not with --require-limits.
func (o *Options) checkEnforced(un []limits.Unenforced, log *logrus.Entry) bool {
	if len(un) == 0 {
		return true
	}
	l := log.WithField("unenforced", limits.Describe(un))
	if o.RequireLimits {
		l.Error("this host cannot enforce the agreement's limits and --require-limits is set: refusing the activity")
		return false
	}
	l.Warn("this host cannot enforce some of the agreement's limits: the payload may use more (--require-limits makes this fatal)")
	return true
}

// usager is a sandbox that measures its payload (the netns, agent and VM
// sandboxes with a cgroup).
type usager interface {
	Usage() (limits.Usage, error)
	Limits() limits.Limits
}

// logUsage logs the payload's usage beside what the agreement granted
// every interval (when it changed), as the VPN counters are; the sandbox
// logs it once more at teardown. The returned func stops it.
func logUsage(sbx any, interval time.Duration, log *logrus.Entry) func() {
	u, ok := sbx.(usager)
	if !ok || interval <= 0 {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		var last limits.Usage
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			now, err := u.Usage()
			if err != nil || now == last {
				continue
			}
			last = now
			log.WithFields(now.Fields(u.Limits())).Info("payload usage")
		}
	}()
	return func() {
		close(stop)
		wg.Wait()
	}
}
