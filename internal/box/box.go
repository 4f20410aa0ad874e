// Package box boots a real systemd as PID 1 of private pid, mount, cgroup,
// uts, ipc and net namespaces, inside a cgroup of its own, for tests and demos
// on hosts whose PID 1 is not systemd. See ../../docs/architecture.md ("The
// box") and ../shared/design/testing.md.
//
// Safety: every mount is made by init.sh after it has checked that it is PID 1
// of a fresh pid namespace in a mount namespace that is not the host's. The
// box never runs sysinit.target's units, and its /proc/sys is read-only, so it
// cannot change host sysctls. Close removes every process and cgroup it made.
package box

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed init.sh
var initScript string

// The programs the box needs from the host (Debian: systemd, dbus,
// util-linux).
const (
	systemdPath = "/usr/lib/systemd/systemd"
	nsenterPath = "/usr/bin/nsenter"
	unsharePath = "/usr/bin/unshare"
	setprivPath = "/usr/bin/setpriv"
	dbusPath    = "/usr/bin/dbus-daemon"
)

// sigPoweroff is SIGRTMIN+4 as systemd counts (glibc's SIGRTMIN is 34): it
// starts poweroff.target, which in a container makes PID 1 exit.
const sigPoweroff = syscall.Signal(34 + 4)

// boxPath is PATH for commands run in the box.
const boxPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options configures a box.
type Options struct {
	// Shares are host directories that stay visible at the same path in the
	// box even when they lie below a directory the box covers with a tmpfs
	// (/tmp, /var/tmp, /home, /run ...). Use it for binaries under test.
	Shares []string
	// Debug makes the box's systemd log at debug level to Console.
	Debug bool
	// BootTimeout bounds the wait for systemd to report "running".
	// Zero means 30 seconds.
	BootTimeout time.Duration
}

// Box is a running systemd in private namespaces.
type Box struct {
	name   string
	pid    int      // host pid of the box's PID 1
	cgroup string   // host path of the box's cgroup
	cgfd   *os.File // open directory of cgroup, for CLONE_INTO_CGROUP
	ptmx   *os.File // master side of the box's /dev/console
	// pts is our copy of the console's peer, held until PID 1 has exited:
	// systemd as PID 1 opens /dev/console for each message and closes it
	// again, and a read of the master while nobody holds the peer fails
	// with EIO, which would end the console reader; PID 1 would then block
	// in write(2) once the pty buffer is full, after a few hundred units.
	pts *os.File

	console     *ring
	consoleDone chan struct{}
	exited      chan struct{} // closed when PID 1 has been reaped
	waitErr     error

	closeOnce sync.Once
	closeErr  error
}

// ErrUnsupported reports a host on which no box can be started.
var ErrUnsupported = errors.New("box unsupported on this host")

// Supported says whether a box can be started here, and if not, why.
func Supported() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrUnsupported)
	}
	for _, p := range []string{systemdPath, nsenterPath, unsharePath, setprivPath, dbusPath} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w: %s missing (install systemd, dbus, util-linux)", ErrUnsupported, p)
		}
	}
	if _, err := hostCgroupParent(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return nil
}

// Start boots a box and waits until its systemd reports "running".
func Start(ctx context.Context, opts Options) (b *Box, retErr error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 30 * time.Second
	}
	parent, err := hostCgroupParent()
	if err != nil {
		return nil, err
	}
	sweepStale(parent)
	name := fmt.Sprintf("nsrun-box-%s-%s", OwnerTag(), randomID())
	b = &Box{
		name:        name,
		cgroup:      filepath.Join(parent, name),
		console:     newRing(1 << 20),
		consoleDone: make(chan struct{}),
		exited:      make(chan struct{}),
	}
	if err := os.Mkdir(b.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("create box cgroup: %w", err)
	}
	defer func() {
		if retErr != nil {
			if err := b.Close(); err != nil {
				retErr = fmt.Errorf("%w (and tear down: %v)", retErr, err)
			}
		}
	}()
	if b.cgfd, err = os.OpenFile(b.cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return b, fmt.Errorf("open box cgroup: %w", err)
	}
	ptmx, pts, err := openPty()
	if err != nil {
		return b, fmt.Errorf("open console pty: %w", err)
	}
	b.ptmx = ptmx
	go func() {
		defer close(b.consoleDone)
		_, _ = b.console.ReadFrom(ptmx) // ends with EIO once every holder of the pts is gone
	}()
	if err := b.spawn(pts, opts); err != nil {
		return b, err
	}
	if err := b.waitRunning(ctx, opts.BootTimeout); err != nil {
		return b, err
	}
	return b, nil
}

// spawn starts init.sh as PID 1 of the new namespaces. The starting thread
// stays locked and alive until PID 1 exits, so that Pdeathsig fires only when
// this process dies (golang/go#27505).
func (b *Box) spawn(pts *os.File, opts Options) error {
	hostMnt, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("read host mount namespace: %w", err)
	}
	hostPid, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return fmt.Errorf("read host pid namespace: %w", err)
	}
	for _, s := range opts.Shares {
		if !filepath.IsAbs(s) || strings.ContainsAny(s, "\n") || strings.HasPrefix(filepath.Clean(s), "/run") {
			return fmt.Errorf("share %q: must be an absolute path outside /run", s)
		}
	}
	cmd := &exec.Cmd{
		Path: "/bin/sh",
		Args: []string{"sh", "-c", initScript, "nsrun-box-init", "outer"},
		Env: []string{
			"PATH=" + boxPath,
			"container=nsrun-box",
			"NSRUN_BOX_SCRIPT=" + initScript,
			"NSRUN_BOX_HOST_MNTNS=" + hostMnt,
			"NSRUN_BOX_HOST_PIDNS=" + hostPid,
			"NSRUN_BOX_SHARES=" + strings.Join(opts.Shares, "\n"),
			"NSRUN_BOX_LOG_LEVEL=" + map[bool]string{true: "debug", false: "info"}[opts.Debug],
		},
		Dir:    "/",
		Stdout: pts,
		Stderr: pts,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS |
				unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
			UseCgroupFD: true,
			CgroupFD:    int(b.cgfd.Fd()),
			Setsid:      true,
			Pdeathsig:   syscall.SIGKILL,
		},
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			close(b.exited)
			return
		}
		b.pid = cmd.Process.Pid
		started <- nil
		b.waitErr = cmd.Wait()
		close(b.exited)
	}()
	if err = <-started; err != nil {
		pts.Close()
		return fmt.Errorf("start box init: %w", err)
	}
	b.pts = pts
	return nil
}

func (b *Box) waitRunning(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var state string
	for {
		select {
		case <-b.exited:
			return fmt.Errorf("box exited during boot (%v); console:\n%s", b.waitErr, b.Console())
		default:
		}
		out, _ := b.Command(ctx, "systemctl", "is-system-running").Output()
		state = strings.TrimSpace(string(out))
		switch state {
		case "running":
			return nil
		case "degraded":
			failed, _ := b.Run(ctx, "systemctl", "--failed", "--no-legend", "--plain")
			return fmt.Errorf("box booted degraded: %s", strings.TrimSpace(failed))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("box did not reach running (last state %q): %w; console:\n%s", state, ctx.Err(), b.Console())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Pid is the host pid of the box's PID 1 (systemd).
func (b *Box) Pid() int { return b.pid }

// Cgroup is the host path of the box's cgroup; the box's cgroup namespace
// root.
func (b *Box) Cgroup() string { return b.cgroup }

// Console returns what the box's PID 1 and init script printed (the tail).
func (b *Box) Console() string { return strings.ReplaceAll(b.console.String(), "\r\n", "\n") }

// EnterArgs are the nsenter arguments that enter the box as root.
func (b *Box) EnterArgs() []string {
	return []string{nsenterPath, "-t", strconv.Itoa(b.pid), "-m", "-p", "-C", "-u", "-i", "-n", "--wd=/", "--"}
}

// Command prepares a command that runs as root inside the box: in all of its
// namespaces and, from its first instruction, in the box's cgroup.
func (b *Box) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	enter := b.EnterArgs()
	cmd := exec.CommandContext(ctx, enter[0], append(append(enter[1:], name), args...)...)
	cmd.Env = []string{"PATH=" + boxPath, "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "HOME=/root"}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(b.cgfd.Fd())}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs a command as root in the box and returns its standard output. A
// failure carries the command's standard error.
func (b *Box) Run(ctx context.Context, name string, args ...string) (string, error) {
	return run(b.Command(ctx, name, args...))
}

func run(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("run %q in box: %w: %s", strings.Join(cmdTail(cmd), " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// cmdTail is the part of cmd.Args after nsenter's "--" (and setpriv's).
func cmdTail(cmd *exec.Cmd) []string {
	args := cmd.Args
	for i := len(args) - 1; i >= 0; i-- {
		if args[i] == "--" {
			return args[i+1:]
		}
	}
	return args
}

// Close powers the box off, kills what is left by pid, and removes its
// cgroup tree. It is safe to call more than once.
func (b *Box) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Box) close() error {
	var errs []error
	if b.pid > 0 {
		if err := b.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.pts != nil {
		b.pts.Close() // PID 1 is gone: let the console reader see EIO
	}
	if b.ptmx != nil {
		select {
		case <-b.consoleDone:
		case <-time.After(2 * time.Second):
		}
		b.ptmx.Close()
	}
	if b.cgroup != "" {
		if err := removeCgroupTree(b.cgroup, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if b.cgfd != nil {
		b.cgfd.Close()
	}
	return errors.Join(errs...)
}

// stop ends every process of the box.
//
// First the commands entered with Command: they sit in the box's root cgroup
// (systemd moved itself to init.scope). They must go before systemd shuts
// down: systemd-shutdown SIGSTOPs every process of the box, nsenter then stops
// itself as well (it mirrors its child's job-control state) and never reaps
// its child, and the exiting PID 1 waits for that zombie forever
// (zap_pid_ns_processes, Linux 6.x).
// Then PID 1 gets SIGRTMIN+4 (poweroff.target); cgroup.kill (Linux 5.14)
// ends whatever is left if it has not exited in time.
func (b *Box) stop() error {
	select {
	case <-b.exited:
		return nil
	default:
	}
	killCgroupProcs(b.cgroup, b.pid)
	_ = syscall.Kill(b.pid, sigPoweroff)
	select {
	case <-b.exited:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = os.WriteFile(filepath.Join(b.cgroup, "cgroup.kill"), []byte("1"), 0)
	select {
	case <-b.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("stop box: PID 1 (host pid %d) did not exit", b.pid)
	}
}

func randomID() string {
	var p [6]byte
	if _, err := rand.Read(p[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(p[:])
}

// openPty returns a new pty master and its peer, both close-on-exec.
func openPty() (ptmx, pts *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: "/dev/ptmx", Err: err}
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		return nil, nil, os.NewSyscallError("ioctl TIOCSPTLCK", err)
	}
	// TIOCGPTPEER takes the open flags as its argument.
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(mfd)
		return nil, nil, os.NewSyscallError("ioctl TIOCGPTPEER", errno)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(sfd, "console-pts"), nil
}
