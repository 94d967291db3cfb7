package labcli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// runDir is one lab's directory under the state dir: the nodes' work dirs,
// the runtimes' logs and a record (lab.json) that lets a later gvpn-lab
// remove what a crashed one left behind.
type runDir struct {
	path string

	mu    sync.Mutex
	files []*os.File
}

// runInfo is lab.json.
type runInfo struct {
	Pid           int      `json:"pid"`
	Command       string   `json:"command"`
	SandboxPrefix string   `json:"sandbox_prefix"`
	Workdirs      []string `json:"workdirs"`
}

const runInfoFile = "lab.json"

func newRunDir(stateDir, command, prefix string, nodes []string) (*runDir, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	r := &runDir{path: filepath.Join(stateDir, "run-"+strconv.Itoa(os.Getpid()))}
	os.RemoveAll(r.path) // a dead lab with our pid: its sandboxes were cleaned above
	if err := os.MkdirAll(filepath.Join(r.path, "logs"), 0o700); err != nil {
		return nil, err
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

func (r *runDir) logsDir() string { return filepath.Join(r.path, "logs") }

// logWriter returns the log file of runtime name (nil if it cannot be
// made: the logs are a convenience).
func (r *runDir) logWriter(name string) io.Writer {
	f, err := os.OpenFile(filepath.Join(r.logsDir(), name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	r.files = append(r.files, f)
	r.mu.Unlock()
	return f
}

// close closes the log files; remove also deletes the directory.
func (r *runDir) close(remove bool) {
	r.mu.Lock()
	for _, f := range r.files {
		f.Close()
	}
	r.files = nil
	r.mu.Unlock()
	if remove {
		os.RemoveAll(r.path)
	}
}

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
				if err := netns.Cleanup(info.SandboxPrefix, wd); err != nil {
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
