package main

import (
	"fmt"
	"math"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// processOptions are the flags that shape the workload's process.
type processOptions struct {
	setenv      []string
	chdir       string
	pty         bool
	uid, gid    string
	preserveFDs int
}

// processPlan is what processOptions resolve to.
type processPlan struct {
	env         []string
	setByUser   map[string]bool // names given with -E
	dir         string
	cred        *syscall.Credential
	home, name  string // of --uid's user, for HOME, USER, LOGNAME
	pty         bool
	extraFiles  []*os.File // fds 3..3+N-1, in order
	preserveFDs int
}

func (o *processOptions) plan() (*processPlan, error) {
	pp := &processPlan{pty: o.pty, setByUser: map[string]bool{}, preserveFDs: o.preserveFDs}
	env := os.Environ()
	for _, a := range o.setenv {
		name, value, hasValue := strings.Cut(a, "=")
		if name == "" || strings.ContainsAny(name, "\x00") || strings.ContainsAny(value, "\x00") {
			return nil, usageError("-E %q: expected NAME=VALUE or NAME", a)
		}
		if !hasValue {
			v, ok := os.LookupEnv(name)
			if !ok {
				return nil, usageError("-E %s: %s is not set in nsrun's environment (give NAME=VALUE)", a, name)
			}
			value = v
		}
		env = setEnv(env, name, value)
		pp.setByUser[name] = true
	}
	if o.chdir != "" {
		if !strings.HasPrefix(o.chdir, "/") {
			return nil, usageError("--chdir %s: must be an absolute path", o.chdir)
		}
		pp.dir = o.chdir
	}
	if o.uid != "" || o.gid != "" {
		if os.Geteuid() != 0 {
			return nil, usageError("--uid and --gid need root (an unprivileged user can use --map-user inside a user namespace)")
		}
		cred := &syscall.Credential{Uid: 0, Gid: 0}
		if o.uid != "" {
			u, err := lookupUser(o.uid)
			if err != nil {
				return nil, usageError("--uid %s: %v", o.uid, err)
			}
			uid, _ := strconv.ParseUint(u.Uid, 10, 32)
			gid, _ := strconv.ParseUint(u.Gid, 10, 32)
			cred.Uid, cred.Gid = uint32(uid), uint32(gid)
			if groups, err := u.GroupIds(); err == nil {
				for _, g := range groups {
					if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != cred.Gid {
						cred.Groups = append(cred.Groups, uint32(n))
					}
				}
			}
			pp.home, pp.name = u.HomeDir, u.Username
		}
		if o.gid != "" {
			g, err := lookupGroup(o.gid)
			if err != nil {
				return nil, usageError("--gid %s: %v", o.gid, err)
			}
			gid, _ := strconv.ParseUint(g, 10, 32)
			cred.Gid = uint32(gid)
		}
		if cred.Groups == nil {
			cred.Groups = []uint32{} // drop root's supplementary groups
		}
		pp.cred = cred
		for k, v := range map[string]string{"HOME": pp.home, "USER": pp.name, "LOGNAME": pp.name} {
			if v != "" && !pp.setByUser[k] {
				env = setEnv(env, k, v)
			}
		}
	}
	pp.env = env
	if o.preserveFDs < 0 || o.preserveFDs > 1<<16 {
		return nil, usageError("--preserve-fds %d: out of range", o.preserveFDs)
	}
	for fd := 3; fd < 3+o.preserveFDs; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, usageError("--preserve-fds %d: fd %d is not open", o.preserveFDs, fd)
		}
	}
	return pp, nil
}

// closeInherited marks every inherited fd from 3+keep on close-on-exec, so
// that only 0, 1, 2 and the preserved ones reach the workload (Go opens its
// own fds close-on-exec; an inherited fd is not).
func closeInherited(keep int) error {
	return unix.CloseRange(uint(3+keep), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
}

// takePreserved wraps fds 3..3+n-1 for exec.Cmd.ExtraFiles. It runs after
// closeInherited and before nsrun opens anything, so the numbers are still
// the caller's.
func takePreserved(n int) []*os.File {
	files := make([]*os.File, n)
	for i := range files {
		files[i] = os.NewFile(uintptr(3+i), "preserved fd "+strconv.Itoa(3+i))
	}
	return files
}

func setEnv(env []string, name, value string) []string {
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	return append(env, name+"="+value)
}

// managerVariables are set by service managers and D-Bus for the process
// they started; a sandboxed workload must not inherit them (they name
// sockets outside the sandbox) unless the user passes them with -E.
func isManagerVariable(kv string) bool {
	name, _, _ := strings.Cut(kv, "=")
	switch name {
	case "NOTIFY_SOCKET", "MAINPID", "MANAGERPID", "INVOCATION_ID", "JOURNAL_STREAM",
		"SYSTEMD_EXEC_PID", "WATCHDOG_PID", "WATCHDOG_USEC", "XDG_RUNTIME_DIR", "SSH_AUTH_SOCK":
		return true
	}
	return strings.HasPrefix(name, "DBUS_") || strings.HasPrefix(name, "LISTEN_")
}

// sandboxEnv is env without the manager variables, except those set by -E.
func (pp *processPlan) sandboxEnv() []string {
	return slices.DeleteFunc(slices.Clone(pp.env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return isManagerVariable(kv) && !pp.setByUser[name]
	})
}

func lookupUser(s string) (*user.User, error) {
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		if u, err := user.LookupId(s); err == nil {
			return u, nil
		}
		// A uid with no passwd entry is still a uid.
		return &user.User{Uid: s, Gid: s}, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return nil, fmt.Errorf("no such user")
	}
	return u, nil
}

func lookupGroup(s string) (string, error) {
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		return s, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return "", fmt.Errorf("no such group")
	}
	return g.Gid, nil
}
