// Command bench measures gvpn's datapath on this machine and writes
// docs/BENCHMARKS.md: TCP throughput (iperf3) and RTT (ping) between two
// nodes through two gvpn runtimes and the golemnet hub, in the same run as
// the same measurements over a veth pair (the kernel's ceiling) and over a
// naive in-process TAP↔TAP pump (the TAP path's ceiling), at MTU 1220.
//
// With -base REV it also rebuilds another commit's binaries (the baseline,
// by default the commit the report it replaces measured) and measures the
// gvpn and agent testbeds on both, interleaved, in the same run: the
// verdict "no loss / loss / inconclusive" against the baseline comes from
// that, never from numbers of another day.
//
// It must run as root (namespaces, TAPs), in the repository (git). `make
// bench` runs it:
//
//	go run ./test/bench -runtime bin/gvpn-runtime -out docs/BENCHMARKS.md -base recorded
//
// Progress goes to stderr, the summary table to stdout. Everything it
// creates (namespaces named gvb-…, runtime processes, TAPs) is removed at
// the end, also after a failure or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	runtime  string
	out      string
	duration time.Duration
	reps     int
	quick    bool
	only     string
	// The comparison with a baseline: the revision ("" none), its rounds,
	// the iperf3 run length of each.
	base      string
	rounds    int
	roundTime time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.runtime, "runtime", "", "path of the gvpn-runtime binary (required; `make build` makes bin/gvpn-runtime)")
	fs.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "Markdown file to write the results to (\"\" = none)")
	fs.DurationVar(&o.duration, "time", 10*time.Second, "length of each iperf3 run (whole seconds)")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each throughput measurement")
	fs.BoolVar(&o.quick, "quick", false, "smoke test: 1 repetition of 3 s and 50 pings")
	fs.StringVar(&o.only, "only", "", "comma-separated subset of scenarios to run: gvpn,agent,veth,naive (default all)")
	fs.StringVar(&o.base, "base", "", "git revision to rebuild and compare with, interleaved (\""+recordedBase+"\" = the commit -out records; \"\" = no comparison)")
	fs.IntVar(&o.rounds, "rounds", 4, "interleaved rounds of the comparison with -base")
	fs.DurationVar(&o.roundTime, "round-time", 3*time.Second, "length of each iperf3 run of the comparison (whole seconds)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench -runtime PATH [-out FILE] [-time 10s] [-reps 3] [-quick] [-only gvpn,agent,veth,naive] [-base REV|recorded] [-rounds 4] [-round-time 3s]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.runtime == "" {
		return o, errors.New("-runtime is required (e.g. -runtime bin/gvpn-runtime after `make build`)")
	}
	if o.reps < 1 || o.duration < time.Second || o.rounds < 1 || o.roundTime < time.Second {
		return o, errors.New("-reps and -rounds must be ≥ 1, -time and -round-time ≥ 1s")
	}
	for _, s := range o.scenarios() {
		if !slices.Contains(scenarioOrder, s) {
			return o, fmt.Errorf("-only: unknown scenario %q (want gvpn, agent, veth, naive)", s)
		}
	}
	if o.base != "" && !slices.ContainsFunc(o.scenarios(), func(s string) bool { return slices.Contains(compareScenarios, s) }) {
		return o, fmt.Errorf("-base compares the %v scenarios and -only runs none of them", compareScenarios)
	}
	return o, nil
}

func (o options) scenarios() []string {
	if o.only == "" {
		return scenarioOrder
	}
	var out []string
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (o options) config() config {
	c := config{Duration: o.duration, Reps: o.reps, Pings: 200, Port: 5201}
	if o.quick {
		c.Duration, c.Reps, c.Pings = 3*time.Second, 1, 50
	}
	return c
}

// comparison returns the comparison's parameters, without its commits.
func (o options) comparison() *comparison {
	c := &comparison{Rounds: o.rounds, Duration: o.roundTime, Pings: 100}
	if o.quick {
		c.Rounds, c.Duration, c.Pings = 1, 2*time.Second, 50
	}
	return c
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	cfg := o.config()
	cfg.Progress = stderr
	if err := preflight(&cfg, o.runtime); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}

	// The first Ctrl-C or SIGTERM cancels the measurements; teardown then
	// runs on its own context. Later signals are swallowed until the
	// teardown is done, so that nothing is left half-removed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The commits first, and the baseline built, so that a bad revision
	// fails before minutes of measuring.
	commit, err := treeCommit(ctx, ".", o.out)
	if err != nil {
		cfg.logf("WARNING: the report cannot name the measured commit: %v", err)
	}
	var cmp *comparison
	var baseCfg config
	if o.base != "" {
		var cleanup func()
		cmp, baseCfg, cleanup, err = prepareBaseline(ctx, o, cfg, commit)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer cleanup()
	}

	rep, err := runAll(ctx, &cfg, o.scenarios())
	if err == nil && cmp != nil {
		cfg.logf("comparing with the baseline %s: %d rounds", cmp.Base, cmp.Rounds)
		err = runComparison(ctx, &cfg, &baseCfg, cmp, o.scenarios())
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench: FAILED:", err)
		if o.out != "" {
			fmt.Fprintf(stderr, "bench: %s left unchanged\n", o.out)
		}
		return 1
	}
	rep.Commit, rep.Compare = commit, cmp
	fmt.Fprint(stdout, rep.table())
	if cmp != nil {
		fmt.Fprint(stdout, "\n"+cmp.summary())
	}
	if o.out != "" {
		if err := writeFileAtomic(o.out, []byte(rep.markdown()+keptSections(o.out))); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		cfg.logf("wrote %s", o.out)
	}
	return 0
}

// prepareBaseline resolves -base and builds its binaries: the comparison
// to fill, the config that runs the baseline's binaries, and the cleanup
// that removes them.
func prepareBaseline(ctx context.Context, o options, cfg config, commit string) (*comparison, config, func(), error) {
	cmp := o.comparison()
	cmp.Tree = commit
	if commit == "" {
		cmp.Tree = "(this tree, commit unknown)"
	}
	var err error
	if cmp.Base, cmp.BaseNote, err = resolveBase(ctx, ".", o.base, o.out); err != nil {
		return nil, cfg, nil, err
	}
	cfg.logf("building the baseline, commit %s (%s)", cmp.Base, cmp.BaseNote)
	start := time.Now()
	binDir, cleanup, err := buildBaseline(ctx, ".", cmp.Base)
	if err != nil {
		return nil, cfg, nil, err
	}
	cfg.logf("built the baseline's %v in %.1f s", baselineBinaries, time.Since(start).Seconds())
	cfg.Runtime, cfg.Agent = filepath.Join(binDir, "gvpn-runtime"), filepath.Join(binDir, "gvpn-agent")
	return cmp, cfg, cleanup, nil
}

// preflight fails early, with one clear message, when this machine cannot
// run the benchmark.
func preflight(cfg *config, runtimePath string) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates network namespaces and TAP devices (try `sudo make bench`)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("/dev/net/tun is not available: %w", err)
	}
	abs, err := filepath.Abs(runtimePath)
	if err != nil {
		return err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("runtime binary: %w (run `make build` first)", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("runtime binary %s is not an executable file", abs)
	}
	cfg.Runtime = abs
	cfg.Agent = filepath.Join(filepath.Dir(abs), "gvpn-agent")
	if fi, err := os.Stat(cfg.Agent); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("gvpn-agent must sit beside the runtime binary for the agent path (%s): `make build` makes both", cfg.Agent)
	}
	cfg.Tools, err = findTools()
	return err
}

// setups maps each scenario to its testbed.
var setups = map[string]func(context.Context, *config, *scenarioResult) (testbed, error){
	"gvpn":  setupGVPN,
	"agent": setupAgent,
	"veth":  setupVeth,
	"naive": setupNaive,
}

// runAll runs the scenarios in order. A failed scenario does not stop the
// others (their numbers still help), but the run as a whole fails.
func runAll(ctx context.Context, cfg *config, names []string) (*report, error) {
	rep := &report{Machine: readMachineInfo(cfg), Duration: cfg.Duration, Reps: cfg.Reps, Pings: cfg.Pings,
		Scenarios: map[string]*scenarioResult{}}
	var errs []error
	for _, name := range scenarioOrder {
		if !slices.Contains(names, name) {
			continue
		}
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: not run: %w", name, ctx.Err()))
			continue
		}
		res, err := runScenario(ctx, cfg, name, setups[name])
		rep.Scenarios[name] = res
		if err != nil {
			cfg.logf("[%s] FAILED: %v", name, err)
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}
