package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// plotScaling draws the scaling figures as a PNG with gnuplot (Debian's
// gnuplot-nox; make bench-deps installs it): p50 and p99 launch latency
// against K on the left, launches per second against K on the right, one
// colour per launcher. The data file sits beside the PNG, so the figures
// can be drawn again.
func plotScaling(r innerResult, png, title string) error {
	if len(r.Concurrency) == 0 {
		return nil
	}
	gnuplot, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("no gnuplot (make bench-deps installs gnuplot-nox): %w", err)
	}
	var names []string
	for _, c := range r.Concurrency {
		if !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
	}
	// One gnuplot data block per launcher: K p50 p99 launches/s.
	var data bytes.Buffer
	for _, n := range names {
		fmt.Fprintf(&data, "# %s\n", n)
		for _, c := range r.Concurrency {
			if c.Name != n || len(c.NS) == 0 {
				continue
			}
			rate := 0.0
			if wall := quantile(c.RoundNS, 0.5); wall > 0 {
				rate = float64(c.K) / (float64(wall) / 1e9)
			}
			fmt.Fprintf(&data, "%d %.3f %.3f %.1f\n", c.K, float64(quantile(c.NS, 0.5))/1e6, float64(quantile(c.NS, 0.99))/1e6, rate)
		}
		data.WriteString("\n\n")
	}
	datPath := strings.TrimSuffix(png, ".png") + ".dat"
	if err := os.WriteFile(datPath, data.Bytes(), 0o644); err != nil {
		return err
	}
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
	var lat, rate []string
	for i, n := range names {
		lat = append(lat,
			fmt.Sprintf("%s index %d using 1:2 with linespoints lc %d pt 7 dt 1 title %s", q(datPath), i, i+1, q(n+" p50")),
			fmt.Sprintf("%s index %d using 1:3 with linespoints lc %d pt 6 dt 2 title %s", q(datPath), i, i+1, q(n+" p99")))
		rate = append(rate, fmt.Sprintf("%s index %d using 1:4 with linespoints lc %d pt 7 title %s", q(datPath), i, i+1, q(n)))
	}
	script := strings.Join([]string{
		"set terminal pngcairo noenhanced size 1600,700 font 'sans,10'",
		"set output " + q(png),
		"set multiplot layout 1,2 title " + q(title),
		"set logscale xy",
		"set xlabel 'sandboxes started at once (K)'",
		"set ylabel 'launch latency, start to workload running (ms)'",
		"set key top left font ',8'",
		"set grid",
		"set title 'p50 (solid) and p99 (dashed) launch latency'",
		"plot " + strings.Join(lat, ", \\\n  "),
		"unset logscale y",
		"set logscale x",
		"set ylabel 'launches per second'",
		"set title 'throughput: K / time until the last workload ran'",
		"plot " + strings.Join(rate, ", \\\n  "),
		"unset multiplot",
		"",
	}, "\n")
	cmd := exec.Command(gnuplot)
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if _, err := os.Stat(png); err != nil {
		return fmt.Errorf("gnuplot wrote no %s", filepath.Base(png))
	}
	return nil
}
