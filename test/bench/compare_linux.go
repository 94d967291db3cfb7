package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// compareScenarios are the scenarios measured against the baseline, in
// order: the testbeds that run the runtime (and the agent).
var compareScenarios = []string{"gvpn", "agent"}

// compareSide is one tree's testbed of a scenario under comparison.
type compareSide struct {
	label string
	cfg   config // the side's binaries, the rounds' run length and pings
	tb    testbed
	// values picks the side's slice of a metric.
	values func(*metric) *[]float64
}

// runComparison measures each scenario of names that is in
// compareScenarios on the baseline's binaries (base) and on the tree's
// (cfg), into c.Metrics. Per scenario both testbeds are up at once, and
// every round measures each metric on one and then on the other, the
// first alternating from round to round, so that both see the same
// machine.
func runComparison(ctx context.Context, cfg, base *config, c *comparison, names []string) error {
	for _, name := range compareScenarios {
		if !slices.Contains(names, name) {
			continue
		}
		if err := compareScenario(ctx, cfg, base, c, name); err != nil {
			return err
		}
	}
	return nil
}

func compareScenario(ctx context.Context, cfg, base *config, c *comparison, name string) (err error) {
	tag := "[compare " + name + "]"
	sides := []*compareSide{
		{label: "baseline " + c.Base, cfg: *base, values: func(m *metric) *[]float64 { return &m.Base }},
		{label: "tree " + c.Tree, cfg: *cfg, values: func(m *metric) *[]float64 { return &m.Tree }},
	}
	if busy, err := backgroundBusy(ctx, time.Second); err == nil && busy > busyWarning {
		cfg.logf("%s WARNING: %.2f CPUs already busy before the rounds; other work on this machine adds noise", tag, busy)
	}
	for _, s := range sides {
		s.cfg.Duration, s.cfg.Pings = c.Duration, c.Pings
		cfg.logf("%s setting up the %s", tag, s.label)
		tb, err := setups[name](ctx, &s.cfg, &scenarioResult{Name: name})
		if err != nil {
			return fmt.Errorf("compare %s, %s: setup: %w", name, s.label, err)
		}
		s.tb = tb
		defer func() {
			cfg.logf("%s tearing down the %s", tag, s.label)
			if cerr := tb.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("compare %s, %s: teardown: %w", name, s.label, cerr))
			}
		}()
		if r, err := tb.Run(ctx, nodeA, cfg.Tools.Ping, "-c", "3", "-i", "0.2", "-W", "2", tb.ServerIP()); err != nil || r.RC != 0 {
			return fmt.Errorf("compare %s, %s: no connectivity from A to B (%v): %v", name, s.label, err, r)
		}
	}

	for round := range c.Rounds {
		order := sides
		if round%2 == 1 {
			order = []*compareSide{sides[1], sides[0]}
		}
		for _, reverse := range []bool{false, true} {
			m := c.metric(name, "TCP"+revFlag(reverse), "Gbit/s", false)
			for _, s := range order {
				r, err := runTCP(ctx, &s.cfg, s.tb, reverse, 1)
				if err != nil {
					return fmt.Errorf("compare %s, %s: round %d: iperf3%s: %w", name, s.label, round+1, revFlag(reverse), err)
				}
				*s.values(m) = append(*s.values(m), r.BitsPerSecond/1e9)
			}
			logRound(cfg, tag, round, c.Rounds, m)
		}
		m := c.metric(name, fmt.Sprintf("RTT %d B", pingSizes[0]), "ms", true)
		for _, s := range order {
			p, err := runPing(ctx, &s.cfg, s.tb, pingSizes[0])
			if err != nil {
				return fmt.Errorf("compare %s, %s: round %d: ping: %w", name, s.label, round+1, err)
			}
			*s.values(m) = append(*s.values(m), p.AvgMs)
		}
		logRound(cfg, tag, round, c.Rounds, m)
	}
	return nil
}

// logRound prints a metric's latest round.
func logRound(cfg *config, tag string, round, rounds int, m *metric) {
	i := min(len(m.Base), len(m.Tree)) - 1
	r, _ := m.ratio(i)
	cfg.logf("%s round %d/%d %-8s baseline %.3f %s, tree %.3f %s: ratio %.3f", tag, round+1, rounds, m.Name,
		m.Base[i], m.Unit, m.Tree[i], m.Unit, r)
}
