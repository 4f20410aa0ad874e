package units

import (
	"errors"
	"testing"
)

func TestExpectations(t *testing.T) {
	h := Host{PageSize: 4096, MemoryTotal: 8 << 30, BlockDevice: func(p string) (string, error) {
		if p == "/dev/sda1" || p == "/dev/sda" {
			return "8:0", nil
		}
		return "", errors.New("no such device")
	}}
	for _, tc := range []struct {
		assign     []string
		file, want string // want: the expectation's Want
		value      string // what in-place mode writes
		good, bad  []string
	}{
		{[]string{"MemoryMax=1G"}, "memory.max", "1073741824", "1073741824", []string{"1073741824"}, []string{"max", "1073737728"}},
		{[]string{"MemoryMax=1000001"}, "memory.max", "999424", "1000001", []string{"999424"}, []string{"1000001"}},
		{[]string{"MemoryHigh=infinity"}, "memory.high", "max", "max", []string{"max"}, []string{"0"}},
		{[]string{"MemoryMax=1G", "MemoryMax=2G"}, "memory.max", "2147483648", "2147483648", []string{"2147483648"}, []string{"1073741824"}},
		{[]string{"MemoryMax=50%"}, "memory.max", "about 4294967296", "4294967296", []string{"4294967296", "4294963200"}, []string{"max", "1073741824"}},
		{[]string{"MemorySwapMax=0"}, "memory.swap.max", "0", "0", []string{"0"}, []string{"max"}},
		{[]string{"TasksMax=77"}, "pids.max", "77", "77", []string{"77"}, []string{"max", "78"}},
		{[]string{"CPUQuota=20%"}, "cpu.max", "20000 100000", "20000 100000", []string{"20000 100000", "10000 50000"}, []string{"max 100000", "30000 100000"}},
		{[]string{"CPUQuota=20%", "CPUQuotaPeriodSec=50ms"}, "cpu.max", "10000 50000", "10000 50000", []string{"10000 50000"}, []string{"max 50000"}},
		{[]string{"CPUWeight=50"}, "cpu.weight", "50", "50", []string{"50"}, []string{"100"}},
		{[]string{"CPUShares=2048"}, "cpu.weight", "200", "200", []string{"200"}, []string{"2048"}},
		{[]string{"CPUWeight=idle"}, "cpu.idle", "1", "1", []string{"1"}, []string{"0"}},
		{[]string{"IOWeight=300"}, "io.weight", "default 300", "default 300", []string{"default 300\n8:0 200"}, []string{"default 100"}},
		{[]string{"AllowedCPUs=0-2 5"}, "cpuset.cpus", "0-2,5", "0-2,5", []string{"0-2,5", "0,1,2,5"}, []string{"0-3", ""}},
		{[]string{"IOReadBandwidthMax=/dev/sda1 1M"}, "io.max", "8:0 rbps=1000000", "8:0 rbps=1000000",
			[]string{"8:0 rbps=1000000 wbps=max riops=max wiops=max"}, []string{"8:16 rbps=1000000 wbps=max riops=max wiops=max", "8:0 rbps=max wbps=1000000 riops=max wiops=max"}},
		{[]string{"IOWriteIOPSMax=/srv/x 100"}, "io.max", "(any device) wiops=100", "",
			[]string{"259:0 rbps=max wbps=max riops=max wiops=100"}, []string{"259:0 rbps=max wbps=max riops=max wiops=max"}},
		{[]string{"IODeviceWeight=/dev/sda 500"}, "io.weight", "8:0 500", "8:0 500", []string{"default 100\n8:0 500"}, []string{"default 500"}},
	} {
		var props []Property
		for _, a := range tc.assign {
			p, err := ParseProperty(a)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			props = append(props, p)
		}
		exps := Expectations(props, h)
		if len(exps) != 1 {
			t.Errorf("%v: %d expectations %+v, want 1", tc.assign, len(exps), exps)
			continue
		}
		e := exps[0]
		if e.File != tc.file || e.Want != tc.want || e.Value != tc.value {
			t.Errorf("%v: file %s want %q value %q; want file %s want %q value %q", tc.assign, e.File, e.Want, e.Value, tc.file, tc.want, tc.value)
		}
		for _, c := range tc.good {
			if !e.Matches(c) {
				t.Errorf("%v: %q should match", tc.assign, c)
			}
		}
		for _, c := range tc.bad {
			if e.Matches(c) {
				t.Errorf("%v: %q should not match", tc.assign, c)
			}
		}
	}
}

// Properties without a cgroup value to check claim nothing.
func TestExpectationsSkip(t *testing.T) {
	for _, a := range []string{"CPUWeight=", "MemoryAccounting=yes", "RuntimeMaxSec=5min", "KillMode=mixed",
		"StartupCPUWeight=10", "DefaultMemoryLow=1G", "IOReadBandwidthMax="} {
		p, err := ParseProperty(a)
		if err != nil {
			t.Fatal(err)
		}
		if exps := Expectations([]Property{p}, Host{}); len(exps) != 0 {
			t.Errorf("%s: %+v, want no expectation", a, exps)
		}
	}
}

func TestFormatCPUSet(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "0-3": "0-3", "1,3,5-7": "1,3,5-7", "63-65": "63-65", "": ""} {
		set, err := parseCPUSet(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatCPUSet(set); got != want {
			t.Errorf("FormatCPUSet(%q) = %q, want %q", in, got, want)
		}
	}
}
