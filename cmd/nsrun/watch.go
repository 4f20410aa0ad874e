package main

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/monitor"
)

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
//
// The watcher is the monitor in watch mode (internal/monitor: a small
// static C program executed from a sealed memfd), not nsrun re-executed: it
// only reads a pipe and writes a file. Built without the monitor (or with
// NSRUN_TEST_NO_MONITOR=1), it is the system shell running watchScript,
// with the same contract: read, [ and echo are shell built-ins, so it runs
// nothing else. Either gets an empty environment and / as its directory.
const (
	watchShell = "/bin/sh"
	// watchArg is the watcher's argv[0] (the shell's $0): ps shows it, and
	// tests tell the watcher from nsrun by it.
	watchArg = monitor.WatchArg
	// read returns non-zero at EOF; x holds "d" only if nsrun wrote it.
	watchScript = `trap '' HUP INT QUIT TERM PIPE USR1 USR2 ALRM TSTP TTIN TTOU
IFS= read -r x <&3
[ "$x" = d ] && exit 0
echo 1 >&4`
)

// watcher is nsrun's end of the watcher.
type watcher struct {
	cmd     *exec.Cmd
	pipe    *os.File
	release sync.Once
}

// pendingWatcher is a watcher being started in the background: it starts
// as soon as the leaves exist and runs while nsrun checks the limits and
// puts the device policy in force; the workload starts once it runs.
type pendingWatcher struct {
	ready chan struct{}
	w     *watcher
	err   error
}

func startWatcherAsync(tree *delegate.Tree) *pendingWatcher {
	pw := &pendingWatcher{ready: make(chan struct{})}
	go func() {
		defer close(pw.ready)
		kill, err := tree.OpenKill()
		if err != nil {
			pw.err = err
			return
		}
		defer kill.Close()
		if pw.w, err = startWatcher(kill); err != nil {
			pw.err = fmt.Errorf("start watcher: %w", err)
		}
	}()
	return pw
}

// wait returns the running watcher.
func (pw *pendingWatcher) wait() (*watcher, error) {
	<-pw.ready
	return pw.w, pw.err
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
		Path:        watchShell,
		Args:        []string{watchShell, "-c", watchScript, watchArg},
		Env:         []string{},
		Dir:         "/",
		ExtraFiles:  []*os.File{r, kill},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if monitor.Available() {
		if f, err := monitor.Open(); err == nil {
			cmd.Path, cmd.Args = monitor.Path(f), []string{watchArg}
		}
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	return &watcher{cmd: cmd, pipe: w}, nil
}

// done releases the watcher without killing anything; a second call does
// nothing. It does not wait for the watcher to exit: nsrun is about to exit
// too, and its init reaps the watcher. Waiting would add the shell's
// start-up to every run.
func (w *watcher) done() {
	w.release.Do(func() {
		_, _ = w.pipe.Write([]byte("d\n"))
		w.pipe.Close()
		_ = w.cmd.Process.Release()
	})
}
