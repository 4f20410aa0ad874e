package main

import (
	"os"
	"runtime"
	"syscall"

	"github.com/nsrun/nsrun/nsexec"
)

// A sandbox child takes about as long to set itself up (Go start, id
// maps, mounts, pivot_root) as systemd takes to make a scope, so with a
// scope to make nsrun clones it first and lets both run at once:
//
//	nsrun (main)                         locked goroutine      sandbox child
//	spawnHeld ─────────────────────────► clone3 (caller's cgroup,
//	                                       Pdeathsig) ───────► Go start
//	Dial, StartScope PIDs=[nsrun, child]  id maps, spec ──────► namespaces, mounts,
//	  (systemd moves both into the scope)                        pivot_root, pty, look-up
//	delegate.Setup: nsrun → supervisor/,  ◄──────────────────── {held}; blocks
//	  child → payload/, controllers
//	watcher, verify, device program
//	release ───────────────────────────► SendRelease: 'G' ────► cgroup ns (rooted at
//	                                     execve: the monitor    payload/), cgroup2, workload
//	                                     (await=) reads ◄──────── {started} | {error}
//
// The execve of the monitor right after the release (no pty; handover.go)
// overlaps the child's last steps; should it fail, AwaitStart reads the
// answer in Go as before.
//
// Anything that fails before release aborts the child (killed, reaped):
// the workload never ran. The child is not reaped before nsrun is done with
// its pid (systemd and payload/ get a pid that cannot have been reused).
// Should nsrun die, the child dies of Pdeathsig, or, should that have been
// cleared by its id change at the moment, it sees the sync socket's hang-up
// and exits; it never runs the workload without the release byte.

// heldSandbox is a sandbox child cloned before its cgroup exists.
type heldSandbox struct {
	launch *nsexec.Launch
	pid    int

	heldErr  error
	heldDone bool
	held     chan error // Start's result: nil once the child is set up
	release  chan bool  // true: go on; false: abort
	started  chan error // Release's result
	waited   chan error // the workload's status
	done     chan struct{}
	decided  bool
	// afterRelease runs on the locked goroutine right after the release is
	// sent (set before proceed): the monitor's early hand-over, which
	// returns only if its exec failed.
	afterRelease func()
	// afterStart runs on the locked goroutine once the workload started
	// (set before proceed).
	afterStart func()
}

// spawnHeld prepares the sandbox and clones its child on a goroutine that
// keeps its OS thread locked (Pdeathsig) until the child is reaped. It
// returns once the child exists.
func spawnHeld(p *runPlan) (*heldSandbox, error) {
	spec := *p.spec
	if p.path != "" {
		spec.Path = p.path
	}
	if spec.Pty {
		spec.Winsize = termSize()
	}
	launch, err := nsexec.Prepare(&spec)
	if err != nil {
		return nil, usageError("%v", err)
	}
	lc := launch.Cmd
	lc.Stdin, lc.Stdout, lc.Stderr = os.Stdin, os.Stdout, os.Stderr
	lc.ExtraFiles = append(lc.ExtraFiles, p.proc.extraFiles...)
	lc.SysProcAttr.Pdeathsig = syscall.SIGKILL
	launch.Hold = true
	pids := make(chan int, 1)
	launch.Spawned = func(pid int) { pids <- pid }
	h := &heldSandbox{
		launch:  launch,
		held:    make(chan error, 1),
		release: make(chan bool, 1),
		started: make(chan error, 1),
		waited:  make(chan error, 1),
		done:    make(chan struct{}),
	}
	go func() {
		runtime.LockOSThread()
		err := launch.Start()
		h.held <- err
		if err != nil {
			<-h.release // the pid stays taken until nsrun is done with it
			launch.Abort()
			close(h.done)
			return
		}
		if !<-h.release {
			launch.Abort()
			close(h.done)
			return
		}
		err = launch.SendRelease()
		if err == nil && h.afterRelease != nil {
			h.afterRelease()
		}
		if err == nil {
			err = launch.AwaitStart()
		}
		if err != nil {
			h.started <- err
			close(h.done)
			return
		}
		h.started <- nil
		if h.afterStart != nil {
			h.afterStart() // on this thread: the monitor's handover
		}
		h.waited <- sandboxStatus(launch.Wait())
		close(h.done)
	}()
	select {
	case h.pid = <-pids:
		return h, nil
	case err := <-h.held: // not even cloned
		h.heldErr, h.heldDone = err, true
		h.abort()
		return nil, startError(p, true, err)
	}
}

// wait returns once the child is set up (nil) or failed.
func (h *heldSandbox) wait() error {
	if !h.heldDone {
		h.heldErr, h.heldDone = <-h.held, true
	}
	return h.heldErr
}

// abort kills and reaps the child unless it was released; nil is fine.
func (h *heldSandbox) abort() {
	if h == nil || h.decided {
		return
	}
	h.decided = true
	h.release <- false
	<-h.done
}

// proceed lets the child start the workload once it is set up; it returns
// what Start would have without Hold. The release is decided before the
// child reports {held}, so the locked goroutine sends it the moment Start
// returns instead of handing {held} to this goroutine and waiting for the
// answer (each hand-off wakes a thread: about 1 ms in all on a busy
// machine). A child that failed is aborted and reaped all the same. The
// workload's status comes on h.waited.
func (h *heldSandbox) proceed() error {
	h.decided = true
	h.release <- true
	if err := h.wait(); err != nil {
		<-h.done // the goroutine aborted the child: killed and reaped
		return err
	}
	return <-h.started
}
