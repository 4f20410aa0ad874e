package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// A shorthand is a resource flag that stands for one systemd property, as
// systemd-run's own shorthands do: "--memory-max=2G" is "-p MemoryMax=2G".
// The value goes to units.ParseProperty unchanged (so it has systemd's
// syntax and checks), except where toValue says otherwise.
type shorthand struct {
	flag, property, help string
	toValue              func(string) string
}

var shorthands = []shorthand{
	{flag: "memory-max", property: "MemoryMax", help: "hard memory limit: bytes with K, M, G, T suffixes (base 1024), N% of RAM, or infinity"},
	{flag: "memory-high", property: "MemoryHigh", help: "memory throttling limit (same syntax as --memory-max)"},
	{flag: "memory-low", property: "MemoryLow", help: "best-effort memory protection (same syntax as --memory-max)"},
	{flag: "memory-min", property: "MemoryMin", help: "hard memory protection (same syntax as --memory-max)"},
	{flag: "memory-swap-max", property: "MemorySwapMax", help: "swap limit (same syntax as --memory-max)"},
	{flag: "cpu-quota", property: "CPUQuota", help: `CPU time as a percentage of one CPU ("50%", "200%" = two CPUs; a bare number is a percentage)`,
		toValue: func(v string) string {
			if v != "" && !strings.HasSuffix(v, "%") {
				return v + "%"
			}
			return v
		}},
	{flag: "cpu-weight", property: "CPUWeight", help: "CPU weight 1..10000 (default 100), or idle"},
	{flag: "allowed-cpus", property: "AllowedCPUs", help: `CPUs the workload may run on ("0-3,6")`},
	{flag: "tasks-max", property: "TasksMax", help: "maximum number of tasks (processes and threads), N% of the system's, or infinity"},
	{flag: "io-weight", property: "IOWeight", help: "IO weight 1..10000 (default 100)"},
	{flag: "io-read-bandwidth-max", property: "IOReadBandwidthMax", help: `read bandwidth limit "DEVICE BYTES" (bytes per second, K/M/G base 1000; repeatable)`},
	{flag: "io-write-bandwidth-max", property: "IOWriteBandwidthMax", help: `write bandwidth limit "DEVICE BYTES" (repeatable)`},
	{flag: "runtime-max", property: "RuntimeMaxSec", help: `stop the scope after this long ("90s", "5min", "1h 30min", or infinity)`},
}

// shorthandValues holds the values given to the shorthand flags, by flag
// name, in the order given (the IO flags repeat).
type shorthandValues map[string]*[]string

func (s shorthandValues) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	for _, sh := range shorthands {
		v := new([]string)
		s[sh.flag] = v
		f.StringArrayVar(v, sh.flag, nil, fmt.Sprintf("%s (-p %s=)", sh.help, sh.property))
	}
}

// assignments turns the shorthands into "-p" assignments, in the table's
// order; -p assignments come after them, so a -p of the same property wins.
func (s shorthandValues) assignments() []string {
	var out []string
	for _, sh := range shorthands {
		vals := s[sh.flag]
		if vals == nil {
			continue
		}
		for _, v := range *vals {
			if sh.toValue != nil {
				v = sh.toValue(v)
			}
			out = append(out, sh.property+"="+v)
		}
	}
	return out
}
