package labcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/test/golemnet"
)

// fakeLab is a lab back-end whose nodes answer `ip link` with a good vpn0
// and fail every ping: the demo must fail at its ping step and still tear
// the lab down, once, showing what the nodes saw.
type fakeLab struct {
	startErr error
	closed   int
}

type fakeProc struct{ res golemnet.Result }

func (p fakeProc) Wait(context.Context) (golemnet.Result, error) { return p.res, nil }
func (p fakeProc) Stop()                                         {}

func (f *fakeLab) Start(context.Context, func(node, step string)) (labInfo, error) {
	return labInfo{Up: "3 fakes up", Gone: "fakes gone"}, f.startErr
}

func (f *fakeLab) Nodes() []labNode {
	var out []labNode
	for i := range 3 {
		out = append(out, labNode{Name: golemnet.LabNodeName(i), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(2 + i)})})
	}
	return out
}

func (f *fakeLab) Spawn(_ context.Context, node string, argv ...string) (labProc, error) {
	if argv[0] == "ip" {
		ip := map[string]string{"node-a": "02", "node-b": "03", "node-c": "04"}[node]
		out := fmt.Sprintf("5: vpn0: <UP,LOWER_UP> mtu 1220 state UNKNOWN\\    link/ether 90:13:c0:a8:00:%s brd ff:ff:ff:ff:ff:ff\n", ip)
		return fakeProc{golemnet.Result{Stdout: []byte(out)}}, nil
	}
	return fakeProc{golemnet.Result{ReturnCode: 1, Stdout: []byte("3 packets transmitted, 0 received, 100% packet loss\n")}}, nil
}

func (f *fakeLab) ServeExec(context.Context, net.Conn, *bufio.Scanner, *json.Encoder, ctlRequest) {}
func (f *fakeLab) Install(_, _, name string) (string, error)                                      { return name, nil }
func (f *fakeLab) Fault(context.Context, ctlRequest) ctlReply                                     { return ctlReply{} }
func (f *fakeLab) Cleanup(keepFiles) string                                                       { return "" }

func (f *fakeLab) Status(context.Context) StatusJSON {
	var st StatusJSON
	for _, n := range f.Nodes() {
		st.Nodes = append(st.Nodes, NodeJSON{Name: n.Name, IP: n.IP.String()})
	}
	return st
}

func (f *fakeLab) Close() error { f.closed++; return nil }

func runFakeDemo(lab *fakeLab) DemoSummary {
	d := &demoRun{lab: lab, size: 1, seconds: 1, p: newProgress(io.Discard, 0, 6), links: map[string]LinkInfo{}}
	d.run(context.Background())
	d.p.Close()
	return d.sum
}

func TestDemoFailsAtTheFailedStepAndTearsDown(t *testing.T) {
	lab := &fakeLab{}
	sum := runFakeDemo(lab)
	if sum.OK || sum.FailedStep != "2/6 (ping every pair)" || !strings.Contains(sum.Error, "ping exit 1") {
		t.Errorf("ok %v, failed step %q: %s; want step 2/6 (ping every pair) failed", sum.OK, sum.FailedStep, sum.Error)
	}
	if lab.closed != 1 || len(sum.Steps) != 3 || sum.Steps[2].Name != "tear down" || sum.Steps[2].Result != "fakes gone" {
		t.Errorf("closed %d times, steps %+v; want bring-up, ping, then the teardown's word", lab.closed, sum.Steps)
	}
	if len(sum.Nodes) != 3 || sum.Nodes[0].MTU != 1220 || sum.Nodes[2].MAC != "90:13:c0:a8:00:04" {
		t.Errorf("nodes %+v: want the three with what vpn0 showed", sum.Nodes)
	}
}

func TestDemoWithoutALabHasNothingToTearDown(t *testing.T) {
	lab := &fakeLab{startErr: errors.New("no engine")}
	sum := runFakeDemo(lab)
	if sum.OK || sum.FailedStep != "1/6 (bring up 3 nodes)" || lab.closed != 0 || sum.Nodes != nil {
		t.Errorf("%+v, closed %d: want step 1 failed, no Close, no nodes", sum, lab.closed)
	}
	if last := sum.Steps[len(sum.Steps)-1]; last.Result != "nothing to tear down" {
		t.Errorf("teardown: %q", last.Result)
	}
}
