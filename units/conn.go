package units

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

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
//
// On a private socket Dial only connects: StartScope takes that socket for
// its own lean exchange (see wire.go), and any other call first opens a
// go-systemd connection to the same socket. On a bus go-systemd serves
// every call.
type Conn struct {
	manager Manager

	mu     sync.Mutex
	raw    net.Conn    // private socket, connected; nil once taken
	authed bool        // raw's authentication was sent (StartAuth)
	sd     *sdbus.Conn // nil until a call needs it
	via    string      // the D-Bus address
	bus    bool        // via is a bus (dbus-daemon), not a manager's private socket
	closed bool
}

// Dial connects to the manager m. Like systemctl, it prefers the manager's
// private socket (/run/systemd/private for root, $XDG_RUNTIME_DIR/systemd/private
// for a user manager), which needs no D-Bus daemon, and falls back to the
// system or session bus. On the private socket it does not authenticate
// yet (see Conn).
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
		if addr, ok := strings.CutPrefix(c, "bus:"); ok {
			sd, err := dialSD(addr, true)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				continue
			}
			return &Conn{manager: m, sd: sd, via: addr, bus: true}, nil
		}
		// A private socket: connecting tells whether the manager listens
		// (the socket is the manager's own, 0600 for root's).
		var d net.Dialer
		raw, err := d.DialContext(ctx, "unix", strings.TrimPrefix(c, "unix:path="))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c, err))
			continue
		}
		return &Conn{manager: m, raw: raw, via: c}, nil
	}
	hint := ""
	if m == User {
		hint = fmt.Sprintf(" (is systemd --user running for uid %d? A login session starts it, or loginctl enable-linger; the session bus needs the dbus-user-session package)", os.Getuid())
	} else {
		hint = " (is systemd the service manager here? The system bus needs the dbus package)"
	}
	return nil, fmt.Errorf("connect to %s manager: %w%s: %w", m, ErrNoManager, hint, errors.Join(errs...))
}

// dialSD opens a go-systemd connection on addr. go-systemd asks for two
// connections (calls; signals). One does both: godbus routes replies and
// signals apart, and each connection costs a socket and four
// authentication round trips.
func dialSD(addr string, bus bool) (*sdbus.Conn, error) {
	var conn *godbus.Conn
	return sdbus.NewConnection(func() (*godbus.Conn, error) {
		if conn != nil {
			return conn, nil
		}
		c, err := dialAuth(addr, bus)
		conn = c
		return c, err
	})
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

// sdConn returns c's go-systemd connection, opening it on first need. On a
// private socket the connected, unused socket Dial made is closed rather
// than handed to godbus (godbus reads a socket it did not dial a byte at a
// time); a second connect costs tens of microseconds.
func (c *Conn) sdConn() (*sdbus.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sd != nil {
		return c.sd, nil
	}
	if c.closed {
		return nil, fmt.Errorf("connect to %s manager: %s: %w", c.manager, c.via, net.ErrClosed)
	}
	if c.raw != nil {
		c.raw.Close()
		c.raw, c.authed = nil, false
	}
	sd, err := dialSD(c.via, c.bus)
	if err != nil {
		return nil, fmt.Errorf("connect to %s manager: %s: %w", c.manager, c.via, err)
	}
	c.sd = sd
	return sd, nil
}

// takeRaw hands the private socket Dial connected to the caller, once,
// and says whether its authentication was sent already.
func (c *Conn) takeRaw() (net.Conn, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	raw, authed := c.raw, c.authed
	c.raw, c.authed = nil, false
	return raw, c.via, authed
}

// StartAuth sends the authentication on a private-socket connection now,
// so that the manager sets the connection up (it answers OK 1 to 2 ms
// after it reads the authentication) while the caller does other work;
// StartScope then sends only its call. It does nothing on a bus or once
// the socket is taken. A failed write is not reported here: the socket is
// broken, and StartScope finds it so and dials again.
func (c *Conn) StartAuth() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.raw == nil || c.authed {
		return
	}
	if _, err := c.raw.Write(authPreamble(os.Getuid())); err == nil {
		c.authed = true
	}
}

// redial replaces c's connection with a new one to the same manager, after
// the old one dropped.
func (c *Conn) redial(ctx context.Context) error {
	n, err := Dial(ctx, c.manager)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
	c.raw, c.sd, c.via, c.bus, c.authed = n.raw, n.sd, n.via, n.bus, false
	return nil
}

// connected tells whether c's go-systemd connection is open.
func (c *Conn) connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sd != nil && c.sd.Connected()
}

// Manager says which manager c talks to.
func (c *Conn) Manager() Manager { return c.manager }

// Address is the socket c is connected through.
func (c *Conn) Address() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.via
}

// Close closes the connection.
func (c *Conn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.closeLocked()
}

func (c *Conn) closeLocked() {
	if c.raw != nil {
		c.raw.Close()
		c.raw, c.authed = nil, false
	}
	if c.sd != nil {
		c.sd.Close()
		c.sd = nil
	}
}
