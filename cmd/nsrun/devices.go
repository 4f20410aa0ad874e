package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nsrun/nsrun/bpfdev"
	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// deviceOptions are the device flags of "nsrun run".
type deviceOptions struct {
	devices []string
	rules   []string
	sets    []string
	mode    string
}

func (o *deviceOptions) addFlags(f *pflag.FlagSet) {
	f.StringArrayVar(&o.devices, "device", nil, "allow a device node and make it present in the sandbox /dev: PATH[:rwm] (default access rw; repeatable)")
	f.StringArrayVar(&o.rules, "device-rule", nil, `allow devices by rule: "/dev/kvm rw", "char-pts rw", "block-loop r", "c 195:* rw", "b 7:0 r", "a *:* rwm" (repeatable)`)
	f.StringVar(&o.mode, "device-policy", "auto", "auto (closed once a device is asked for, else none), closed (pseudo devices + listed) or strict (only listed)")
	f.StringArrayVar(&o.sets, "device-set", nil, "allow a ready set of devices and their nodes: "+strings.Join(bpfdev.SetNames(), ", ")+" (repeatable)")
}

// policy resolves the device flags against this system: nil when nothing
// is asked for and the policy is auto. A path, group or set that does not
// resolve, or (unprivileged) a rule /dev cannot express, is a usage error.
func (o *deviceOptions) policy(unprivileged bool) (*bpfdev.Policy, error) {
	p, err := bpfdev.Spec{Mode: o.mode, Devices: o.devices, Rules: o.rules, Sets: o.sets}.Policy(unprivileged)
	if err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: err}
	}
	return p, nil
}

// devicesOptions are the flags of "nsrun devices".
type devicesOptions struct {
	system, user bool
	allow, deny  []string
	json         bool
}

func newDevicesCmd() *cobra.Command {
	o := &devicesOptions{}
	cmd := &cobra.Command{
		Use:   "devices UNIT [--allow=RULE]... [--deny=RULE]... [--json]",
		Short: "Show, or change live, the device policy in force on a sandbox",
		Long: `devices reads the device policy of UNIT's sandbox back from the kernel: the
rules of nsrun's device program on the sandbox cgroup, every other device
program in force on it (systemd's, from DevicePolicy=; a device must pass all
of them) and which mechanism enforces the policy.

--allow and --deny change the rules live (numeric form: "c 1:7 w",
"b 7:* r", "a *:* m"). Each change decides every device it names, later ones
win. The new rules replace the old ones at once: no open sees a mix of both.
Unprivileged sandboxes are enforced by their /dev holding only the allowed
nodes; those cannot change live.`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return o.run(ctx, cmd.OutOrStdout(), args[0])
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.system, "system", false, "the unit is the system manager's (default for root)")
	f.BoolVar(&o.user, "user", false, "the unit is your user manager's (default for other users)")
	f.StringArrayVar(&o.allow, "allow", nil, "allow devices live: a numeric rule (repeatable)")
	f.StringArrayVar(&o.deny, "deny", nil, "deny devices live: a numeric rule (repeatable)")
	f.BoolVar(&o.json, "json", false, "print JSON")
	cmd.MarkFlagsMutuallyExclusive("system", "user")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	return cmd
}

// devicesReport is what "nsrun devices" prints.
type devicesReport struct {
	Unit      string              `json:"unit"`
	Cgroup    string              `json:"cgroup"`
	Mechanism bpfdev.Mechanism    `json:"mechanism"`
	Why       string              `json:"why"`
	Program   *bpfdev.ProgramRef  `json:"program,omitempty"`
	Rules     []bpfdev.Entry      `json:"rules"`
	Path      []bpfdev.ProgramRef `json:"path"`
	InForce   []bpfdev.ProgramRef `json:"in_force"`
	Nodes     []bpfdev.Node       `json:"nodes,omitempty"`
}

func (o *devicesOptions) run(ctx context.Context, out io.Writer, arg string) error {
	unit, err := units.ScopeName(arg)
	if err != nil {
		return usageError("%v", err)
	}
	var ops []bpfdev.Op
	for _, list := range []struct {
		rules []string
		deny  bool
		flag  string
	}{{o.allow, false, "--allow"}, {o.deny, true, "--deny"}} {
		for _, r := range list.rules {
			op, err := bpfdev.ParseOp(r, list.deny)
			if err != nil {
				return usageError("%s: %v", list.flag, err)
			}
			ops = append(ops, op)
		}
	}
	manager := units.DefaultManager()
	switch {
	case o.system:
		manager = units.System
	case o.user:
		manager = units.User
	}
	dir, err := payloadDir(ctx, manager, unit)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	rep, err := inspectDevices(unit, dir, ops)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	if o.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printDevices(out, rep)
	return nil
}

// payloadDir finds the payload/ leaf of unit's cgroup: the manager's
// ControlGroup property below the cgroup v2 mount.
func payloadDir(ctx context.Context, m units.Manager, unit string) (string, error) {
	conn, err := units.Dial(ctx, m)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	cg, err := conn.ControlGroup(ctx, unit)
	if err != nil {
		return "", err
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return "", fmt.Errorf("find the cgroup v2 hierarchy: %w", err)
	}
	dir := filepath.Join(delegate.ScopeDir(mount, cg), "payload")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("%s has no sandbox cgroup: %w (was it started by nsrun?)", unit, err)
	}
	return dir, nil
}

func inspectDevices(unit, dir string, ops []bpfdev.Op) (*devicesReport, error) {
	rep := &devicesReport{Unit: unit, Cgroup: dir}
	if len(ops) > 0 {
		if _, err := bpfdev.Update(dir, ops); err != nil {
			if errors.Is(err, bpfdev.ErrPermission) {
				return nil, fmt.Errorf("%w (live changes need a device program; an unprivileged sandbox's devices are fixed by its /dev)", err)
			}
			return nil, err
		}
	}
	st, err := bpfdev.Inspect(dir)
	switch {
	case errors.Is(err, bpfdev.ErrPermission):
		// A user can neither load nor query device programs: an
		// unprivileged sandbox holds because its /dev has only the
		// allowed nodes and a user namespace cannot mknod.
		rep.Mechanism = bpfdev.MechanismDevNodes
		rep.Why = "the sandbox /dev holds only the allowed nodes and mknod is refused in a user namespace (device programs need privileges)"
		rep.Nodes, err = sandboxNodes(dir)
		if err != nil {
			return nil, err
		}
		return rep, nil
	case err != nil:
		return nil, err
	}
	rep.Mechanism, rep.Program, rep.Rules = st.Mechanism, st.Program, st.Rules
	rep.Path, rep.InForce = st.Path, st.Effective
	switch {
	case st.Mechanism == bpfdev.MechanismBPF:
		rep.Why = fmt.Sprintf("nsrun's device program %d on the sandbox cgroup, read back from the kernel", st.Program.ID)
	case len(st.Effective) > 0:
		rep.Why = "no device program of nsrun's; only the programs in force below restrict devices"
	default:
		rep.Why = "no device program is in force: every device node the sandbox can reach is usable"
	}
	return rep, nil
}

// sandboxNodes lists the device nodes of the sandbox's /dev, seen through
// /proc/PID/root of a process in the sandbox cgroup.
func sandboxNodes(dir string) ([]bpfdev.Node, error) {
	pid, err := firstPid(dir)
	if err != nil {
		return nil, err
	}
	return bpfdev.ListNodes("/proc/" + strconv.Itoa(pid) + "/root/dev")
}

func firstPid(dir string) (int, error) {
	var pid int
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || pid != 0 {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			pid, _ = strconv.Atoi(f[0])
		}
		return nil
	})
	if err != nil || pid == 0 {
		return 0, fmt.Errorf("no process in %s to read the sandbox /dev from", dir)
	}
	return pid, nil
}

func printDevices(out io.Writer, r *devicesReport) {
	fmt.Fprintf(out, "unit:      %s\ncgroup:    %s\nmechanism: %s (%s)\n", r.Unit, r.Cgroup, r.Mechanism, r.Why)
	if r.Mechanism == bpfdev.MechanismBPF {
		fmt.Fprintln(out, "rules (read from the kernel; most specific first, \"!\" denies):")
		if len(r.Rules) == 0 {
			fmt.Fprintln(out, "  (none: every device is denied)")
		}
		for _, e := range r.Rules {
			fmt.Fprintf(out, "  %s\n", e)
		}
	}
	if len(r.Nodes) > 0 {
		fmt.Fprintln(out, "device nodes in the sandbox /dev:")
		for _, n := range r.Nodes {
			fmt.Fprintf(out, "  %s %s %d:%d\n", n.Path, n.Type.Letter(), n.Major, n.Minor)
		}
	}
	if len(r.InForce) > 0 {
		fmt.Fprintln(out, "device programs in force (a device must pass all):")
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, p := range r.InForce {
			where := "above the visible cgroup root"
			for _, q := range r.Path {
				if q.ID == p.ID {
					where = q.Cgroup
				}
			}
			owner := p.Owner
			if owner == "" {
				owner = "-"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", p.ID, p.Name, owner, where)
		}
		tw.Flush()
	}
}
