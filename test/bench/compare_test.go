package main

import (
	"strings"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ratios []float64
		want   verdict
		why    string
	}{
		{"equal", []float64{1, 1, 1, 1}, verdictNoLoss, "median ratio 1.000 ≥ 0.95"},
		{"at the threshold", []float64{0.90, 0.95, 0.95, 1.2}, verdictNoLoss, "median ratio 0.950 ≥ 0.95"},
		{"one bad round", []float64{0.5, 1.01, 0.99, 0.97}, verdictNoLoss, "median ratio 0.980"},
		{"worse every round", []float64{0.90, 0.93, 0.99, 0.80}, verdictLoss, "median ratio 0.915 < 0.95, worse in all 4 rounds"},
		{"rounds disagree", []float64{0.80, 0.85, 1.10, 0.90}, verdictInconclusive, "median ratio 0.875 < 0.95, but as good or better in 1 of 4 rounds"},
		{"one round looks bad", []float64{0.5}, verdictInconclusive, "1 round(s), fewer than 3"},
		{"two rounds look fine", []float64{1.2, 1.3}, verdictInconclusive, "2 round(s)"},
		{"none", nil, verdictInconclusive, "0 round(s)"},
	} {
		v, why := judge(tc.ratios)
		if v != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%s: %v, %q; want %v, %q", tc.name, v, why, tc.want, tc.why)
		}
	}
}

func TestMetricRatios(t *testing.T) {
	tcp := &metric{Base: []float64{2, 4, 0, 3}, Tree: []float64{3, 2, 1}}
	// Round 3's baseline is 0: no ratio; round 4 has no tree value yet.
	if got := tcp.ratios(); len(got) != 2 || got[0] != 1.5 || got[1] != 0.5 {
		t.Errorf("throughput ratios %v, want [1.5 0.5]", got)
	}
	rtt := &metric{LowerIsBetter: true, Base: []float64{0.8, 0.5}, Tree: []float64{0.4, 1.0}}
	// A shorter RTT in the tree is a ratio above 1.
	if got := rtt.ratios(); len(got) != 2 || got[0] != 2 || got[1] != 0.5 {
		t.Errorf("RTT ratios %v, want [2 0.5]", got)
	}
}

func TestComparisonVerdictAndReport(t *testing.T) {
	c := &comparison{Base: "717f60e", Tree: "0701e7c-dirty", BaseNote: "the commit docs/BENCHMARKS.md records",
		Rounds: 4, Duration: 3 * time.Second, Pings: 100}
	tcp := c.metric("gvpn", "TCP", "Gbit/s", false)
	tcp.Base, tcp.Tree = []float64{3.0, 3.2, 3.1, 3.3}, []float64{3.1, 3.1, 3.2, 3.4}
	rtt := c.metric("gvpn", "RTT 56 B", "ms", true)
	rtt.Base, rtt.Tree = []float64{0.70, 0.72, 0.71, 0.74}, []float64{0.70, 0.70, 0.73, 0.72}
	if c.metric("gvpn", "TCP", "Gbit/s", false) != tcp || len(c.Metrics) != 2 {
		t.Fatalf("metric() added a duplicate: %d metrics", len(c.Metrics))
	}
	if v := c.overall(); v != verdictNoLoss {
		t.Fatalf("overall %v, want no loss", v)
	}
	md := c.markdown()
	for _, want := range []string{
		"## Against the baseline 717f60e, interleaved",
		"| gvpn | TCP | 3.150 (3.000–3.300) Gbit/s | 3.150 (3.100–3.400) Gbit/s | 1.031 (0.969–1.033) | no loss: median ratio 1.031 ≥ 0.95 |",
		"**Verdict: no loss** against 717f60e.",
		"- gvpn TCP (Gbit/s): 1: 3.000 / 3.100; 2: 3.200 / 3.100; 3: 3.100 / 3.200; 4: 3.300 / 3.400",
		"Rule: **no loss** when the median of the per-round ratios is ≥ 0.95",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	// One metric losing in every round makes the whole verdict a loss.
	agent := c.metric("agent", "TCP -R", "Gbit/s", false)
	agent.Base, agent.Tree = []float64{3, 3, 3, 3}, []float64{2.5, 2.6, 2.9, 2.7}
	if v := c.overall(); v != verdictLoss || !strings.Contains(c.summary(), "**Verdict: loss**") {
		t.Errorf("overall %v with a losing metric:\n%s", v, c.summary())
	}
	if v := (&comparison{}).overall(); v != verdictInconclusive {
		t.Errorf("no metrics: %v", v)
	}
}

func TestMethodText(t *testing.T) {
	var none *comparison
	if got := none.methodText(); !strings.Contains(got, "No baseline was compared") {
		t.Errorf("without a comparison: %q", got)
	}
	c := &comparison{Rounds: 4, Duration: 3 * time.Second, Pings: 100}
	got := c.methodText()
	for _, want := range []string{"4 rounds", "`iperf3 -t 3`", "`ping -c 100 -i 0.01 -s 56`", verdictRule} {
		if !strings.Contains(got, want) {
			t.Errorf("method text lacks %q:\n%s", want, got)
		}
	}
}
