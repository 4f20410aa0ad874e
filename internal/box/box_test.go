package box_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.Main(m, testutil.MainOptions{HostCheck: true}))
}

func startBox(t *testing.T) *box.Box {
	t.Helper()
	testutil.RequireBox(t)
	b, err := box.Start(context.Background(), box.Options{})
	if err != nil {
		t.Fatalf("start box: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close box: %v", err)
		}
	})
	return b
}

func TestBootsSystemdAsPID1(t *testing.T) {
	b := startBox(t)
	ctx := context.Background()

	version, err := b.SystemdVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host, err := exec.Command("/usr/lib/systemd/systemd", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	major := regexp.MustCompile(`^\d+`).FindString(version)
	if major == "" || !strings.HasPrefix(string(host), "systemd "+major+" ") {
		t.Errorf("box systemd version %q does not match the host binary %q", version, strings.SplitN(string(host), "\n", 2)[0])
	}

	for cmd, want := range map[string]string{
		"cat /proc/1/comm":            "systemd",
		"hostname":                    "nsrun-box",
		"systemctl is-system-running": "running",
		"systemctl show -p LoadState --value systemd-tmpfiles-setup.service": "not-found",
		"systemctl show -p LoadState --value systemd-sysctl.service":         "not-found",
		"systemctl show -p LoadState --value systemd-journald.service":       "not-found",
	} {
		out, err := b.Run(ctx, "sh", "-c", cmd)
		if err != nil {
			t.Errorf("%s: %v", cmd, err)
			continue
		}
		if got := strings.TrimSpace(out); got != want {
			t.Errorf("%s = %q, want %q", cmd, got, want)
		}
	}

	ctrls, err := b.Controllers()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(b.Cgroup(), "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ctrls, " ") != strings.TrimSpace(string(data)) {
		t.Errorf("Controllers() = %v, cgroup.controllers says %q", ctrls, data)
	}
	t.Logf("box: systemd %s, pid %d, cgroup %s, controllers %v", version, b.Pid(), b.Cgroup(), ctrls)
}

// The box's PID 1 is real root: it must not be able to reach global kernel
// state or the host's /tmp, /dev and console.
func TestBoxIsContained(t *testing.T) {
	b := startBox(t)
	ctx := context.Background()
	if _, err := b.Run(ctx, "sh", "-c", "cat /proc/sys/fs/nr_open > /proc/sys/fs/nr_open"); err == nil {
		t.Error("writing a sysctl in the box succeeded; /proc/sys must be read-only")
	}
	out, err := b.Run(ctx, "stat", "-f", "-c", "%T", "/dev", "/tmp", "/run", "/var/tmp", "/home")
	if err != nil {
		t.Fatal(err)
	}
	for _, fstype := range strings.Fields(out) {
		if fstype != "tmpfs" {
			t.Errorf("box /dev, /tmp, /run, /var/tmp, /home types = %q, want all tmpfs", out)
			break
		}
	}
	out, err = b.Run(ctx, "stat", "-f", "-c", "%T", "/etc")
	if err != nil || strings.TrimSpace(out) != "overlayfs" {
		t.Errorf("box /etc is %q (%v), want overlayfs", out, err)
	}
	if _, err := b.Run(ctx, "sh", "-c", "echo x > /tmp/nsrun-box-test-file"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/tmp/nsrun-box-test-file"); err == nil {
		os.Remove("/tmp/nsrun-box-test-file")
		t.Error("a file written to the box's /tmp appeared in the host's /tmp")
	}
}

func TestUserManager(t *testing.T) {
	b := startBox(t)
	ctx := context.Background()
	u, err := b.EnsureUser(ctx, "nsrun-test")
	if err != nil {
		t.Fatal(err)
	}
	if u.UID == 0 || u.Home == "" {
		t.Fatalf("user %+v", u)
	}
	if err := b.StartUserManager(ctx, u); err != nil {
		t.Fatal(err)
	}
	out, err := b.RunAs(ctx, u, "sh", "-c", `id -u; systemctl --user is-system-running; stat -c %U "$XDG_RUNTIME_DIR/systemd/private"`)
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(u.UID) + "\nrunning\nnsrun-test\n"
	if out != want {
		t.Errorf("as %s: got %q, want %q", u.Name, out, want)
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(passwd), "\nnsrun-test:") {
		t.Error("the box user was added to the host's /etc/passwd")
	}
	again, err := b.EnsureUser(ctx, "nsrun-test")
	if err != nil || again != u {
		t.Errorf("EnsureUser again = %+v, %v; want %+v", again, err, u)
	}
}

// TestUserWithOwnUID: an account with the uid given (box.OwnerUID), its
// user manager started and stopped again.
func TestUserWithOwnUID(t *testing.T) {
	b := startBox(t)
	ctx := context.Background()
	uid := box.OwnerUID()
	u, err := b.EnsureUserID(ctx, "nsrun-test-uid", uid)
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != uid {
		t.Fatalf("user %+v, want uid %d", u, uid)
	}
	if err := b.StartUserManager(ctx, u); err != nil {
		t.Fatal(err)
	}
	out, err := b.RunAs(ctx, u, "sh", "-c", "id -u; systemctl --user is-system-running")
	if want := strconv.Itoa(uid) + "\nrunning\n"; err != nil || out != want {
		t.Errorf("as %s: got %q (%v), want %q", u.Name, out, err, want)
	}
	if again, err := b.EnsureUserID(ctx, "nsrun-test-uid", uid); err != nil || again != u {
		t.Errorf("EnsureUserID again = %+v, %v; want %+v", again, err, u)
	}
	if _, err := b.EnsureUserID(ctx, "nsrun-test-uid", uid+1); err == nil {
		t.Error("EnsureUserID with another uid for an existing account did not fail")
	}
	if err := b.StopUserManager(ctx, u); err != nil {
		t.Fatal(err)
	}
	for _, unit := range []string{"user@" + strconv.Itoa(uid) + ".service", "user-runtime-dir@" + strconv.Itoa(uid) + ".service"} {
		out, err := b.Run(ctx, "systemctl", "show", "--property=ActiveState", "--value", unit)
		if err != nil || strings.TrimSpace(out) != "inactive" {
			t.Errorf("%s after StopUserManager: %q %v, want inactive", unit, out, err)
		}
	}
	if out, err := b.Run(ctx, "pgrep", "-u", strconv.Itoa(uid)); err == nil {
		t.Errorf("processes of uid %d left after StopUserManager: %s", uid, out)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	testutil.RequireBox(t)
	b, err := box.Start(context.Background(), box.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid, cg := b.Pid(), b.Cgroup()
	// Something long-running inside, outside any unit, must not hold it up.
	sleeper := b.Command(context.Background(), "sleep", "1000")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = sleeper.Wait()
	t.Logf("teardown took %v", time.Since(start))
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("box PID 1 (host pid %d) still exists after Close", pid)
	}
	if _, err := os.Stat(cg); err == nil {
		t.Errorf("box cgroup %s still exists after Close", cg)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestGuardRefusesHostNamespaces runs the box's init script where it must
// refuse: not as PID 1, and as PID 1 of a new pid namespace that still shares
// the host's mount namespace. mount and unshare are replaced on PATH by
// recorders, so even a broken guard could not touch the host.
func TestGuardRefusesHostNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	fake := t.TempDir()
	for _, tool := range []string{"readlink", "cat", "dirname", "mkdir"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(fake, tool)); err != nil {
			t.Fatal(err)
		}
	}
	calls := filepath.Join(fake, "calls")
	for _, tool := range []string{"mount", "unshare"} {
		script := "#!/bin/sh\necho " + tool + " \"$@\" >> " + calls + "\nexit 1\n"
		if err := os.WriteFile(filepath.Join(fake, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt, _ := os.Readlink("/proc/self/ns/mnt")
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	for _, tc := range []struct {
		name  string
		flags uintptr
		want  string
	}{
		{"not PID 1", 0, "not PID 1"},
		{"host mount namespace", unix.CLONE_NEWPID, "still in the host mount namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", box.InitScript(), "nsrun-box-init", "outer")
			cmd.Env = []string{"PATH=" + fake, "NSRUN_BOX_HOST_MNTNS=" + mnt, "NSRUN_BOX_HOST_PIDNS=" + pidns}
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: tc.flags}
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 99 {
				t.Errorf("init script exited with %v, want status 99; output %q", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output %q does not say %q", out, tc.want)
			}
			if data, err := os.ReadFile(calls); err == nil {
				t.Errorf("the guard let these through: %s", data)
			}
		})
	}
}
