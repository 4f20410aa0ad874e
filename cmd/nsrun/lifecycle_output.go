package main

// What the lifecycle commands print: the JSON documents of list and status
// (docs/json.md; keep both in step) and their human tables.

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nsrun/nsrun/delegate"
)

// --- JSON documents (docs/json.md) ---

// unitJSON is one unit in "nsrun list --json", and the head of "nsrun
// status --json".
type unitJSON struct {
	Unit         string `json:"unit"`
	Type         string `json:"type"`
	Description  string `json:"description"`
	Slice        string `json:"slice"`
	LoadState    string `json:"load_state"`
	ActiveState  string `json:"active_state"`
	SubState     string `json:"sub_state"`
	FreezerState string `json:"freezer_state"`
	Delegate     bool   `json:"delegate"`
	// ControlGroup is the unit's cgroup as its manager names it; CgroupPath
	// the directory nsrun read. Both null when the unit has no cgroup.
	ControlGroup *string `json:"control_group"`
	CgroupPath   *string `json:"cgroup_path"`
	// Sandbox: the cgroup has nsrun's supervisor/ and payload/ leaves.
	Sandbox bool `json:"sandbox"`
	// WorkloadPids: the processes in payload/ and below (in the whole
	// cgroup when Sandbox is false); null when the unit has no cgroup.
	WorkloadPids []int `json:"workload_pids"`
}

type listJSON struct {
	SchemaVersion int        `json:"schema_version"`
	Manager       string     `json:"manager"`
	Units         []unitJSON `json:"units"`
}

type statusJSON struct {
	SchemaVersion int    `json:"schema_version"`
	Manager       string `json:"manager"`
	unitJSON
	SupervisorPids []int       `json:"supervisor_pids"`
	Limits         *limitsJSON `json:"limits"`
	Usage          *usageJSON  `json:"usage"`
	// The sandbox parts (fillExtensions). Namespaces and Root are null
	// when the workload has no namespace of its own, Devices when the unit
	// has no cgroup.
	Namespaces *namespacesJSON `json:"namespaces"`
	Devices    *devicesReport  `json:"devices"`
	Root       *rootJSON       `json:"root"`
}

// namespacesJSON are the namespaces of the sandbox child.
type namespacesJSON struct {
	Pid     int             `json:"pid"`
	Entries []namespaceJSON `json:"entries"`
}

type namespaceJSON struct {
	Kind    string `json:"kind"`
	Inode   uint64 `json:"inode"`
	Private bool   `json:"private"`
}

// rootJSON is the sandbox's "/" as its mountinfo shows it.
type rootJSON struct {
	FSType string `json:"fstype"`
	Source string `json:"source"`
}

// usageJSON: null means unknown (the cgroup file is absent because its
// controller is not enabled), never 0.
type usageJSON struct {
	MemoryCurrentBytes *uint64           `json:"memory_current_bytes"`
	MemoryPeakBytes    *uint64           `json:"memory_peak_bytes"`
	CPUUsageUsec       *uint64           `json:"cpu_usage_usec"`
	CPUUserUsec        *uint64           `json:"cpu_user_usec"`
	CPUSystemUsec      *uint64           `json:"cpu_system_usec"`
	PidsCurrent        *uint64           `json:"pids_current"`
	IO                 []ioJSON          `json:"io"`
	MemoryEvents       *memoryEventsJSON `json:"memory_events"`
	Populated          *bool             `json:"populated"`
	Frozen             *bool             `json:"frozen"`
}

type ioJSON struct {
	Device       string `json:"device"` // "MAJOR:MINOR"
	ReadBytes    uint64 `json:"read_bytes"`
	WriteBytes   uint64 `json:"write_bytes"`
	ReadIOs      uint64 `json:"read_ios"`
	WriteIOs     uint64 `json:"write_ios"`
	DiscardBytes uint64 `json:"discard_bytes"`
	DiscardIOs   uint64 `json:"discard_ios"`
}

type memoryEventsJSON struct {
	Low          uint64 `json:"low"`
	High         uint64 `json:"high"`
	Max          uint64 `json:"max"`
	OOM          uint64 `json:"oom"`
	OOMKill      uint64 `json:"oom_kill"`
	OOMGroupKill uint64 `json:"oom_group_kill"`
}

func usageToJSON(u delegate.Usage) *usageJSON {
	j := &usageJSON{
		MemoryCurrentBytes: u.MemoryCurrent,
		MemoryPeakBytes:    u.MemoryPeak,
		PidsCurrent:        u.PidsCurrent,
	}
	if u.CPU != nil {
		j.CPUUsageUsec, j.CPUUserUsec, j.CPUSystemUsec = &u.CPU.UsageUsec, &u.CPU.UserUsec, &u.CPU.SystemUsec
	}
	if u.IO != nil {
		j.IO = make([]ioJSON, 0, len(u.IO))
		for _, s := range u.IO {
			j.IO = append(j.IO, ioJSON{
				Device:    fmt.Sprintf("%d:%d", s.Major, s.Minor),
				ReadBytes: s.RBytes, WriteBytes: s.WBytes, ReadIOs: s.RIOs, WriteIOs: s.WIOs,
				DiscardBytes: s.DBytes, DiscardIOs: s.DIOs,
			})
		}
	}
	if e := u.MemoryEvents; e != nil {
		j.MemoryEvents = &memoryEventsJSON{Low: e.Low, High: e.High, Max: e.Max, OOM: e.OOM, OOMKill: e.OOMKill, OOMGroupKill: e.OOMGroupKill}
	}
	if u.Events != nil {
		j.Populated, j.Frozen = &u.Events.Populated, &u.Events.Frozen
	}
	return j
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// limitsJSON are the limits in force, as the kernel holds them: cgroup file
// name -> its content. A file that is absent (its controller is not enabled
// for the cgroup) is left out: nothing of it is in force there.
type limitsJSON struct {
	// Cgroup: the unit's own cgroup, where its manager writes the unit's
	// resource properties.
	Cgroup delegate.Limits `json:"cgroup"`
	// Payload: payload/, where nsrun in place writes limits; null when the
	// cgroup has no nsrun layout.
	Payload delegate.Limits `json:"payload"`
}

func printList(w io.Writer, list []unitJSON) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tSLICE\tSTATE\tPIDS\tCGROUP")
	for _, u := range list {
		cg := "-"
		if u.ControlGroup != nil {
			cg = *u.ControlGroup
		}
		pids := "-"
		if u.WorkloadPids != nil {
			pids = fmt.Sprint(len(u.WorkloadPids))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Unit, orDash(u.Slice), stateText(u), pids, cg)
	}
	return tw.Flush()
}

func stateText(u unitJSON) string {
	s := u.ActiveState + "/" + u.SubState
	if u.FreezerState != "" && u.FreezerState != "running" {
		s += " (" + u.FreezerState + ")"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printStatus(w io.Writer, st *statusJSON, ext [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Unit", fmt.Sprintf("%s (%s manager)", st.Unit, st.Manager))
	if st.Description != "" {
		row("Description", st.Description)
	}
	row("State", fmt.Sprintf("%s (%s), freezer %s", st.ActiveState, st.SubState, orDash(st.FreezerState)))
	row("Slice", orDash(st.Slice))
	if st.ControlGroup == nil {
		row("Cgroup", "- (the unit has no cgroup)")
		return tw.Flush()
	}
	row("Cgroup", *st.ControlGroup)
	if st.Sandbox {
		row("Layout", "nsrun sandbox (supervisor/, payload/)")
	} else {
		row("Layout", "no nsrun leaves (supervisor/, payload/): pids are the whole cgroup's")
	}
	if l := st.Limits; l != nil {
		row("Limits", limitsText(l.Cgroup))
		if l.Payload != nil {
			row("Payload limits", limitsText(l.Payload))
		}
	}
	if u := st.Usage; u != nil {
		mem := bytesText(u.MemoryCurrentBytes)
		if u.MemoryPeakBytes != nil {
			mem += " (peak " + bytesText(u.MemoryPeakBytes) + ")"
		}
		row("Memory", mem)
		if u.CPUUsageUsec != nil {
			row("CPU", fmt.Sprintf("%s (user %s, system %s)", usecText(*u.CPUUsageUsec), usecText(*u.CPUUserUsec), usecText(*u.CPUSystemUsec)))
		} else {
			row("CPU", "unknown")
		}
		row("Tasks", uintText(u.PidsCurrent))
		row("IO", ioText(u.IO))
		if e := u.MemoryEvents; e != nil {
			row("OOM", fmt.Sprintf("oom %d, oom_kill %d", e.OOM, e.OOMKill))
		} else {
			row("OOM", "unknown")
		}
	}
	row("Workload", pidsText(st.WorkloadPids))
	if st.Sandbox {
		row("Supervisor", pidsText(st.SupervisorPids))
	}
	for _, l := range ext {
		row(l[0], l[1])
	}
	return tw.Flush()
}

// limitsText shows the limit files in delegate.LimitFiles order.
func limitsText(l delegate.Limits) string {
	var parts []string
	for _, f := range delegate.LimitFiles {
		if v, ok := l[f]; ok {
			parts = append(parts, fmt.Sprintf("%s=%q", f, v))
		}
	}
	if len(parts) == 0 {
		return "none (no resource controller is enabled for this cgroup)"
	}
	return strings.Join(parts, " ")
}

func uintText(v *uint64) string {
	if v == nil {
		return "unknown"
	}
	return fmt.Sprint(*v)
}

func bytesText(v *uint64) string {
	if v == nil {
		return "unknown"
	}
	n := float64(*v)
	for _, u := range []string{"B", "K", "M", "G", "T"} {
		if n < 1024 || u == "T" {
			if u == "B" {
				return fmt.Sprintf("%dB", *v)
			}
			return fmt.Sprintf("%.1f%s", n, u)
		}
		n /= 1024
	}
	return ""
}

func usecText(us uint64) string {
	return (time.Duration(us) * time.Microsecond).Round(time.Millisecond).String()
}

func ioText(io []ioJSON) string {
	if io == nil {
		return "unknown"
	}
	if len(io) == 0 {
		return "none"
	}
	var parts []string
	for _, s := range io {
		parts = append(parts, fmt.Sprintf("%s read %s write %s", s.Device, bytesText(&s.ReadBytes), bytesText(&s.WriteBytes)))
	}
	return strings.Join(parts, "; ")
}

func pidsText(pids []int) string {
	if len(pids) == 0 {
		return "none"
	}
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, " ")
}
