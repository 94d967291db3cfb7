package labcli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// runDir is one lab's directory under the state dir: the nodes' work dirs
// and a record (lab.json) that lets a later gvpn-lab remove what a crashed
// one left behind. The runtimes' logs live apart, under the log dir (not
// /run), and outlive the lab: their path is printed.
type runDir struct {
	path     string
	stateDir string
	logs     string
}

// runInfo is lab.json.
type runInfo struct {
	Pid           int      `json:"pid"`
	Command       string   `json:"command"`
	SandboxPrefix string   `json:"sandbox_prefix"`
	Workdirs      []string `json:"workdirs"`
}

const runInfoFile = "lab.json"

func newRunDir(stateDir, logRoot, command, prefix string, nodes []string) (*runDir, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	r := &runDir{
		path:     filepath.Join(stateDir, "run-"+strconv.Itoa(os.Getpid())),
		stateDir: stateDir,
		logs:     filepath.Join(logRoot, fmt.Sprintf("%s-%s-%d", command, time.Now().Format("20060102T150405"), os.Getpid())),
	}
	os.RemoveAll(r.path) // a dead lab with our pid: its sandboxes were cleaned above
	if err := os.MkdirAll(r.path, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.logs, 0o700); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	info := runInfo{Pid: os.Getpid(), Command: command, SandboxPrefix: prefix}
	for _, n := range nodes {
		info.Workdirs = append(info.Workdirs, filepath.Join(r.nodesDir(), n))
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(filepath.Join(r.path, runInfoFile), b, 0o600); err != nil {
		return nil, err
	}
	return r, nil
}

// nodesDir is the lab's LabConfig.Workdir.
func (r *runDir) nodesDir() string { return filepath.Join(r.path, "nodes") }

func (r *runDir) logsDir() string { return r.logs }

// close removes the run dir when remove is set, and then the state dir if
// nothing else is in it: a lab that stopped leaves nothing in /run. The
// logs stay.
func (r *runDir) close(remove bool) {
	if remove {
		os.RemoveAll(r.path)
		os.Remove(r.stateDir) // only if empty
	}
}

// removeLogs deletes the logs of a run whose log path nobody was shown.
func (r *runDir) removeLogs() { os.RemoveAll(r.logs) }

// cleanStaleRuns removes what labs that are no longer running left in
// stateDir: their sandboxes (processes, namespaces) and run dirs. It
// returns how many it cleaned.
func cleanStaleRuns(stateDir string, log *logrus.Entry) int {
	dirs, _ := filepath.Glob(filepath.Join(stateDir, "run-*"))
	cleaned := 0
	for _, dir := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "run-"))
		if err != nil || pid == os.Getpid() || labAlive(pid) {
			continue
		}
		var info runInfo
		if b, err := os.ReadFile(filepath.Join(dir, runInfoFile)); err == nil && json.Unmarshal(b, &info) == nil && info.SandboxPrefix != "" {
			for _, wd := range info.Workdirs {
				if err := netns.Cleanup(info.SandboxPrefix, wd, log); err != nil {
					log.WithError(err).Warn("cannot remove a sandbox left by an earlier lab")
				}
			}
		}
		os.RemoveAll(dir)
		log.WithField("pid", pid).Warn("removed what an earlier gvpn-lab left behind")
		cleaned++
	}
	return cleaned
}

// labAlive reports whether pid is a running gvpn-lab.
func labAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(comm)) == "gvpn-lab"
}
