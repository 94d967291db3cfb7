package labcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/test/golemnet"
)

// localLab is the lab back-end on this host: each node's payload in a
// network namespace (or a QEMU guest), the hub in this process. Its run
// dir under the state dir lets a later gvpn-lab clean up after a crash.
type localLab struct {
	cfg      golemnet.LabConfig
	stateDir string
	logDir   string
	command  string
	log      *logrus.Entry

	rd      *runDir
	lab     *golemnet.Lab
	started time.Time
}

// newLocalLab checks what a local lab needs before anything starts: the
// runtime binary and the programs (tools) the command runs in the nodes,
// which see the host's.
func newLocalLab(cfg golemnet.LabConfig, lf *labFlags, command string, tools []string, log *logrus.Entry) (*localLab, error) {
	var err error
	if cfg.Runtime, err = findRuntime(lf.runtime); err != nil {
		return nil, err
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s (install them: `make deps`, or apt-get install iputils-ping curl iperf3 iproute2)", strings.Join(missing, ", "))
	}
	cfg.Log = log
	cfg.OwnProcessGroups = true
	return &localLab{cfg: cfg, stateDir: lf.stateDir, logDir: lf.logDir, command: command, log: log}, nil
}

// localBringUp bounds a local lab's bring-up; a VM node boots under TCG.
func localBringUp(cfg golemnet.LabConfig) time.Duration {
	if cfg.VMNodes > 0 {
		return 3 * time.Minute
	}
	return 2 * time.Minute
}

func (l *localLab) Start(ctx context.Context, progress func(node, step string)) (labInfo, error) {
	cleanStaleRuns(l.stateDir, l.log)
	names := l.cfg.Hostnames
	if len(names) == 0 {
		for i := range l.cfg.Nodes {
			names = append(names, golemnet.LabNodeName(i))
		}
	}
	rd, err := newRunDir(l.stateDir, l.logDir, l.command, l.cfg.SandboxPrefix, names)
	if err != nil {
		return labInfo{}, err
	}
	l.rd = rd
	cfg := l.cfg
	cfg.Workdir = rd.nodesDir()
	cfg.LogDir = rd.logsDir()
	cfg.Progress = progress
	bctx, cancel := context.WithTimeout(ctx, localBringUp(cfg))
	defer cancel()
	if l.lab, err = golemnet.NewLab(bctx, cfg); err != nil {
		return labInfo{}, err
	}
	l.started = time.Now()
	n := len(names)
	return labInfo{
		Up:   fmt.Sprintf("%d runtime%s up (test, deploy, start, Hello, CreateNetwork)", n, pluralS(n)),
		Gone: "every runtime shut down; nothing left behind: no namespace, TAP or process",
		Logs: rd.logsDir(),
	}, nil
}

func (l *localLab) Nodes() []labNode {
	var out []labNode
	for _, n := range l.lab.Nodes() {
		ln := labNode{Name: n.Name, IP: n.IP, VM: n.VM, Image: n.Image, Sandbox: n.Netns, Ready: n.Ready,
			Shell: "ip netns exec " + n.Netns + " bash"}
		if n.VM {
			ln.Sandbox = "(QEMU guest)"
			ln.Shell = fmt.Sprintf("%s exec %s -- sh -c '…' (busybox; no interactive shell)", progName(), n.Name)
		}
		out = append(out, ln)
	}
	return out
}

// localProc is a command in a local node.
type localProc struct {
	n *golemnet.LabNode
	p *golemnet.Proc
}

func (p localProc) Wait(ctx context.Context) (golemnet.Result, error) { return p.p.Wait(ctx) }

// Stop sends SIGTERM, as to a server whose step is over, and waits for it.
func (p localProc) Stop() {
	if p.p.Exited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.n.ExeUnit.KillProcess(ctx, p.p.Pid, syscall.SIGTERM)
	p.p.Wait(ctx)
}

func (l *localLab) Spawn(ctx context.Context, node string, argv ...string) (labProc, error) {
	p, err := l.lab.Spawn(ctx, node, argv...)
	if err != nil {
		return nil, err
	}
	return localProc{n: l.lab.Node(node), p: p}, nil
}

func (l *localLab) ServeExec(ctx context.Context, _ net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest) {
	streamExec(ctx, l.log, l.lab.Lookup, sc, enc, req)
}

// Install uploads the program into the node's volume, as a requestor
// uploads its program: the payload sees no host directory where it may
// live (/tmp, /root, /home).
func (l *localLab) Install(node, src, name string) (string, error) {
	return l.lab.Install(node, src, name)
}

func (l *localLab) Status(context.Context) StatusJSON {
	return StatusJSON{Pid: os.Getpid(), Network: l.lab.Net().String(), SandboxPrefix: l.lab.SandboxPrefix(),
		Started: l.started, Logs: l.rd.logsDir(), Nodes: nodesJSON(l.lab.Status())}
}

func (l *localLab) Fault(_ context.Context, req ctlRequest) ctlReply {
	return hubFault(l.lab.Lookup, req, l.log)
}

func (l *localLab) Close() error {
	if l.lab == nil {
		return nil
	}
	if err := l.lab.Close(); err != nil {
		return err
	}
	var errs []error
	for _, n := range l.lab.Nodes() {
		if n.ExeUnit != nil && !n.ExeUnit.Exited() {
			errs = append(errs, fmt.Errorf("%s: runtime pid %d still running", n.Name, n.ExeUnit.Pid()))
		}
	}
	return errors.Join(errs...)
}

func (l *localLab) Cleanup(keep keepFiles) string {
	if l.rd == nil {
		return ""
	}
	l.rd.close(keep != keepAll)
	if keep == keepNothing {
		l.rd.removeLogs()
		return ""
	}
	return l.rd.logsDir()
}

// streamExec runs an exec request in the node lookup finds, through its
// ExeUnit's RunProcess, streaming the output to enc as it comes; the
// client's later lines on sc are signals for the command, and its going
// away kills the command, as a terminal closing would.
func streamExec(ctx context.Context, log *logrus.Entry, lookup func(string) (*golemnet.LabNode, error), sc *bufio.Scanner, enc *json.Encoder, req ctlRequest) {
	n, err := lookup(req.Node)
	if err != nil {
		enc.Encode(ctlReply{Error: err.Error(), Code: 2})
		return
	}
	if n.ExeUnit == nil || n.ExeUnit.Exited() {
		enc.Encode(ctlReply{Error: fmt.Sprintf("node %s: its runtime is not running", n.Name), Code: 1})
		return
	}
	q := &outQueue{ready: make(chan struct{}, 1)}
	p, err := n.ExeUnit.SpawnStream(ctx, q.push, req.Argv[0], req.Argv[1:]...)
	if err != nil {
		code, msg := 1, err.Error()
		var ce *golemnet.CallError
		if errors.As(err, &ce) {
			msg = ce.Message
			if ce.Code == api.Response_NOT_FOUND {
				code = 127 // as a shell says "command not found"
			}
		}
		enc.Encode(ctlReply{Error: fmt.Sprintf("%s: %s", n.Name, msg), Code: code})
		return
	}
	log = log.WithFields(logrus.Fields{"node": n.Name, "pid": p.Pid, "argv": req.Argv})
	log.Info("exec started")
	kill := func() {
		kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n.ExeUnit.KillProcess(kctx, p.Pid, syscall.SIGKILL)
	}

	exited := make(chan golemnet.Result, 1)
	go func() {
		r, _ := p.Wait(ctx)
		exited <- r
	}()
	clientGone := make(chan struct{})
	go func() {
		defer close(clientGone)
		for sc.Scan() {
			r, err := decodeRequest(sc.Bytes())
			if err != nil || r.Op != "signal" {
				continue
			}
			if err := n.ExeUnit.KillProcess(ctx, p.Pid, syscall.Signal(r.Signal)); err != nil {
				log.WithError(err).Debug("signal not delivered")
			}
		}
	}()
	flush := func() bool {
		items, dropped := q.take()
		for _, it := range items {
			if enc.Encode(it) != nil {
				return false
			}
		}
		if dropped > 0 {
			msg := fmt.Sprintf("[gvpn-lab: %d bytes of output dropped: the client reads too slowly]\n", dropped)
			return enc.Encode(ctlReply{Stderr: []byte(msg)}) == nil
		}
		return true
	}
	for {
		select {
		case <-q.ready:
			if !flush() {
				kill()
			}
		case <-clientGone:
			clientGone = nil
			if !p.Exited() {
				log.Info("client went away: killing the command")
				kill()
			}
		case r := <-exited:
			flush()
			if ctx.Err() != nil && !p.Exited() {
				enc.Encode(ctlReply{Error: "the lab is shutting down", Code: 1})
				return
			}
			rc := r.ReturnCode
			log.WithField("rc", rc).Info("exec finished")
			enc.Encode(ctlReply{Exit: &rc})
			return
		}
	}
}

// outQueue carries a command's output from the ExeUnit's reader goroutine
// (which must never block) to the connection's writer. Past maxQueued
// bytes, output is dropped and the client told so.
type outQueue struct {
	mu      sync.Mutex
	items   []ctlReply
	bytes   int
	dropped int
	ready   chan struct{}
}

const maxQueued = 32 << 20

func (q *outQueue) push(stdout, stderr []byte) {
	q.mu.Lock()
	if q.bytes+len(stdout)+len(stderr) > maxQueued {
		q.dropped += len(stdout) + len(stderr)
	} else {
		q.items = append(q.items, ctlReply{Stdout: stdout, Stderr: stderr})
		q.bytes += len(stdout) + len(stderr)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *outQueue) take() ([]ctlReply, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, dropped := q.items, q.dropped
	q.items, q.bytes, q.dropped = nil, 0, 0
	return items, dropped
}
