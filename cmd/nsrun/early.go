package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nsrun/nsrun/bpfdev"
)

// early is the part of nsrun run's set-up that needs no scope. It starts
// before nsrun asks systemd for one and runs while systemd works, instead
// of after:
//
//   - the device program loads (bpfdev.Load): the library's feature
//     probes, the rules map and the verifier, about a millisecond; only
//     attaching it needs payload/;
//   - the signal handlers go in: the Go runtime hands every signal to its
//     signal thread and waits for it, a thread switch per signal.
//
// A signal that comes meanwhile is queued and forwarded once the workload
// runs (before, nsrun died of it and left an empty scope; either way the
// workload does not run on). Nothing here is kept on disk.
type early struct {
	sigs     chan os.Signal
	sigsDone chan struct{}

	devDone chan struct{}
	dev     *bpfdev.Loaded
	devErr  error
}

func startEarly(p *runPlan) *early {
	e := &early{sigs: make(chan os.Signal, 64), sigsDone: make(chan struct{})}
	go func() {
		defer close(e.sigsDone)
		// A sandboxed workload has a session of its own (nsexec), as has
		// one on its own pty.
		signal.Notify(e.sigs, forwarded(p.proc.pty || p.spec != nil)...)
		if p.proc.pty {
			signal.Notify(e.sigs, syscall.SIGWINCH)
		}
	}()
	if p.devices != nil && !p.devices.Unprivileged {
		e.devDone = make(chan struct{})
		go func() {
			defer close(e.devDone)
			e.dev, e.devErr = bpfdev.Load(p.devices)
		}()
	}
	return e
}

// signals returns the channel of forwarded signals once every handler is
// in.
func (e *early) signals() chan os.Signal {
	<-e.sigsDone
	return e.sigs
}

// attachDevices puts the loaded device program in force on dir (there is
// one when the plan has a device policy that needs a program).
func (e *early) attachDevices(dir string) error {
	<-e.devDone
	if e.devErr != nil {
		return fmt.Errorf("attach device program to %s: %w", dir, e.devErr)
	}
	return e.dev.Attach(dir)
}

// close releases the loaded program (an attached one stays in force: the
// kernel holds it on the cgroup).
func (e *early) close() {
	if e.devDone == nil {
		return
	}
	<-e.devDone
	if e.dev != nil {
		e.dev.Close()
	}
}
