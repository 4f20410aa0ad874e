package main

// Lifecycle commands (list, status, stop, kill, freeze, thaw) driven as a
// user runs them, against a workload nsrun runs in the shared box; every
// claim is checked from outside: systemctl, and the host's view of the box's
// cgroups. JSON is decoded into maps so that the documented field names
// (docs/json.md) are what is tested, not the Go structs.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/box"
)

// lcRun runs nsrun ARGS... in the box (as u when set) and returns its
// standard output, standard error and exit status.
func lcRun(t *testing.T, u *box.User, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := nsrun(context.Background(), u, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	code = exitCode(t, cmd.Run())
	return out.String(), errb.String(), code
}

// lcOK runs nsrun ARGS... and fails the test unless it exits 0.
func lcOK(t *testing.T, u *box.User, args ...string) string {
	t.Helper()
	out, errs, code := lcRun(t, u, args...)
	if code != 0 {
		t.Fatalf("nsrun %s: exit %d, stderr %q", strings.Join(args, " "), code, errs)
	}
	return out
}

func lcJSON(t *testing.T, u *box.User, args ...string) map[string]any {
	t.Helper()
	out := lcOK(t, u, args...)
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nsrun %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	if v, ok := doc["schema_version"].(float64); !ok || v != 1 {
		t.Errorf("nsrun %s: schema_version %v, want 1", strings.Join(args, " "), doc["schema_version"])
	}
	return doc
}

// listed returns the entry for unit in a "list --json" document, or nil.
func listed(t *testing.T, doc map[string]any, unit string) map[string]any {
	t.Helper()
	arr, ok := doc["units"].([]any)
	if !ok {
		t.Fatalf("list --json: units is %T, want an array", doc["units"])
	}
	for _, e := range arr {
		if m, ok := e.(map[string]any); ok && m["unit"] == unit {
			return m
		}
	}
	return nil
}

func jsonPids(t *testing.T, v any) []int {
	t.Helper()
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("pids are %T (%v), want an array", v, v)
	}
	var pids []int
	for _, p := range arr {
		f, ok := p.(float64)
		if !ok {
			t.Fatalf("pid %v is %T, want a number", p, p)
		}
		pids = append(pids, int(f))
	}
	return pids
}

// boxRead reads a file in the box (as u when set, to see what u may see).
func boxRead(t *testing.T, u *box.User, path string) (string, error) {
	t.Helper()
	if u != nil {
		return testBox.RunAs(context.Background(), *u, "cat", path)
	}
	return testBox.Run(context.Background(), "cat", path)
}

// waitFor polls cond until it holds, failing the test after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cgroupEvent(t *testing.T, dir, key string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			return v
		}
	}
	t.Fatalf("%s/cgroup.events has no %s: %q", dir, key, data)
	return ""
}

// hostPids lists the pids (host numbering) in a cgroup and below.
func hostPids(t *testing.T, dir string) []int {
	t.Helper()
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(data)) {
			p, _ := strconv.Atoi(f)
			pids = append(pids, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// testLifecycle walks one workload through list, status, kill, freeze, thaw
// and stop, as root against the system manager (u nil) or as u against u's
// user manager.
func testLifecycle(t *testing.T, u *box.User) {
	unit := uniqueName(t, "e2e-life") + ".scope"
	g := newGate(t, u)
	// The workload counts while it runs, notes every SIGUSR1 and SIGRTMIN
	// it gets, and says its pid. It is perl, not sh: perl runs its handler
	// once per signal delivered (sh folds signals that arrive during one
	// command into one trap run), and SIGRTMIN is queued, never merged, so
	// a signal delivered twice is seen twice.
	script := fmt.Sprintf(`exec perl -e '
		my $d = %[1]q;
		sub note { open(my $f, ">>", "$d/$_[0]") or die; print $f "got\n"; close $f }
		$SIG{USR1} = sub { note("usr1") };
		$SIG{RTMIN} = sub { note("rtmin") };
		open(my $r, ">", "$d/ready.tmp") or die; print $r "$$\n"; close $r; rename "$d/ready.tmp", "$d/ready";
		for (my $i = 1; ; $i++) {
			open(my $c, ">", "$d/count.tmp") or die; print $c "$i\n"; close $c; rename "$d/count.tmp", "$d/count";
			select(undef, undef, undef, 0.02);
		}'`, g.dir)
	args := []string{"-q", "--unit=" + unit, "--slice=e2e-life.slice"}
	// Where the box has the pids controller (a unified host), a limit to read back.
	ctrls, err := testBox.Controllers()
	if err != nil {
		t.Fatal(err)
	}
	tasksMax := slices.Contains(ctrls, "pids")
	if tasksMax {
		args = append(args, "-p", "TasksMax=77")
	}
	cmd := nsrun(context.Background(), u, append(args, "--", "sh", "-c", script)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _, _ = lcRun(t, u, "stop", unit)
			_ = cmd.Wait()
		}
	})
	g.waitReady(t)
	readyText, err := boxRead(t, u, g.dir+"/ready")
	if err != nil {
		t.Fatal(err)
	}
	shPid, _ := strconv.Atoi(strings.TrimSpace(readyText))

	mgr := "system"
	if u != nil {
		mgr = "user"
	}
	cg := showProps(t, u, unit, "ControlGroup")["ControlGroup"]
	hostCg := filepath.Join(testBox.Cgroup(), cg)
	// nsrun run makes supervisor/ and payload/; the checks below hold
	// either way, so that they also cover a cgroup without them.
	layout := hasLeaves(hostCg)
	if !layout {
		t.Errorf("nsrun run made no supervisor/ and payload/ below %s", hostCg)
	}

	t.Run("list", func(t *testing.T) {
		doc := lcJSON(t, u, "list", "--all", "--json")
		if doc["manager"] != mgr {
			t.Errorf("manager %v, want %s", doc["manager"], mgr)
		}
		e := listed(t, doc, unit)
		if e == nil {
			t.Fatalf("list --all --json does not show %s: %v", unit, doc)
		}
		for k, want := range map[string]any{
			"type": "scope", "slice": "e2e-life.slice", "load_state": "loaded", "active_state": "active",
			"sub_state": "running", "freezer_state": "running", "delegate": true, "control_group": cg,
			"cgroup_path": "/sys/fs/cgroup" + cg, "sandbox": layout,
		} {
			if e[k] != want {
				t.Errorf("list entry %s = %v (%T), want %v", k, e[k], e[k], want)
			}
		}
		if pids := jsonPids(t, e["workload_pids"]); !slices.Contains(pids, shPid) {
			t.Errorf("workload_pids %v lack the workload's pid %d", pids, shPid)
		}
		// Without --all only sandboxes with nsrun's layout are listed.
		if got := listed(t, lcJSON(t, u, "list", "--json"), unit) != nil; got != layout {
			t.Errorf("list without --all shows %s: %v; its cgroup has nsrun's leaves: %v", unit, got, layout)
		}
		table := lcOK(t, u, "list", "--all")
		if !strings.HasPrefix(table, "UNIT") || !strings.Contains(table, unit) || !strings.Contains(table, cg) {
			t.Errorf("list --all table does not show %s and %s:\n%s", unit, cg, table)
		}
	})

	t.Run("status", func(t *testing.T) {
		st := lcJSON(t, u, "status", unit, "--json")
		for k, want := range map[string]any{
			"unit": unit, "manager": mgr, "type": "scope", "slice": "e2e-life.slice",
			"active_state": "active", "control_group": cg, "sandbox": layout,
		} {
			if st[k] != want {
				t.Errorf("status %s = %v, want %v", k, st[k], want)
			}
		}
		if pids := jsonPids(t, st["workload_pids"]); !slices.Contains(pids, shPid) {
			t.Errorf("workload_pids %v lack the workload's pid %d", pids, shPid)
		}
		// Limits: a file's content exactly when the file is there.
		limits, ok := st["limits"].(map[string]any)
		if !ok {
			t.Fatalf("limits is %T (%v), want an object", st["limits"], st["limits"])
		}
		for part, dir := range map[string]string{"cgroup": hostCg, "payload": filepath.Join(hostCg, "payload")} {
			got, ok := limits[part].(map[string]any)
			if part == "payload" && !layout {
				if limits[part] != nil {
					t.Errorf("limits.payload = %v without nsrun's layout, want null", limits[part])
				}
				continue
			}
			if !ok {
				t.Errorf("limits.%s is %T, want an object", part, limits[part])
				continue
			}
			for _, f := range delegate.LimitFiles {
				data, err := os.ReadFile(filepath.Join(dir, f))
				v, listed := got[f]
				switch {
				case err != nil && listed:
					t.Errorf("limits.%s lists %s = %v, but the file is absent", part, f, v)
				case err == nil && v != strings.TrimSpace(string(data)):
					t.Errorf("limits.%s %s = %v, the file reads %q", part, f, v, data)
				}
			}
		}
		if tasksMax {
			if got := limits["cgroup"].(map[string]any)["pids.max"]; got != "77" {
				t.Errorf("limits.cgroup pids.max = %v with TasksMax=77", got)
			}
		}
		usage, ok := st["usage"].(map[string]any)
		if !ok {
			t.Fatalf("usage is %T, want an object", st["usage"])
		}
		// Known exactly when the controller's file is there, never 0 for unknown.
		for field, file := range map[string]string{
			"memory_current_bytes": "memory.current", "memory_peak_bytes": "memory.peak",
			"pids_current": "pids.current", "io": "io.stat", "memory_events": "memory.events",
			"cpu_usage_usec": "cpu.stat",
		} {
			v, present := usage[field]
			if !present {
				t.Errorf("usage has no %s field", field)
				continue
			}
			_, err := os.Stat(filepath.Join(hostCg, file))
			if known := v != nil; known != (err == nil) {
				t.Errorf("usage.%s = %v, but %s exists: %v", field, v, file, err == nil)
			}
		}
		if usage["populated"] != true || usage["frozen"] != false {
			t.Errorf("usage populated/frozen = %v/%v, want true/false", usage["populated"], usage["frozen"])
		}
		text := lcOK(t, u, "status", strings.TrimSuffix(unit, ".scope"))
		for _, want := range []string{"Unit:", unit, "Cgroup:", cg, "Workload:", strconv.Itoa(shPid)} {
			if !strings.Contains(text, want) {
				t.Errorf("status does not say %q:\n%s", want, text)
			}
		}
	})

	count := func() string {
		s, err := boxRead(t, u, g.dir+"/count")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(s)
	}
	// notes reads how often the workload saw a signal.
	notes := func(file string) int {
		s, err := boxRead(t, u, g.dir+"/"+file)
		if err != nil {
			return 0
		}
		return strings.Count(s, "got\n")
	}
	t.Run("kill", func(t *testing.T) {
		// nsrun kill signals payload/ only: were nsrun's supervisor
		// signalled too, it would forward a second copy.
		for _, sig := range []struct{ flag, file string }{{"USR1", "usr1"}, {"RTMIN", "rtmin"}} {
			lcOK(t, u, "kill", "--signal="+sig.flag, unit)
			waitFor(t, "the workload's "+sig.flag+" handler", func() bool { return notes(sig.file) > 0 })
		}
		// A forwarded copy would arrive within the next rounds of the
		// workload's loop (each ends in a signal-interruptible wait).
		from, _ := strconv.Atoi(count())
		waitFor(t, "the workload's loop to go on", func() bool {
			n, _ := strconv.Atoi(count())
			return n >= from+10
		})
		for _, f := range []string{"usr1", "rtmin"} {
			if n := notes(f); n != 1 {
				t.Errorf("after one nsrun kill the workload saw %s %d times, want once", f, n)
			}
		}
		if state := showProps(t, u, unit, "ActiveState")["ActiveState"]; state != "active" {
			t.Errorf("after kill --signal=USR1 (trapped) the unit is %s, want active", state)
		}
	})

	t.Run("freeze and thaw", func(t *testing.T) {
		lcOK(t, u, "freeze", unit)
		if f := cgroupEvent(t, hostCg, "frozen"); f != "1" {
			t.Fatalf("after freeze, %s cgroup.events frozen %s, want 1", hostCg, f)
		}
		st := lcJSON(t, u, "status", "--json", unit)
		if st["freezer_state"] != "frozen" || st["usage"].(map[string]any)["frozen"] != true {
			t.Errorf("status of the frozen unit: freezer_state %v, usage.frozen %v", st["freezer_state"], st["usage"].(map[string]any)["frozen"])
		}
		// The workload makes no progress while frozen.
		before := count()
		time.Sleep(200 * time.Millisecond)
		if after := count(); after != before {
			t.Errorf("the frozen workload went on counting: %s -> %s", before, after)
		}
		lcOK(t, u, "thaw", unit)
		if f := cgroupEvent(t, hostCg, "frozen"); f != "0" {
			t.Errorf("after thaw, cgroup.events frozen %s, want 0", f)
		}
		waitFor(t, "the thawed workload to count on", func() bool { return count() != before })
	})

	t.Run("stop", func(t *testing.T) {
		pids := hostPids(t, hostCg)
		lcOK(t, u, "stop", unit)
		stopped = true
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("nsrun still runs after stop returned")
		}
		waitUnitGone(t, u, unit)
		if _, err := os.Stat(hostCg); err == nil {
			t.Errorf("cgroup %s still exists after stop", hostCg)
		}
		for _, p := range pids {
			if err := syscall.Kill(p, 0); err == nil {
				t.Errorf("pid %d of the stopped unit still runs", p)
			}
		}
	})
}

func TestLifecycleSystemManager(t *testing.T) {
	requireBox(t)
	testLifecycle(t, nil)
}

func TestLifecycleUserManager(t *testing.T) {
	requireBox(t)
	u := *boxUser(t)
	testLifecycle(t, &u)
}

// TestLifecycleErrors: unknown units, bad names and bad signals are nsrun's
// own errors (125, one line naming what is wrong) and change nothing.
func TestLifecycleErrors(t *testing.T) {
	requireBox(t)
	before := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend")
	missing := uniqueName(t, "e2e-missing")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"status", missing}, missing + ".scope: no such unit"},
		{[]string{"status", missing + ".service"}, missing + ".service: no such unit"},
		{[]string{"stop", missing}, missing + ".scope: no such unit"},
		{[]string{"kill", missing}, missing + ".scope: no such unit"},
		{[]string{"kill", "--signal=KILL", missing}, missing + ".scope: no such unit"},
		{[]string{"freeze", missing}, missing + ".scope: no such unit"},
		{[]string{"thaw", missing}, missing + ".scope: no such unit"},
		{[]string{"kill", "--signal=NOPE", missing}, `invalid signal "NOPE"`},
		{[]string{"kill", "--signal=0", missing}, `invalid signal "0"`},
		{[]string{"stop", "a b"}, `"a b.scope"`},
		{[]string{"stop", "x.slice"}, `x.slice`},
		{[]string{"status"}, "exactly one UNIT"},
		{[]string{"freeze", "a", "b"}, "exactly one UNIT"},
		{[]string{"list", "extra"}, "extra"},
		{[]string{"list", "--no-such-flag"}, "--no-such-flag"},
	} {
		out, errs, code := lcRun(t, nil, tc.args...)
		if code != 125 {
			t.Errorf("nsrun %q exited %d, want 125", tc.args, code)
		}
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if out != "" || len(lines) != 1 || !strings.Contains(lines[0], tc.says) {
			t.Errorf("nsrun %q: stdout %q, stderr %q; want one line naming %s", tc.args, out, errs, tc.says)
		}
	}
	// Reading an unknown unit makes systemd load a "not-found" stub for a
	// moment; it is collected again.
	waitFor(t, "the units to be as before", func() bool {
		return systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend") == before
	})
}

// TestLifecycleNoUserBus: with no user manager to talk to, a lifecycle
// command is nsrun's own error, with a hint.
func TestLifecycleNoUserBus(t *testing.T) {
	requireBox(t)
	u, err := testBox.EnsureUser(context.Background(), "nsrun-e2e-nobus")
	if err != nil {
		t.Fatal(err)
	}
	// No user manager runs for this user, and no XDG_RUNTIME_DIR is set.
	cmd := testBox.CommandAs(context.Background(), u, nsrunBin, "list")
	cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool {
		return strings.HasPrefix(e, "XDG_RUNTIME_DIR=") || strings.HasPrefix(e, "DBUS_SESSION_BUS_ADDRESS=")
	})
	out, err := cmd.CombinedOutput()
	if code := exitCode(t, err); code != 125 || !strings.Contains(string(out), "XDG_RUNTIME_DIR") {
		t.Errorf("list without a user manager: exit %d, output %q; want 125 and a hint about XDG_RUNTIME_DIR", code, out)
	}
}

// TestListFiltersByLayout: list without --all shows a scope exactly when its
// cgroup has nsrun's supervisor/ and payload/ leaves, and status then reads
// the workload's pids from payload/ and nsrun's from supervisor/. A scope
// nsrun did not make (systemd-run --scope) is listed only with --all.
func TestListFiltersByLayout(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-layout") + ".scope"
	g := newGate(t, nil)
	cmd := startGated(t, nil, g, g.script(0), "-q", "--unit="+unit)
	cg := showProps(t, nil, unit, "ControlGroup")["ControlGroup"]
	hostCg := filepath.Join(testBox.Cgroup(), cg)
	if !hasLeaves(hostCg) {
		t.Fatalf("nsrun run made no supervisor/ and payload/ below %s", hostCg)
	}

	other := uniqueName(t, "e2e-foreign") + ".scope"
	foreign := testBox.Command(context.Background(), "systemd-run", "--quiet", "--scope", "--unit="+other, "sleep", "1000")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = testBox.Run(context.Background(), "systemctl", "stop", other)
		_ = foreign.Wait()
	})
	waitFor(t, other+" to run", func() bool {
		return showProps(t, nil, other, "ActiveState")["ActiveState"] == "active"
	})

	list := lcJSON(t, nil, "list", "--json")
	e := listed(t, list, unit)
	if e == nil || e["sandbox"] != true {
		t.Errorf("list shows the sandbox %s as %v, want it with sandbox true", unit, e)
	}
	if listed(t, list, other) != nil {
		t.Errorf("list shows %s, a scope nsrun did not make", other)
	}
	if e := listed(t, lcJSON(t, nil, "list", "--all", "--json"), other); e == nil || e["sandbox"] != false {
		t.Errorf("list --all shows %s as %v, want it with sandbox false", other, e)
	}

	st := lcJSON(t, nil, "status", "--json", unit)
	payload := hostPids(t, filepath.Join(hostCg, "payload"))
	supervisor := hostPids(t, filepath.Join(hostCg, "supervisor"))
	if got := jsonPids(t, st["workload_pids"]); len(got) != len(payload) || len(got) == 0 {
		t.Errorf("workload_pids %v, want the %d processes of payload/", got, len(payload))
	}
	if got := jsonPids(t, st["supervisor_pids"]); len(got) != len(supervisor) || len(got) == 0 {
		t.Errorf("supervisor_pids %v, want the %d processes of supervisor/", got, len(supervisor))
	}
	// UNIT arguments complete to the sandboxes only.
	for _, sub := range []string{"status", "stop", "kill", "freeze", "thaw"} {
		out := lcOK(t, nil, "__complete", sub, "")
		if !strings.Contains(out, unit+"\n") || strings.Contains(out, other) {
			t.Errorf("completion of nsrun %s UNIT: want %s, not %s:\n%s", sub, unit, other, out)
		}
	}

	// stop works on any scope named, not only on sandboxes.
	lcOK(t, nil, "stop", other)
	waitUnitGone(t, nil, other)
	g.release(t)
	if code := exitCode(t, cmd.Wait()); code != 0 {
		t.Errorf("nsrun exited %d", code)
	}
	waitUnitGone(t, nil, unit)
	if _, err := os.Stat(hostCg); err == nil {
		t.Errorf("cgroup %s still exists after the unit is gone", hostCg)
	}
}

// TestLifecycleService: a delegated service (what in-place mode runs in) is
// listed by --all, shown by status and stopped by stop.
func TestLifecycleService(t *testing.T) {
	requireBox(t)
	unit := uniqueName(t, "e2e-svc") + ".service"
	if _, err := testBox.Run(context.Background(), "systemd-run", "--unit="+unit, "-p", "Delegate=yes", "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = testBox.Run(context.Background(), "systemctl", "stop", unit) })
	cg := showProps(t, nil, unit, "ControlGroup")["ControlGroup"]
	hostCg := filepath.Join(testBox.Cgroup(), cg)

	e := listed(t, lcJSON(t, nil, "list", "--all", "--json"), unit)
	if e == nil || e["type"] != "service" || e["delegate"] != true {
		t.Errorf("list --all: %s shown as %v, want a delegated service", unit, e)
	}
	if listed(t, lcJSON(t, nil, "list", "--json"), unit) != nil && !hasLeaves(hostCg) {
		t.Errorf("list shows %s although it has no nsrun leaves", unit)
	}
	st := lcJSON(t, nil, "status", "--json", unit)
	if st["type"] != "service" || st["active_state"] != "active" || st["control_group"] != cg {
		t.Errorf("status %s: type %v, active_state %v, control_group %v", unit, st["type"], st["active_state"], st["control_group"])
	}
	pids := hostPids(t, hostCg)
	if len(jsonPids(t, st["workload_pids"])) != len(pids) || len(pids) == 0 {
		t.Errorf("workload_pids %v, want the %d processes of the service", st["workload_pids"], len(pids))
	}
	lcOK(t, nil, "stop", unit)
	waitUnitGone(t, nil, unit)
	if _, err := os.Stat(hostCg); err == nil {
		t.Errorf("cgroup %s still exists after stop", hostCg)
	}
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err == nil {
			t.Errorf("pid %d of the stopped service still runs", p)
		}
	}
}

func hasLeaves(dir string) bool {
	for _, leaf := range []string{"supervisor", "payload"} {
		if st, err := os.Stat(filepath.Join(dir, leaf)); err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

// TestUsageJSONKeepsUnknown: an unknown value stays null in the JSON and
// "unknown" in the table; a read 0 stays 0.
func TestUsageJSONKeepsUnknown(t *testing.T) {
	zero := uint64(0)
	u := usageToJSON(delegate.Usage{PidsCurrent: &zero, CPU: &delegate.CPUStat{UsageUsec: 1500, UserUsec: 1000, SystemUsec: 500}})
	data, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"memory_current_bytes", "memory_peak_bytes", "io", "memory_events", "populated", "frozen"} {
		if v, ok := m[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}
	if m["pids_current"] != 0.0 || m["cpu_usage_usec"] != 1500.0 || m["cpu_system_usec"] != 500.0 {
		t.Errorf("known values lost: %s", data)
	}
	io := usageToJSON(delegate.Usage{IO: []delegate.IOStat{}}).IO
	if io == nil || len(io) != 0 {
		t.Errorf("known empty io.stat became %#v, want []", io)
	}

	var b strings.Builder
	st := &statusJSON{unitJSON: unitJSON{Unit: "x.scope", ControlGroup: new(string)}, Usage: u}
	if err := printStatus(&b, st, [][2]string{{"Namespaces", "ext"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Memory:      unknown", "Tasks:       0", "IO:          unknown", "CPU:         2ms (user 1ms, system 1ms)", "Namespaces:  ext"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
	for in, want := range map[uint64]string{0: "0B", 1023: "1023B", 1536: "1.5K", 3 << 30: "3.0G"} {
		if got := bytesText(&in); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", in, got, want)
		}
	}
}
