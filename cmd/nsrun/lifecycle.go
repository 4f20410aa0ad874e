package main

// The lifecycle commands: list, status, stop, kill, freeze, thaw. They talk
// to the manager through units and read the cgroup through delegate; the
// JSON they print is documented in docs/json.md (keep both in step).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
)

// jsonSchemaVersion is the "schema_version" of every JSON document nsrun
// prints. Adding a field keeps it; renaming, removing or changing the type
// or unit of one bumps it (docs/json.md).
const jsonSchemaVersion = 1

// managerFlags are --system and --user, shared by the lifecycle commands.
type managerFlags struct{ system, user bool }

func (m *managerFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&m.system, "system", false, "talk to the system manager (default for root)")
	cmd.Flags().BoolVar(&m.user, "user", false, "talk to your own user manager (default for other users)")
	cmd.MarkFlagsMutuallyExclusive("system", "user")
}

func (m *managerFlags) manager() units.Manager {
	switch {
	case m.system:
		return units.System
	case m.user:
		return units.User
	}
	return units.DefaultManager()
}

// dial connects to the selected manager; failing is nsrun's own error.
func (m *managerFlags) dial(ctx context.Context) (*units.Conn, error) {
	conn, err := units.Dial(ctx, m.manager())
	if err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: err}
	}
	return conn, nil
}

// lifecycleCmd makes a command with the settings all lifecycle commands
// share: errors printed once by execute, flag errors are usage errors.
func lifecycleCmd(use, short string, args cobra.PositionalArgs, run func(*cobra.Command, []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:           use,
		Short:         short,
		Args:          args,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          run,
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	return cmd
}

// oneUnit checks the arguments of a command that takes exactly one UNIT.
func oneUnit(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageError("%s takes exactly one UNIT, got %d arguments (usage: nsrun %s)", cmd.Name(), len(args), cmd.Use)
	}
	return nil
}

// unitArg validates a UNIT argument: NAME or NAME.scope names a scope,
// NAME.service a service.
func unitArg(arg string) (string, error) {
	name, err := units.LifecycleName(arg)
	if err != nil {
		return "", usageError("UNIT: %v", err)
	}
	return name, nil
}

// unitFailed wraps a manager's error about a unit as nsrun's own failure,
// with a hint when the unit does not exist.
func unitFailed(err error, m units.Manager) error {
	if errors.Is(err, units.ErrNoSuchUnit) {
		err = fmt.Errorf("%w (see nsrun list --%s --all)", err, m)
	}
	return &exitError{code: exitNsrunFailed, err: err}
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// completeUnits offers the manager's nsrun sandboxes for a UNIT argument.
func completeUnits(m *managerFlags) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmdContext(cmd), 5*time.Second)
		defer cancel()
		conn, err := units.Dial(ctx, m.manager())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer conn.Close()
		list, err := collectUnits(ctx, conn, false)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, u := range list {
			names = append(names, u.Unit)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

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
	// Extension points, filled by the issues that add these parts
	// (fillExtensions); omitted until then.
	Namespaces any `json:"namespaces,omitempty"`
	Devices    any `json:"devices,omitempty"`
	Root       any `json:"root,omitempty"`
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

// describeUnit builds the JSON head of a unit, reading its cgroup for the
// layout and the workload's pids. mount is the cgroup v2 mount point.
func describeUnit(u units.UnitInfo, mount string) (unitJSON, error) {
	j := unitJSON{
		Unit: u.Name, Type: u.Type, Description: u.Description, Slice: u.Slice,
		LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState,
		FreezerState: u.FreezerState, Delegate: u.Delegate,
	}
	if u.ControlGroup == "" {
		return j, nil
	}
	cg, dir := u.ControlGroup, delegate.ScopeDir(mount, u.ControlGroup)
	j.ControlGroup, j.CgroupPath = &cg, &dir
	j.Sandbox = delegate.IsSandbox(dir)
	pids, err := delegate.Procs(delegate.PayloadDir(dir))
	if err != nil {
		return j, err
	}
	j.WorkloadPids = nonNil(pids)
	return j, nil
}

func nonNil(pids []int) []int {
	if pids == nil {
		return []int{}
	}
	return pids
}

// collectUnits lists the manager's units nsrun shows: its sandboxes, or
// with all every scope and every delegated service.
func collectUnits(ctx context.Context, conn *units.Conn, all bool) ([]unitJSON, error) {
	infos, err := conn.ListUnits(ctx)
	if err != nil {
		return nil, err
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return nil, fmt.Errorf("find the cgroup v2 hierarchy: %w", err)
	}
	out := []unitJSON{}
	for _, u := range infos {
		if u.Type == "service" && !u.Delegate {
			continue // only a delegated service can hold an in-place sandbox
		}
		j, err := describeUnit(u, mount)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the unit went away while we looked
			}
			return nil, err
		}
		if all || j.Sandbox {
			out = append(out, j)
		}
	}
	return out, nil
}

// --- list ---

func newListCmd() *cobra.Command {
	var m managerFlags
	var asJSON, all bool
	cmd := lifecycleCmd("list [--system|--user] [--json] [--all]", "List the running nsrun sandboxes", cobra.NoArgs,
		func(cmd *cobra.Command, _ []string) error {
			ctx := cmdContext(cmd)
			conn, err := m.dial(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			list, err := collectUnits(ctx, conn, all)
			if err != nil {
				return &exitError{code: exitNsrunFailed, err: err}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), listJSON{SchemaVersion: jsonSchemaVersion, Manager: m.manager().String(), Units: list})
			}
			return printList(cmd.OutOrStdout(), list)
		})
	cmd.Long = `List the sandboxes nsrun runs under the manager: scopes (and delegated
services, for in-place mode) whose cgroup has nsrun's supervisor/ and payload/
leaves. --all lists every scope and every delegated service instead.`
	m.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (schema: docs/json.md)")
	cmd.Flags().BoolVar(&all, "all", false, "list every scope and delegated service, not only nsrun's sandboxes")
	return cmd
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

// --- status ---

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

// readLimits reads the limits in force for the unit's cgroup at dir and, in
// a sandbox, for its payload/ leaf.
func readLimits(dir string, sandbox bool) (*limitsJSON, error) {
	l := &limitsJSON{}
	var err error
	if l.Cgroup, err = delegate.ReadLimits(dir); err != nil {
		return nil, err
	}
	if sandbox {
		if l.Payload, err = delegate.ReadLimits(delegate.PayloadDir(dir)); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// fillExtensions is where the other issues add their parts of status: the
// namespaces (issue "namespaces"), the device policy (issue "devices") and
// the root file system (overlay root). Each sets its field of st and returns
// the lines it adds to the human output; none does yet.
func fillExtensions(_ context.Context, _ *statusJSON) (lines [][2]string, err error) {
	return nil, nil
}

func newStatusCmd() *cobra.Command {
	var m managerFlags
	var asJSON bool
	cmd := lifecycleCmd("status UNIT [--json]", "Show a sandbox: unit, cgroup, limits in force, usage, processes", oneUnit,
		func(cmd *cobra.Command, args []string) error {
			name, err := unitArg(args[0])
			if err != nil {
				return err
			}
			ctx := cmdContext(cmd)
			conn, err := m.dial(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			st, ext, err := readStatus(ctx, conn, name)
			if err != nil {
				return unitFailed(err, m.manager())
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return printStatus(cmd.OutOrStdout(), st, ext)
		})
	m.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (schema: docs/json.md)")
	cmd.ValidArgsFunction = completeUnits(&m)
	return cmd
}

func readStatus(ctx context.Context, conn *units.Conn, name string) (*statusJSON, [][2]string, error) {
	info, err := conn.Unit(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return nil, nil, fmt.Errorf("find the cgroup v2 hierarchy: %w", err)
	}
	head, err := describeUnit(info, mount)
	if err != nil {
		return nil, nil, err
	}
	st := &statusJSON{SchemaVersion: jsonSchemaVersion, Manager: conn.Manager().String(), unitJSON: head}
	if head.CgroupPath != nil {
		dir := *head.CgroupPath
		if head.Sandbox {
			if st.SupervisorPids, err = delegate.Procs(delegate.SupervisorDir(dir)); err != nil {
				return nil, nil, err
			}
			st.SupervisorPids = nonNil(st.SupervisorPids)
		}
		if st.Limits, err = readLimits(dir, head.Sandbox); err != nil {
			return nil, nil, err
		}
		u, err := delegate.ReadUsage(dir)
		if err != nil {
			return nil, nil, err
		}
		st.Usage = usageToJSON(u)
	}
	ext, err := fillExtensions(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	return st, ext, nil
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

// --- stop, kill, freeze, thaw ---

// unitAction makes a command that does one thing to one unit.
func unitAction(use, short string, m *managerFlags, act func(ctx context.Context, conn *units.Conn, name string) error) *cobra.Command {
	cmd := lifecycleCmd(use, short, oneUnit, func(cmd *cobra.Command, args []string) error {
		name, err := unitArg(args[0])
		if err != nil {
			return err
		}
		ctx := cmdContext(cmd)
		conn, err := m.dial(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if err := act(ctx, conn, name); err != nil {
			return unitFailed(err, m.manager())
		}
		return nil
	})
	m.add(cmd)
	cmd.ValidArgsFunction = completeUnits(m)
	return cmd
}

func newStopCmd() *cobra.Command {
	var m managerFlags
	cmd := unitAction("stop UNIT", "Stop a sandbox's unit and wait until it is stopped", &m, func(ctx context.Context, conn *units.Conn, name string) error {
		return conn.Stop(ctx, name)
	})
	cmd.Long = `Stop UNIT (StopUnit, mode "replace") and wait for the job to finish with
result "done". systemd signals every process of the unit (KillMode) and
removes its cgroup; nsrun's scopes are collected once stopped.`
	return cmd
}

func newKillCmd() *cobra.Command {
	var m managerFlags
	var sig string
	var n int
	cmd := unitAction("kill [--signal=SIG] UNIT", "Send a signal to every process of a sandbox", &m, func(ctx context.Context, conn *units.Conn, name string) error {
		return conn.Kill(ctx, name, units.KillAll, n)
	})
	// The signal is checked before the manager is asked anything.
	cmd.PreRunE = func(*cobra.Command, []string) error {
		var err error
		if n, err = units.ParseSignal(sig); err != nil {
			return usageError("--signal: %v", err)
		}
		return nil
	}
	cmd.Long = `Send SIG to every process of UNIT (KillUnit with whom "all", as systemctl
kill does), nsrun's supervisor included; SIG is a name (TERM, SIGTERM),
RTMIN+N, or a number. It returns once systemd has sent the signal.`
	cmd.Flags().StringVarP(&sig, "signal", "s", "TERM", "signal to send: TERM, SIGTERM, 15, RTMIN+N")
	return cmd
}

func newFreezeCmd() *cobra.Command {
	var m managerFlags
	return unitAction("freeze UNIT", "Freeze every process of a sandbox (cgroup v2 freezer)", &m, func(ctx context.Context, conn *units.Conn, name string) error {
		return conn.Freeze(ctx, name)
	})
}

func newThawCmd() *cobra.Command {
	var m managerFlags
	return unitAction("thaw UNIT", "Resume a frozen sandbox", &m, func(ctx context.Context, conn *units.Conn, name string) error {
		return conn.Thaw(ctx, name)
	})
}
