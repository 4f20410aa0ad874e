package delegate

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// IsSandbox says whether the cgroup at dir has nsrun's layout: both the
// supervisor/ and the payload/ leaves exist as cgroups below it. This is how
// nsrun recognises its sandboxes; it never trusts files inside a sandbox.
func IsSandbox(dir string) bool {
	for _, leaf := range []string{SupervisorLeaf, PayloadLeaf} {
		if _, err := os.Stat(filepath.Join(dir, leaf, "cgroup.procs")); err != nil {
			return false
		}
	}
	return true
}

// PayloadDir is the cgroup the workload runs in: dir/payload for a sandbox
// with nsrun's layout, dir itself otherwise.
func PayloadDir(dir string) string {
	if IsSandbox(dir) {
		return filepath.Join(dir, PayloadLeaf)
	}
	return dir
}

// SupervisorDir is the cgroup of nsrun's supervisor, or "" when dir has no
// nsrun layout.
func SupervisorDir(dir string) string {
	if IsSandbox(dir) {
		return filepath.Join(dir, SupervisorLeaf)
	}
	return ""
}

// Usage is what a cgroup subtree consumes, read from its cgroup v2 files. A
// nil pointer (or nil IO) means unknown: the file is absent because its
// controller is not enabled for the cgroup (or, for memory.peak, the kernel
// is older than 5.19). Unknown is never reported as 0.
type Usage struct {
	MemoryCurrent *uint64 // memory.current, bytes
	MemoryPeak    *uint64 // memory.peak, bytes
	CPU           *CPUStat
	PidsCurrent   *uint64 // pids.current
	IO            []IOStat
	MemoryEvents  *MemoryEvents
	Events        *Events
}

// CPUStat holds the times of cpu.stat (always present on cgroup v2, even
// without the cpu controller), in microseconds.
type CPUStat struct {
	UsageUsec  uint64
	UserUsec   uint64
	SystemUsec uint64
}

// IOStat is one device line of io.stat.
type IOStat struct {
	Major, Minor uint32
	RBytes       uint64
	WBytes       uint64
	RIOs         uint64
	WIOs         uint64
	DBytes       uint64
	DIOs         uint64
}

// MemoryEvents are the counters of memory.events that say whether the
// subtree ran out of memory.
type MemoryEvents struct {
	Low, High, Max, OOM, OOMKill, OOMGroupKill uint64
}

// Events is cgroup.events: whether the subtree has processes and whether it
// is frozen.
type Events struct {
	Populated bool
	Frozen    bool
}

// ReadUsage reads the usage of the cgroup subtree at dir. A missing file is
// unknown; a cgroup that does not exist, or a file that cannot be read or
// parsed, is an error.
func ReadUsage(dir string) (Usage, error) {
	var u Usage
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return u, fmt.Errorf("read usage of %s: %w", dir, err)
	}
	var err error
	if u.MemoryCurrent, err = readUint(dir, "memory.current"); err != nil {
		return u, err
	}
	if u.MemoryPeak, err = readUint(dir, "memory.peak"); err != nil {
		return u, err
	}
	if u.PidsCurrent, err = readUint(dir, "pids.current"); err != nil {
		return u, err
	}
	if text, ok, err := readOptional(dir, "cpu.stat"); err != nil {
		return u, err
	} else if ok {
		c, err := ParseCPUStat(text)
		if err != nil {
			return u, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cpu.stat"), err)
		}
		u.CPU = &c
	}
	if text, ok, err := readOptional(dir, "io.stat"); err != nil {
		return u, err
	} else if ok {
		if u.IO, err = ParseIOStat(text); err != nil {
			return u, fmt.Errorf("parse %s: %w", filepath.Join(dir, "io.stat"), err)
		}
		if u.IO == nil {
			u.IO = []IOStat{} // known, and no I/O yet
		}
	}
	if text, ok, err := readOptional(dir, "memory.events"); err != nil {
		return u, err
	} else if ok {
		m, err := ParseMemoryEvents(text)
		if err != nil {
			return u, fmt.Errorf("parse %s: %w", filepath.Join(dir, "memory.events"), err)
		}
		u.MemoryEvents = &m
	}
	if text, ok, err := readOptional(dir, "cgroup.events"); err != nil {
		return u, err
	} else if ok {
		e, err := ParseEvents(text)
		if err != nil {
			return u, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cgroup.events"), err)
		}
		u.Events = &e
	}
	return u, nil
}

// Procs lists the pids in the cgroup at dir and every cgroup below it,
// sorted, as this process's pid namespace numbers them; the kernel shows
// processes it cannot number there as 0, and those are left out. A cgroup
// removed while it is read is skipped.
func Procs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		text, ok, err := readOptional(path, "cgroup.procs")
		if err != nil || !ok {
			if path == dir && err == nil {
				return fmt.Errorf("read %s: %w", filepath.Join(path, "cgroup.procs"), fs.ErrNotExist)
			}
			return err
		}
		for _, f := range strings.Fields(text) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("parse %s: bad pid %q", filepath.Join(path, "cgroup.procs"), f)
			}
			if pid == 0 {
				continue // a process outside the reader's pid namespace
			}
			pids = append(pids, pid)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", dir, err)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// readOptional reads dir/name; ok is false when the file does not exist.
func readOptional(dir, name string) (text string, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return string(data), true, nil
}

// readUint reads a file holding one unsigned number; nil when it is absent.
// "max" is not a usage value and is refused.
func readUint(dir, name string) (*uint64, error) {
	text, ok, err := readOptional(dir, name)
	if err != nil || !ok {
		return nil, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(text), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, name), err)
	}
	return &v, nil
}

// parseFlatKeyed reads the "key value" lines of a flat keyed cgroup file
// (cpu.stat, memory.events, cgroup.events). Unknown keys are kept, so newer
// kernels' additions do not break parsing.
func parseFlatKeyed(text string) (map[string]uint64, error) {
	m := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %q: want \"KEY VALUE\"", line)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		m[k] = n
	}
	return m, sc.Err()
}

// ParseCPUStat reads cpu.stat; usage_usec is required, user_usec and
// system_usec are read when present.
func ParseCPUStat(text string) (CPUStat, error) {
	m, err := parseFlatKeyed(text)
	if err != nil {
		return CPUStat{}, err
	}
	usage, ok := m["usage_usec"]
	if !ok {
		return CPUStat{}, errors.New("no usage_usec")
	}
	return CPUStat{UsageUsec: usage, UserUsec: m["user_usec"], SystemUsec: m["system_usec"]}, nil
}

// ParseMemoryEvents reads memory.events; oom and oom_kill are required.
func ParseMemoryEvents(text string) (MemoryEvents, error) {
	m, err := parseFlatKeyed(text)
	if err != nil {
		return MemoryEvents{}, err
	}
	for _, k := range []string{"oom", "oom_kill"} {
		if _, ok := m[k]; !ok {
			return MemoryEvents{}, fmt.Errorf("no %s", k)
		}
	}
	return MemoryEvents{
		Low: m["low"], High: m["high"], Max: m["max"],
		OOM: m["oom"], OOMKill: m["oom_kill"], OOMGroupKill: m["oom_group_kill"],
	}, nil
}

// ParseEvents reads cgroup.events (populated, frozen).
func ParseEvents(text string) (Events, error) {
	m, err := parseFlatKeyed(text)
	if err != nil {
		return Events{}, err
	}
	p, ok := m["populated"]
	if !ok {
		return Events{}, errors.New("no populated")
	}
	return Events{Populated: p != 0, Frozen: m["frozen"] != 0}, nil
}

// ParseIOStat reads io.stat: one line per device, "MAJ:MIN key=value...".
// Keys other than rbytes, wbytes, rios, wios, dbytes and dios (e.g. the
// cost.* keys of io.cost) are ignored.
func ParseIOStat(text string) ([]IOStat, error) {
	var out []IOStat
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var s IOStat
		maj, min, ok := strings.Cut(f[0], ":")
		if !ok {
			return nil, fmt.Errorf("line %q: want MAJ:MIN first", sc.Text())
		}
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("line %q: bad device %q", sc.Text(), f[0])
		}
		s.Major, s.Minor = uint32(ma), uint32(mi)
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("line %q: bad field %q", sc.Text(), kv)
			}
			var dst *uint64
			switch k {
			case "rbytes":
				dst = &s.RBytes
			case "wbytes":
				dst = &s.WBytes
			case "rios":
				dst = &s.RIOs
			case "wios":
				dst = &s.WIOs
			case "dbytes":
				dst = &s.DBytes
			case "dios":
				dst = &s.DIOs
			default:
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %q: field %q: %w", sc.Text(), kv, err)
			}
			*dst = n
		}
		out = append(out, s)
	}
	return out, sc.Err()
}
