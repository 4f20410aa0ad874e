//go:build vmguest

// Package guest holds the VM tier's tests. They run inside the guest that
// internal/vm boots (make test-vm), as root, on a pure cgroup v2 kernel with
// systemd as PID 1; they start every workload through nsrun, as root and as
// the unprivileged user nsrun-test (uid 1000, lingering), and read the
// kernel's cgroup files to see whether the limits nsrun reported in force
// really hold.
//
// The workloads are this test binary itself in a helper mode chosen by
// NSRUN_VM_HELPER (see TestMain), so that they do exactly one thing and say
// what they saw.
package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	testUser = "nsrun-test"
	testUID  = 1000
	selfPath = "/usr/local/bin/nsrun-vm.test"
	// The guest's only disk (virtio): io limits are keyed by it.
	disk = "/dev/vda"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv("NSRUN_VM_HELPER"); mode != "" {
		os.Exit(helper(mode))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the VM tests run as root in the guest (make test-vm)")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func nsrunBin() string {
	if b := os.Getenv("NSRUN_BIN"); b != "" {
		return b
	}
	return "/usr/local/bin/nsrun"
}

// result is how one nsrun run ended.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// who runs nsrun: root against the system manager, or the test user
// against its own user manager.
type who int

const (
	root who = iota
	user
)

func (w who) String() string {
	if w == user {
		return "user"
	}
	return "root"
}

func (w who) flag() string {
	if w == user {
		return "--user"
	}
	return "--system"
}

// command prepares a command run as w: as the test user, with the
// environment a login session gives (setpriv, as the box does).
func command(ctx context.Context, w who, name string, args ...string) *exec.Cmd {
	if w == root {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
		return cmd
	}
	priv := append([]string{"--reuid=" + strconv.Itoa(testUID), "--regid=" + strconv.Itoa(testUID), "--init-groups", "--", name}, args...)
	cmd := exec.CommandContext(ctx, "setpriv", priv...)
	cmd.Dir = "/home/" + testUser
	runtimeDir := fmt.Sprintf("/run/user/%d", testUID)
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
		"HOME=/home/" + testUser, "USER=" + testUser, "LOGNAME=" + testUser,
		"XDG_RUNTIME_DIR=" + runtimeDir,
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + runtimeDir + "/bus",
	}
	return cmd
}

func run(cmd *exec.Cmd) result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		}
	default:
		r.code = -1
		r.stderr += "\n(run: " + err.Error() + ")"
	}
	return r
}

// nsrun runs nsrun as w with a unit name of the test's own, and checks
// afterwards that the unit and its cgroup are gone.
func nsrun(t *testing.T, w who, unit string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := append([]string{"run", w.flag(), "--unit=" + unit, "-q"}, args...)
	r := run(command(ctx, w, nsrunBin(), full...))
	t.Logf("nsrun %s (as %s): %s", strings.Join(full, " "), w, r)
	assertGone(t, w, unit+".scope")
	return r
}

// assertGone checks a unit is no longer loaded and its cgroup is gone.
func assertGone(t *testing.T, w who, unit string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		state := strings.TrimSpace(systemctl(t, w, "show", "-p", "LoadState", "--value", unit))
		if state == "not-found" {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s still loaded (LoadState=%s) after nsrun exited", unit, state)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func systemctl(t *testing.T, w who, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all := append([]string{w.flag()}, args...)
	r := run(command(ctx, w, "systemctl", all...))
	if r.code != 0 {
		t.Fatalf("systemctl %s: %s", strings.Join(all, " "), r)
	}
	return r.stdout
}

// scopeCgroup waits until unit exists and returns its cgroup directory.
func scopeCgroup(t *testing.T, w who, unit string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r := run(command(ctx, w, "systemctl", w.flag(), "show", "-p", "ControlGroup", "--value", unit))
		cancel()
		if cg := strings.TrimSpace(r.stdout); r.code == 0 && cg != "" {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", cg, "payload")); err == nil {
				return filepath.Join("/sys/fs/cgroup", cg)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear with a payload/ cgroup", unit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readCgroup(t *testing.T, dir, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	return strings.TrimSpace(string(data))
}

// helperArgs runs this binary as a workload in helper mode.
func helperArgs(mode string, args ...string) []string {
	return append([]string{"-E", "NSRUN_VM_HELPER=" + mode, "--", selfPath}, args...)
}

// waitUserManager waits until the test user's manager answers (lingering
// starts it at boot; under software emulation that takes a while).
func waitUserManager(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r := run(command(ctx, user, "systemctl", "--user", "is-system-running"))
		cancel()
		if s := strings.TrimSpace(r.stdout); s == "running" || s == "degraded" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the user manager of %s is not running: %s", testUser, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func forBoth(t *testing.T, f func(t *testing.T, w who)) {
	for _, w := range []who{root, user} {
		t.Run(w.String(), func(t *testing.T) {
			if w == user {
				waitUserManager(t)
			}
			f(t, w)
		})
	}
}
