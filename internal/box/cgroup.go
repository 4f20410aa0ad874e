package box

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nsrun/nsrun/internal/cgv2"
	"golang.org/x/sys/unix"
)

// hostCgroupParent is the cgroup under which boxes are made: the one this
// process runs in. On a host whose PID 1 is systemd, that must be a cgroup
// delegated to us (run under `systemd-run --scope -p Delegate=yes`), or
// systemd and the box would fight over the subtree.
func hostCgroupParent() (string, error) {
	mnt, err := cgv2.Mount()
	if err != nil {
		return "", err
	}
	self, err := cgv2.Self()
	if err != nil {
		return "", err
	}
	if hostRunsSystemd() && self == "/" {
		return "", errors.New("PID 1 is systemd: start the box inside a delegated scope (systemd-run --scope -p Delegate=yes ...)")
	}
	dir := filepath.Join(mnt, self)
	if err := unixAccessW(dir); err != nil {
		return "", fmt.Errorf("cgroup %s is not writable: %w", dir, err)
	}
	return dir, nil
}

func hostRunsSystemd() bool {
	exe, err := os.Readlink("/proc/1/exe")
	return err == nil && strings.Contains(filepath.Base(exe), "systemd")
}

// sweepStale removes box cgroups left by a test process that was killed
// before it could tear its box down (Pdeathsig already killed the box).
// Only empty ones are removed.
func sweepStale(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "nsrun-box-") {
			continue
		}
		// A box of another live process may be empty for a moment
		// while it starts: leave it alone.
		if pid, ok := TagOwner(e.Name()); ok && pid != os.Getpid() && processAlive(pid) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		if populated(dir) {
			continue
		}
		_ = removeCgroupTree(dir, time.Second)
	}
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}

func populated(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return true
	}
	return strings.Contains(string(data), "populated 1")
}

// removeCgroupTree removes dir and every cgroup below it, deepest first.
// Processes still inside are killed with cgroup.kill (Linux 5.14).
func removeCgroupTree(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := rmdirTree(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
		time.Sleep(20 * time.Millisecond)
	}
}

func rmdirTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func readFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	return string(data), err
}

func unixAccessW(path string) error {
	return unix.Access(path, unix.W_OK)
}

// killCgroupProcs sends SIGKILL to the processes that are members of the
// cgroup dir itself (not of its children), except keep.
func killCgroupProcs(dir string, keep int) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != keep {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// OwnerTag is the mark ("p" and this process's pid) that test-made cgroups
// carry in their name, so that test processes running side by side on one
// host can tell their own leftovers from another's live boxes.
func OwnerTag() string { return "p" + strconv.Itoa(os.Getpid()) }

// TagOwner finds an OwnerTag in a cgroup path ("...-p1234-...") and returns
// the pid in it.
func TagOwner(path string) (int, bool) {
	for _, part := range strings.FieldsFunc(path, func(r rune) bool { return r == '-' || r == '/' }) {
		if len(part) < 2 || part[0] != 'p' {
			continue
		}
		if pid, err := strconv.Atoi(part[1:]); err == nil && pid > 0 {
			return pid, true
		}
	}
	return 0, false
}
