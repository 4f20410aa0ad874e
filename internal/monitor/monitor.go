// Package monitor carries nsrun's long-lived per-sandbox processes as one
// small static C program (c/monitor.c), embedded in nsrun and executed from a
// sealed memfd.
//
// Why C: a sandbox's processes that stay alive for the whole run are
// counted against it (issue 8: their memory should be no more than bwrap's).
// Any Go process costs about 0.9 MiB of proportional set size for the
// runtime alone, the shell watcher 0.3 MiB; the monitor is a few pages.
// podman's conmon, crun and bwrap are C for the same reason, and runc embeds
// C (nsexec, runc-dmz) the same way.
//
// Modes (argv chooses; the Go side builds every argument list):
//
//   - watch (argv[0] WatchArg): the watcher of cmd/nsrun/watch.go, same
//     contract as the shell it replaces.
//   - supervise (argv[1] SuperviseArg): nsrun exec's itself into it once
//     the workload runs (not with a Go pty relay), on the OS thread that
//     forked the workload (its parent-death signal is tied to that
//     thread), with the forwarded signals blocked on that thread (the mask
//     survives execve; the monitor reads them from a signalfd, so none is
//     lost or kills it meanwhile). With a held sandbox child it does so
//     right after the release (await=) and reads the child's answer to it
//     itself, reporting a failed start as nsrun would.
//   - init (argv[1] InitArg): PID 1 of a sandbox's pid namespace, exec'd by
//     the Go sandbox child (nsexec) once everything is set up.
//
// The program is built by the Makefile (musl-gcc -static -Os) into
// nsrun-monitor in this directory and embedded with the build tag
// nsrun_monitor. Without it (a plain go build), Available is false and
// nsrun uses its Go (and shell) fallbacks.
package monitor

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Arguments that choose the mode.
const (
	WatchArg     = "__nsrun-watch"
	SuperviseArg = "__nsrun-supervise"
	InitArg      = "__nsrun-init"
)

// DisableEnv, set to 1 in nsrun's environment, makes Available false. Only
// tests set it, to keep the fallbacks tested in a build with the monitor.
const DisableEnv = "NSRUN_TEST_NO_MONITOR"

// Marker is a string compiled into the program: a binary that holds it
// embeds the monitor.
const Marker = "nsrun-monitor-embedded-v1"

// Embedded reports whether this binary carries the program.
func Embedded() bool { return len(program) > 0 }

// Available reports whether the monitor can be used: it is embedded and
// not turned off (DisableEnv).
func Available() bool { return Embedded() && os.Getenv(DisableEnv) != "1" }

var (
	openOnce sync.Once
	memfd    *os.File
	openErr  error
)

// Open returns the sealed memfd holding the program (one per process,
// close-on-exec, numbered 5 or above so that it survives an exec.Cmd
// moving its ExtraFiles onto 3 and 4).
func Open() (*os.File, error) {
	openOnce.Do(func() { memfd, openErr = open() })
	return memfd, openErr
}

func open() (*os.File, error) {
	if !Embedded() {
		return nil, fmt.Errorf("nsrun was built without the monitor")
	}
	fd, err := unix.MemfdCreate("nsrun-monitor", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if err == unix.EINVAL { // before Linux 6.3
		fd, err = unix.MemfdCreate("nsrun-monitor", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("monitor: memfd_create: %w", err)
	}
	if fd < 5 {
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 5)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("monitor: dup: %w", err)
		}
		fd = nfd
	}
	f := os.NewFile(uintptr(fd), "nsrun-monitor")
	if _, err := f.Write(program); err != nil {
		f.Close()
		return nil, fmt.Errorf("monitor: write: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("monitor: seal: %w", err)
	}
	return f, nil
}

// Path is a path that executes the program held by f in this process
// (and in a child that inherits f at the same number).
func Path(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// Exec replaces this process with the monitor; it returns only on failure.
// It uses syscall.Exec on /proc/self/fd/N where /proc is there (it holds the
// Go runtime's exec lock and restores the RLIMIT_NOFILE soft limit Go raised,
// which a workload started by the init inherits), else execveat(fd, "",
// AT_EMPTY_PATH). Call it on the locked OS thread whose children must keep
// their parent-death signal.
func Exec(f *os.File, argv, env []string) error {
	path := Path(f)
	if _, err := os.Stat(path); err == nil {
		return syscall.Exec(path, argv, env)
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	empty, _ := syscall.BytePtrFromString("")
	_, _, errno := syscall.Syscall6(unix.SYS_EXECVEAT, f.Fd(), uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return errno
}

// BlockOnThread blocks sigs on the calling OS thread (lock it first) and
// returns a function that puts the thread's mask back.
func BlockOnThread(sigs []syscall.Signal) (restore func(), err error) {
	var set, old unix.Sigset_t
	for _, s := range sigs {
		if s > 0 && s <= 64 {
			set.Val[(s-1)/64] |= 1 << ((uint(s) - 1) % 64)
		}
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return nil, err
	}
	return func() { _ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }, nil
}

// List formats numbers for the monitor's KEY=A,B,C arguments.
func List[T ~int](v []T) string {
	b := make([]byte, 0, 4*len(v))
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(x), 10)
	}
	return string(b)
}

// KeepOpen clears close-on-exec on f, so that it reaches the monitor.
func KeepOpen(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0)
	return err
}
