package nsexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// child is the sandbox child's state.
type child struct {
	spec *Spec
	sync *os.File
	enc  *json.Encoder
	// hold: the child was cloned before its cgroup was ready (Launch.Hold):
	// it stops before its cgroup namespace and the workload until the
	// parent has moved it into payload/ and says go on (release).
	hold bool
}

// ChildMain is the sandbox child: main() calls it when os.Args[1] is
// ChildArg. It never returns: it execs the workload, stays as its PID 1, or
// exits 125 after sending its error to the parent.
func ChildMain() {
	// Credentials, capabilities, no_new_privs and the seccomp filter are set
	// per thread: everything from here runs on this thread, which execs the
	// workload (or forks it, for an init).
	runtime.LockOSThread()
	fd, userns, join, hold := -1, false, false, false
	for _, a := range os.Args[2:] {
		if v, ok := strings.CutPrefix(a, "--sync-fd="); ok {
			fd, _ = strconv.Atoi(v)
		}
		userns = userns || a == "--userns"
		join = join || a == "--join"
		hold = hold || a == "--hold"
	}
	if fd < 3 {
		fmt.Fprintln(os.Stderr, "nsrun: internal sandbox entry point: no sync fd")
		os.Exit(125)
	}
	// Nothing the caller leaked reaches the sandbox, not even its init:
	// the sync fd comes right after the preserved ones.
	_ = unix.CloseRange(uint(fd)+1, ^uint(0), 0)
	c := &child{sync: os.NewFile(uintptr(fd), "nsrun-sync"), hold: hold}
	c.enc = json.NewEncoder(c.sync)
	if userns {
		c.waitMaps(fd)
	}
	if join {
		// Joined through nsenter: die with it until applySecurity sets
		// this again for the command (nsrun exec kills nsenter on its
		// way out, Pdeathsig).
		_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0)
	}
	unix.CloseOnExec(fd)
	var spec Spec
	if err := json.NewDecoder(c.sync).Decode(&spec); err != nil {
		c.fail(childErr("read spec", err))
	}
	c.spec = &spec
	if join {
		c.fail(c.joined())
	}
	c.fail(c.run())
}

// waitMaps waits until the parent has written the id maps, then makes
// this process root of the user namespace when the caller's own id is not
// mapped (--uid-map ranges from /etc/subuid, or root's default map). The
// capabilities to do so survived the unmapped execve as ambient
// capabilities (Prepare sets them). One byte says "maps written"; it is
// read raw so that nothing of the spec behind it is buffered away.
func (c *child) waitMaps(fd int) {
	var b [1]byte
	for {
		n, err := unix.Read(fd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 || b[0] != mapsWritten {
			c.fail(childErr("wait for the id maps", fmt.Errorf("unexpected reply from the parent (%v)", err)))
		}
		break
	}
	// This thread, which does everything from here and execs the init or
	// the workload (ChildMain), becomes root of the namespace: raw
	// per-thread calls, as applySecurity's later ones. Go's
	// Setresgid/Setresuid would stop the world to change every thread of
	// the runtime, which never acts for the sandbox (0.7 ms, on the path to
	// the workload). An unmapped id reads as the overflow id.
	if os.Getgid() != 0 {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, 0, 0, 0); e != 0 {
			c.fail(childErr("become root in the user namespace (gid 0 unmapped?)", e))
		}
	}
	if os.Getuid() != 0 {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
			c.fail(childErr("become root in the user namespace (uid 0 unmapped?)", e))
		}
	}
	// An id change clears the parent death signal: set it again.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		c.fail(childErr("set parent death signal", err))
	}
	// A parent that died while it was cleared sent no signal. It closed
	// its end of the sync socket before it let go of its children (the
	// kernel closes a dying process's files before it reparents them), so
	// a hang-up seen now means it is gone: the spec it wrote may all be
	// here, but nobody supervises this sandbox.
	c.exitIfParentGone(fd)
}

// exitIfParentGone exits quietly when the parent's end of the sync socket
// is closed (the parent died).
func (c *child) exitIfParentGone(fd int) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	for {
		n, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		if err == nil && n == 1 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
			os.Exit(125)
		}
		return
	}
}

// fail sends err to the parent and exits 125.
func (c *child) fail(err error) {
	if err == nil {
		err = fmt.Errorf("sandbox child: returned without starting the workload")
	}
	_ = c.enc.Encode(message{Kind: "error", Err: childErr("sandbox", err)})
	os.Exit(125)
}

func (c *child) warn(format string, args ...any) {
	_ = c.enc.Encode(message{Kind: "warn", Text: fmt.Sprintf(format, args...)})
}

// run sets the sandbox up and starts the workload; it returns only errors.
func (c *child) run() error {
	s := c.spec
	if s.Namespaces.Has(NSMount) {
		mnt, err := os.Readlink("/proc/self/ns/mnt")
		if err != nil || s.HostMountNS == "" || mnt == s.HostMountNS {
			return &ChildError{Step: "check mount namespace", Msg: "check mount namespace: still in the caller's mount namespace, refusing to mount"}
		}
	}
	if s.Namespaces.Has(NSTime) && s.Time.set() {
		if err := setupTime(s.Time); err != nil {
			return err
		}
	}
	if s.Namespaces.Has(NSCgroup) && !c.hold {
		// Unshared here, not cloned: clone3 takes the new namespace's root
		// from the parent's cgroup (supervisor/), not from the
		// CLONE_INTO_CGROUP target (payload/), which is where we are now.
		// A held child is not in payload/ yet: it unshares once released.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return childErr("unshare cgroup namespace", err)
		}
	}
	// No one in the sandbox may ptrace this process or open its
	// /proc/PID/exe, fds or memory while it holds host paths.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return childErr("make non-dumpable", err)
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return childErr("set hostname", err)
		}
	}
	if s.Namespaces.Has(NSNet) {
		if err := loopbackUp(); err != nil {
			return childErr("bring up lo", err)
		}
	}
	// Read now: /proc is the sandbox's after the mounts.
	if _, err := lastCap(); err != nil {
		return childErr("read cap_last_cap", err)
	}
	if s.Namespaces.Has(NSMount) {
		if err := setupMounts(s, c.warn, c.hold); err != nil {
			return err
		}
	}
	if s.newRoot() || s.Dir != "" {
		dir := s.Dir
		if dir == "" {
			dir = "/"
		}
		if err := chdirInside(dir); err != nil {
			return err
		}
	}
	if err := c.openPty(); err != nil {
		return err
	}
	path, err := lookPath(s)
	if err != nil {
		return err
	}
	if c.hold {
		if err := c.waitRelease(); err != nil {
			return err
		}
	}
	if s.Namespaces.Has(NSPID) && !s.NoInit {
		return c.runInit(path)
	}
	return c.execWorkload(path)
}

// waitRelease is the held child's second sync point: it reports that it
// is set up ({held}), waits until the parent has moved it into payload/
// and put the device policy, watcher and limits in force (one byte), then
// takes its cgroup namespace, rooted where it now is, and mounts that
// namespace's cgroup2 in the new root (the new root is "/" by now). A
// parent that goes away instead (EOF) gets no workload: the child exits.
func (c *child) waitRelease() error {
	s := c.spec
	if err := c.enc.Encode(message{Kind: "held"}); err != nil {
		os.Exit(125) // the parent is gone
	}
	var b [1]byte
	for {
		n, err := unix.Read(int(c.sync.Fd()), b[:])
		if err == unix.EINTR {
			continue
		}
		if n == 0 && err == nil {
			os.Exit(125) // the parent went away without releasing it
		}
		if err == nil && b[0] == '\n' {
			// The spec's newline: the spec's decoder may stop right
			// before it.
			continue
		}
		if err != nil || b[0] != released {
			return childErr("wait for the parent to release the sandbox", fmt.Errorf("unexpected reply from the parent (%q, %v)", b[0], err))
		}
		break
	}
	if !s.Namespaces.Has(NSCgroup) {
		return nil
	}
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return childErr("unshare cgroup namespace", err)
	}
	if s.newRoot() {
		root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return childErr("open /", err)
		}
		defer unix.Close(root)
		if err := mountCgroup(root); err != nil {
			return err
		}
	}
	return nil
}

// execWorkload is the end of every child: a session of its own (with the
// pty as its terminal), the security settings, only the fds the workload
// may have, then exec. A run and a join end the same way.
func (c *child) execWorkload(path string) error {
	s := c.spec
	if _, err := unix.Setsid(); err != nil {
		return childErr("setsid", err)
	}
	if s.Pty {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return childErr("make the pty the controlling terminal", err)
		}
	}
	if err := applySecurity(s); err != nil {
		return err
	}
	if err := closeExtraFDs(3 + s.PreserveFDs); err != nil {
		return err
	}
	_ = c.enc.Encode(message{Kind: "exec"})
	err := unix.Exec(path, s.Argv, s.Env)
	return childErr(stepExec, fmt.Errorf("%s: %w", s.Argv[0], err))
}

// openPty allocates the workload's terminal (Spec.Pty) from the devpts
// this process sees now: the sandbox's own instance once its /dev is
// mounted, so that the terminal has a name inside (tty prints /dev/pts/N).
// The slave becomes fds 0, 1 and 2 (execWorkload or the init make it the
// controlling terminal); the master goes to the parent over the sync
// socket, which relays it. /dev/ptmx is opened non-blocking (a planted
// FIFO cannot hold the child) and must be the pty multiplexer, c 5:2; the
// slave is the master's own peer (TIOCGPTPEER), never looked up by name.
func (c *child) openPty() error {
	s := c.spec
	if !s.Pty {
		return nil
	}
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return childErr("--pty: open /dev/ptmx", err)
	}
	defer unix.Close(m)
	var st unix.Stat_t
	if err := unix.Fstat(m, &st); err != nil {
		return childErr("--pty: stat /dev/ptmx", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 {
		return &ChildError{Step: "--pty", Msg: "--pty: /dev/ptmx is not the pty multiplexer (c 5:2)"}
	}
	if err := unix.SetNonblock(m, false); err != nil {
		return childErr("--pty: open /dev/ptmx", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return childErr("--pty: unlock the pty", err)
	}
	if ws := s.Winsize; ws != nil {
		if err := unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols}); err != nil {
			return childErr("--pty: set the terminal size", err)
		}
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return childErr("--pty: open the pty's slave", errno)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(sfd), fd, 0); err != nil {
			unix.Close(int(sfd))
			return childErr("--pty: make the pty stdin, stdout and stderr", err)
		}
	}
	unix.Close(int(sfd))
	msg, err := json.Marshal(message{Kind: "pty"})
	if err != nil {
		return childErr("--pty", err)
	}
	if err := sendFD(int(c.sync.Fd()), append(msg, '\n'), m); err != nil {
		return childErr("--pty: send the pty to nsrun", err)
	}
	return nil
}

// chdirInside changes to dir and checks that the result lies inside the
// sandbox's root (a leaked host directory would not: CVE-2024-21626).
func chdirInside(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return childErr("change to working directory "+dir, err)
	}
	wd, err := os.Getwd()
	if err != nil || !filepath.IsAbs(wd) {
		return &ChildError{Step: "check working directory", Msg: fmt.Sprintf("working directory %s lies outside the sandbox", dir)}
	}
	return nil
}

// lookPath finds the command inside the sandbox: Spec.Path, or Argv[0] in
// the PATH of the workload's environment.
func lookPath(s *Spec) (string, error) {
	name := s.Path
	if name == "" {
		name = s.Argv[0]
	}
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range s.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	denied := false
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
		denied = true
	}
	if denied {
		return "", &ChildError{Step: stepExec, Errno: syscall.EACCES, Msg: name + ": not executable"}
	}
	return "", &ChildError{Step: stepExec, Errno: syscall.ENOENT, Msg: name + ": command not found"}
}

// closeExtraFDs marks every fd from first on close-on-exec, so that only
// 0, 1, 2 and the preserved fds reach the workload.
func closeExtraFDs(first int) error {
	if err := unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return childErr("close inherited fds", err)
	}
	return nil
}

// setupTime moves the child's future children, and after exec itself, into
// a new time namespace with the given offsets. Offsets can be written only
// before any process has entered the namespace, so it is unshared here
// rather than cloned (time_namespaces(7); execve enters it since Linux 5.8).
func setupTime(t *TimeOffsets) error {
	if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
		return childErr("unshare time namespace", err)
	}
	text := fmt.Sprintf("monotonic %d 0\nboottime %d 0\n", t.Monotonic, t.Boottime)
	if err := os.WriteFile("/proc/self/timens_offsets", []byte(text), 0); err != nil {
		return childErr("set time offsets", err)
	}
	return checkTimeEntry()
}

// checkTimeEntry makes sure this kernel will move the workload into the
// time namespace just unshared. Kernels that do it at execve also let a
// process whose time namespace for children differs from its own fork with
// CLONE_VM; older ones (Debian 12's 6.1 among them) refuse that fork with
// EINVAL and never move an exec'd process: there the offsets would
// silently not apply. The probe is a vfork of a path that does not exist:
// it fails at clone (old kernels) or at execve (ENOENT), before any program
// runs.
func checkTimeEntry() error {
	_, err := syscall.ForkExec("/nonexistent/nsrun-time-probe", []string{"probe"}, &syscall.ProcAttr{})
	if errors.Is(err, syscall.EINVAL) {
		return &ChildError{Step: "set time offsets", Errno: syscall.EINVAL,
			Msg: "--time-offset: this kernel moves a process into a new time namespace only when it forks, not at execve, so the offsets would not reach the workload; leave out --time-offset (--unshare=time alone works)"}
	}
	return nil
}

// loopbackUp brings up lo in the new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
