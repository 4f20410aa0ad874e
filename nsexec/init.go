package nsexec

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

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
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwardedSignals...)...)
	// The workload inherits ids, capabilities, no_new_privs and the filter
	// from this thread; the init keeps them too (it needs none of what they
	// take away).
	if err := applySecurity(s); err != nil {
		return err
	}
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
