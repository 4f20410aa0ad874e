package delegate

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseCPUStat(t *testing.T) {
	// cpu.stat of a kernel 6.x cgroup with the cpu controller enabled.
	text := `usage_usec 1234567
user_usec 1000000
system_usec 234567
core_sched.force_idle_usec 0
nr_periods 10
nr_throttled 2
throttled_usec 5000
nr_bursts 0
burst_usec 0
`
	got, err := ParseCPUStat(text)
	if err != nil {
		t.Fatal(err)
	}
	if want := (CPUStat{UsageUsec: 1234567, UserUsec: 1000000, SystemUsec: 234567}); got != want {
		t.Errorf("ParseCPUStat = %+v, want %+v", got, want)
	}
	// Without the cpu controller only the three times are there.
	if got, err := ParseCPUStat("usage_usec 5\nuser_usec 3\nsystem_usec 2\n"); err != nil || got.UsageUsec != 5 {
		t.Errorf("core-only cpu.stat: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "user_usec 3\n", "usage_usec x\n", "usage_usec\n", "usage_usec -1\n"} {
		if _, err := ParseCPUStat(bad); err == nil {
			t.Errorf("ParseCPUStat(%q): no error", bad)
		}
	}
}

func TestParseMemoryEvents(t *testing.T) {
	got, err := ParseMemoryEvents("low 0\nhigh 12\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (MemoryEvents{High: 12, Max: 3, OOM: 2, OOMKill: 1}); got != want {
		t.Errorf("ParseMemoryEvents = %+v, want %+v", got, want)
	}
	// Kernels before 5.17 have no oom_group_kill.
	if got, err := ParseMemoryEvents("low 0\nhigh 0\nmax 0\noom 0\noom_kill 4\n"); err != nil || got.OOMKill != 4 {
		t.Errorf("older memory.events: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "oom 1\n", "oom x\noom_kill 1\n"} {
		if _, err := ParseMemoryEvents(bad); err == nil {
			t.Errorf("ParseMemoryEvents(%q): no error", bad)
		}
	}
}

func TestParseEvents(t *testing.T) {
	for text, want := range map[string]Events{
		"populated 1\nfrozen 0\n": {Populated: true},
		"populated 0\nfrozen 1\n": {Frozen: true},
		"populated 1\n":           {Populated: true}, // kernels before the v2 freezer (5.2)
	} {
		if got, err := ParseEvents(text); err != nil || got != want {
			t.Errorf("ParseEvents(%q) = %+v, %v; want %+v", text, got, err, want)
		}
	}
	if _, err := ParseEvents("frozen 1\n"); err == nil {
		t.Error("cgroup.events without populated: no error")
	}
}

func TestParseIOStat(t *testing.T) {
	text := `8:0 rbytes=90112 wbytes=4096 rios=22 wios=1 dbytes=0 dios=0
259:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6 cost.vrate=100.00 cost.usage=5 cost.wait=0 cost.indebt=0 cost.indelay=0

`
	got, err := ParseIOStat(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []IOStat{
		{Major: 8, Minor: 0, RBytes: 90112, WBytes: 4096, RIOs: 22, WIOs: 1},
		{Major: 259, Minor: 0, RBytes: 1, WBytes: 2, RIOs: 3, WIOs: 4, DBytes: 5, DIOs: 6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseIOStat = %+v, want %+v", got, want)
	}
	if got, err := ParseIOStat(""); err != nil || len(got) != 0 {
		t.Errorf("empty io.stat: %v, %v", got, err)
	}
	for _, bad := range []string{"8 rbytes=1\n", "a:b rbytes=1\n", "8:0 rbytes\n", "8:0 rbytes=x\n", "8:0 wios=-1\n"} {
		if _, err := ParseIOStat(bad); err == nil {
			t.Errorf("ParseIOStat(%q): no error", bad)
		}
	}
}

// writeCgroup makes a directory that looks like a cgroup: files with the
// given contents, cgroup.procs always.
func writeCgroup(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok := files["cgroup.procs"]; !ok {
		files["cgroup.procs"] = ""
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadUsageUnknownIsNotZero(t *testing.T) {
	dir := t.TempDir()
	// A hybrid host: no memory, pids or io controller; cpu.stat is core.
	writeCgroup(t, dir, map[string]string{
		"cpu.stat":      "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
		"cgroup.events": "populated 1\nfrozen 0\n",
	})
	u, err := ReadUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.MemoryCurrent != nil || u.MemoryPeak != nil || u.PidsCurrent != nil || u.IO != nil || u.MemoryEvents != nil {
		t.Errorf("absent files read as known: %+v", u)
	}
	if u.CPU == nil || u.CPU.UsageUsec != 10 || u.Events == nil || !u.Events.Populated {
		t.Errorf("present files not read: %+v", u)
	}

	// With every controller.
	writeCgroup(t, dir, map[string]string{
		"memory.current": "4096\n", "memory.peak": "8192\n", "pids.current": "0\n",
		"io.stat": "", "memory.events": "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n",
	})
	u, err = ReadUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.MemoryCurrent == nil || *u.MemoryCurrent != 4096 || u.MemoryPeak == nil || *u.MemoryPeak != 8192 {
		t.Errorf("memory: %v %v", u.MemoryCurrent, u.MemoryPeak)
	}
	if u.PidsCurrent == nil || *u.PidsCurrent != 0 {
		t.Errorf("pids.current 0 must be known 0, got %v", u.PidsCurrent)
	}
	if u.IO == nil || len(u.IO) != 0 {
		t.Errorf("empty io.stat must be known and empty, got %#v", u.IO)
	}
	if u.MemoryEvents == nil || u.MemoryEvents.OOMKill != 1 {
		t.Errorf("memory.events: %+v", u.MemoryEvents)
	}

	if err := os.WriteFile(filepath.Join(dir, "memory.current"), []byte("max\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadUsage(dir); err == nil || !strings.Contains(err.Error(), "memory.current") {
		t.Errorf("bad memory.current: %v", err)
	}
	if _, err := ReadUsage(filepath.Join(dir, "gone")); err == nil {
		t.Error("missing cgroup: no error")
	}
}

func TestLayoutAndProcs(t *testing.T) {
	dir := t.TempDir()
	writeCgroup(t, dir, map[string]string{})
	if IsSandbox(dir) || PayloadDir(dir) != dir || SupervisorDir(dir) != "" {
		t.Error("a bare cgroup taken for a sandbox")
	}
	writeCgroup(t, filepath.Join(dir, "payload"), map[string]string{"cgroup.procs": "30\n10\n"})
	if IsSandbox(dir) {
		t.Error("payload/ alone taken for a sandbox")
	}
	writeCgroup(t, filepath.Join(dir, "supervisor"), map[string]string{"cgroup.procs": "5\n"})
	writeCgroup(t, filepath.Join(dir, "payload", "inner"), map[string]string{"cgroup.procs": "20\n0\n0\n"})
	if !IsSandbox(dir) || PayloadDir(dir) != filepath.Join(dir, "payload") || SupervisorDir(dir) != filepath.Join(dir, "supervisor") {
		t.Error("nsrun layout not recognised")
	}
	pids, err := Procs(PayloadDir(dir))
	if err != nil || !reflect.DeepEqual(pids, []int{10, 20, 30}) {
		t.Errorf("Procs(payload) = %v, %v; want [10 20 30]", pids, err)
	}
	pids, err = Procs(dir)
	if err != nil || !reflect.DeepEqual(pids, []int{5, 10, 20, 30}) {
		t.Errorf("Procs(scope) = %v, %v", pids, err)
	}
	if _, err := Procs(filepath.Join(dir, "gone")); err == nil {
		t.Error("Procs of a missing cgroup: no error")
	}
	if err := os.WriteFile(filepath.Join(dir, "supervisor", "cgroup.procs"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Procs(dir); err == nil {
		t.Error("bad pid: no error")
	}
}

func FuzzParseUsageFiles(f *testing.F) {
	for _, s := range []string{
		"8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n",
		"usage_usec 1\nuser_usec 1\nsystem_usec 0\n",
		"low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
		"populated 1\nfrozen 0\n", "", "8:0 rbytes=\n", "a b c\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// No panic, and what parses is what the text says.
		if io, err := ParseIOStat(s); err == nil && len(io) > strings.Count(s, "\n")+1 {
			t.Errorf("ParseIOStat(%q): %d devices from fewer lines", s, len(io))
		}
		_, _ = ParseCPUStat(s)
		_, _ = ParseMemoryEvents(s)
		_, _ = ParseEvents(s)
	})
}
