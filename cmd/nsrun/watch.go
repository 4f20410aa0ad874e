package main

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// watchArg is the hidden first argument that makes nsrun the watcher.
//
// The watcher guarantees that the workload does not outlive nsrun, even
// when nsrun is killed with SIGKILL: Pdeathsig reaches only the workload's
// first process, not what it started. The watcher is a second process in
// the supervisor leaf, in a session of its own (a signal to nsrun's process
// group does not reach it), ignoring the usual signals. It holds the read
// end of a pipe whose only writer is nsrun, and the payload's cgroup.kill,
// opened for it by nsrun:
//
//	nsrun                               watcher (fd 3: pipe, fd 4: cgroup.kill)
//	  │ start watcher ───────────────────▶ │ read(fd 3) blocks
//	  │ start workload in payload/         │
//	  │ ... workload runs ...              │
//	  ├─ exits normally: write "d" ──────▶ │ exit 0
//	  └─ dies any other way: EOF ────────▶ │ write "1" to cgroup.kill, exit
//
// Once the payload is empty and nsrun gone, the scope has no process left
// and systemd stops and collects it.
const watchArg = "__nsrun-watch"

func watchMain() int {
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
		syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	pipe := os.NewFile(3, "nsrun pipe")
	kill := os.NewFile(4, "payload cgroup.kill")
	var b [1]byte
	for {
		n, err := pipe.Read(b[:])
		if n == 1 && b[0] == 'd' {
			return 0
		}
		if err != nil || (n == 1 && b[0] == 'k') {
			break
		}
	}
	if _, err := kill.WriteString("1"); err != nil {
		return 1
	}
	return 0
}

// watcher is nsrun's end of the watcher.
type watcher struct {
	cmd  *exec.Cmd
	pipe *os.File
}

// startWatcher starts the watcher over the payload whose cgroup.kill is
// kill. The watcher inherits nsrun's cgroup (the supervisor leaf).
func startWatcher(kill *os.File) (*watcher, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"nsrun", watchArg},
		ExtraFiles:  []*os.File{r, kill},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	return &watcher{cmd: cmd, pipe: w}, nil
}

// done releases the watcher without killing anything, and reaps it.
func (w *watcher) done() {
	_, _ = w.pipe.Write([]byte{'d'})
	w.pipe.Close()
	_ = w.cmd.Wait()
}
