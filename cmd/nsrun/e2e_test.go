package main

// End-to-end tests: the built nsrun binary, driven in the systemd box the way
// a user runs it, checked from outside with systemctl and the host's view of
// the box's cgroups.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
)

// The suite shares one box and one binary (set up in TestMain).
var (
	testBox  *box.Box
	nsrunBin string
)

func TestMain(m *testing.M) {
	os.Exit(testutil.Main(m, testutil.MainOptions{HostCheck: true, Setup: setupE2E}))
}

func setupE2E() (func() error, error) {
	if box.Supported() != nil {
		return nil, nil // the box tests skip, or fail under NSRUN_TEST_STRICT=1
	}
	dir, err := os.MkdirTemp("", "nsrun-e2e-")
	if err != nil {
		return nil, err
	}
	// Box users run the binary too.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	nsrunBin = filepath.Join(dir, "nsrun")
	if src := os.Getenv("NSRUN_BIN"); src != "" {
		data, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(nsrunBin, data, 0o755)
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("copy NSRUN_BIN: %w", err)
		}
	} else if out, err := buildNsrun(nsrunBin); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("build nsrun: %v\n%s", err, out)
	}
	// Under NSRUN_TEST_STRICT=1 the suite runs nsrun with its monitor
	// (internal/monitor); the Go fallbacks are tested with
	// NSRUN_TEST_NO_MONITOR=1 (monitor_test.go).
	if err := checkMonitorBuilt(nsrunBin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	testBox, err = box.Start(context.Background(), box.Options{Shares: []string{dir}})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return func() error {
		err := testBox.Close()
		os.RemoveAll(dir)
		return err
	}, nil
}

func requireBox(t *testing.T) {
	t.Helper()
	testutil.RequireBox(t)
	if testBox == nil {
		t.Fatal("box not started")
	}
}

// boxUser is the suite's unprivileged box user, with its user manager
// running.
func boxUser(t *testing.T) *box.User {
	t.Helper()
	ctx := context.Background()
	u, err := testBox.EnsureUser(ctx, "nsrun-e2e")
	if err != nil {
		t.Fatal(err)
	}
	if err := testBox.StartUserManager(ctx, u); err != nil {
		t.Fatal(err)
	}
	return &u
}

// nsrun prepares nsrun ARGS... in the box, as root or as user u.
func nsrun(ctx context.Context, u *box.User, args ...string) *exec.Cmd {
	if u != nil {
		return testBox.CommandAs(ctx, *u, nsrunBin, args...)
	}
	return testBox.Command(ctx, nsrunBin, args...)
}

// systemctl runs systemctl in the box, for u's manager when u is set.
func systemctl(t *testing.T, u *box.User, args ...string) string {
	t.Helper()
	var out string
	var err error
	if u != nil {
		out, err = testBox.RunAs(context.Background(), *u, "systemctl", append([]string{"--user"}, args...)...)
	} else {
		out, err = testBox.Run(context.Background(), "systemctl", args...)
	}
	if err != nil {
		t.Fatalf("systemctl %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out)
}

// showProps reads unit properties with systemctl show.
func showProps(t *testing.T, u *box.User, unit string, names ...string) map[string]string {
	t.Helper()
	props := map[string]string{}
	out := systemctl(t, u, "show", "--property="+strings.Join(names, ","), unit)
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	return props
}

// waitUnitGone polls until the manager no longer knows unit.
func waitUnitGone(t *testing.T, u *box.User, unit string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		state := showProps(t, u, unit, "LoadState", "ActiveState")
		if state["LoadState"] == "not-found" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("unit %s still there after nsrun exited: %v", unit, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func uniqueName(t *testing.T, prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e9)
}

// gate is a workload that says it runs, then waits to be released.
type gate struct{ dir string }

func newGate(t *testing.T, u *box.User) gate {
	t.Helper()
	g := gate{dir: "/tmp/" + uniqueName(t, "nsrun-e2e-gate")}
	var err error
	if u != nil {
		_, err = testBox.RunAs(context.Background(), *u, "mkdir", g.dir)
	} else {
		_, err = testBox.Run(context.Background(), "mkdir", g.dir)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = testBox.Run(context.Background(), "rm", "-rf", g.dir) })
	return g
}

// script waits for release, then exits with code.
func (g gate) script(code int) string {
	return fmt.Sprintf(`echo $$ > %[1]s/ready; while [ ! -e %[1]s/go ]; do sleep 0.02; done; exit %[2]d`, g.dir, code)
}

func (g gate) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := testBox.Run(context.Background(), "test", "-e", g.dir+"/ready"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("workload did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startGated starts nsrun ARGS... -- sh -c SCRIPT and waits until the
// workload runs.
func startGated(t *testing.T, u *box.User, g gate, script string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := nsrun(context.Background(), u, append(args, "--", "sh", "-c", script)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.waitReady(t)
	return cmd
}

func (g gate) release(t *testing.T) {
	t.Helper()
	if _, err := testBox.Run(context.Background(), "touch", g.dir+"/go"); err != nil {
		t.Fatal(err)
	}
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	t.Fatalf("run nsrun: %v", err)
	return -1
}

// testScopeInManager is the first vertical slice: a scope in a slice, with
// Delegate=yes, seen from outside while the workload runs, gone afterwards.
func testScopeInManager(t *testing.T, u *box.User) {
	unit := uniqueName(t, "e2e-scope")
	g := newGate(t, u)
	cmd := nsrun(context.Background(), u, "--slice=e2e-x.slice", "--unit="+unit, "--", "sh", "-c", g.script(7))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.waitReady(t)

	props := showProps(t, u, unit+".scope", "Slice", "Delegate", "CollectMode", "ActiveState", "ControlGroup")
	want := map[string]string{"Slice": "e2e-x.slice", "Delegate": "yes", "CollectMode": "inactive-or-failed", "ActiveState": "active"}
	for k, v := range want {
		if props[k] != v {
			t.Errorf("%s.scope: %s=%q, want %q", unit, k, props[k], v)
		}
	}
	cg := props["ControlGroup"]
	if !strings.HasSuffix(cg, "/e2e.slice/e2e-x.slice/"+unit+".scope") {
		t.Errorf("ControlGroup=%q, want it under e2e.slice/e2e-x.slice", cg)
	}
	// nsrun sits in supervisor/, the workload in payload/, nothing in the
	// scope's own cgroup (read from the host's side).
	hostCg := filepath.Join(testBox.Cgroup(), cg)
	for leaf, want := range map[string]string{"": "", "supervisor": "nsrun", "payload": "sh"} {
		comms := cgroupComms(t, filepath.Join(hostCg, leaf))
		if want == "" && len(comms) != 0 || want != "" && !slices.Contains(comms, want) {
			t.Errorf("%s/%s holds %q, want %q", cg, leaf, comms, want)
		}
	}
	if u != nil {
		var st syscall.Stat_t
		if err := syscall.Stat(hostCg, &st); err != nil || int(st.Uid) != u.UID {
			t.Errorf("delegated cgroup %s owned by uid %d (%v), want %d", hostCg, st.Uid, err, u.UID)
		}
	}

	g.release(t)
	if code := exitCode(t, cmd.Wait()); code != 7 {
		t.Errorf("nsrun exited %d, want the workload's 7; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "Running scope as unit: "+unit+".scope") {
		t.Errorf("stderr %q does not name the unit", stderr.String())
	}
	waitUnitGone(t, u, unit+".scope")
	if _, err := os.Stat(hostCg); err == nil {
		t.Errorf("cgroup %s still exists after the unit is gone", hostCg)
	}
}

func TestScopeSystemManager(t *testing.T) {
	requireBox(t)
	testScopeInManager(t, nil)
}

func TestScopeUserManager(t *testing.T) {
	requireBox(t)
	u := *boxUser(t)
	testScopeInManager(t, &u)
}

// TestExitStatus checks the exit status contract of cli.md, without and
// with a sandbox (there a failed exec of the workload is reported by the
// monitor, which takes over at the release).
func TestExitStatus(t *testing.T) {
	requireBox(t)
	for _, mode := range [][]string{nil, {"--sandbox"}} {
		for _, tc := range []struct {
			name string
			args []string
			want int
		}{
			{"success", []string{"true"}, 0},
			{"own status", []string{"sh", "-c", "exit 7"}, 7},
			{"status 255", []string{"sh", "-c", "exit 255"}, 255},
			{"SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
			{"SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
			{"not found", []string{"/nonexistent/cmd"}, 127},
			{"not executable", []string{"/etc/passwd"}, 126},
		} {
			t.Run(fmt.Sprint(tc.name, mode), func(t *testing.T) {
				unit := uniqueName(t, "e2e-exit")
				args := append(append(append([]string{"-q", "--unit=" + unit}, mode...), "--"), tc.args...)
				out, err := nsrun(context.Background(), nil, args...).CombinedOutput()
				if code := exitCode(t, err); code != tc.want {
					t.Errorf("nsrun %s exited %d, want %d; output %q", strings.Join(args, " "), code, tc.want, out)
				}
				waitUnitGone(t, nil, unit+".scope")
			})
		}
	}
}

// TestUsageErrorsCreateNothing: a bad value is refused with one line naming
// it, status 125, before any unit exists.
func TestUsageErrorsCreateNothing(t *testing.T) {
	requireBox(t)
	before := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "*.scope")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--unit=a b", "true"}, `"a b.scope"`},
		{[]string{"--unit=x.service", "true"}, `x.service`},
		{[]string{"--slice=-bad-.slice", "true"}, `-bad-.slice`},
		{[]string{"-p", "NoSuchProperty=1", "true"}, `NoSuchProperty`},
		{[]string{"-p", "MemoryMax=12Q", "true"}, `12Q`},
		{[]string{"-p", "Delegate=no", "true"}, `Delegate`},
		{[]string{"--no-such-flag", "true"}, `--no-such-flag`},
		{[]string{}, `no command`},
	} {
		out, err := nsrun(context.Background(), nil, tc.args...).CombinedOutput()
		if code := exitCode(t, err); code != 125 {
			t.Errorf("nsrun %q exited %d, want 125", tc.args, code)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], tc.says) {
			t.Errorf("nsrun %q said %q, want one line naming %s", tc.args, out, tc.says)
		}
	}
	if after := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "*.scope"); after != before {
		t.Errorf("usage errors changed the units:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestExistingUnitNotAdopted: a unit of the requested name is an error, and
// the existing unit and its processes are left alone.
func TestExistingUnitNotAdopted(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-busy")
	g := newGate(t, nil)
	first := startGated(t, nil, g, g.script(0), "-q", "--unit="+unit)

	out, err := nsrun(context.Background(), nil, "--unit="+unit, "--", "true").CombinedOutput()
	if code := exitCode(t, err); code != 125 || !strings.Contains(string(out), "already exists") {
		t.Errorf("second nsrun --unit=%s: exit %d, output %q; want 125 and 'already exists'", unit, code, out)
	}
	if state := showProps(t, nil, unit+".scope", "ActiveState")["ActiveState"]; state != "active" {
		t.Errorf("existing unit is %q after the refused attempt, want active", state)
	}
	g.release(t)
	if code := exitCode(t, first.Wait()); code != 0 {
		t.Errorf("first nsrun exited %d", code)
	}
	waitUnitGone(t, nil, unit+".scope")
}

// scopeProcs returns the host pids in a scope's cgroup and below it, with
// their comm.
func scopeProcs(t *testing.T, unit string) map[int]string {
	t.Helper()
	cg := showProps(t, nil, unit, "ControlGroup")["ControlGroup"]
	procs := map[int]string{}
	err := filepath.WalkDir(filepath.Join(testBox.Cgroup(), cg), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(data)) {
			var pid int
			fmt.Sscan(f, &pid)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			procs[pid] = strings.TrimSpace(string(comm))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return procs
}

// cgroupComms lists the comm of every process in one cgroup (not below).
func cgroupComms(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Errorf("read %s: %v", dir, err)
		return nil
	}
	var comms []string
	for _, f := range strings.Fields(string(data)) {
		comm, _ := os.ReadFile("/proc/" + f + "/comm")
		comms = append(comms, strings.TrimSpace(string(comm)))
	}
	return comms
}

func nsrunPid(t *testing.T, unit string) int {
	t.Helper()
	// Between nsrun's execve of the monitor and the monitor naming itself
	// (PR_SET_NAME), its comm is the memfd's fd number: look again then.
	deadline := time.Now().Add(5 * time.Second)
	for {
		for pid, comm := range scopeProcs(t, unit) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if comm == "nsrun" && !strings.Contains(string(cmdline), watchArg) {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no nsrun process in %s", unit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSignalsAreForwarded(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-sig")
	g := newGate(t, nil)
	script := `trap 'exit 42' TERM; ` + g.script(0)
	cmd := startGated(t, nil, g, script, "-q", "--unit="+unit)
	if err := syscall.Kill(nsrunPid(t, unit+".scope"), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd.Wait()); code != 42 {
		t.Errorf("after SIGTERM to nsrun, exit %d; want the workload's trap status 42", code)
	}
	waitUnitGone(t, nil, unit+".scope")
}

// TestWorkloadDiesWithNsrun: SIGKILL to nsrun leaves nothing running and the
// scope is collected.
func TestWorkloadDiesWithNsrun(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-orphan")
	g := newGate(t, nil)
	cmd := startGated(t, nil, g, g.script(0), "-q", "--unit="+unit)
	procs := scopeProcs(t, unit+".scope")
	if err := syscall.Kill(nsrunPid(t, unit+".scope"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitUnitGone(t, nil, unit+".scope")
	for pid, comm := range procs {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("pid %d (%s) still runs after nsrun was killed", pid, comm)
		}
	}
}

// TestLimitsNotInForce: a limit whose controller the scope lacks is refused
// (125, naming the property and the controller, the scope gone), and runs
// with a warning under --allow-degraded. Whether the controller exists is
// read from the box's own cgroup, so the test holds on hybrid and unified
// hosts alike.
func TestLimitsNotInForce(t *testing.T) {
	requireBox(t)
	ctrls, err := testBox.Controllers()
	if err != nil {
		t.Fatal(err)
	}
	u := *boxUser(t)
	for _, who := range []*box.User{nil, &u} {
		for _, tc := range []struct{ prop, sent, ctrl string }{
			{"MemoryMax=64M", "MemoryMax", "memory"},
			{"TasksMax=10", "TasksMax", "pids"},
			{"CPUQuota=20%", "CPUQuotaPerSecUSec", "cpu"},
		} {
			name := tc.prop
			if who != nil {
				name += " as user"
			}
			t.Run(name, func(t *testing.T) {
				unit := uniqueName(t, "e2e-limit")
				if strings.Contains(" "+strings.Join(ctrls, " ")+" ", " "+tc.ctrl+" ") {
					// A host whose v2 hierarchy has the controller: no refusal.
					out, err := nsrun(context.Background(), who, "-q", "--unit="+unit, "-p", tc.prop, "--", "true").CombinedOutput()
					if code := exitCode(t, err); code != 0 || strings.Contains(string(out), "not in force") {
						t.Errorf("with the %s controller available: exit %d, output %q", tc.ctrl, code, out)
					}
					waitUnitGone(t, who, unit+".scope")
					return
				}
				out, err := nsrun(context.Background(), who, "-q", "--unit="+unit, "-p", tc.prop, "--", "sh", "-c", "echo WORKLOAD RAN").CombinedOutput()
				if code := exitCode(t, err); code != 125 {
					t.Errorf("exit %d, want 125; output %q", code, out)
				}
				for _, want := range []string{tc.sent + " not in force", "the " + tc.ctrl + " controller", "--allow-degraded"} {
					if !strings.Contains(string(out), want) {
						t.Errorf("output %q does not say %q", out, want)
					}
				}
				if strings.Contains(string(out), "WORKLOAD RAN") {
					t.Error("the workload ran although its limit was not in force")
				}
				// The box's whole hierarchy lacks the controller: that is known
				// before any unit exists, so none was made (a rerun with the
				// same --unit must not meet a leftover).
				if state := showProps(t, who, unit+".scope", "LoadState")["LoadState"]; state != "not-found" {
					t.Errorf("after the refusal the unit is %q, want not-found at once", state)
				}
				waitUnitGone(t, who, unit+".scope")

				out, err = nsrun(context.Background(), who, "-q", "--allow-degraded", "--unit="+unit, "-p", tc.prop, "--", "sh", "-c", "echo WORKLOAD RAN").CombinedOutput()
				if code := exitCode(t, err); code != 0 {
					t.Errorf("--allow-degraded: exit %d, want 0; output %q", code, out)
				}
				if !strings.Contains(string(out), "WORKLOAD RAN") || !strings.Contains(string(out), "warning: "+tc.sent+" not in force") {
					t.Errorf("--allow-degraded: output %q, want the workload's output and a warning", out)
				}
				waitUnitGone(t, who, unit+".scope")
			})
		}
	}
}

// TestLongCommandDescription: the default description is the command line,
// cut to 200 bytes on a character boundary (D-Bus refuses invalid UTF-8).
func TestLongCommandDescription(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-desc")
	long := ": " + strings.Repeat("0", 184) + strings.Repeat("€", 8)
	out, err := nsrun(context.Background(), nil, "-q", "--unit="+unit, "--", "sh", "-c", long).CombinedOutput()
	if code := exitCode(t, err); code != 0 {
		t.Errorf("exit %d, output %q", code, out)
	}
	waitUnitGone(t, nil, unit+".scope")
}

// TestPropertiesReachTheUnit: -p values arrive as systemd reads them back.
func TestPropertiesReachTheUnit(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-props")
	g := newGate(t, nil)
	cmd := startGated(t, nil, g, g.script(0), "-q", "--unit="+unit, "--description=e2e props",
		"-p", "KillMode=mixed", "-p", "CollectMode=inactive", "-p", "RuntimeMaxSec=5min",
		"-p", "SendSIGHUP=yes")
	got := showProps(t, nil, unit+".scope", "KillMode", "CollectMode", "RuntimeMaxUSec", "SendSIGHUP", "Description", "Delegate")
	want := map[string]string{"KillMode": "mixed", "CollectMode": "inactive", "RuntimeMaxUSec": "5min",
		"SendSIGHUP": "yes", "Description": "e2e props", "Delegate": "yes"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	g.release(t)
	if code := exitCode(t, cmd.Wait()); code != 0 {
		t.Errorf("exit %d", code)
	}
	waitUnitGone(t, nil, unit+".scope")
}
