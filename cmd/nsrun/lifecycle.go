package main

// The lifecycle commands: list, status, stop, kill, freeze, thaw. They talk
// to the manager through units and read the cgroup through delegate; the
// JSON they print is documented in docs/json.md (keep both in step).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nsrun/nsrun/bpfdev"
	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/nsexec"
	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
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

// --- status ---

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

// fillExtensions adds the sandbox parts of status: the namespaces and root
// of the sandbox child (the oldest process at the top of payload/), and the
// device policy in force on payload/ read back from the kernel. It returns
// the lines it adds to the human output.
func fillExtensions(_ context.Context, st *statusJSON) (lines [][2]string, err error) {
	if st.CgroupPath == nil {
		return nil, nil
	}
	payload := delegate.PayloadDir(*st.CgroupPath)
	sandboxed := false
	if pid, ok := topProcess(payload); ok {
		info, err := nsexec.Inspect(pid)
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ESRCH) {
			return nil, err
		}
		if err == nil {
			ns := &namespacesJSON{Pid: pid, Entries: []namespaceJSON{}}
			var private, shared []string
			for _, n := range info.Namespaces {
				ns.Entries = append(ns.Entries, namespaceJSON{Kind: n.Kind, Inode: n.Inode, Private: n.Private})
				if n.Private {
					private = append(private, n.Kind)
				} else {
					shared = append(shared, n.Kind)
				}
			}
			if len(private) > 0 {
				sandboxed = true
				st.Namespaces = ns
				st.Root = &rootJSON{FSType: info.RootFS, Source: info.RootSource}
				lines = append(lines,
					[2]string{"Sandbox", fmt.Sprintf("pid %d", pid)},
					[2]string{"Namespaces", fmt.Sprintf("private: %s; shared with the caller: %s", orNone(private), orNone(shared))},
					[2]string{"Root", info.RootFS + " " + info.RootSource})
			}
		}
	}
	if !sandboxed {
		lines = append(lines, [2]string{"Namespaces", "none of its own (the workload shares the caller's)"})
	}
	dev, err := statusDevices(st.Unit, payload, sandboxed)
	if err != nil {
		return nil, err
	}
	st.Devices = dev
	lines = append(lines, [2]string{"Devices", fmt.Sprintf("%s (%s)", dev.Mechanism, dev.Why)})
	if dev.Mechanism == bpfdev.MechanismBPF {
		rules := make([]string, len(dev.Rules))
		for i, e := range dev.Rules {
			rules[i] = e.String()
		}
		text := strings.Join(rules, ", ")
		if len(rules) == 0 {
			text = "none: every device is denied"
		}
		lines = append(lines, [2]string{"Device rules", text})
	}
	if len(dev.Nodes) > 0 {
		var nodes []string
		for _, n := range dev.Nodes {
			nodes = append(nodes, n.Path)
		}
		lines = append(lines, [2]string{"Device nodes", strings.Join(nodes, " ")})
	}
	if len(dev.InForce) > 0 {
		var progs []string
		for _, p := range dev.InForce {
			progs = append(progs, fmt.Sprintf("%d %s (%s)", p.ID, p.Name, orDash(p.Owner)))
		}
		lines = append(lines, [2]string{"Device programs", strings.Join(progs, ", ")})
	}
	return lines, nil
}

// statusDevices is the device part of status: what "nsrun devices UNIT"
// reports. A caller who may not query device programs learns nothing of
// them; for an unsandboxed workload nsrun enforces no device policy then.
func statusDevices(unit, payload string, sandboxed bool) (*devicesReport, error) {
	if !sandboxed {
		if _, err := bpfdev.Inspect(payload); errors.Is(err, bpfdev.ErrPermission) {
			return &devicesReport{
				Unit: unit, Cgroup: payload, Mechanism: bpfdev.MechanismNone,
				Rules: []bpfdev.Entry{}, Path: []bpfdev.ProgramRef{}, InForce: []bpfdev.ProgramRef{},
				Why: "not a sandbox: no device policy of nsrun's (device programs cannot be read without privileges)",
			}, nil
		}
	}
	rep, err := inspectDevices(unit, payload, nil)
	if err != nil {
		return nil, err
	}
	if rep.Rules == nil {
		rep.Rules = []bpfdev.Entry{}
	}
	if rep.Path == nil {
		rep.Path = []bpfdev.ProgramRef{}
	}
	if rep.InForce == nil {
		rep.InForce = []bpfdev.ProgramRef{}
	}
	return rep, nil
}

// topProcess is the sandbox child in the cgroup dir: of the processes
// there whose parent is not, the oldest (an "nsrun exec" joins payload/
// later, its parent in supervisor/).
func topProcess(dir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0, false
	}
	in := map[int]bool{}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			in[pid] = true
			pids = append(pids, pid)
		}
	}
	best, bestStart := 0, uint64(0)
	for _, pid := range pids {
		if in[parentOf(pid)] {
			continue
		}
		start, ok := startTime(pid)
		if ok && (best == 0 || start < bestStart) {
			best, bestStart = pid, start
		}
	}
	return best, best != 0
}

// startTime is field 22 of /proc/PID/stat: when the process started.
func startTime(pid int) (uint64, bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
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
		return killUnit(ctx, conn, name, n)
	})
	// The signal is checked before the manager is asked anything.
	cmd.PreRunE = func(*cobra.Command, []string) error {
		var err error
		if n, err = units.ParseSignal(sig); err != nil {
			return usageError("--signal: %v", err)
		}
		return nil
	}
	cmd.Long = `Send SIG to the workload of UNIT: in an nsrun sandbox, to every process of
its payload/ cgroup and below, and to nothing else (nsrun's supervisor, which
would forward it a second time, is left out; KILL goes through cgroup.kill).
A unit without nsrun's layout gets KillUnit with whom "all", as systemctl
kill does. SIG is a name (TERM, SIGTERM), RTMIN+N, or a number. It returns
once the signal is sent.`
	cmd.Flags().StringVarP(&sig, "signal", "s", "TERM", "signal to send: TERM, SIGTERM, 15, RTMIN+N")
	_ = cmd.RegisterFlagCompletionFunc("signal", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT", "WINCH"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// killUnit signals the workload of a unit. In a sandbox it signals each
// process of payload/ (and below) through a pidfd, checked to be in payload/
// after it is opened, so a pid reused meanwhile is never signalled; it lists
// again until no new process turns up, to catch children forked meanwhile.
// SIGKILL uses payload/cgroup.kill, which the kernel applies atomically.
// Without the layout (or without a cgroup) the manager does it: KillUnit
// with whom "all".
func killUnit(ctx context.Context, conn *units.Conn, name string, sig int) error {
	info, err := conn.Unit(ctx, name)
	if err != nil {
		return err
	}
	if info.ControlGroup == "" {
		return conn.Kill(ctx, name, units.KillAll, sig)
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return fmt.Errorf("find the cgroup v2 hierarchy: %w", err)
	}
	dir := delegate.ScopeDir(mount, info.ControlGroup)
	if !delegate.IsSandbox(dir) {
		return conn.Kill(ctx, name, units.KillAll, sig)
	}
	return signalPayload(delegate.PayloadDir(dir), sig)
}

// signalPayload sends sig to every process in the cgroup payload and below.
func signalPayload(payload string, sig int) error {
	if sig == int(unix.SIGKILL) {
		// Atomic, and a process forking meanwhile cannot escape it.
		if err := delegate.WriteSetting(payload, "cgroup.kill", "1"); err != nil {
			return fmt.Errorf("kill %s: %w", payload, err)
		}
		return nil
	}
	done := map[int]bool{}
	// A workload forking without end could keep the lists growing; after
	// maxKillRounds what is left was born after the signal was sent.
	for round := 0; round < maxKillRounds; round++ {
		pids, err := delegate.Procs(payload)
		if err != nil {
			return err
		}
		fresh := 0
		for _, pid := range pids {
			if done[pid] {
				continue
			}
			done[pid] = true
			fresh++
			if err := signalIn(pid, payload, sig); err != nil {
				return err
			}
		}
		if fresh == 0 {
			return nil
		}
	}
	return nil
}

const maxKillRounds = 16

// signalIn sends sig to pid if, once pinned by a pidfd, it is in the
// cgroup dir or below; a process that is gone or has left is skipped.
func signalIn(pid int, dir string, sig int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	own, err := cgv2.OfPid(strconv.Itoa(pid))
	if err != nil {
		return nil // it ended after the pidfd was opened
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(dir, filepath.Join(mount, own)); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil // a reused pid, or it moved out
	}
	if err := unix.PidfdSendSignal(fd, unix.Signal(sig), nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
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
