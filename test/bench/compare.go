package main

import (
	"fmt"
	"strings"
	"time"
)

// This file holds the pure half of the comparison with a baseline: the
// per-round ratios, the verdict and its rendering. compare_linux.go takes
// the measurements.

// Verdict rule. A round measures the baseline and the tree under test back
// to back, so its ratio (tree over baseline, oriented so that above 1 is
// better) cancels what the machine did over the whole run; the median over
// the rounds tells the result, the rounds' agreement whether to believe it.
const (
	// noLossRatio: a median ratio at or above it is no loss.
	noLossRatio = 0.95
	// minVerdictRounds: with fewer rounds every verdict is inconclusive.
	minVerdictRounds = 3
)

// verdict is a comparison's outcome, ordered from best to worst.
type verdict int

const (
	verdictNoLoss verdict = iota
	verdictInconclusive
	verdictLoss
)

func (v verdict) String() string {
	return [...]string{"no loss", "inconclusive", "loss"}[v]
}

// verdictRule states judge's rule, for the report.
var verdictRule = fmt.Sprintf("**no loss** when the median of the per-round ratios is ≥ %.2f; "+
	"**loss** when it is below %.2f and the tree was worse than the baseline in every round; "+
	"**inconclusive** otherwise (below %.2f, but some round had the tree as good or better: the rounds disagree), "+
	"and always with fewer than %d rounds. The overall verdict is the worst of the metrics'.",
	noLossRatio, noLossRatio, noLossRatio, minVerdictRounds)

// judge applies the verdict rule to per-round ratios and says why, in
// words that quote the numbers.
func judge(ratios []float64) (verdict, string) {
	s := summarize(ratios)
	switch {
	case s.N < minVerdictRounds:
		return verdictInconclusive, fmt.Sprintf("%d round(s), fewer than %d", s.N, minVerdictRounds)
	case s.Median >= noLossRatio:
		return verdictNoLoss, fmt.Sprintf("median ratio %.3f ≥ %.2f", s.Median, noLossRatio)
	case s.Max < 1:
		return verdictLoss, fmt.Sprintf("median ratio %.3f < %.2f, worse in all %d rounds", s.Median, noLossRatio, s.N)
	}
	better := 0
	for _, r := range ratios {
		if r >= 1 {
			better++
		}
	}
	return verdictInconclusive, fmt.Sprintf("median ratio %.3f < %.2f, but as good or better in %d of %d rounds", s.Median, noLossRatio, better, s.N)
}

// metric is one quantity measured on both trees in every round.
type metric struct {
	Scenario string // "gvpn", "agent"
	Name     string // "TCP", "TCP -R", "RTT 56 B"
	Unit     string // "Gbit/s", "ms"
	// LowerIsBetter orients the ratio: RTTs are compared as base/tree.
	LowerIsBetter bool
	// Base and Tree hold one value per round.
	Base, Tree []float64
}

// ratios returns one ratio per round in which both trees were measured,
// above 1 when the tree under test did better.
func (m *metric) ratios() []float64 {
	var out []float64
	for i := range min(len(m.Base), len(m.Tree)) {
		if r, ok := m.ratio(i); ok {
			out = append(out, r)
		}
	}
	return out
}

// ratio is round i's ratio; ok is false when the divisor is not positive.
func (m *metric) ratio(i int) (r float64, ok bool) {
	b, t := m.Base[i], m.Tree[i]
	if m.LowerIsBetter {
		b, t = t, b
	}
	return t / b, b > 0
}

// comparison is the interleaved measurement of a baseline's binaries and
// the tree under test's.
type comparison struct {
	Base, Tree string // commits (the tree's may end in -dirty)
	BaseNote   string // how the baseline was chosen
	Rounds     int
	Duration   time.Duration // iperf3 -t of each TCP run
	Pings      int
	Metrics    []*metric
}

// metric returns the metric scenario/name, adding it if new.
func (c *comparison) metric(scenario, name, unit string, lowerIsBetter bool) *metric {
	for _, m := range c.Metrics {
		if m.Scenario == scenario && m.Name == name {
			return m
		}
	}
	m := &metric{Scenario: scenario, Name: name, Unit: unit, LowerIsBetter: lowerIsBetter}
	c.Metrics = append(c.Metrics, m)
	return m
}

// overall is the worst verdict of the metrics (inconclusive without any).
func (c *comparison) overall() verdict {
	if len(c.Metrics) == 0 {
		return verdictInconclusive
	}
	worst := verdictNoLoss
	for _, m := range c.Metrics {
		v, _ := judge(m.ratios())
		worst = max(worst, v)
	}
	return worst
}

// summary is the comparison's table with one verdict per metric and the
// overall verdict, for stdout and the report.
func (c *comparison) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Baseline %s against the tree under test %s, %d interleaved rounds:\n\n", c.Base, c.Tree, c.Rounds)
	b.WriteString("| scenario | metric | baseline (median, min–max) | tree (median, min–max) | ratio tree/baseline (median, min–max) | verdict |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, m := range c.Metrics {
		v, why := judge(m.ratios())
		fmt.Fprintf(&b, "| %s | %s | %s %s | %s %s | %s | %s: %s |\n", m.Scenario, m.Name,
			fmtSpread(summarize(m.Base)), m.Unit, fmtSpread(summarize(m.Tree)), m.Unit,
			fmtSpread(summarize(m.ratios())), v, why)
	}
	fmt.Fprintf(&b, "\n**Verdict: %s** against %s.\n", c.overall(), c.Base)
	return b.String()
}

// markdown is the comparison's section of the report.
func (c *comparison) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Against the baseline %s, interleaved\n\n", c.Base)
	fmt.Fprintf(&b, "The baseline is commit %s (%s), rebuilt by this run; the tree under test is %s. ", c.Base, c.BaseNote, c.Tree)
	b.WriteString("Ratios above 1 favour the tree under test; an RTT's ratio is baseline/tree, so it reads the same way. ")
	b.WriteString("Rule: " + verdictRule + "\n\n")
	b.WriteString(c.summary())
	b.WriteString("\nEvery round, baseline / tree (odd rounds measured the baseline first, even rounds the tree):\n\n")
	for _, m := range c.Metrics {
		var parts []string
		for i := range min(len(m.Base), len(m.Tree)) {
			parts = append(parts, fmt.Sprintf("%d: %.3f / %.3f", i+1, m.Base[i], m.Tree[i]))
		}
		fmt.Fprintf(&b, "- %s %s (%s): %s\n", m.Scenario, m.Name, m.Unit, strings.Join(parts, "; "))
	}
	b.WriteString("\n")
	return b.String()
}

// methodText is the Method section's paragraph on the comparison; c may
// be nil (no comparison in this run).
func (c *comparison) methodText() string {
	if c == nil {
		return "No baseline was compared in this run (`make bench BENCH_BASE=`, or the tool without -base).\n\n"
	}
	return fmt.Sprintf(`Against a baseline: throughput and RTT ratios against veth move from day to
day with the machine (veth itself moved 12.5 Gbit/s one day and 30–38 another),
so "no loss against the last BENCHMARKS.md" is decided inside one run. The run
rebuilds the baseline commit's gvpn-runtime and gvpn-agent (`+"`git archive`"+` into a
temporary directory, `+"`CGO_ENABLED=0 go build -trimpath -ldflags '-s -w'`"+`, removed
afterwards; `+"`make bench`"+` takes the commit the previous report records, or
`+"`BENCH_BASE=<rev>`"+`) and, after the testbeds above, sets up the gvpn and the agent
testbed once on the baseline's binaries and once on the tree's, both up at
once. %d rounds then measure, per testbed, single-stream TCP A→B, TCP B→A
(`+"`-R`"+`) and the RTT (`+"`ping -c %d -i 0.01 -s 56`"+`, average) on each tree back to back,
the same commands as above but with `+"`iperf3 -t %d`"+` (shorter than the testbeds'
runs above, to keep `+"`make bench`"+` near ten minutes); odd rounds measure the baseline first,
even rounds the tree. Each round gives a ratio per metric, tree over baseline
(baseline over tree for the RTT), which cancels what the machine does over the
run; the report shows the per-round numbers, the medians and the ratios' range,
and a verdict computed by this rule: %s

`, c.Rounds, c.Pings, wholeSeconds(c.Duration), verdictRule)
}
