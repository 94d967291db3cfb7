package golemnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gvpn/gvpn/runtime/api"
)

// ExeUnitConfig says how to launch a runtime the way yagna's ExeUnit does
// (docs/protocol.md §2): common flags, then the subcommand.
type ExeUnitConfig struct {
	// Runtime is the path of the gvpn-runtime binary.
	Runtime string
	// Workdir is the activity's working directory (created if missing).
	Workdir string
	// Hostname goes to deploy as --hostname, as the ExeUnit does.
	Hostname string
	// TaskPackage, when set, goes to deploy and start as --task-package:
	// the requestor's image, as the ExeUnit passes the file it downloaded.
	TaskPackage string
	// RuntimeArgs are appended to every invocation, like the ExeUnit's
	// --runtime-arg values (e.g. --log-level debug, --sandbox-prefix).
	RuntimeArgs []string
	// VPNEndpoint is the ExeUnit's data socket URL (Node.EndpointURL); empty
	// means no --vpn-endpoint.
	VPNEndpoint string
	// StartArgs are the ExeScript Start command's arguments, placed right
	// after "start" with no "--", as the ExeUnit does in service mode.
	StartArgs []string
	// Stderr receives the runtime's stderr; nil is /dev/null, as under a
	// real provider (the runtime then logs only to its log file, read with
	// RuntimeLog).
	Stderr io.Writer
	// SysProcAttr, if set, is used for every runtime process started with
	// this config (e.g. Setpgid, so that a terminal's Ctrl-C reaches only
	// the program playing the ExeUnit, which then shuts the runtime down in
	// order). It is only read.
	SysProcAttr *syscall.SysProcAttr
	// ExtraFiles are passed to `start` as descriptors 3, 4, ... without
	// close-on-exec, as a careless parent might (a runtime must not hand
	// them on). It is only read.
	ExtraFiles []*os.File
}

// RuntimeLog returns the log file gvpn-runtime keeps in workdir (what an
// operator reads, since the provider sends the runtime's stderr to
// /dev/null), or "" when there is none.
func RuntimeLog(workdir string) string {
	b, _ := os.ReadFile(api.LogPath(workdir))
	return string(b)
}

// DeployResult is the JSON `deploy` prints.
type DeployResult struct {
	Valid     map[string]string `json:"valid"`
	Vols      []json.RawMessage `json:"vols"`
	StartMode string            `json:"startMode"`
}

// Deploy runs `--workdir W [--hostname H] deploy --` and parses its stdout
// the way the ExeUnit does: one JSON object, nothing else.
func Deploy(ctx context.Context, cfg ExeUnitConfig) (DeployResult, error) {
	if err := os.MkdirAll(cfg.Workdir, 0o755); err != nil {
		return DeployResult{}, err
	}
	args := append(commonArgs(cfg), cfg.RuntimeArgs...)
	if cfg.Hostname != "" {
		args = append(args, "--hostname", cfg.Hostname)
	}
	args = append(args, "deploy", "--")
	// The ExeUnit forwards deploy's stdout and stderr to the requestor:
	// anything on stderr is a leak.
	var stderr bytes.Buffer
	dcfg := cfg
	dcfg.Stderr = &stderr
	if cfg.Stderr != nil {
		dcfg.Stderr = io.MultiWriter(&stderr, cfg.Stderr)
	}
	out, err := runOnce(ctx, dcfg, args)
	if stderr.Len() > 0 {
		return DeployResult{}, fmt.Errorf("deploy wrote to stderr, which the ExeUnit forwards to the requestor: %q", stderr.Bytes())
	}
	var res DeployResult
	if jerr := json.Unmarshal(bytes.TrimSpace(out), &res); jerr != nil {
		return res, fmt.Errorf("deploy stdout is not one JSON object (%v): %q", jerr, out)
	}
	if err != nil {
		return res, fmt.Errorf("deploy: %w (valid=%v)", err, res.Valid)
	}
	if res.StartMode != "blocking" {
		return res, fmt.Errorf("deploy startMode %q: the ExeUnit would not use service mode and no VPN", res.StartMode)
	}
	return res, nil
}

// SelfTest runs `test` as the provider does at startup.
func SelfTest(ctx context.Context, cfg ExeUnitConfig) error {
	_, err := runOnce(ctx, cfg, append(append([]string{}, cfg.RuntimeArgs...), "test"))
	return err
}

func commonArgs(cfg ExeUnitConfig) []string {
	args := []string{"--workdir", cfg.Workdir}
	if cfg.TaskPackage != "" {
		args = append(args, "--task-package", cfg.TaskPackage)
	}
	return args
}

func runOnce(ctx context.Context, cfg ExeUnitConfig, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, cfg.Runtime, args...)
	cmd.Dir = cfg.Workdir
	cmd.SysProcAttr = cfg.SysProcAttr
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = cfg.Stderr
	err := cmd.Run()
	return out.Bytes(), err
}

// ExeUnit is a stand-in for yagna's ExeUnit in service mode: it owns a
// running `gvpn-runtime start` and speaks ya-runtime-api with it — request
// ids from 2 up, one pending reply per id, events routed by pid — and it
// checks what the real ExeUnit would crash on (a reply of the wrong kind).
type ExeUnit struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	w     *api.Writer
	done  chan struct{} // closed when the reader stopped
	exit  chan struct{} // closed when the process was reaped

	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]*call
	procs    map[uint64]*Proc
	states   []*api.Response_RuntimeStatus
	readErr  error
	exitErr  error
	protoErr error // a reply the real ExeUnit would have panicked on
}

type call struct {
	req   *api.Request
	reply chan *api.Response
	// onReply runs on the reader goroutine before the next message is
	// read, so a Run's pid is registered before its first event.
	onReply func(*api.Response)
}

// Proc is a payload process started through RunProcess.
type Proc struct {
	Pid    uint64
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	rc     int32
	exited chan struct{}
	// sink, when set (SpawnStream), receives the output instead of the
	// buffers above.
	sink OutputFunc
}

// OutputFunc receives a streamed process's output as it arrives: one
// ProcessStatus event's stdout and stderr (either may be empty). It runs on
// the goroutine that reads the runtime's replies, so it must not block; it
// may keep the slices.
type OutputFunc func(stdout, stderr []byte)

// Result is the outcome of a finished process.
type Result struct {
	Stdout, Stderr []byte
	ReturnCode     int32
}

// Start spawns `--workdir W [--vpn-endpoint URL] start` with piped stdin and
// stdout (stderr to cfg.Stderr) and says Hello with version "0.1.0", as the
// ExeUnit does.
func Start(ctx context.Context, cfg ExeUnitConfig) (*ExeUnit, error) {
	args := append(commonArgs(cfg), cfg.RuntimeArgs...)
	if cfg.VPNEndpoint != "" {
		args = append(args, "--vpn-endpoint", cfg.VPNEndpoint)
	}
	args = append(append(args, "start"), cfg.StartArgs...)
	cmd := exec.Command(cfg.Runtime, args...)
	cmd.Dir = cfg.Workdir
	cmd.Stderr = cfg.Stderr
	cmd.SysProcAttr = cfg.SysProcAttr
	cmd.ExtraFiles = cfg.ExtraFiles
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spawn runtime: %w", err)
	}
	e := &ExeUnit{
		cmd:     cmd,
		stdin:   stdin,
		w:       api.NewWriter(stdin),
		done:    make(chan struct{}),
		exit:    make(chan struct{}),
		nextID:  1,
		pending: make(map[uint64]*call),
		procs:   make(map[uint64]*Proc),
	}
	go e.read(api.NewReader(stdout, api.DefaultMaxSize))
	go func() {
		<-e.done
		err := cmd.Wait()
		e.mu.Lock()
		e.exitErr = err
		e.mu.Unlock()
		close(e.exit)
	}()
	if _, err := e.Hello(ctx, "0.1.0"); err != nil {
		e.Kill()
		return nil, err
	}
	return e, nil
}

// Pid returns the runtime process's OS pid.
func (e *ExeUnit) Pid() int { return e.cmd.Process.Pid }

func (e *ExeUnit) read(r *api.Reader) {
	defer close(e.done)
	for {
		resp, err := r.ReadResponse()
		if err != nil {
			e.mu.Lock()
			e.readErr = err
			for id, c := range e.pending {
				close(c.reply)
				delete(e.pending, id)
			}
			for _, p := range e.procs {
				p.finish(-1)
			}
			e.mu.Unlock()
			return
		}
		if resp.GetEvent() {
			e.event(resp)
			continue
		}
		e.mu.Lock()
		c := e.pending[resp.GetId()]
		delete(e.pending, resp.GetId())
		if c != nil && !api.ReplyMatches(c.req, resp) && e.protoErr == nil {
			e.protoErr = fmt.Errorf("reply %q to request %q (id %d): the real ExeUnit panics here",
				api.ResponseName(resp), api.CommandName(c.req), resp.GetId())
		}
		e.mu.Unlock()
		if c == nil {
			continue // unknown ids are dropped, as the ExeUnit does
		}
		if c.onReply != nil {
			c.onReply(resp)
		}
		c.reply <- resp
	}
}

func (e *ExeUnit) event(resp *api.Response) {
	if st := resp.GetRtStatus(); st != nil {
		e.mu.Lock()
		// Keep the latest event per name only: a long-running lab gets
		// one every second and must not grow without bound.
		e.states = slices.DeleteFunc(e.states, func(old *api.Response_RuntimeStatus) bool {
			return statusKey(old) == statusKey(st)
		})
		e.states = append(e.states, st)
		e.mu.Unlock()
		return
	}
	st := resp.GetStatus()
	if st == nil {
		return
	}
	e.mu.Lock()
	p := e.procs[st.GetPid()]
	if p == nil && e.protoErr == nil {
		e.protoErr = fmt.Errorf("ProcessStatus for pid %d before its RunProcess reply", st.GetPid())
	}
	e.mu.Unlock()
	if p == nil {
		return
	}
	if p.sink != nil {
		if len(st.GetStdout()) > 0 || len(st.GetStderr()) > 0 {
			p.sink(st.GetStdout(), st.GetStderr())
		}
	} else {
		p.mu.Lock()
		p.stdout.Write(st.GetStdout())
		p.stderr.Write(st.GetStderr())
		p.mu.Unlock()
	}
	if !st.GetRunning() {
		p.finish(st.GetReturnCode())
	}
}

func (p *Proc) finish(rc int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
	default:
		p.rc = rc
		close(p.exited)
	}
}

// ProtocolError returns the first reply or event that the real ExeUnit
// would have crashed on or misrouted, if any.
func (e *ExeUnit) ProtocolError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.protoErr
}

func statusKey(st *api.Response_RuntimeStatus) string {
	if c := st.GetCounter(); c != nil {
		return "counter:" + c.GetName()
	}
	return "state:" + st.GetState().GetName()
}

// States returns the latest RuntimeStatus event of each state or counter
// name, oldest first.
func (e *ExeUnit) States() []*api.Response_RuntimeStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*api.Response_RuntimeStatus(nil), e.states...)
}

// VPNStats returns the latest VPN counters the runtime reported (the
// api.VPNStateName state event, sent with --debug-state-events); it is an
// error when none came yet or the event is not their JSON.
func (e *ExeUnit) VPNStats() (api.VPNStats, error) {
	var st api.VPNStats
	states := e.States()
	for i := len(states) - 1; i >= 0; i-- {
		if s := states[i].GetState(); s != nil && s.GetName() == api.VPNStateName {
			if err := json.Unmarshal(s.GetValue(), &st); err != nil {
				return st, fmt.Errorf("%s state is not JSON: %w", api.VPNStateName, err)
			}
			return st, nil
		}
	}
	return st, fmt.Errorf("the runtime reported no VPN counters (%s) yet", api.VPNStateName)
}

// ErrRuntimeGone means the runtime's stdout ended before the reply.
var ErrRuntimeGone = errors.New("runtime exited before replying")

// CallError is an error reply from the runtime.
type CallError struct {
	Command string // the request's kind, as api.CommandName names it
	Code    api.Response_ErrorCode
	Message string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("%s error %v: %s", e.Command, e.Code, e.Message)
}

// Call sends req with the next id and waits for its reply.
func (e *ExeUnit) Call(ctx context.Context, req *api.Request) (*api.Response, error) {
	c, err := e.send(req, nil)
	if err != nil {
		return nil, err
	}
	return e.wait(ctx, c)
}

func (e *ExeUnit) send(req *api.Request, onReply func(*api.Response)) (*call, error) {
	e.mu.Lock()
	if e.readErr != nil {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrRuntimeGone, e.readErr)
	}
	e.nextID++ // the ExeUnit increments before use: the first id is 2
	req.Id = e.nextID
	c := &call{req: req, reply: make(chan *api.Response, 1), onReply: onReply}
	e.pending[req.Id] = c
	e.mu.Unlock()
	if err := e.w.WriteRequest(req); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	return c, nil
}

func (e *ExeUnit) wait(ctx context.Context, c *call) (*api.Response, error) {
	select {
	case resp, ok := <-c.reply:
		if !ok {
			return nil, ErrRuntimeGone
		}
		if !api.ReplyMatches(c.req, resp) {
			return resp, e.ProtocolError()
		}
		if er := resp.GetError(); er != nil {
			return resp, &CallError{Command: api.CommandName(c.req), Code: er.GetCode(), Message: er.GetMessage()}
		}
		return resp, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the reply to %s: %w", api.CommandName(c.req), ctx.Err())
	}
}

// Hello sends Hello and returns the runtime's version.
func (e *ExeUnit) Hello(ctx context.Context, version string) (string, error) {
	resp, err := e.Call(ctx, &api.Request{Command: &api.Request_Hello_{Hello: &api.Request_Hello{Version: version}}})
	if err != nil {
		return "", err
	}
	return resp.GetHello().GetVersion(), nil
}

// VPNNetwork describes one Deploy net entry as the ExeUnit passes it.
type VPNNetwork struct {
	Addr, Mask, Gateway, IfAddr string
}

// CreateNetwork sends a VPN CreateNetwork and returns the runtime's endpoint.
func (e *ExeUnit) CreateNetwork(ctx context.Context, n VPNNetwork, hosts map[string]string) (api.Endpoint, error) {
	return e.CreateNetworks(ctx, []VPNNetwork{n}, hosts)
}

// CreateNetworks sends one VPN CreateNetwork carrying every network, as
// the ExeUnit does for a Deploy with several (in whatever order they come).
func (e *ExeUnit) CreateNetworks(ctx context.Context, nets []VPNNetwork, hosts map[string]string) (api.Endpoint, error) {
	cn := &api.Request_CreateNetwork{Hosts: hosts}
	for _, n := range nets {
		cn.Networks = append(cn.Networks, &api.Network{Addr: n.Addr, Mask: n.Mask, Gateway: n.Gateway, IfAddr: n.IfAddr})
	}
	req := &api.Request{Command: &api.Request_Network{Network: cn}}
	resp, err := e.Call(ctx, req)
	if err != nil {
		return api.Endpoint{}, err
	}
	ep, ok := api.ResponseEndpoint(resp)
	if !ok {
		return ep, errors.New("no VPN network endpoint in CreateNetwork response")
	}
	return ep, nil
}

// Spawn sends RunProcess with argv[0] prepended, as the ExeUnit does, and
// returns once the runtime replied with a pid.
func (e *ExeUnit) Spawn(ctx context.Context, bin string, args ...string) (*Proc, error) {
	return e.SpawnStream(ctx, nil, bin, args...)
}

// SpawnStream is Spawn with the process's output going to out as it
// arrives rather than into the buffers Result returns (so a long-running
// command does not grow them). out == nil is Spawn.
func (e *ExeUnit) SpawnStream(ctx context.Context, out OutputFunc, bin string, args ...string) (*Proc, error) {
	argv := append([]string{baseName(bin)}, args...)
	req := &api.Request{Command: &api.Request_Run{Run: &api.Request_RunProcess{Bin: bin, Args: argv}}}
	var p *Proc
	c, err := e.send(req, func(resp *api.Response) {
		if r := resp.GetRun(); r != nil {
			p = &Proc{Pid: r.GetPid(), exited: make(chan struct{}), sink: out}
			e.mu.Lock()
			e.procs[p.Pid] = p
			e.mu.Unlock()
		}
	})
	if err != nil {
		return nil, err
	}
	if _, err := e.wait(ctx, c); err != nil {
		return nil, err
	}
	return p, nil
}

// Run runs a command to its end and returns its output and return code.
func (e *ExeUnit) Run(ctx context.Context, bin string, args ...string) (Result, error) {
	p, err := e.Spawn(ctx, bin, args...)
	if err != nil {
		return Result{}, err
	}
	return p.Wait(ctx)
}

// Output runs a command like Run and returns its stdout; a command that
// does not exit 0 is an error quoting its exit code, stdout and stderr.
func (e *ExeUnit) Output(ctx context.Context, bin string, args ...string) (string, error) {
	res, err := e.Run(ctx, bin, args...)
	if err != nil {
		return "", fmt.Errorf("%s %v: %w", bin, args, err)
	}
	if res.ReturnCode != 0 {
		return "", fmt.Errorf("%s %v: exit %d\nstdout: %s\nstderr: %s", bin, args, res.ReturnCode, res.Stdout, res.Stderr)
	}
	return string(res.Stdout), nil
}

// Wait waits for the process to end.
func (p *Proc) Wait(ctx context.Context) (Result, error) {
	select {
	case <-p.exited:
		return p.Result(), nil
	case <-ctx.Done():
		r := p.Result()
		return r, fmt.Errorf("process %d still running (stdout %q, stderr %q): %w", p.Pid, r.Stdout, r.Stderr, ctx.Err())
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Result returns the output so far and, once exited, the return code.
func (p *Proc) Result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Result{Stdout: bytes.Clone(p.stdout.Bytes()), Stderr: bytes.Clone(p.stderr.Bytes()), ReturnCode: p.rc}
}

// Kill sends KillProcess.
func (e *ExeUnit) KillProcess(ctx context.Context, pid uint64, sig syscall.Signal) error {
	_, err := e.Call(ctx, &api.Request{Command: &api.Request_Kill{Kill: &api.Request_KillProcess{Pid: pid, Signal: int32(sig)}}})
	return err
}

// Shutdown sends Shutdown, waits for the reply and then SIGKILLs the
// runtime, exactly like the ExeUnit: whatever the runtime did not clean up
// before its reply stays behind.
func (e *ExeUnit) Shutdown(ctx context.Context) error {
	_, err := e.Call(ctx, &api.Request{Command: &api.Request_Shutdown_{Shutdown: &api.Request_Shutdown{}}})
	e.Kill()
	return err
}

// Kill SIGKILLs the runtime (as the ExeUnit does after Shutdown, or as a
// crash would) and waits until it is reaped.
func (e *ExeUnit) Kill() {
	e.cmd.Process.Kill()
	select {
	case <-e.exit:
	case <-time.After(10 * time.Second):
	}
}

// Exited reports whether the runtime process has exited and been reaped.
func (e *ExeUnit) Exited() bool {
	select {
	case <-e.exit:
		return true
	default:
		return false
	}
}

// CloseStdin ends the request stream, as an ExeUnit that went away would.
func (e *ExeUnit) CloseStdin() error {
	return e.stdin.Close()
}

// Wait waits until the runtime exits and returns its exit error.
func (e *ExeUnit) Wait(ctx context.Context) error {
	select {
	case <-e.exit:
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.exitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ParseUDPEndpoint returns the address of a udp_datagram reply.
func ParseUDPEndpoint(ep api.Endpoint) (netip.AddrPort, error) {
	if ep.Kind() != api.EndpointUDPDatagram {
		return netip.AddrPort{}, fmt.Errorf("endpoint %s is not udp_datagram", ep)
	}
	return netip.ParseAddrPort(ep.Addr())
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// DefaultVolume returns the name (its directory in the workdir) and the
// path inside the sandbox of the /golem/work volume that deploy returned.
func DefaultVolume(dep DeployResult) (name, path string, err error) {
	for _, raw := range dep.Vols {
		var v struct{ Name, Path string }
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", "", fmt.Errorf("deploy vols entry %s: %w", raw, err)
		}
		if v.Path == "/golem/work" {
			return v.Name, v.Path, nil
		}
	}
	return "", "", fmt.Errorf("deploy returned no /golem/work volume (vols %s)", dep.Vols)
}

// Install copies the program src into the default volume that deploy
// returned, as a requestor uploads its program with a `container:`
// transfer, and returns its path inside the sandbox: the payload sees
// none of the host's /tmp or home directories, where test and lab
// binaries usually live.
func Install(workdir string, dep DeployResult, src, name string) (string, error) {
	vol, path, err := DefaultVolume(dep)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(workdir, vol, name), b, 0o755); err != nil {
		return "", err
	}
	return path + "/" + name, nil
}
