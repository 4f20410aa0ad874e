package delegate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Delegation says whether a cgroup was delegated to this process by its
// manager, and if not, why not.
type Delegation struct {
	Dir       string
	Delegated bool
	Why       string // when not delegated
}

// DelegatedTo checks whether dir is a cgroup that a systemd manager
// delegated (a unit with Delegate=yes) to a process running as euid. systemd
// (since 251) marks such cgroups with the extended attribute
// "trusted.delegate" (readable by root only) and, since 252, "user.delegate";
// both hold "1". The directory and the files a delegatee writes must also
// belong to euid, as systemd hands them over with User=.
func DelegatedTo(dir string, euid int) Delegation {
	d := Delegation{Dir: dir}
	marked := false
	for _, attr := range []string{"user.delegate", "trusted.delegate"} {
		buf := make([]byte, 8)
		n, err := unix.Getxattr(dir, attr, buf)
		if err == nil && string(buf[:n]) == "1" {
			marked = true
			break
		}
	}
	if !marked {
		d.Why = "its manager did not mark it delegated (no user.delegate or trusted.delegate attribute: the unit lacks Delegate=yes)"
		return d
	}
	for _, name := range []string{"", "cgroup.procs", "cgroup.subtree_control"} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			d.Why = err.Error()
			return d
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			d.Why = "cannot read owner of " + p
			return d
		}
		if euid != 0 && int(st.Uid) != euid {
			d.Why = fmt.Sprintf("%s belongs to uid %d, not to uid %d", p, st.Uid, euid)
			return d
		}
	}
	d.Delegated = true
	return d
}

// ErrNotDelegated reports a cgroup nsrun was told to take over but that is
// not delegated to it.
var ErrNotDelegated = errors.New("cgroup not delegated")
