package nsexec

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/nsrun/nsrun/internal/monitor"
	"golang.org/x/sys/unix"
)

// MonitorFDEnv names, in the sandbox child's environment, the fd of the
// monitor's memfd the parent passed (Launch.Start; only when it runs an
// init). The workload's environment travels in the spec, not here.
const monitorFDEnv = "NSRUN_MONITOR_FD"

// forwardedSignals are the signals the init passes on to the workload. The
// parent forwards what it receives to the init (the child it started).
var forwardedSignals = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT,
	syscall.SIGALRM, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU,
}

// runInit makes the child PID 1 of the new pid namespace: it starts the
// workload, forwards signals to it, reaps every orphan, and exits with the
// workload's status (reported to the parent first, because PID 1 cannot die
// of the signal that killed the workload). It returns only setup errors.
func (c *child) runInit(path string) error {
	s := c.spec
	if _, err := unix.Setsid(); err != nil {
		return childErr("setsid", err)
	}
	// The workload inherits ids, capabilities, no_new_privs and the filter
	// from this thread; the init keeps them too (it needs none of what they
	// take away).
	if err := applySecurity(s); err != nil {
		return err
	}
	// The monitor (internal/monitor) takes over as PID 1 when the parent
	// passed it, with handlers of its own; if its exec fails, the Go init
	// below does the work. Go's handlers go in only then: each signal Go
	// enables is a round trip to its signal thread (1 ms for these 13, on
	// the path to the workload). Until then a signal sent straight to this
	// process ends the start as it does while the child is held (nsrun
	// itself forwards nothing before {started}, and after setsid no
	// terminal signals come).
	c.execMonitorInit(path)
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwardedSignals...)...)
	files := make([]uintptr, 3+s.PreserveFDs)
	for i := range files {
		files[i] = uintptr(i)
	}
	attr := &syscall.ProcAttr{
		Env:   s.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setsid:    true,
			Setctty:   s.Pty,
			Ctty:      0,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	pid, err := syscall.ForkExec(path, s.Argv, attr)
	if err != nil {
		return childErr(stepExec, &os.PathError{Op: "exec", Path: s.Argv[0], Err: err})
	}
	// The init needs no fds of the caller's.
	for fd := 3; fd < 3+s.PreserveFDs; fd++ {
		unix.Close(fd)
	}
	_ = c.enc.Encode(message{Kind: "started", Pid: pid})
	status := c.supervise(pid, sigs)
	_ = c.enc.Encode(status)
	if status.Signal != 0 {
		os.Exit(128 + status.Signal)
	}
	os.Exit(status.Status)
	return nil
}

// supervise forwards signals to pid and reaps children until pid has ended.
func (c *child) supervise(pid int, sigs chan os.Signal) message {
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = unix.Kill(pid, sig.(syscall.Signal))
			continue
		}
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || got <= 0 {
				break
			}
			if got != pid {
				continue
			}
			if ws.Signaled() {
				return message{Kind: "exit", Signal: int(ws.Signal())}
			}
			return message{Kind: "exit", Status: ws.ExitStatus()}
		}
	}
	return message{Kind: "exit", Status: 125}
}

// execMonitorInit replaces this process with the monitor in init mode
// (internal/monitor/c/monitor.c, do_init), which does what runInit does
// from here on: fork and exec the workload (session, controlling
// terminal, parent-death signal, fds 0..2+PreserveFDs), write {started},
// forward the same signals, reap orphans, write {exit} and exit with the
// workload's status; a failed exec of the workload comes back as an
// {error} of step exec with its errno, as from the Go init. Everything
// the workload inherits from this thread (ids, capabilities,
// no_new_privs, the seccomp filter) is in place already and survives
// execve. The forwarded signals and SIGCHLD are blocked on this (locked)
// thread before the exec, so one that comes meanwhile waits for the
// monitor's handlers. It returns only if there is no monitor or its exec
// failed.
func (c *child) execMonitorInit(path string) {
	fd, err := strconv.Atoi(os.Getenv(monitorFDEnv))
	if err != nil || fd < 3 {
		return
	}
	mon := os.NewFile(uintptr(fd), "nsrun-monitor")
	// Neither the monitor nor the Go init keeps it.
	defer mon.Close()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return
	}
	block := []syscall.Signal{syscall.SIGCHLD}
	for _, s := range forwardedSignals {
		block = append(block, s.(syscall.Signal))
	}
	restore, err := monitor.BlockOnThread(block)
	if err != nil {
		return
	}
	syncFD := int(c.sync.Fd())
	if _, err := unix.FcntlInt(uintptr(syncFD), unix.F_SETFD, 0); err == nil {
		pty := "0"
		if c.spec.Pty {
			pty = "1"
		}
		argv := append([]string{"nsrun", monitor.InitArg,
			"sync=" + strconv.Itoa(syncFD),
			"fds=" + strconv.Itoa(c.spec.PreserveFDs),
			"pty=" + pty,
			"sigs=" + monitor.List(block[1:]),
			"path=" + path,
			"--"}, c.spec.Argv...)
		_ = monitor.Exec(mon, argv, c.spec.Env)
		_, _ = unix.FcntlInt(uintptr(syncFD), unix.F_SETFD, unix.FD_CLOEXEC)
	}
	restore()
}
