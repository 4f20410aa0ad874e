package nsexec

// Joining a running sandbox (nsrun exec).
//
// Choice: an external single-threaded joiner, util-linux nsenter, then the
// nsrun child. setns(2) into a user or mount namespace needs a
// single-threaded caller, and a Go process never is; the alternatives were
// a cgo constructor that runs before the Go runtime (runc's nsexec) or a
// request socket served by the sandbox's own init. nsenter keeps nsrun pure
// Go, and the init stays a process that holds no socket anyone can reach.
//
//	nsrun exec (parent)                nsenter (caller's creds)       nsrun child (--join)
//	pidfd_open(pid) and check that
//	pid is in the unit's cgroup
//	(cmd's job); clone3 into payload/
//	  ──────────────────────────────►  setns user, then mnt, pid, net,
//	                                   ipc, uts, cgroup, time of pid;
//	                                   root and cwd of pid; fork
//	                                     ──────────────────────────►  exec'd from an fd of
//	                                                                  the nsrun binary;
//	read the record of pid's parent
//	  (restrict.go)
//	send Spec ────────────────────────────────────────────────────►  chdir; with --pty a pty
//	                                                                  from the sandbox's devpts
//	{pty} + master fd ◄────────────────────────────────────────────  (as for a run);
//	                                                                  setsid, the sandbox's ids
//	                                                                  and caps, no_new_privs, its
//	                                                                  seccomp program (or default)
//	EOF or {error} ◄───────────────────────────────────────────────  execve(COMMAND)
//
// The joined process gets the sandbox's namespaces, root and cgroup, and
// restrictions no weaker than its workload's: the same capabilities, ids
// and seccomp program, no_new_privs, and the default filter where the
// workload has none. It never reads files inside the sandbox with the
// caller's host privileges: nsenter opens /proc/PID/ns/* of a process the
// caller identified by its cgroup, and the pty is opened by the joined
// child, inside.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NamespaceInfo is one namespace of a sandbox process.
type NamespaceInfo struct {
	Kind    string // user, mnt, pid, net, ipc, uts, cgroup, time
	Inode   uint64
	Private bool // differs from the caller's
}

// Info is what status shows of a sandbox.
type Info struct {
	Namespaces []NamespaceInfo
	RootFS     string // filesystem type of the sandbox's "/" (overlay, tmpfs, ...)
	RootSource string // its mount source and options, as mountinfo shows them
}

// Inspect reads the namespaces and root of a sandbox process. For the time
// namespace it reads time_for_children: an init stays in the caller's time
// namespace and its workload enters the new one.
func Inspect(pid int) (*Info, error) {
	info := &Info{}
	proc := "/proc/" + strconv.Itoa(pid)
	for _, n := range nsNames {
		file := n.file
		if n.ns == NSTime {
			file = "time_for_children"
		}
		var st, own unix.Stat_t
		if err := unix.Stat(proc+"/ns/"+file, &st); err != nil {
			return nil, fmt.Errorf("read %s namespace of pid %d: %w", n.file, pid, err)
		}
		if err := unix.Stat("/proc/self/ns/"+n.file, &own); err != nil {
			return nil, fmt.Errorf("read own %s namespace: %w", n.file, err)
		}
		info.Namespaces = append(info.Namespaces, NamespaceInfo{Kind: n.file, Inode: st.Ino, Private: st.Ino != own.Ino || st.Dev != own.Dev})
	}
	data, err := os.ReadFile(proc + "/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts of pid %d: %w", pid, err)
	}
	info.RootFS, info.RootSource = rootMount(data)
	return info, nil
}

// rootMount finds the topmost mount on "/" in mountinfo text.
func rootMount(mountinfo []byte) (fstype, source string) {
	for _, line := range bytes.Split(mountinfo, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 10 || f[4] != "/" {
			continue
		}
		for i, x := range f {
			if x == "-" && i+3 < len(f) {
				fstype, source = f[i+1], f[i+2]+" "+f[i+3]
			}
		}
	}
	return fstype, source
}

// Join prepares a command that runs spec's command inside the running
// sandbox whose process is pid (its init, or its workload with NoInit). Only
// Argv, Path, Env, Dir, Pty, Winsize and PreserveFDs of spec are used: the
// restrictions (capabilities, ids, seccomp program) are the sandbox's own,
// read from the record its starter keeps (restrict.go), with the default
// filter where the sandbox has none. The caller places Cmd in the sandbox's
// cgroup (UseCgroupFD) and calls Start and Wait as for Prepare.
func Join(pid int, spec *Spec) (*Launch, error) {
	s := &Spec{
		Argv: spec.Argv, Path: spec.Path, Env: spec.Env, Dir: spec.Dir,
		Pty: spec.Pty, Winsize: spec.Winsize, PreserveFDs: spec.PreserveFDs,
	}
	if s.Dir == "" {
		s.Dir = "/"
	}
	if len(s.Argv) == 0 {
		return nil, fmt.Errorf("no command given")
	}
	if err := joinRestrictions(pid, s); err != nil {
		return nil, err
	}
	if err := s.validateSecurity(); err != nil {
		return nil, err
	}
	info, err := Inspect(pid)
	if err != nil {
		return nil, err
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("join sandbox: nsenter not found (install util-linux): %w", err)
	}
	proc := "/proc/" + strconv.Itoa(pid)
	args := []string{"nsenter", "--target=" + strconv.Itoa(pid)}
	for _, n := range info.Namespaces {
		if !n.Private {
			continue
		}
		opt := map[string]string{"mnt": "--mount", "user": "--user"}[n.Kind]
		if opt == "" {
			opt = "--" + n.Kind
		}
		if n.Kind == "time" {
			opt += "=" + proc + "/ns/time_for_children"
		}
		args = append(args, opt)
		if n.Kind == "user" {
			s.Namespaces |= NSUser
		}
	}
	if s.Namespaces.Has(NSUser) && os.Geteuid() != 0 {
		// nsenter would setgroups, which an unprivileged user namespace
		// denies; the caller's own id is already root inside (map-root).
		args = append(args, "--preserve-credentials")
	}
	args = append(args, "--root", "--wd=/")
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("open own binary: %w", err)
	}
	l := &Launch{
		Cmd: &exec.Cmd{
			Path:        nsenter,
			Env:         []string{},
			Dir:         "/",
			SysProcAttr: &syscall.SysProcAttr{},
		},
		spec:  s,
		final: make(chan *message, 1),
		join:  exe,
	}
	l.childArgs = func(syncFD int) []string {
		// The binary's fd comes right after the sync fd; the child closes
		// it with everything else above the sync fd.
		bin := "/proc/self/fd/" + strconv.Itoa(syncFD+1)
		return append(args, "--", bin, ChildArg, "--sync-fd="+strconv.Itoa(syncFD), "--join")
	}
	return l, nil
}

// joined is the child's path for --join: only the process setup.
func (c *child) joined() error {
	s := c.spec
	if err := chdirInside(filepath.Clean(s.Dir)); err != nil {
		return err
	}
	if err := c.openPty(); err != nil {
		return err
	}
	path, err := lookPath(s)
	if err != nil {
		return err
	}
	return c.execWorkload(path)
}
