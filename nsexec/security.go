package nsexec

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"github.com/moby/sys/capability"
	"golang.org/x/sys/unix"
)

// capByName resolves "net_admin", "NET_ADMIN" or "CAP_NET_ADMIN".
func capByName(name string) (capability.Cap, error) {
	n := strings.TrimPrefix(strings.ToLower(name), "cap_")
	for _, c := range capability.ListKnown() {
		if c.String() == n {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q", name)
}

func lastCap() (capability.Cap, error) { return capability.LastCap() }

// applySecurity sets, on the calling (locked) thread, which then execs or
// forks the workload: ids (setgroups, setresgid, setresuid), the
// capability sets (bounding, permitted, effective, inheritable, ambient)
// reduced to spec.Caps, no_new_privs, and the seccomp filter. All are
// per-thread in the kernel, and execve takes the calling thread's.
func applySecurity(s *Spec) error {
	keep := make([]capability.Cap, 0, len(s.Caps))
	for _, n := range s.Caps {
		c, err := capByName(n)
		if err != nil {
			return childErr("capabilities", err)
		}
		keep = append(keep, c)
	}
	caps, err := capability.NewPid2(0)
	if err != nil {
		return childErr("capabilities", err)
	}
	if err := caps.Load(); err != nil {
		return childErr("read capabilities", err)
	}
	// The bounding set first, while CAP_SETPCAP is still effective.
	caps.Clear(capability.BOUNDING)
	caps.Set(capability.BOUNDING, keep...)
	if err := caps.Apply(capability.BOUNDS); err != nil {
		return childErr("drop capabilities from the bounding set", err)
	}
	if err := setIDs(s); err != nil {
		return err
	}
	caps.Clear(capability.CAPS | capability.AMBIENT)
	caps.Set(capability.PERMITTED|capability.EFFECTIVE|capability.INHERITABLE, keep...)
	if uid := currentUID(); uid != 0 {
		// A non-root workload keeps requested capabilities across execve
		// only through the ambient set.
		caps.Set(capability.AMBIENT, keep...)
	}
	if err := caps.Apply(capability.CAPS | capability.AMBS); err != nil {
		return childErr("set capabilities", err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return childErr("clear keepcaps", err)
	}
	// A credential change resets these two: set them again.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return childErr("set parent death signal", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return childErr("make non-dumpable", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return childErr("set no_new_privs", err)
	}
	return loadSeccomp(s)
}

// setIDs switches this thread to spec's ids: raw per-thread system calls,
// since this thread execs the workload (glibc-style broadcasting to every
// thread is not needed and Go's would touch runtime threads).
func setIDs(s *Spec) error {
	if s.UID == nil && s.GID == nil {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return childErr("set keepcaps", err)
	}
	if setgroupsAllowed() {
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			return childErr("drop supplementary groups", e)
		}
	}
	if s.GID != nil {
		g := uintptr(*s.GID)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, g, g, g); e != 0 {
			return childErr(fmt.Sprintf("set gid %d", *s.GID), e)
		}
	}
	if s.UID != nil {
		u := uintptr(*s.UID)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, u, u, u); e != 0 {
			return childErr(fmt.Sprintf("set uid %d", *s.UID), e)
		}
	}
	return nil
}

func currentUID() int {
	r, _, _ := unix.RawSyscall(unix.SYS_GETUID, 0, 0, 0)
	return int(r)
}

func setgroupsAllowed() bool {
	data, err := os.ReadFile("/proc/thread-self/setgroups")
	return err != nil || strings.TrimSpace(string(data)) != "deny"
}

// loadSeccomp installs the filter on this thread (no TSYNC: the thread
// execs or forks the workload; the Go runtime's other threads never run
// workload code).
func loadSeccomp(s *Spec) error {
	var prog []byte
	switch s.Seccomp {
	case SeccompNone:
		return nil
	case SeccompFile:
		prog = s.SeccompProgram
	default:
		var err error
		if prog, err = defaultFilter(); err != nil {
			return childErr("seccomp", err)
		}
	}
	if err := checkProgram(prog); err != nil {
		return childErr("seccomp", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog) / 8), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return childErr("load seccomp filter", e)
	}
	return nil
}

// CapNames are the names of every capability this kernel and library know
// ("chown", "net_admin", ...), for --cap-add=all.
func CapNames() []string {
	last, err := capability.LastCap()
	var names []string
	for _, c := range capability.ListKnown() {
		if err == nil && c > last {
			continue
		}
		names = append(names, c.String())
	}
	return names
}
