package main

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func goVersion() string { return runtime.Version() }

// quantile returns the q-quantile (nearest rank) of ns.
func quantile(ns []int64, q float64) int64 {
	if len(ns) == 0 {
		return 0
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }

func ratio(a, b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// launchTable prints medians, p90, CPU and the ratios of a launch pass.
func launchTable(w io.Writer, all []series) {
	med := map[string]int64{}
	for _, s := range all {
		med[s.Name] = quantile(s.NS, 0.5)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "launcher\tmedian\tp90\tCPU\tvs %s\tvs %s\t\n", refCombo, refScope)
	for _, s := range all {
		m := med[s.Name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, ms(m), ms(quantile(s.NS, 0.9)), ms(quantile(s.CPU, 0.5)), ratio(m, med[refCombo]), ratio(m, med[refScope]))
	}
	tw.Flush()
}

func report(w io.Writer, e env, r innerResult, device, profile, plotNote string) {
	fmt.Fprintf(w, "nsrun-bench %s\n", e.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %s (host %s)\n", e.Machine, e.Host)
	fmt.Fprintf(w, "kernel:  %s\n", e.Kernel)
	fmt.Fprintf(w, "systemd: %s (PID 1 of the box)\n", e.Systemd)
	fmt.Fprintf(w, "bwrap:   %s\n", e.Bwrap)
	fmt.Fprintf(w, "nsrun:   %s (%s)\n", e.Nsrun, e.GoVer)
	fmt.Fprintf(w, "\nLaunch to exit of `true`, %d runs each after %d warm-up, round robin, back to back, in ms;\n", r.Runs, r.Warmup)
	fmt.Fprintf(w, "CPU: user + system time of the launcher's own process tree (what it reaped; not\n")
	fmt.Fprintf(w, "systemd's PID 1, which makes each scope):\n\n")
	launchTable(w, r.Launch)
	if len(r.Quiet) > 0 {
		fmt.Fprintf(w, "\nThe same after %s of quiet before each launch, %d runs each, round robin. A cgroup\n", time.Duration(r.GapNS), len(r.Quiet[0].NS))
		fmt.Fprintf(w, "move (systemd's of the launcher into its scope) waits for an RCU grace period\n")
		fmt.Fprintf(w, "unless another move has just passed one, as it has back to back:\n\n")
		launchTable(w, r.Quiet)
	}

	if len(r.Concurrency) > 0 {
		fmt.Fprintf(w, "\nScaling: K sandboxes of a sleeping workload (`sh -c 'echo ready; exec sleep N'`)\n")
		fmt.Fprintf(w, "started at once; launch latency = start to the workload's first line, in ms;\n")
		fmt.Fprintf(w, "launches/s = K / median time until the last of a round ran:\n\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "launcher\tK\tsamples\tp50\tp99\tp99 / p50 at K=1\tlaunches/s\t\n")
		p50one := map[string]int64{}
		for _, c := range r.Concurrency {
			if c.K == 1 {
				p50one[c.Name] = quantile(c.NS, 0.5)
			}
		}
		for _, c := range r.Concurrency {
			p99 := quantile(c.NS, 0.99)
			wall := quantile(c.RoundNS, 0.5)
			rate := "-"
			if wall > 0 {
				rate = fmt.Sprintf("%.0f", float64(c.K)/(float64(wall)/1e9))
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t\n", c.Name, c.K, len(c.NS), ms(quantile(c.NS, 0.5)), ms(p99), ratio(p99, p50one[c.Name]), rate)
		}
		tw.Flush()
		fmt.Fprintf(w, "\n%s\n", plotNote)
	}

	if len(r.Memory) > 0 {
		fmt.Fprintf(w, "\nMemory of the launcher's own processes (not the workload) per running sandbox,\n")
		fmt.Fprintf(w, "from /proc/PID/smaps_rollup with %d sandboxes of `sleep` running at once, in KiB:\n\n", r.Memory[0].Sandboxes)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "launcher\tprocs/sandbox\tRSS\tPSS\tRSS vs bwrap\tPSS vs bwrap\t\n")
		var bw memSample
		for _, m := range r.Memory {
			if m.Name == refBwrap {
				bw = m
			}
		}
		for _, m := range r.Memory {
			n := int64(m.Sandboxes)
			fmt.Fprintf(tw, "%s\t%.1f\t%d\t%d\t%s\t%s\t\n", m.Name, float64(m.Procs)/float64(n), m.RssKB/n, m.PssKB/n,
				ratio(m.RssKB*int64(bw.Sandboxes), bw.RssKB*n), ratio(m.PssKB*int64(bw.Sandboxes), bw.PssKB*n))
		}
		tw.Flush()
	}

	if len(r.Stderr) > 0 {
		fmt.Fprintf(w, "\nWhat launchers wrote to stderr (once):\n")
		for _, s := range r.Launch {
			if msg, ok := r.Stderr[s.Name]; ok {
				fmt.Fprintf(w, "  %s: %s\n", s.Name, strings.ReplaceAll(msg, "\n", "\n    "))
			}
		}
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, "\nFailed launches (left out of the figures above):\n")
		names := slices.Sorted(maps.Keys(r.Failures))
		for _, n := range names {
			fmt.Fprintf(w, "  %s: %d, first: %s\n", n, r.Failures[n], r.FirstError[n])
		}
	}
	if device != "" {
		fmt.Fprintf(w, "\nDevice policy cost: open(/dev/null) in a loop (bpfdev BenchmarkDeviceOpen):\n\n%s", device)
	}
	if profile != "" {
		fmt.Fprintf(w, "\nstrace -f -c -w of one `nsrun -q --sandbox -- true`:\n\n%s", profile)
	}
	fmt.Fprintln(w, "\nCommands:")
	for _, s := range scenarios("nsrun") {
		fmt.Fprintf(w, "  %-28s %s\n", s.Name+":", strings.Join(s.Wrap("true"), " "))
	}
}
