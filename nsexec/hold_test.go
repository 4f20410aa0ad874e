package nsexec_test

// Box tests of Launch.Hold, Release and Abort (launch.go): a held child
// does its setup, reports {held} and waits; Release lets it take its
// cgroup namespace where it now is, mount cgroup2 and start the workload;
// Abort ends it; a parent that closes the sync socket or dies ends it too.
// The driver (sandbox_test.go) starts the child held when NSEXEC_TEST_HOLD
// is set, says "driver: held" on stderr, and then does what the test's
// signal says: SIGUSR1 Release, SIGUSR2 Abort, SIGHUP close the sync
// socket.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/nsexec"
)

// errHoldEnded: the held child was not released (aborted, or its sync
// socket closed); the driver then exits with holdEndedStatus.
var errHoldEnded = errors.New("held child not released")

const holdEndedStatus = 3

// holdSignals returns the channel the held driver takes the test's word
// from (nil when not asked to hold).
func holdSignals() chan os.Signal {
	if os.Getenv("NSEXEC_TEST_HOLD") == "" {
		return nil
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	return ch
}

// startHeld starts l held, says so, and does what the next signal says. It
// runs on the goroutine (locked thread) that Start, Release and Abort
// need.
func startHeld(l *nsexec.Launch, word chan os.Signal) error {
	l.Hold = true
	if err := l.Start(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "driver: held pid %d\n", l.Cmd.Process.Pid)
	switch <-word {
	case syscall.SIGUSR1:
		return l.Release()
	case syscall.SIGUSR2:
		l.Abort()
		fmt.Fprintf(os.Stderr, "driver: aborted, reaped %v\n", l.Cmd.ProcessState != nil)
	default: // SIGHUP
		nsexec.CloseSync(l)
		err := l.Cmd.Wait()
		fmt.Fprintf(os.Stderr, "driver: held child ended: %v\n", err)
	}
	return errHoldEnded
}

// heldSandbox is a driver whose child is held.
type heldSandbox struct {
	cmd            *exec.Cmd
	stderr         io.Reader
	stdout         bytes.Buffer
	driver, child  int // host pids
	marker         string
	early          string // the driver's stderr up to "held"
	driverCgroupNS string
}

// startHeldSandbox starts a driver with spec held in the box and returns
// once the child reported {held}. The workload touches marker.
func startHeldSandbox(t *testing.T, u *box.User, spec nsexec.Spec, marker string) *heldSandbox {
	t.Helper()
	h := &heldSandbox{marker: marker}
	h.cmd = sandboxCmd(t, u, spec)
	h.cmd.Env = append(h.cmd.Env, "NSEXEC_TEST_HOLD=1")
	h.cmd.Stdout = &h.stdout
	var err error
	if h.stderr, err = h.cmd.StderrPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Never hang the suite: a driver still there after a minute is
	// killed (the test then fails on what it reads).
	guard := time.AfterFunc(time.Minute, func() {
		if drv := descendant(h.cmd.Process.Pid, testBin); drv > 0 {
			_ = syscall.Kill(drv, syscall.SIGKILL)
		}
	})
	t.Cleanup(func() {
		guard.Stop()
		if drv := descendant(h.cmd.Process.Pid, testBin); drv > 0 {
			_ = syscall.Kill(drv, syscall.SIGKILL)
		}
		_ = h.cmd.Wait()
	})
	h.early = readUntil(t, h.stderr, "driver: held pid ")
	for !strings.Contains(h.early[strings.LastIndex(h.early, "driver: held pid "):], "\n") {
		h.early += readUntil(t, h.stderr, "\n")
	}
	h.driver = findDescendant(t, h.cmd.Process.Pid, testBin)
	kids := childrenOf(h.driver)
	if len(kids) != 1 {
		t.Fatalf("the driver has children %v", kids)
	}
	h.child = kids[0]
	h.driverCgroupNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/cgroup", h.driver))
	return h
}

// checkHeld fails t unless the child is held as Hold says: set up (its
// own mount namespace) but not yet in its cgroup namespace, still the
// re-executed test binary (no workload exec'd), with no process of its
// own (no init forked), and the workload has not run.
func (h *heldSandbox) checkHeld(t *testing.T) {
	t.Helper()
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.child)); exe != testBin {
		t.Errorf("held child runs %q, want the re-executed %s", exe, testBin)
	}
	if kids := childrenOf(h.child); len(kids) != 0 {
		t.Errorf("held child has children %v", kids)
	}
	mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.child))
	driverMnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.driver))
	if mnt == "" || mnt == driverMnt {
		t.Errorf("held child's mount namespace %q, the driver's %q: want its own", mnt, driverMnt)
	}
	if cg, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/cgroup", h.child)); cg != h.driverCgroupNS {
		t.Errorf("held child's cgroup namespace %q, want the driver's %q until Release", cg, h.driverCgroupNS)
	}
	if _, err := os.Stat(h.marker); err == nil {
		t.Error("the workload ran before Release")
	}
}

// finish waits for the driver and returns its exit code and stderr after
// "held".
func (h *heldSandbox) finish(t *testing.T) (int, string) {
	t.Helper()
	rest, _ := io.ReadAll(h.stderr)
	err := h.cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(rest)
}

// checkChildGone fails t unless the held child's process is gone (waiting,
// bounded, for the kernel and the box's PID 1 to reap it).
func (h *heldSandbox) checkChildGone(t *testing.T) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", h.child)); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.child))
	t.Errorf("the held child %d is still there: %s", h.child, data)
}

// heldSpec is a sandbox as nsrun --sandbox makes it, whose workload says
// where its cgroup namespace is rooted and touches marker; marker's
// directory is bound in, writable by the sandbox's root.
func heldSpec(t *testing.T, name string) (nsexec.Spec, string) {
	t.Helper()
	dir, err := os.MkdirTemp(shared, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "workload-ran")
	return nsexec.Spec{
		Namespaces: nsexec.NSAll, Overlay: &nsexec.Overlay{Lowers: []string{"/"}}, Net: nsexec.NetNone,
		Mounts: []nsexec.Mount{{Kind: nsexec.Bind, Source: dir, Dest: dir}},
		Argv: []string{"/bin/sh", "-c", "touch " + marker + "; grep ^0:: /proc/self/cgroup; stat -f -c %T /sys/fs/cgroup; " +
			"ls /sys/fs/cgroup | grep -c -e system.slice -e init.scope; exit 0"},
	}, marker
}

// Release, after the caller moved the held child into its cgroup (as
// nsrun moves it into payload/): the cgroup namespace is rooted there,
// cgroup2 is mounted in the new root, the workload runs.
func TestHoldRelease(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		name := "hold-release-root"
		if u != nil {
			name = "hold-release-user"
		}
		spec, marker := heldSpec(t, name)
		cgName := "nsrun-test-" + box.OwnerTag() + "-" + name
		cg := filepath.Join(testBox.Cgroup(), cgName)
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		// Registered first, so it runs after the driver is gone; a test
		// that failed early may leave the child dying there a moment.
		t.Cleanup(func() {
			for i := 0; i < 1000; i++ {
				if procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs")); err != nil || len(procs) == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := os.Remove(cg); err != nil {
				t.Errorf("remove test cgroup: %v", err)
			}
			if _, err := os.Stat(cg); err == nil {
				t.Error("test cgroup left behind")
			}
		})
		checkBoxMountsUnchanged(t, func() {
			h := startHeldSandbox(t, u, spec, marker)
			h.checkHeld(t)
			if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(h.child)), 0); err != nil {
				t.Fatalf("move the held child: %v", err)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the workload ran before Release")
			}
			if err := syscall.Kill(h.driver, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			code, stderr := h.finish(t)
			if code != 0 || h.stdout.String() != "0::/\ncgroup2fs\n0\n" {
				t.Fatalf("released: exit %d, %q, want the cgroup namespace rooted at %s with cgroup2 mounted\nstderr: %s%s",
					code, h.stdout.String(), cgName, h.early, stderr)
			}
			if _, err := os.Stat(marker); err != nil {
				t.Errorf("the workload did not run: %v", err)
			}
			h.checkChildGone(t)
		})
	})
}

// Abort kills the held child and reaps it; the workload never runs.
func TestHoldAbort(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		name := "hold-abort-root"
		if u != nil {
			name = "hold-abort-user"
		}
		spec, marker := heldSpec(t, name)
		checkBoxMountsUnchanged(t, func() {
			h := startHeldSandbox(t, u, spec, marker)
			h.checkHeld(t)
			if err := syscall.Kill(h.driver, syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			code, stderr := h.finish(t)
			if code != holdEndedStatus || !strings.Contains(stderr, "driver: aborted, reaped true") {
				t.Fatalf("abort: exit %d, stderr %s%s", code, h.early, stderr)
			}
			h.checkChildGone(t)
			if _, err := os.Stat(marker); err == nil || h.stdout.Len() > 0 {
				t.Errorf("the workload ran after Abort (output %q)", h.stdout.String())
			}
		})
	})
}

// A parent that goes away instead of releasing the child: its end of the
// sync socket closed while it lives (the child reads EOF and exits 125),
// or the parent killed (the parent-death signal).
func TestHoldParentGoes(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		for _, how := range []string{"sync-closed", "parent-killed"} {
			t.Run(how, func(t *testing.T) {
				name := "hold-" + how + "-root"
				if u != nil {
					name = "hold-" + how + "-user"
				}
				spec, marker := heldSpec(t, name)
				checkBoxMountsUnchanged(t, func() {
					h := startHeldSandbox(t, u, spec, marker)
					h.checkHeld(t)
					if how == "sync-closed" {
						if err := syscall.Kill(h.driver, syscall.SIGHUP); err != nil {
							t.Fatal(err)
						}
						code, stderr := h.finish(t)
						if code != holdEndedStatus || !strings.Contains(stderr, "driver: held child ended: exit status 125") {
							t.Fatalf("sync socket closed: exit %d, stderr %s%s", code, h.early, stderr)
						}
					} else {
						if err := syscall.Kill(h.driver, syscall.SIGKILL); err != nil {
							t.Fatal(err)
						}
						h.finish(t)
					}
					h.checkChildGone(t)
					if _, err := os.Stat(marker); err == nil || h.stdout.Len() > 0 {
						t.Errorf("the workload ran (output %q)", h.stdout.String())
					}
				})
			})
		}
	})
}
