package nsexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStartTimeout bounds Launch.Start: how long the parent waits for
// the child to take its spec and answer before it kills the child. Setting
// up takes well under a second; a child that is stopped (SIGSTOP), stuck in
// the kernel or wedged never answers.
const DefaultStartTimeout = 30 * time.Second

// ErrStartTimeout is returned (wrapped) by Launch.Start when the child did
// not answer within the timeout.
var ErrStartTimeout = errors.New("the sandbox child did not answer")

// syncConn is the parent's end of the sync socket: non-blocking in the Go
// poller, so that reads and writes honour a deadline, and read with
// recvmsg, so that a file descriptor the child sends along with a message
// (the pty master) arrives instead of being dropped.
type syncConn struct {
	f   *os.File
	fds []int // received and not yet taken, in order
}

func newSyncConn(fd int) (*syncConn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &syncConn{f: os.NewFile(uintptr(fd), "nsrun-sync")}, nil
}

func (c *syncConn) Read(p []byte) (int, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	oob := make([]byte, unix.CmsgSpace(4*4))
	err = rc.Read(func(fd uintptr) bool {
		var oobn, flags int
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), p, oob, unix.MSG_CMSG_CLOEXEC)
		if rerr == unix.EAGAIN {
			return false
		}
		if rerr == nil {
			c.takeRights(oob[:oobn])
			if flags&unix.MSG_CTRUNC != 0 {
				rerr = fmt.Errorf("sync socket: control message truncated")
			}
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// takeRights queues the fds of SCM_RIGHTS messages.
func (c *syncConn) takeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			c.fds = append(c.fds, fds...)
		}
	}
}

// takeFD returns the oldest received fd (-1 if none).
func (c *syncConn) takeFD() int {
	if len(c.fds) == 0 {
		return -1
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return fd
}

func (c *syncConn) Write(p []byte) (int, error) { return c.f.Write(p) }

func (c *syncConn) setDeadline(t time.Time) { _ = c.f.SetDeadline(t) }

// Close closes the socket and every received fd nobody took.
func (c *syncConn) Close() error {
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
	return c.f.Close()
}

// sendFD sends msg with fd attached (SCM_RIGHTS) on the child's end of the
// sync socket. The fd travels with the message's first byte, so the parent
// has it by the time it has decoded the message.
func sendFD(sock int, msg []byte, fd int) error {
	for {
		err := unix.Sendmsg(sock, msg, unix.UnixRights(fd), nil, 0)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// isTimeout reports whether err is a passed deadline on the sync socket.
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT)
}
