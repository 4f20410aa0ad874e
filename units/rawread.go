package units

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// quietReader reads a connected, non-blocking socket for the wire client
// without announcing each read to the Go scheduler.
//
// Why: while nsrun waits for its job, systemd sends it every unit's
// signals (wire.go), so with K launches at once each nsrun wakes a few
// hundred times. A read through net.Conn is a system call the runtime
// is told about (entersyscall/exitsyscall), and each one wakes the
// runtime's sysmon thread from its idle sleep; sysmon then polls for
// 20 µs steps and spinning threads hand the P around. Measured at K=100
// launches at once in the box: about 1,000 voluntary context switches
// per nsrun (strace: two nanosleeps and two futex calls per message
// batch), against systemd-run's 50 to 130, and PID 1 (the one thread
// that makes every scope) waited 0.4 to 1.2 s on the run queue per wave
// instead of about 0.1 s: the woken threads of 100 nsruns preempted it.
// The announcement is for calls that may block; a read of a non-blocking
// socket returns at once, so it goes through syscall.RawSyscall, and
// EAGAIN waits on the runtime's poller as before, with the connection's
// deadline. With it the wait is one poller wake and two
// reads per batch, and the context switches per nsrun halve.
type quietReader struct {
	rc syscall.RawConn
}

// newQuietReader returns c's quiet reader, or c itself when c has no
// file descriptor (a pipe in a test).
func newQuietReader(c net.Conn) io.Reader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return quietReader{rc: rc}
}

func (r quietReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			r1, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait for the poller, then try again
			}
			n, errno = int(r1), e
			return true
		}
	})
	switch {
	case err != nil: // closed, or the deadline passed
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
