package box

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// User is an unprivileged account inside the box. Accounts are created in the
// box's overlay of /etc and its tmpfs /home: the host's /etc/passwd and /home
// never change.
type User struct {
	Name string
	UID  int
	GID  int
	Home string
}

// RuntimeDir is the user's XDG_RUNTIME_DIR in the box.
func (u User) RuntimeDir() string { return "/run/user/" + strconv.Itoa(u.UID) }

// EnsureUser returns the box account name, creating it (with subordinate id
// ranges in /etc/subuid and /etc/subgid, as useradd does on Debian) when it
// does not exist yet.
func (b *Box) EnsureUser(ctx context.Context, name string) (User, error) {
	if _, err := b.Run(ctx, "id", "-u", name); err != nil {
		if _, err := b.Run(ctx, "useradd", "--no-log-init", "--create-home", "--user-group", "--shell", "/bin/sh", name); err != nil {
			return User{}, fmt.Errorf("create user %s: %w", name, err)
		}
	}
	out, err := b.Run(ctx, "getent", "passwd", name)
	if err != nil {
		return User{}, fmt.Errorf("look up user %s: %w", name, err)
	}
	f := strings.Split(strings.TrimSpace(out), ":")
	if len(f) < 7 {
		return User{}, fmt.Errorf("look up user %s: malformed passwd entry %q", name, out)
	}
	u := User{Name: name, Home: f[5]}
	if u.UID, err = strconv.Atoi(f[2]); err != nil {
		return User{}, fmt.Errorf("look up user %s: %w", name, err)
	}
	if u.GID, err = strconv.Atoi(f[3]); err != nil {
		return User{}, fmt.Errorf("look up user %s: %w", name, err)
	}
	return u, nil
}

// StartUserManager starts user@UID.service for u and waits until the user
// manager answers on its private socket.
func (b *Box) StartUserManager(ctx context.Context, u User) error {
	unit := fmt.Sprintf("user@%d.service", u.UID)
	if _, err := b.Run(ctx, "systemctl", "start", unit); err != nil {
		status, _ := b.Run(ctx, "systemctl", "status", "--no-pager", unit)
		return fmt.Errorf("start %s: %w\n%s", unit, err, status)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := run(b.CommandAs(ctx, u, "systemctl", "--user", "is-system-running"))
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("user manager %s not ready: %w", unit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CommandAs prepares a command that runs in the box as u, with the
// environment a login session would give it (XDG_RUNTIME_DIR and the session
// bus of u's user manager).
func (b *Box) CommandAs(ctx context.Context, u User, name string, args ...string) *exec.Cmd {
	priv := []string{setprivPath, "--reuid=" + strconv.Itoa(u.UID), "--regid=" + strconv.Itoa(u.GID), "--init-groups", "--", name}
	cmd := b.Command(ctx, priv[0], append(priv[1:], args...)...)
	cmd.Env = []string{
		"PATH=" + boxPath, "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=",
		"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name,
		"XDG_RUNTIME_DIR=" + u.RuntimeDir(),
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + u.RuntimeDir() + "/bus",
	}
	return cmd
}

// RunAs runs a command as u in the box and returns its standard output.
func (b *Box) RunAs(ctx context.Context, u User, name string, args ...string) (string, error) {
	return run(b.CommandAs(ctx, u, name, args...))
}

// SystemdVersion is the version the box's running manager reports.
func (b *Box) SystemdVersion(ctx context.Context) (string, error) {
	out, err := b.Run(ctx, "systemctl", "show", "--property=Version", "--value")
	return strings.TrimSpace(out), err
}

// Controllers are the cgroup v2 controllers available to the box (on a
// hybrid host, usually none: the memory, cpu, pids and io controllers are
// bound to v1 hierarchies).
func (b *Box) Controllers() ([]string, error) {
	data, err := readFile(b.cgroup + "/cgroup.controllers")
	if err != nil {
		return nil, err
	}
	return strings.Fields(data), nil
}
