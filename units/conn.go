package units

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Manager selects a service manager: the system's, or the caller's own
// systemd --user.
type Manager int

const (
	System Manager = iota
	User
)

func (m Manager) String() string {
	if m == User {
		return "user"
	}
	return "system"
}

// DefaultManager is the system manager for root and the user manager for
// everybody else, as systemd-run chooses.
func DefaultManager() Manager {
	if os.Geteuid() == 0 {
		return System
	}
	return User
}

// Conn is a connection to one service manager. Make one per process with
// Dial and pass it explicitly; it is safe for concurrent use.
type Conn struct {
	sd      *sdbus.Conn
	manager Manager
	via     string
}

// Dial connects to the manager m. Like systemctl, it prefers the manager's
// private socket (/run/systemd/private for root, $XDG_RUNTIME_DIR/systemd/private
// for a user manager), which needs no D-Bus daemon, and falls back to the
// system or session bus.
func Dial(ctx context.Context, m Manager) (*Conn, error) {
	var candidates []string
	switch m {
	case System:
		if os.Geteuid() == 0 {
			candidates = append(candidates, "unix:path=/run/systemd/private")
		}
		addr := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
		if addr == "" {
			addr = "unix:path=/run/dbus/system_bus_socket"
		}
		candidates = append(candidates, "bus:"+addr)
	case User:
		rt := os.Getenv("XDG_RUNTIME_DIR")
		if rt == "" {
			return nil, fmt.Errorf("connect to user manager: %w ($XDG_RUNTIME_DIR is not set: log in through a session that has a user manager, or use --system as root)", ErrNoManager)
		}
		candidates = append(candidates, "unix:path="+filepath.Join(rt, "systemd/private"))
		if addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); addr != "" {
			candidates = append(candidates, "bus:"+addr)
		} else {
			candidates = append(candidates, "bus:unix:path="+filepath.Join(rt, "bus"))
		}
	default:
		return nil, fmt.Errorf("connect: unknown manager %d", m)
	}
	var errs []error
	for _, c := range candidates {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		addr, bus := c, false
		if a, ok := strings.CutPrefix(c, "bus:"); ok {
			addr, bus = a, true
		}
		// go-systemd asks for two connections (calls; signals). One does
		// both: godbus routes replies and signals apart, and each
		// connection costs a socket and four authentication round trips.
		var conn *godbus.Conn
		sd, err := sdbus.NewConnection(func() (*godbus.Conn, error) {
			if conn != nil {
				return conn, nil
			}
			c, err := dialAuth(addr, bus)
			conn = c
			return c, err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		return &Conn{sd: sd, manager: m, via: addr}, nil
	}
	hint := ""
	if m == User {
		hint = fmt.Sprintf(" (is systemd --user running for uid %d? A login session starts it, or loginctl enable-linger; the session bus needs the dbus-user-session package)", os.Getuid())
	} else {
		hint = " (is systemd the service manager here? The system bus needs the dbus package)"
	}
	return nil, fmt.Errorf("connect to %s manager: %w%s: %w", m, ErrNoManager, hint, errors.Join(errs...))
}

// dialAuth opens one authenticated connection. The connection is not bound
// to a caller's context: godbus closes a connection when its context ends.
func dialAuth(addr string, bus bool) (*godbus.Conn, error) {
	conn, err := godbus.Dial(addr)
	if err != nil {
		return nil, err
	}
	// EXTERNAL with the numeric uid: no user name lookup needed.
	if err := conn.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		conn.Close()
		return nil, err
	}
	if bus {
		if err := conn.Hello(); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// redial replaces c's connection with a new one to the same manager, after
// the old one dropped.
func (c *Conn) redial(ctx context.Context) error {
	n, err := Dial(ctx, c.manager)
	if err != nil {
		return err
	}
	c.sd.Close()
	c.sd, c.via = n.sd, n.via
	return nil
}

// Manager says which manager c talks to.
func (c *Conn) Manager() Manager { return c.manager }

// Address is the socket c is connected through.
func (c *Conn) Address() string { return c.via }

// Close closes the connection.
func (c *Conn) Close() { c.sd.Close() }
