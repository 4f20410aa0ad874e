package bpfdev_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nsrun/nsrun/bpfdev"
)

// BenchmarkDeviceOpen measures open(/dev/null) from a process in a cgroup
// with nsrun's program holding 1, 100 and 1000 rules, against no program.
// The rule that allows /dev/null is "a *:* r", the last of the eight
// patterns the program consults, so every open pays for all eight lookups;
// the other rules only fill the map. The cost must not grow with the rules.
func BenchmarkDeviceOpen(b *testing.B) {
	bx := requireBox(b)
	for _, n := range []int{0, 1, 100, 1000} {
		name := "rules=" + strconv.Itoa(n)
		if n == 0 {
			name = "no-program"
		}
		b.Run(name, func(b *testing.B) {
			cg := newCgroup(b, bx.Cgroup(), "bench")
			if n > 0 {
				rules := []string{"a *:* r"}
				for i := 1; i < n; i++ {
					rules = append(rules, fmt.Sprintf("c 300:%d rw", i))
				}
				p := policy(b, bpfdev.Spec{Mode: "strict", Rules: rules})
				if err := bpfdev.Attach(cg, p); err != nil {
					b.Fatal(err)
				}
			}
			out, err := probeCmd(b, cg, "bench:"+strconv.Itoa(b.N)+":/dev/null").Output()
			if err != nil {
				b.Fatal(err)
			}
			ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
			if err != nil {
				b.Fatalf("probe printed %q", out)
			}
			b.ReportMetric(float64(ns)/float64(b.N), "ns/open")
		})
	}
}
