package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/units"
)

// earlyDial is the connection to the manager, made in the background as
// soon as the plan names the manager: on the private socket the
// authentication goes out at once (units.Conn.StartAuth), and systemd sets
// the connection up (1 to 2 ms before it answers OK) while nsrun clones the
// sandbox child and checks the limits; StartScope then writes only its
// call. Where nsrun will run in place (its cgroup is delegated to it) or
// may not make a scope (--scope=never), no connection is made.
type earlyDial struct {
	done chan struct{}
	conn *units.Conn
	err  error
}

func dialEarly(ctx context.Context, p *runPlan) *earlyDial {
	if p.scopeMode == "never" {
		return nil
	}
	d := &earlyDial{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		if p.scopeMode == "auto" && ownCgroupDelegated() {
			return // place runs in place
		}
		if d.conn, d.err = units.Dial(ctx, p.manager); d.err == nil {
			d.conn.StartAuth()
		}
	}()
	return d
}

// ownCgroupDelegated is place's test for running in place.
func ownCgroupDelegated() bool {
	mount, err := cgv2.Mount()
	if err != nil {
		return false
	}
	self, err := cgv2.Self()
	if err != nil {
		return false
	}
	return delegate.DelegatedTo(filepath.Join(mount, self), os.Geteuid()).Delegated
}

// get returns the connection made early, or dials now when there is none.
// The caller owns (and closes) it.
func (d *earlyDial) get(ctx context.Context, m units.Manager) (*units.Conn, error) {
	if d != nil {
		<-d.done
		conn, err := d.conn, d.err
		d.conn, d.err = nil, nil
		if conn != nil || err != nil {
			return conn, err
		}
	}
	return units.Dial(ctx, m)
}

// close closes a connection nobody took (nsrun ran in place, or failed
// before placing); nil is fine.
func (d *earlyDial) close() {
	if d == nil {
		return
	}
	<-d.done
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}
