package delegate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The leaves nsrun makes below a delegated cgroup. cgroup v2 lets only
// leaves hold processes once controllers are enabled for children (the
// no-internal-process rule), so nsrun itself and the workload each get one.
const (
	SupervisorLeaf = "supervisor"
	PayloadLeaf    = "payload"
)

// Tree is the subtree nsrun owns below a delegated cgroup (a scope it made,
// or the cgroup of a service with Delegate=yes it runs in).
type Tree struct {
	Dir         string   // the delegated cgroup; its own resource files are the manager's
	Supervisor  string   // Dir/supervisor: nsrun and its helpers
	Payload     string   // Dir/payload: the workload, and nothing else
	Controllers []string // enabled for Supervisor and Payload
}

// ErrOtherProcesses reports a delegated cgroup that holds processes besides
// nsrun, so its controllers cannot be passed down to the leaves.
var ErrOtherProcesses = errors.New("the cgroup holds other processes")

// Setup makes the supervisor and payload leaves below dir, moves the calling
// process (all its threads) into the supervisor leaf and the processes
// payload names (each with all its threads) into the payload leaf, and
// enables every controller dir has for the leaves (which needs dir empty of
// processes: whoever was moved into dir must be moved out first). It writes only to files that belong to
// the delegatee: the leaves' cgroup.procs and dir's cgroup.subtree_control,
// never to dir's resource files, which the manager owns.
//
// On error, what Setup made is removed again where it can be (the calling
// process may have been moved already; it stays in the subtree).
func Setup(dir string, payload ...int) (t *Tree, retErr error) {
	t = &Tree{
		Dir:        dir,
		Supervisor: filepath.Join(dir, SupervisorLeaf),
		Payload:    filepath.Join(dir, PayloadLeaf),
	}
	for _, leaf := range []string{t.Supervisor, t.Payload} {
		if err := os.Mkdir(leaf, 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("%s exists already: is another nsrun using %s?", leaf, dir)
			}
			return nil, fmt.Errorf("make cgroup leaf: %w", err)
		}
	}
	leaves := *t // t is nil by the time an error is returned
	defer func() {
		if retErr != nil {
			_ = unix.Rmdir(leaves.Payload)
			_ = unix.Rmdir(leaves.Supervisor)
		}
	}()
	// "0" names the writing process; cgroup.procs moves the whole thread
	// group, so every thread of the Go runtime comes along.
	if err := writeFile(filepath.Join(t.Supervisor, "cgroup.procs"), "0"); err != nil {
		return nil, fmt.Errorf("move nsrun into %s: %w", t.Supervisor, err)
	}
	// Right after: a migration waits for an RCU grace period unless one
	// just passed, and one just did.
	for _, pid := range payload {
		if err := writeFile(filepath.Join(t.Payload, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return nil, fmt.Errorf("move process %d into %s: %w", pid, t.Payload, err)
		}
	}
	avail, err := readWords(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	if len(avail) == 0 {
		return t, nil
	}
	enable := make([]string, len(avail))
	for i, c := range avail {
		enable[i] = "+" + c
	}
	if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(enable, " ")); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("enable controllers below %s: %w (only nsrun may run in a cgroup it takes over; start it as the unit's only process)", dir, ErrOtherProcesses)
		}
		return nil, fmt.Errorf("enable controllers below %s: %w", dir, err)
	}
	on, err := readWords(filepath.Join(t.Payload, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	t.Controllers = on
	for _, c := range avail {
		if !slices.Contains(on, c) {
			return nil, fmt.Errorf("enable controller %s below %s: not enabled after writing cgroup.subtree_control", c, dir)
		}
	}
	return t, nil
}

// OpenPayload opens the payload leaf for CLONE_INTO_CGROUP
// (SysProcAttr.UseCgroupFD), so the workload starts inside it.
func (t *Tree) OpenPayload() (*os.File, error) {
	fd, err := unix.Open(t.Payload, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", t.Payload, err)
	}
	return os.NewFile(uintptr(fd), t.Payload), nil
}

// OpenKill opens the payload's cgroup.kill for writing. A watcher that holds
// it can kill the whole workload even after losing the right to open files.
func (t *Tree) OpenKill() (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(t.Payload, "cgroup.kill"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup.kill of %s: %w (cgroup.kill needs Linux 5.14)", t.Payload, err)
	}
	return f, nil
}

// KillPayload kills every process in the payload leaf (cgroup.kill) and
// waits up to timeout until the leaf is empty.
func (t *Tree) KillPayload(timeout time.Duration) error {
	if err := writeFile(filepath.Join(t.Payload, "cgroup.kill"), "1"); err != nil {
		return fmt.Errorf("kill %s: %w", t.Payload, err)
	}
	return WaitEmpty(t.Payload, timeout)
}

// Populated reports whether a cgroup or any cgroup below it holds a process.
func Populated(dir string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v == "1", nil
		}
	}
	return false, fmt.Errorf("%s/cgroup.events: no populated line", dir)
}

// WaitEmpty waits until dir is unpopulated. cgroup.events signals changes
// with POLLPRI, so the wait costs no polling loop.
func WaitEmpty(dir string, timeout time.Duration) error {
	f, err := os.Open(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		pop, err := Populated(dir)
		if err != nil {
			return err
		}
		if !pop {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%s still holds processes after %v", dir, timeout)
		}
		// Re-arm: read the file, then poll for the next change.
		if _, err := f.Seek(0, 0); err == nil {
			_, _ = f.Read(make([]byte, 256))
		}
		ms := min(left.Milliseconds()+1, 100)
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, int(ms)); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// RemoveLeaves removes the payload leaf (and the supervisor leaf when the
// caller has left it); leaves that still hold processes stay.
func (t *Tree) RemoveLeaves() error {
	var errs []error
	for _, leaf := range []string{t.Payload, t.Supervisor} {
		if err := unix.Rmdir(leaf); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("remove %s: %w", leaf, err))
		}
	}
	return errors.Join(errs...)
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func readWords(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}
