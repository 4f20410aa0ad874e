package units

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// An Expectation is what one requested resource property must look like in
// the unit's cgroup once systemd applied it: a file (relative to the unit's
// cgroup directory) and a test of its content. nsrun reads the file back
// after the scope started instead of trusting that systemd enforced what it
// accepted (systemd #9641).
type Expectation struct {
	Property   string // the D-Bus name the value was sent as, e.g. MemoryMax
	Controller string // the cgroup v2 controller the file belongs to
	File       string // e.g. "memory.max"
	Want       string // the expected content, for messages
	// Value is what to write to File to put the property in force in a
	// cgroup nsrun owns (in-place mode, where no unit carries it); empty
	// when the expectation cannot be written as such.
	Value string
	match func(content string) bool
}

// Matches tells whether content (the file's content) shows the value in
// force.
func (e Expectation) Matches(content string) bool { return e.match(strings.TrimSpace(content)) }

// Host are the facts of the machine that systemd uses to turn a property
// into a cgroup value.
type Host struct {
	PageSize    uint64 // the kernel rounds memory limits down to pages
	MemoryTotal uint64 // bytes; percentages of memory are relative to it
	// BlockDevice resolves an IO property's path to the whole disk's
	// "MAJ:MIN", as systemd does (a partition or a file counts for its
	// disk). nil or an error: the device is matched by value only.
	BlockDevice func(path string) (string, error)
}

// Expectations lists what the resource properties props must show in the
// unit's cgroup files. Properties that have no cgroup file to check, that
// act only during boot (Startup*) or on child units (DefaultMemory*), or
// that reset a setting to its default are not listed: nsrun claims nothing
// for them.
func Expectations(props []Property, h Host) []Expectation {
	if h.PageSize == 0 {
		h.PageSize = 4096
	}
	var out []Expectation
	add := func(prop, ctrl, file, want string, match func(string) bool) *Expectation {
		// A later assignment of the same property replaces an earlier one.
		out = slices.DeleteFunc(out, func(e Expectation) bool { return e.Property == prop && e.File == file && !isList(prop) })
		out = append(out, Expectation{Property: prop, Controller: ctrl, File: file, Want: want, match: match})
		return &out[len(out)-1]
	}
	period := uint64(100000) // CPUQuotaPeriodSec= unset: systemd's 100 ms
	for _, p := range props {
		if p.Name == "CPUQuotaPeriodUSec" {
			if v, ok := p.Value.Value().(uint64); ok && v != usecInfinity {
				period = v
			}
		}
	}
	for _, p := range props {
		v := p.Value.Value()
		switch p.Name {
		case "MemoryMax", "MemoryLimit", "MemoryHigh", "MemoryLow", "MemoryMin", "MemorySwapMax":
			n, _ := v.(uint64)
			file := memoryFile(p.Name)
			want := "max"
			if n != math.MaxUint64 {
				want = strconv.FormatUint(n/h.PageSize*h.PageSize, 10)
			}
			e := add(p.Name, "memory", file, want, func(c string) bool { return c == want })
			e.Value = "max"
			if n != math.MaxUint64 {
				e.Value = strconv.FormatUint(n, 10)
			}
		case "MemoryMaxScale", "MemoryLimitScale", "MemoryHighScale", "MemoryLowScale", "MemoryMinScale", "MemorySwapMaxScale":
			s, _ := v.(uint32)
			base := strings.TrimSuffix(p.Name, "Scale")
			if h.MemoryTotal == 0 {
				add(p.Name, "memory", memoryFile(base), "a byte count", isNumber)
				continue
			}
			// As systemd's physical_memory_scale: whole pages.
			bytes := (h.MemoryTotal / h.PageSize) * uint64(s) / math.MaxUint32 * h.PageSize
			want := fmt.Sprintf("about %d", bytes/h.PageSize*h.PageSize)
			e := add(p.Name, "memory", memoryFile(base), want, func(c string) bool { return within(c, bytes, 0.02, 2*h.PageSize) })
			e.Value = strconv.FormatUint(bytes, 10)
		case "TasksMax":
			n, _ := v.(uint64)
			want := "max"
			if n != math.MaxUint64 {
				want = strconv.FormatUint(n, 10)
			}
			add(p.Name, "pids", "pids.max", want, func(c string) bool { return c == want }).Value = want
		case "TasksMaxScale":
			add(p.Name, "pids", "pids.max", "a number", isNumber)
		case "CPUQuotaPerSecUSec":
			q, _ := v.(uint64)
			if q == usecInfinity {
				add(p.Name, "cpu", "cpu.max", "max PERIOD", func(c string) bool { return strings.HasPrefix(c, "max ") }).Value = "max"
				continue
			}
			want := fmt.Sprintf("%d %d", q*period/usecPerSec, period)
			add(p.Name, "cpu", "cpu.max", want, func(c string) bool { return quotaMatches(c, q) }).Value = want
		case "CPUWeight", "CPUShares":
			w, _ := v.(uint64)
			if w == math.MaxUint64 {
				continue // reset to the default
			}
			if w == 0 { // idle
				add(p.Name, "cpu", "cpu.idle", "1", func(c string) bool { return c == "1" }).Value = "1"
				continue
			}
			if p.Name == "CPUShares" {
				w = clamp(w*100/1024, 1, 10000)
			}
			want := strconv.FormatUint(w, 10)
			add(p.Name, "cpu", "cpu.weight", want, func(c string) bool { return c == want }).Value = want
		case "IOWeight", "BlockIOWeight":
			w, _ := v.(uint64)
			if w == math.MaxUint64 {
				continue
			}
			if p.Name == "BlockIOWeight" {
				w = clamp(w*100/500, 1, 10000)
			}
			want := "default " + strconv.FormatUint(w, 10)
			add(p.Name, "io", "io.weight", want, func(c string) bool { return firstLine(c) == want }).Value = want
		case "AllowedCPUs", "AllowedMemoryNodes":
			mask, _ := v.([]byte)
			if len(mask) == 0 {
				continue
			}
			file := "cpuset.cpus"
			if p.Name == "AllowedMemoryNodes" {
				file = "cpuset.mems"
			}
			want := FormatCPUSet(mask)
			add(p.Name, "cpuset", file, want, func(c string) bool {
				got, err := parseCPUSet(c)
				return err == nil && FormatCPUSet(got) == want
			}).Value = want
		case "IOReadBandwidthMax", "IOWriteBandwidthMax", "IOReadIOPSMax", "IOWriteIOPSMax",
			"BlockIOReadBandwidth", "BlockIOWriteBandwidth":
			list, _ := v.([]pathValue)
			if len(list) == 0 {
				out = slices.DeleteFunc(out, func(e Expectation) bool { return e.Property == p.Name })
				continue
			}
			key := ioMaxKey(p.Name)
			for _, pv := range list {
				val := "max"
				if pv.Value != math.MaxUint64 {
					val = strconv.FormatUint(pv.Value, 10)
				}
				dev := resolve(h, pv.Path)
				want := fmt.Sprintf("%s %s=%s", orAny(dev), key, val)
				e := add(p.Name, "io", "io.max", want, func(c string) bool { return ioLineHas(c, dev, key+"="+val) })
				if dev != "" {
					e.Value = dev + " " + key + "=" + val
				}
			}
		case "IODeviceWeight", "BlockIODeviceWeight":
			list, _ := v.([]pathValue)
			if len(list) == 0 {
				out = slices.DeleteFunc(out, func(e Expectation) bool { return e.Property == p.Name })
				continue
			}
			for _, pv := range list {
				w := pv.Value
				if p.Name == "BlockIODeviceWeight" {
					w = clamp(w*100/500, 1, 10000)
				}
				dev := resolve(h, pv.Path)
				val := strconv.FormatUint(w, 10)
				e := add(p.Name, "io", "io.weight", orAny(dev)+" "+val, func(c string) bool { return ioLineHas(c, dev, val) })
				if dev != "" {
					e.Value = dev + " " + val
				}
			}
		}
	}
	return out
}

func isList(prop string) bool { return appendable(prop) }

func memoryFile(prop string) string {
	switch prop {
	case "MemoryMax", "MemoryLimit":
		return "memory.max"
	case "MemoryHigh":
		return "memory.high"
	case "MemoryLow":
		return "memory.low"
	case "MemoryMin":
		return "memory.min"
	case "MemorySwapMax":
		return "memory.swap.max"
	}
	return ""
}

func ioMaxKey(prop string) string {
	switch prop {
	case "IOReadBandwidthMax", "BlockIOReadBandwidth":
		return "rbps"
	case "IOWriteBandwidthMax", "BlockIOWriteBandwidth":
		return "wbps"
	case "IOReadIOPSMax":
		return "riops"
	}
	return "wiops"
}

func resolve(h Host, path string) string {
	if h.BlockDevice == nil {
		return ""
	}
	dev, err := h.BlockDevice(path)
	if err != nil {
		return ""
	}
	return dev
}

func orAny(dev string) string {
	if dev == "" {
		return "(any device)"
	}
	return dev
}

// ioLineHas tells whether a line of io.max or io.weight for dev (any
// device when dev is empty) has the field want.
func ioLineHas(content, dev, want string) bool {
	for _, line := range strings.Split(content, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (dev != "" && f[0] != dev) || f[0] == "default" {
			continue
		}
		if slices.Contains(f[1:], want) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

func isNumber(c string) bool {
	_, err := strconv.ParseUint(c, 10, 64)
	return err == nil
}

func within(c string, want uint64, rel float64, abs uint64) bool {
	got, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return false
	}
	d := float64(got) - float64(want)
	return math.Abs(d) <= math.Max(rel*float64(want), float64(abs))
}

// quotaMatches tells whether cpu.max ("QUOTA PERIOD") gives perSec
// microseconds of CPU time per second, within rounding (systemd may pick
// another period for very small quotas).
func quotaMatches(c string, perSec uint64) bool {
	f := strings.Fields(c)
	if len(f) != 2 {
		return false
	}
	q, err1 := strconv.ParseUint(f[0], 10, 64)
	per, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || per == 0 {
		return false
	}
	got := float64(q) * float64(usecPerSec) / float64(per)
	return math.Abs(got-float64(perSec)) <= math.Max(0.01*float64(perSec), 10)
}

func clamp(v, lo, hi uint64) uint64 { return min(max(v, lo), hi) }

// FormatCPUSet writes a CPU mask (as AllowedCPUs= sends it: bit i of byte
// i/8 is CPU i) in the kernel's list form, "0-2,5".
func FormatCPUSet(mask []byte) string {
	var parts []string
	n := len(mask) * 8
	for i := 0; i < n; i++ {
		if mask[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		j := i
		for j+1 < n && mask[(j+1)/8]&(1<<((j+1)%8)) != 0 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(i))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", i, j))
		}
		i = j
	}
	return strings.Join(parts, ",")
}
