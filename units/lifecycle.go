package units

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// DefaultStopTimeout bounds the wait for a stop job. systemd's own
// TimeoutStopSec defaults to 90 s before it escalates to SIGKILL, so the
// wait is longer than that.
const DefaultStopTimeout = 2 * time.Minute

// UnitInfo is what nsrun's lifecycle commands show about a unit: its
// states from the manager, and where its cgroup is. ControlGroup is the
// unit's ControlGroup property, relative to the cgroup v2 root the manager
// sees; it is empty when the unit has no cgroup (inactive).
type UnitInfo struct {
	Name         string
	Type         string // "scope" or "service"
	Description  string
	LoadState    string
	ActiveState  string
	SubState     string
	FreezerState string // "running", "freezing", "frozen", "thawing"
	Slice        string
	ControlGroup string
	Delegate     bool
}

// LifecycleName turns a UNIT argument of the lifecycle commands into a unit
// name: NAME or NAME.scope names a scope, NAME.service a service (what
// in-place mode runs in). Other unit types are refused, and the result must
// be a valid unit name.
func LifecycleName(arg string) (string, error) {
	if typ, ok := unitSuffix(arg); ok && typ == "service" {
		if err := ValidateUnitName(arg); err != nil {
			return "", err
		}
		return arg, nil
	}
	name, err := ScopeName(arg)
	if err != nil {
		return "", fmt.Errorf("%w (nsrun manages scopes and services)", err)
	}
	return name, nil
}

// lifecycleTypes are the unit types whose units can hold an nsrun sandbox.
var lifecycleTypes = []string{"scope", "service"}

// ListUnits lists the loaded scope and service units with their states,
// slice and cgroup. Units that vanish while the list is read are left out.
func (c *Conn) ListUnits(ctx context.Context) ([]UnitInfo, error) {
	patterns := make([]string, len(lifecycleTypes))
	for i, t := range lifecycleTypes {
		patterns[i] = "*." + t
	}
	sd, err := c.sdConn()
	if err != nil {
		return nil, fmt.Errorf("list units: %w", err)
	}
	all, err := sd.ListUnitsByPatternsContext(ctx, nil, patterns)
	if err != nil {
		return nil, fmt.Errorf("list units: %w", err)
	}
	out := make([]UnitInfo, 0, len(all))
	for _, s := range all {
		if s.LoadState == "not-found" {
			continue
		}
		u := UnitInfo{
			Name: s.Name, Description: s.Description,
			LoadState: s.LoadState, ActiveState: s.ActiveState, SubState: s.SubState,
		}
		u.Type, _ = unitSuffix(s.Name)
		if err := c.typeProperties(ctx, &u); err != nil {
			if errors.Is(err, ErrNoSuchUnit) {
				continue
			}
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// Unit reads what UnitInfo holds for one unit. A unit the manager has not
// loaded is an ErrNoSuchUnit. (Reading properties makes systemd load the
// unit's object for a moment; a unit that does not exist shows as
// LoadState "not-found" and is garbage-collected again.)
func (c *Conn) Unit(ctx context.Context, name string) (UnitInfo, error) {
	u := UnitInfo{Name: name}
	var ok bool
	if u.Type, ok = unitSuffix(name); !ok {
		return u, fmt.Errorf("read unit %s: %w", name, nameError(name, "no unit type suffix"))
	}
	sd, err := c.sdConn()
	if err != nil {
		return u, fmt.Errorf("read unit %s: %w", name, err)
	}
	props, err := sd.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return u, fmt.Errorf("read unit %s: %w", name, mapUnitError(err))
	}
	u.LoadState, _ = props["LoadState"].(string)
	if u.LoadState == "not-found" || u.LoadState == "" {
		return u, fmt.Errorf("read unit %s: %w", name, ErrNoSuchUnit)
	}
	u.Description, _ = props["Description"].(string)
	u.ActiveState, _ = props["ActiveState"].(string)
	u.SubState, _ = props["SubState"].(string)
	u.FreezerState, _ = props["FreezerState"].(string)
	if err := c.typeProperties(ctx, &u); err != nil {
		return u, err
	}
	return u, nil
}

// typeProperties fills Slice, ControlGroup and Delegate from the unit's
// type interface (org.freedesktop.systemd1.Scope or .Service), and
// FreezerState when it is still unknown.
func (c *Conn) typeProperties(ctx context.Context, u *UnitInfo) error {
	iface := strings.ToUpper(u.Type[:1]) + u.Type[1:]
	sd, err := c.sdConn()
	if err != nil {
		return fmt.Errorf("read %s properties of %s: %w", iface, u.Name, err)
	}
	props, err := sd.GetUnitTypePropertiesContext(ctx, u.Name, iface)
	if err != nil {
		return fmt.Errorf("read %s properties of %s: %w", iface, u.Name, mapUnitError(err))
	}
	u.Slice, _ = props["Slice"].(string)
	u.ControlGroup, _ = props["ControlGroup"].(string)
	u.Delegate, _ = props["Delegate"].(bool)
	if u.FreezerState == "" {
		p, err := sd.GetUnitPropertyContext(ctx, u.Name, "FreezerState")
		if err != nil {
			return fmt.Errorf("read FreezerState of %s: %w", u.Name, mapUnitError(err))
		}
		u.FreezerState, _ = p.Value.Value().(string)
	}
	return nil
}

// Stop stops a unit and waits for the job, like StartScope waits: the
// result must be "done" before the context ends (DefaultStopTimeout when
// the context has no deadline). A unit that is not loaded is an
// ErrNoSuchUnit.
func (c *Conn) Stop(ctx context.Context, name string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStopTimeout)
		defer cancel()
	}
	// Buffered: see StartScope.
	done := make(chan string, 1)
	sd, err := c.sdConn()
	if err != nil {
		return fmt.Errorf("stop unit %s: %w", name, err)
	}
	if _, err := sd.StopUnitContext(ctx, name, "replace", done); err != nil {
		return fmt.Errorf("stop unit %s: %w", name, mapUnitError(err))
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("stop unit %s: %w", name, &JobError{Unit: name, Result: result})
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop unit %s: wait for job: %w", name, ctx.Err())
	}
}

// Who selects the processes of a unit KillUnit signals.
type Who string

const (
	// KillAll signals every process in the unit's cgroup (systemctl kill's
	// default, --kill-whom=all).
	KillAll Who = "all"
	// KillMain signals the main process (services only).
	KillMain Who = "main"
)

// Kill sends signal sig to the processes of a unit that whom selects. It
// returns once the manager has sent it; it does not wait for the processes
// to react.
func (c *Conn) Kill(ctx context.Context, name string, whom Who, sig int) error {
	if sig <= 0 || sig > maxSignal {
		return fmt.Errorf("kill unit %s: signal %d out of range 1..%d", name, sig, maxSignal)
	}
	sd, err := c.sdConn()
	if err != nil {
		return fmt.Errorf("kill unit %s: %w", name, err)
	}
	if err := sd.KillUnitWithTarget(ctx, name, sdbus.Who(whom), int32(sig)); err != nil {
		return fmt.Errorf("kill unit %s: %w", name, mapUnitError(err))
	}
	return nil
}

// Freeze freezes every process of a unit (the cgroup v2 freezer, through
// the manager's FreezeUnit, systemd 246+). systemd answers once the cgroup
// reports frozen, so on return the unit's processes are stopped.
func (c *Conn) Freeze(ctx context.Context, name string) error {
	sd, err := c.sdConn()
	if err != nil {
		return fmt.Errorf("freeze unit %s: %w", name, err)
	}
	if err := sd.FreezeUnit(ctx, name); err != nil {
		return fmt.Errorf("freeze unit %s: %w", name, mapUnitError(err))
	}
	return nil
}

// Thaw resumes the processes of a frozen unit (ThawUnit).
func (c *Conn) Thaw(ctx context.Context, name string) error {
	sd, err := c.sdConn()
	if err != nil {
		return fmt.Errorf("thaw unit %s: %w", name, err)
	}
	if err := sd.ThawUnit(ctx, name); err != nil {
		return fmt.Errorf("thaw unit %s: %w", name, mapUnitError(err))
	}
	return nil
}

// maxSignal is the highest signal number (SIGRTMAX on Linux).
const maxSignal = 64

// rtmin is SIGRTMIN as glibc, and so systemctl, defines it: the kernel's
// first realtime signal is 32, and glibc keeps 32 and 33 for itself.
const rtmin = 34

// signalNames maps the names of signals 1..31 (without "SIG") to numbers,
// for x86-64 and the other architectures that share its numbering.
var signalNames = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
	"FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
	"TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
	"TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
	"IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}

// ParseSignal reads a signal the way systemctl's --signal does
// (signal_from_string in systemd's src/basic/signal-util.c): a name with or
// without "SIG" ("TERM", "SIGTERM"), "RTMIN+N" / "RTMAX-N", or a number
// 1..64. Names are case-sensitive, as in systemd.
func ParseSignal(s string) (int, error) {
	name := strings.TrimPrefix(s, "SIG")
	if n, ok := signalNames[name]; ok {
		return n, nil
	}
	rt := func(base int, off string, sign int) (int, error) {
		k, err := strconv.Atoi(off)
		if err != nil || k < 0 || k > maxSignal-rtmin {
			return 0, fmt.Errorf("invalid signal %q: offset must be 0..%d", s, maxSignal-rtmin)
		}
		return base + sign*k, nil
	}
	switch {
	case name == "RTMIN":
		return rtmin, nil
	case name == "RTMAX":
		return maxSignal, nil
	case strings.HasPrefix(name, "RTMIN+"):
		return rt(rtmin, name[len("RTMIN+"):], 1)
	case strings.HasPrefix(name, "RTMAX-"):
		return rt(maxSignal, name[len("RTMAX-"):], -1)
	}
	if n, err := strconv.Atoi(s); err == nil && s == strconv.Itoa(n) {
		if n < 1 || n > maxSignal {
			return 0, fmt.Errorf("invalid signal %q: number must be 1..%d", s, maxSignal)
		}
		return n, nil
	}
	return 0, fmt.Errorf("invalid signal %q: use a name like TERM or SIGTERM, RTMIN+N, or a number", s)
}

// D-Bus error names of systemd's manager that the lifecycle calls map.
const (
	dbusNoSuchUnit   = "org.freedesktop.systemd1.NoSuchUnit"
	dbusLoadFailed   = "org.freedesktop.systemd1.LoadFailed"
	dbusUnitInactive = "org.freedesktop.systemd1.UnitInactive"
	dbusNotSupported = "org.freedesktop.DBus.Error.NotSupported"
)

// mapUnitError turns the manager's D-Bus errors into the package's
// sentinels, keeping systemd's message.
func mapUnitError(err error) error {
	switch dbusErrorName(err) {
	case dbusNoSuchUnit, dbusLoadFailed:
		return fmt.Errorf("%w (%v)", ErrNoSuchUnit, err)
	case dbusUnitInactive:
		return fmt.Errorf("%w (%v)", ErrUnitInactive, err)
	case dbusNotSupported:
		return fmt.Errorf("%w (%v)", ErrNotSupported, err)
	}
	return err
}
