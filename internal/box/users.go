package box

import (
	"context"
	"fmt"
	"os"
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
// does not exist yet. useradd picks the uid: the first free one from 1000,
// the same in every box, so the accounts of boxes running side by side share
// a host uid (the box has no user namespace).
func (b *Box) EnsureUser(ctx context.Context, name string) (User, error) {
	return b.ensureUser(ctx, name, -1)
}

// EnsureUserID is EnsureUser with the uid (and, when free, the gid) given:
// for a test that needs a uid no other box uses, such as one counting the
// host-wide per-uid RLIMIT_NPROC. An existing account must have that uid.
func (b *Box) EnsureUserID(ctx context.Context, name string, uid int) (User, error) {
	if uid <= 0 || uid >= 1<<32-1 {
		return User{}, fmt.Errorf("create user %s: uid %d out of range", name, uid)
	}
	u, err := b.ensureUser(ctx, name, uid)
	if err == nil && u.UID != uid {
		return User{}, fmt.Errorf("create user %s: it exists with uid %d, not %d", name, u.UID, uid)
	}
	return u, err
}

// OwnerUID is a uid for EnsureUserID that no other test process's box uses
// while this process lives: 2,000,000,000 plus this process's pid. It lies
// above the subordinate id ranges useradd hands out (SUB_UID_MAX is
// 600,100,000) and outside the ranges systemd 252 gives a meaning (container
// ranges end at 1,879,048,191; DynamicUser= is 61184-65519), and pid_max is
// at most 2^22, so it stays below 2^31.
func OwnerUID() int { return 2_000_000_000 + os.Getpid() }

func (b *Box) ensureUser(ctx context.Context, name string, uid int) (User, error) {
	if _, err := b.Run(ctx, "id", "-u", name); err != nil {
		args := []string{"--no-log-init", "--create-home", "--user-group", "--shell", "/bin/sh"}
		if uid >= 0 {
			args = append(args, "--uid", strconv.Itoa(uid))
		}
		if _, err := b.Run(ctx, "useradd", append(args, name)...); err != nil {
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

// StopUserManager stops user@UID.service for u and the user's runtime
// directory (systemctl stop waits for the jobs to end).
func (b *Box) StopUserManager(ctx context.Context, u User) error {
	unit := fmt.Sprintf("user@%d.service", u.UID)
	if _, err := b.Run(ctx, "systemctl", "stop", unit, fmt.Sprintf("user-runtime-dir@%d.service", u.UID)); err != nil {
		return fmt.Errorf("stop %s: %w", unit, err)
	}
	return nil
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
