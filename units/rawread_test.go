package units

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestQuietReader: what the wire client's reads return on a real socket:
// the bytes as written, io.EOF once the peer closes, the deadline's error
// when it passes, a reset named as one, and net.ErrClosed after Close.
func TestQuietReader(t *testing.T) {
	t.Run("data then EOF", func(t *testing.T) {
		client, server := socketPair(t)
		defer client.Close()
		r := newQuietReader(client)
		if _, ok := r.(quietReader); !ok {
			t.Fatalf("newQuietReader(%T) = %T, want the quiet reader", client, r)
		}
		go func() {
			_, _ = server.Write([]byte("hello, "))
			time.Sleep(20 * time.Millisecond) // the reader waits on the poller in between
			_, _ = server.Write([]byte("world"))
			server.Close()
		}()
		got, err := io.ReadAll(r)
		if err != nil || string(got) != "hello, world" {
			t.Errorf("ReadAll = %q, %v; want \"hello, world\", nil", got, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		client, server := socketPair(t)
		defer client.Close()
		defer server.Close()
		_ = client.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		if _, err := newQuietReader(client).Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("err = %v, want the deadline's", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		client, server := socketPair(t)
		defer client.Close()
		// Unread data at the peer's close makes the kernel reset a unix
		// stream socket's other end: ECONNRESET on its next read.
		_, _ = client.Write([]byte("unread"))
		time.Sleep(10 * time.Millisecond)
		server.Close()
		_, err := newQuietReader(client).Read(make([]byte, 8))
		var se *os.SyscallError
		if !isConnReset(err) || !errors.As(err, &se) || se.Syscall != "read" || se.Err != syscall.ECONNRESET {
			t.Errorf("err = %#v, want read's ECONNRESET", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		client, server := socketPair(t)
		defer server.Close()
		r := newQuietReader(client)
		client.Close()
		if _, err := r.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("err = %v, want net.ErrClosed", err)
		}
	})
	t.Run("no descriptor", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if r := newQuietReader(a); r != io.Reader(a) {
			t.Errorf("newQuietReader(pipe) = %T, want the pipe itself", r)
		}
	})
}
