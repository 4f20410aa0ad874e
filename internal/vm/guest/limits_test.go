//go:build vmguest

package guest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The guest is what the tier is for: a pure cgroup v2 host whose root has
// the controllers nsrun's limits need. Without them every test below would
// prove nothing.
func TestGuestHasControllers(t *testing.T) {
	have := strings.Fields(readCgroup(t, "/sys/fs/cgroup", "cgroup.controllers"))
	for _, c := range []string{"cpuset", "cpu", "io", "memory", "pids"} {
		if !contains(have, c) {
			t.Errorf("controller %s missing from the guest's cgroup v2 root (have %v)", c, have)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A workload allocating past --memory-max is OOM-killed: nsrun exits 137
// and says so from memory.events. Under the limit the same workload runs.
func TestMemoryMaxOOMKill(t *testing.T) {
	forBoth(t, func(t *testing.T, w who) {
		r := nsrun(t, w, "vm-mem-ok-"+w.String(), append([]string{"--memory-max=100M"}, helperArgs("alloc", "20")...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "allocated 20 MiB") {
			t.Fatalf("20 MiB under a 100M limit should run: %s", r)
		}
		r = nsrun(t, w, "vm-oom-"+w.String(), append([]string{"--memory-max=50M"}, helperArgs("alloc", "200")...)...)
		if r.code != 137 {
			t.Errorf("200 MiB under --memory-max=50M: exit %d, want 137 (SIGKILL by the OOM killer)", r.code)
		}
		if !strings.Contains(r.stderr, "the workload was OOM-killed") {
			t.Errorf("nsrun did not say the workload was OOM-killed: %q", r.stderr)
		}
		if strings.Contains(r.stdout, "allocated") {
			t.Errorf("the workload finished its 200 MiB under a 50M limit: %q", r.stdout)
		}
	})
}

// runAsync starts nsrun as w and returns a function that waits for it.
func runAsync(t *testing.T, w who, unit string, args ...string) func() result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	full := append([]string{"run", w.flag(), "--unit=" + unit, "-q"}, args...)
	cmd := command(ctx, w, nsrunBin(), full...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start nsrun: %v", err)
	}
	var once sync.Once
	var r result
	wait := func() result {
		once.Do(func() {
			err := cmd.Wait()
			cancel()
			r = result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
			if err != nil && r.code == 0 {
				r.code = -1
			}
			t.Logf("nsrun %s (as %s): %s", strings.Join(full, " "), w, r)
			assertGone(t, w, unit+".scope")
		})
		return r
	}
	t.Cleanup(func() { wait() })
	return wait
}

// A fork loop under --tasks-max is held at the limit: pids.current of the
// scope never passes it, and the kernel refused forks (pids.events).
func TestTasksMaxHoldsForkLoop(t *testing.T) {
	const limit = 40
	forBoth(t, func(t *testing.T, w who) {
		unit := "vm-tasks-" + w.String()
		wait := runAsync(t, w, unit, append([]string{fmt.Sprintf("--tasks-max=%d", limit)}, helperArgs("forkloop", "200", "3")...)...)
		cg := scopeCgroup(t, w, unit+".scope")
		if got := readCgroup(t, cg, "pids.max"); got != strconv.Itoa(limit) {
			t.Errorf("pids.max of the scope = %s, want %d", got, limit)
		}
		peak, nsrunTasks := int64(0), int64(0)
		done := make(chan result, 1)
		go func() { done <- wait() }()
		var r result
	poll:
		for {
			select {
			case r = <-done:
				break poll
			default:
			}
			if data, err := os.ReadFile(filepath.Join(cg, "pids.current")); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
				peak = max(peak, n)
			}
			if data, err := os.ReadFile(filepath.Join(cg, "supervisor", "pids.current")); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
				nsrunTasks = max(nsrunTasks, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if r.code != 0 {
			t.Fatalf("fork loop: %s", r)
		}
		m := regexp.MustCompile(`started (\d+) failed (\d+)`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("the fork loop did not report: %q", r.stdout)
		}
		started, _ := strconv.Atoi(m[1])
		t.Logf("figure: --tasks-max=%d: the loop started %d of 200 children; peak pids.current %d; nsrun's own tasks up to %d", limit, started, peak, nsrunTasks)
		if peak > limit {
			t.Errorf("pids.current reached %d, above --tasks-max=%d", peak, limit)
		}
		if started >= 200 || started >= limit {
			t.Errorf("the loop started %d children under --tasks-max=%d", started, limit)
		}
		if peak < limit-2 {
			t.Errorf("peak pids.current %d: the loop never came near the limit %d, so the test proved nothing", peak, limit)
		}
	})
}

// A busy loop under --cpu-quota=20% gets 20% of one CPU, within a few
// percent (measured by the workload: its CPU time over wall time).
func TestCPUQuota(t *testing.T) {
	forBoth(t, func(t *testing.T, w who) {
		r := nsrun(t, w, "vm-cpu-"+w.String(), append([]string{"--cpu-quota=20%"}, helperArgs("spin", "5")...)...)
		m := regexp.MustCompile(`cpu ([0-9.]+)`).FindStringSubmatch(r.stdout)
		if r.code != 0 || m == nil {
			t.Fatalf("spin: %s", r)
		}
		share, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("figure: --cpu-quota=20%%: the busy loop got %.1f%% of one CPU", share*100)
		if share < 0.17 || share > 0.23 {
			t.Errorf("--cpu-quota=20%%: the busy loop got %.1f%% of one CPU, want 20%% ± 3", share*100)
		}
	})
}

// ddRate runs dd with direct writes as w (through nsrun with args when
// unit is set, directly otherwise) and returns the bytes per second dd
// reports.
func ddRate(t *testing.T, w who, unit string, args ...string) float64 {
	t.Helper()
	target := "/var/tmp/nsrun-vm-io"
	if w == user {
		target = "/home/" + testUser + "/nsrun-vm-io"
	}
	dd := []string{"/bin/dd", "if=/dev/zero", "of=" + target, "bs=1M", "count=12", "oflag=direct", "conv=fsync"}
	var r result
	if unit == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r = run(command(ctx, w, dd[0], dd[1:]...))
	} else {
		r = nsrun(t, w, unit, append(append(args, "--"), dd...)...)
	}
	os.Remove(target)
	if r.code != 0 {
		t.Fatalf("dd: %s", r)
	}
	m := regexp.MustCompile(`(\d+) bytes .* copied, ([0-9.]+) s`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("dd did not report a rate: %q", r.stderr)
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	secs, _ := strconv.ParseFloat(m[2], 64)
	return n / secs
}

const ioLimit = 2 << 20 // "2M" in systemd's units: 2 MiB/s

// checkIOHeld runs direct writes unlimited, then under
// --io-write-bandwidth-max, and checks the limit holds them.
func checkIOHeld(t *testing.T, w who, unit string) {
	t.Helper()
	free := ddRate(t, w, "")
	held := ddRate(t, w, unit, "--io-write-bandwidth-max="+disk+" 2M")
	t.Logf("figure: direct writes as %s: %.2f MiB/s unlimited, %.2f MiB/s under a 2M limit", w, free/(1<<20), held/(1<<20))
	if free < 1.5*ioLimit {
		t.Fatalf("unlimited direct writes ran at only %.2f MiB/s: too slow to show a 2M limit", free/(1<<20))
	}
	if held > 1.15*ioLimit || held < 0.5*ioLimit {
		t.Errorf("--io-write-bandwidth-max=2M: direct writes ran at %.2f MiB/s", held/(1<<20))
	}
}

// As root, direct writes are held at --io-write-bandwidth-max.
func TestIOWriteBandwidthMax(t *testing.T) {
	checkIOHeld(t, root, "vm-io-root")
}

// What nsrun reports in force is in the kernel's files: read them back
// while the workload runs.
func TestEnforcementReportInForce(t *testing.T) {
	forBoth(t, func(t *testing.T, w who) {
		args := []string{"--memory-max=64M", "--memory-high=60M", "--tasks-max=50", "--cpu-quota=50%", "--cpu-weight=200"}
		want := map[string]string{
			"memory.max":  "67108864",
			"memory.high": "62914560",
			"pids.max":    "50",
			"cpu.max":     "50000 100000",
			"cpu.weight":  "200",
		}
		if w == root {
			args = append(args, "--allowed-cpus=0", "--io-weight=300")
			want["cpuset.cpus"] = "0"
			want["io.weight"] = "default 300"
		}
		unit := "vm-report-" + w.String()
		wait := runAsync(t, w, unit, append(args, "--", "/bin/sleep", "3")...)
		cg := scopeCgroup(t, w, unit+".scope")
		for file, v := range want {
			if got := readCgroup(t, cg, file); got != v {
				t.Errorf("%s of %s = %q, want %q", file, unit, got, v)
			}
		}
		if r := wait(); r.code != 0 || r.stderr != "" {
			t.Errorf("nsrun with every limit in force: %s", r)
		}
	})
}

// In --user mode, memory and pids are delegated to the user manager by
// default, io is not: nsrun refuses an io limit and names the delegate
// drop-in; once the drop-in is installed, the same limit is accepted and
// holds.
func TestUserIONeedsDelegateDropIn(t *testing.T) {
	waitUserManager(t)
	r := nsrun(t, user, "vm-io-refused", "--io-write-bandwidth-max="+disk+" 2M", "--", "/bin/true")
	if r.code != 125 {
		t.Errorf("io limit as the user without the drop-in: exit %d, want 125", r.code)
	}
	if !strings.Contains(r.stderr, "not delegated to your user manager") || !strings.Contains(r.stderr, "delegate.conf") {
		t.Errorf("the refusal does not name the delegate drop-in: %q", r.stderr)
	}
	r = nsrun(t, user, "vm-cpuset-refused", "--allowed-cpus=0", "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "delegate.conf") {
		t.Errorf("cpuset limit as the user without the drop-in: %s", r)
	}

	installDropIn(t)
	checkIOHeld(t, user, "vm-io-user")
	if r := nsrun(t, user, "vm-cpuset-user", "--allowed-cpus=0", "--", "/bin/true"); r.code != 0 {
		t.Errorf("cpuset limit as the user with the drop-in: %s", r)
	}
}

// installDropIn installs contrib's delegate drop-in as its comment says
// and restarts the user manager; the test's cleanup takes it out again.
func installDropIn(t *testing.T) {
	t.Helper()
	dir := "/etc/systemd/system/user@.service.d"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/usr/local/share/nsrun/delegate.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "delegate.conf"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	restart := func() {
		systemctl(t, root, "daemon-reload")
		systemctl(t, root, "restart", fmt.Sprintf("user@%d.service", testUID))
		waitUserManager(t)
	}
	t.Cleanup(func() {
		os.Remove(filepath.Join(dir, "delegate.conf"))
		restart()
	})
	restart()
	ctrl := readCgroup(t, fmt.Sprintf("/sys/fs/cgroup/user.slice/user-%d.slice/user@%d.service", testUID, testUID), "cgroup.subtree_control")
	t.Logf("user manager's subtree_control with the drop-in: %s", ctrl)
}

// In place: nsrun run by a Delegate=yes service writes the limits into its
// own payload/ cgroup, reads them back, and they hold (OOM kill, 137, the
// message).
func TestInPlaceLimits(t *testing.T) {
	unit := "vm-inplace-a"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := exec.CommandContext(ctx, "systemd-run", "-q", "-p", "Delegate=yes", "-p", "CollectMode=inactive-or-failed", "--unit="+unit, "--",
		nsrunBin(), "--memory-max=50M", "--tasks-max=30", "--", "/bin/sleep", "3")
	if r := run(start); r.code != 0 {
		t.Fatalf("systemd-run: %s", r)
	}
	payload := "/sys/fs/cgroup/system.slice/" + unit + ".service/payload"
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(payload, "memory.max")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", payload)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The limits are written before the workload starts; wait for it.
	for readCgroup(t, payload, "cgroup.procs") == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := readCgroup(t, payload, "memory.max"); got != "52428800" {
		t.Errorf("payload/memory.max in place = %s, want 52428800", got)
	}
	if got := readCgroup(t, payload, "pids.max"); got != "30" {
		t.Errorf("payload/pids.max in place = %s, want 30", got)
	}
	assertGone(t, root, unit+".service")

	oom := exec.CommandContext(ctx, "systemd-run", "-q", "--wait", "--pipe", "-p", "Delegate=yes", "-p", "CollectMode=inactive-or-failed", "--unit=vm-inplace-oom", "--",
		nsrunBin(), "--memory-max=50M", "-E", "NSRUN_VM_HELPER=alloc", "--", selfPath, "200")
	r := run(oom)
	t.Logf("in place OOM: %s", r)
	if r.code != 137 || !strings.Contains(r.stderr, "the workload was OOM-killed") {
		t.Errorf("in place, 200 MiB under --memory-max=50M: %s", r)
	}
	assertGone(t, root, "vm-inplace-oom.service")
}

// Threat F09 on a host with the pids controller: nsrun started in a cgroup
// whose pids.max leaves it too few tasks refuses with one line naming the
// limit, instead of a Go runtime crash halfway through; and a --tasks-max
// too small for the scope's own nsrun processes is refused before any unit
// exists.
func TestTooFewTasksRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := run(exec.CommandContext(ctx, "systemd-run", "-q", "--scope", "--unit=vm-few-tasks", "-p", "TasksMax=10", "--",
		nsrunBin(), "-q", "--", "/bin/true"))
	t.Logf("nsrun under TasksMax=10: %s", r)
	if r.code != 125 || !strings.Contains(r.stderr, "pids.max") || strings.Contains(r.stderr, "goroutine") {
		t.Errorf("nsrun in a cgroup with pids.max 10: want exit 125 and one line naming pids.max: %s", r)
	}
	assertGone(t, root, "vm-few-tasks.scope")
	r = nsrun(t, root, "vm-tasks-too-small", "--tasks-max=5", "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "TasksMax=5 is too small") {
		t.Errorf("--tasks-max=5: want a refusal naming it: %s", r)
	}
}
