package nsexec

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinels for what cmd branches on (exit statuses 127 and 126).
var (
	ErrCommandNotFound      = errors.New("command not found")
	ErrCommandNotExecutable = errors.New("command not executable")
)

// ChildError is an error of the sandbox child, sent back to the parent over
// the sync socket. Step names the setup step ("mount /proc", "exec", ...).
type ChildError struct {
	Step  string
	Errno syscall.Errno // 0 when the cause is not a system call
	Msg   string        // the full message, already naming the step
}

func (e *ChildError) Error() string { return e.Msg }

// Unwrap gives the errno, so errors.Is(err, fs.ErrPermission) works.
func (e *ChildError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// Is matches ErrCommandNotFound and ErrCommandNotExecutable for a failed
// exec of the workload (only: a mount source that does not exist is not a
// missing command).
func (e *ChildError) Is(target error) bool {
	if e.Step != stepExec {
		return false
	}
	switch target {
	case ErrCommandNotFound:
		return e.Errno == syscall.ENOENT
	case ErrCommandNotExecutable:
		return e.Errno == syscall.EACCES || e.Errno == syscall.ENOEXEC || e.Errno == syscall.EISDIR
	}
	return false
}

const stepExec = "exec"

// childErr makes a ChildError for step from err, keeping its errno.
func childErr(step string, err error) *ChildError {
	var ce *ChildError
	if errors.As(err, &ce) {
		return ce
	}
	e := &ChildError{Step: step, Msg: fmt.Sprintf("%s: %v", step, err)}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		e.Errno = errno
	}
	return e
}
