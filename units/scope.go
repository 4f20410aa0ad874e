package units

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nsrun/nsrun/internal/cgv2"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// DefaultJobTimeout bounds the wait for systemd to finish starting a scope.
const DefaultJobTimeout = 30 * time.Second

// ScopeSpec describes a transient scope. Name and Slice are full, validated
// unit names (see ScopeName and SliceName).
type ScopeSpec struct {
	Name        string
	Slice       string // empty: the manager's default slice
	Description string
	PIDs        []int      // processes to move into the scope, e.g. os.Getpid()
	Properties  []Property // resource and other properties, as ParseProperty makes them
	JobTimeout  time.Duration
}

// ScopeProperties builds the property list StartTransientUnit gets for spec:
// Delegate=yes and CollectMode=inactive-or-failed (so a failed scope never
// lingers), the spec's own values, then the caller's properties. A caller's
// assignment replaces an earlier one of the same name (systemd keeps the
// last), except for list properties, where every assignment adds an entry.
// Delegation cannot be turned off and PIDs cannot be set: nsrun's guarantees
// rest on both.
func ScopeProperties(spec ScopeSpec) ([]Property, error) {
	props := []Property{
		{Name: "Delegate", Value: godbus.MakeVariant(true)},
		{Name: "CollectMode", Value: godbus.MakeVariant("inactive-or-failed")},
	}
	if spec.Description != "" {
		props = append(props, sdbus.PropDescription(spec.Description))
	}
	if spec.Slice != "" {
		props = append(props, sdbus.PropSlice(spec.Slice))
	}
	if len(spec.PIDs) > 0 {
		pids := make([]uint32, len(spec.PIDs))
		for i, p := range spec.PIDs {
			pids[i] = uint32(p)
		}
		props = append(props, sdbus.PropPids(pids...))
	}
	for _, p := range spec.Properties {
		switch p.Name {
		case "PIDs":
			return nil, fmt.Errorf("property PIDs cannot be set: nsrun places its own process in the scope")
		case "Delegate":
			if on, _ := p.Value.Value().(bool); !on {
				return nil, fmt.Errorf("property Delegate=no cannot be set: nsrun needs the scope's cgroup delegated")
			}
			continue // already on
		}
		if !appendable(p.Name) {
			props = slices.DeleteFunc(props, func(q Property) bool { return q.Name == p.Name })
		}
		props = append(props, p)
	}
	return props, nil
}

// StartScope asks the manager for a transient scope and waits for the job.
// The job must finish with result "done"; otherwise the unit's failed state
// is reset and a *JobError returned. A unit that already exists is an error
// (ErrUnitExists): it is never adopted.
//
// On a private socket the call and the wait go over the socket Dial
// connected, with the lean exchange of wire.go; on a bus, through
// go-systemd. A connection that drops (a daemon-reexec closes every
// connection to the manager) is made again: if the manager had answered
// the call, or the caller already sits in the unit, the unit's state says
// how the job ended; otherwise the call is sent again.
func (c *Conn) StartScope(ctx context.Context, spec ScopeSpec) error {
	props, err := ScopeProperties(spec)
	if err != nil {
		return err
	}
	timeout := spec.JobTimeout
	if timeout == 0 {
		timeout = DefaultJobTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var result string
		if raw, via, authed := c.takeRaw(); raw != nil {
			w := &wire{conn: raw, r: bufio.NewReaderSize(newQuietReader(raw), 16<<10), via: via, authSent: authed}
			result, err = w.startTransientUnit(ctx, spec.Name, "fail", props)
			raw.Close() // nothing more to read: the job is done
		} else {
			result, err = c.startScopeSD(ctx, spec.Name, props)
		}
		var dropped *droppedError
		switch {
		case err == nil && result == "done":
			return nil
		case err == nil:
			c.resetFailed(ctx, spec.Name)
			return fmt.Errorf("start unit %s: %w", spec.Name, &JobError{Unit: spec.Name, Result: result})
		case dbusErrorName(err) == dbusUnitExists:
			return fmt.Errorf("start unit %s: %w", spec.Name, ErrUnitExists)
		case ctx.Err() != nil:
			return c.jobTimedOut(ctx, spec.Name)
		case !errors.As(err, &dropped):
			return fmt.Errorf("start unit %s: %w", spec.Name, err)
		case dropped.replied:
			return c.afterDisconnect(ctx, spec.Name)
		}
		// The connection dropped around the call: systemd may or may not
		// have made the unit. With PIDs set to the caller, the caller's own
		// cgroup tells: inside the unit, it was made (wait for its job);
		// elsewhere, it was not (ask again, on a new connection).
		if err := c.redialUntil(ctx, spec.Name); err != nil {
			return err
		}
		if in, _ := selfInUnit(spec); in {
			return c.afterDisconnect(ctx, spec.Name)
		}
	}
}

// startScopeSD is StartScope's call and wait through go-systemd (on a
// bus). It returns the job's result, or a *droppedError when the
// connection drops before the result is in.
func (c *Conn) startScopeSD(ctx context.Context, name string, props []Property) (string, error) {
	sd, err := c.sdConn()
	if err != nil {
		return "", err
	}
	// Buffered: go-systemd delivers the result while holding its job lock, so
	// an unbuffered channel nobody reads any more (timeout) would wedge it.
	done := make(chan string, 1)
	if _, err := sd.StartTransientUnitContext(ctx, name, "fail", props, done); err != nil {
		if ctx.Err() == nil && c.dropped(err) {
			return "", &droppedError{err: err}
		}
		return "", err
	}
	// The connection can drop while the job runs: then the result never
	// arrives on done, and the unit's state says how the job ended.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for sd.Connected() {
		select {
		case result := <-done:
			return result, nil
		case <-tick.C:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "", &droppedError{replied: true, err: godbus.ErrClosed}
}

// afterDisconnect reconnects to the manager and waits until the unit whose
// start job was running is active (the job succeeded) or not (it failed).
func (c *Conn) afterDisconnect(ctx context.Context, unit string) error {
	for {
		sd, err := c.sdConn()
		var p map[string]any
		if err == nil {
			p, err = sd.GetUnitPropertiesContext(ctx, unit)
		}
		if err != nil && (sd == nil || c.dropped(err)) && ctx.Err() == nil {
			// The manager re-executes (reexecs can come back to back):
			// reconnect and ask again, within ctx.
			if err := c.redialUntil(ctx, unit); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return c.jobTimedOut(ctx, unit)
			}
			return fmt.Errorf("start unit %s: after reconnecting: %w", unit, err)
		}
		active, _ := p["ActiveState"].(string)
		job, _ := p["Job"].([]any)
		pending := len(job) == 2 && job[0] != uint32(0)
		switch {
		case active == "active" && !pending:
			return nil
		case (active == "failed" || active == "inactive") && !pending:
			c.resetFailed(ctx, unit)
			return fmt.Errorf("start unit %s: %w", unit, &JobError{Unit: unit, Result: "failed (" + active + " after the connection dropped)"})
		}
		select {
		case <-ctx.Done():
			return c.jobTimedOut(ctx, unit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// resetFailed clears a unit's failed state, best effort: a scope whose
// start failed is left for nobody to inspect.
func (c *Conn) resetFailed(ctx context.Context, unit string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if sd, err := c.sdConn(); err == nil {
		_ = sd.ResetFailedUnitContext(ctx, unit)
	}
}

// jobTimedOut gives up waiting for a start job. No StopUnit here: the
// scope may already hold the caller (PIDs), and stopping it would kill the
// caller before it can report. A scope left empty is stopped and collected
// by systemd (CollectMode).
func (c *Conn) jobTimedOut(ctx context.Context, unit string) error {
	c.resetFailed(ctx, unit)
	return fmt.Errorf("start unit %s: wait for job: %w", unit, ctx.Err())
}

// redialUntil reconnects, trying again while the manager comes back (a
// re-executing manager takes a moment to listen again).
func (c *Conn) redialUntil(ctx context.Context, unit string) error {
	for {
		err := c.redial(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start unit %s: the connection to the manager dropped, and reconnecting failed: %w", unit, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dropped tells whether err means the connection went away (rather than
// an answer from the manager).
func (c *Conn) dropped(err error) bool {
	switch dbusErrorName(err) {
	case "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected":
		return true
	}
	return !c.connected()
}

// selfInUnit tells whether the calling process already sits in spec's
// unit (which it does once systemd made a scope with PIDs=[caller]).
func selfInUnit(spec ScopeSpec) (bool, error) {
	if !slices.Contains(spec.PIDs, os.Getpid()) {
		return false, nil
	}
	cg, err := cgv2.Self()
	if err != nil {
		return false, err
	}
	return strings.HasSuffix(cg, "/"+spec.Name) || strings.Contains(cg, "/"+spec.Name+"/"), nil
}

// ControlGroup returns the cgroup path systemd assigned to a scope, relative
// to the cgroup v2 root the manager sees. A dropped connection is made
// again once.
func (c *Conn) ControlGroup(ctx context.Context, scope string) (string, error) {
	var p *sdbus.Property
	sd, err := c.sdConn()
	if err == nil {
		p, err = sd.GetUnitTypePropertyContext(ctx, scope, "Scope", "ControlGroup")
	}
	if err != nil && (sd == nil || c.dropped(err)) && c.redialUntil(ctx, scope) == nil {
		if sd, err = c.sdConn(); err == nil {
			p, err = sd.GetUnitTypePropertyContext(ctx, scope, "Scope", "ControlGroup")
		}
	}
	if err != nil {
		return "", fmt.Errorf("read ControlGroup of %s: %w", scope, err)
	}
	cg, ok := p.Value.Value().(string)
	if !ok || cg == "" {
		return "", fmt.Errorf("read ControlGroup of %s: unit has no cgroup", scope)
	}
	return cg, nil
}

// appendable properties are lists: every assignment adds an entry.
func appendable(name string) bool {
	switch name {
	case "DeviceAllow", "IOReadBandwidthMax", "IOWriteBandwidthMax", "IOReadIOPSMax",
		"IOWriteIOPSMax", "IODeviceWeight", "IODeviceLatencyTargetUSec",
		"BlockIOReadBandwidth", "BlockIOWriteBandwidth", "BlockIODeviceWeight",
		"After", "Before", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Conflicts",
		"DisableControllers":
		return true
	}
	return false
}

// AttachProcesses moves pids into unit's cgroup, or into subcgroup below it
// (a path such as "/supervisor"; "" for the unit's own). A user manager
// that may not move a process itself asks the system manager (systemd 238
// and later), so this works for a caller outside the user's own subtree.
func (c *Conn) AttachProcesses(ctx context.Context, unit, subcgroup string, pids []int) error {
	u := make([]uint32, len(pids))
	for i, p := range pids {
		u[i] = uint32(p)
	}
	sd, err := c.sdConn()
	if err != nil {
		return fmt.Errorf("attach processes to %s: %w", unit, err)
	}
	if err := sd.AttachProcessesToUnit(ctx, unit, subcgroup, u); err != nil {
		return fmt.Errorf("attach processes to %s: %w", unit, err)
	}
	return nil
}

// OwnScopeCgroup returns the calling process's cgroup, relative to the
// cgroup v2 root as the caller sees it, when that cgroup is the scope's
// own: StartScope with PIDs=[caller] moves the caller there before the job
// ends. It returns "" when the caller sits elsewhere (then ControlGroup
// asks the manager). Reading /proc/self/cgroup saves a round trip.
func OwnScopeCgroup(scope string) (string, error) {
	cg, err := cgv2.Self()
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(cg, "/"+scope) {
		return "", nil
	}
	return cg, nil
}
