package main

import (
	"io"
	"os"
	"sync"

	"github.com/nsrun/nsrun/nsexec"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ptyRelay gives the workload a pseudo-terminal of its own (--pty): it is
// the session leader on the pty's slave side, and nsrun copies between its
// own stdin/stdout and the master, passes window-size changes on, and puts
// its own terminal in raw mode meanwhile, so keys like ^C reach the
// workload's terminal and become signals there.
type ptyRelay struct {
	master, slave *os.File
	restore       func()
	outDone       chan struct{}
}

// newPtyRelay opens the pty pair; start() begins copying once the workload
// runs.
func newPtyRelay() (*ptyRelay, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return ptyRelayOn(fd)
}

// ptyRelayOn makes the relay of an open pty master (a ptmx fd).
func ptyRelayOn(fd int) (*ptyRelay, error) {
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(fd)
		return nil, errno
	}
	r := &ptyRelay{
		master:  os.NewFile(uintptr(fd), "pty master"),
		slave:   os.NewFile(sfd, "pty slave"),
		restore: func() {},
		outDone: make(chan struct{}),
	}
	r.resize()
	return r, nil
}

// relayMaster makes the relay of a pty master the sandbox child allocated
// in the sandbox's own devpts (nsexec Spec.Pty): nsrun holds no slave.
func relayMaster(master *os.File) *ptyRelay {
	return &ptyRelay{master: master, restore: func() {}, outDone: make(chan struct{})}
}

// sandboxRelay is the relay of the pty a started sandbox child sent back
// (nil without one).
func sandboxRelay(l *nsexec.Launch) *ptyRelay {
	if m := l.Pty(); m != nil {
		return relayMaster(m)
	}
	return nil
}

// termSize is the size of nsrun's terminal (nil when none of its stdio is
// one), for a pty the sandbox child allocates.
func termSize() *nsexec.Winsize {
	for _, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			return &nsexec.Winsize{Rows: ws.Row, Cols: ws.Col}
		}
	}
	return nil
}

// resize copies nsrun's terminal size to the workload's.
func (r *ptyRelay) resize() {
	for _, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
		if err == nil {
			_ = unix.IoctlSetWinsize(int(r.master.Fd()), unix.TIOCSWINSZ, ws)
			return
		}
	}
}

// start copies between nsrun's stdio and the master. Call it after the
// workload started (it holds the slave now; nsrun's copy is closed).
func (r *ptyRelay) start() {
	if r.slave != nil {
		r.slave.Close()
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		if st, err := term.MakeRaw(int(os.Stdin.Fd())); err == nil {
			var once sync.Once
			r.restore = func() { once.Do(func() { _ = term.Restore(int(os.Stdin.Fd()), st) }) }
		}
	}
	go func() {
		_, _ = io.Copy(r.master, os.Stdin)
		// stdin ended: pass the end on as the terminal's EOF character.
		_, _ = r.master.Write([]byte{4})
	}()
	go func() {
		_, _ = io.Copy(os.Stdout, r.master) // ends with EIO once no process holds the slave
		close(r.outDone)
	}()
}

// finish waits for the workload's last output and puts nsrun's terminal
// back.
func (r *ptyRelay) finish() {
	<-r.outDone
	r.restore()
	r.master.Close()
}
