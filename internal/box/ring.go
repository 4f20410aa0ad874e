package box

import (
	"errors"
	"io"
	"sync"
)

// ring keeps the last max bytes written to it.
type ring struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func newRing(max int) *ring { return &ring{max: max} }

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.max; over > 0 {
		r.buf = append(r.buf[:0], r.buf[over:]...)
	}
	return len(p), nil
}

// ReadFrom copies from src until it fails; a pty master fails with EIO once
// nobody holds its peer any more, which is the normal end.
func (r *ring) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	p := make([]byte, 32*1024)
	for {
		k, err := src.Read(p)
		if k > 0 {
			r.Write(p[:k])
			n += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return n, err
		}
	}
}

func (r *ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.buf)
}
