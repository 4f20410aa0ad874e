package bpfdev_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nsrun/nsrun/bpfdev"
	"github.com/nsrun/nsrun/internal/box"
)

// TestSurvivesDaemonReloadAndReexec attaches nsrun's program to a leaf of a
// delegated scope whose unit has a device policy of its own (so systemd
// attaches its program to the scope and re-applies it on reload), then
// checks the matrix, the rules read back and the program after
// `systemctl daemon-reload` and `daemon-reexec` (runc #3551, #4568).
func TestSurvivesDaemonReloadAndReexec(t *testing.T) {
	b := requireBox(t)
	ctx := context.Background()
	unit := "nsrun-test-" + box.OwnerTag() + "-reload.scope"
	scope := b.Command(ctx, "systemd-run", "--quiet", "--scope", "--unit="+unit,
		"-p", "Delegate=yes", "-p", "DevicePolicy=closed", "-p", "DeviceAllow=/dev/kvm rw",
		"--", "sleep", "infinity")
	if err := scope.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = b.Run(ctx, "systemctl", "stop", unit)
		_ = scope.Wait()
		if out, _ := b.Run(ctx, "systemctl", "show", "-P", "LoadState", unit); strings.TrimSpace(out) != "not-found" {
			t.Errorf("scope %s still loaded after stop: %s", unit, out)
		}
	})
	waitActive(t, b, unit)
	cg, err := b.Run(ctx, "systemctl", "show", "-P", "ControlGroup", unit)
	if err != nil {
		t.Fatal(err)
	}
	scopeDir := b.Cgroup() + strings.TrimSpace(cg)
	payload := newCgroup(t, scopeDir, "payload")

	// systemd's own program on the scope, from DevicePolicy=closed. (Its
	// DeviceAllow= paths resolve in the box's /dev, which has no kmsg:
	// nsrun's rules allow kmsg below, and the intersection denies it.)
	st, err := bpfdev.Inspect(payload)
	if err != nil {
		t.Fatal(err)
	}
	sd := 0
	for _, p := range st.Path {
		if p.Owner == "systemd" && p.Cgroup == scopeDir {
			sd++
		}
	}
	if sd != 1 {
		t.Fatalf("want systemd's device program on the scope, path has %+v", st.Path)
	}
	systemdAllows := bpfdev.NewTable(policy(t, bpfdev.Spec{Mode: "strict", Rules: []string{
		"/dev/null rwm", "/dev/zero rwm", "/dev/full rwm", "/dev/random rwm", "/dev/urandom rwm",
		"/dev/tty rwm", "/dev/ptmx rwm", "char-pts rw", "/dev/kvm rw",
	}}).Rules).Check

	p := policy(t, bpfdev.Spec{Mode: "strict", Rules: []string{"c 1:* r", "/dev/kvm rw", "/dev/kmsg rw", "c 1:3 w"}})
	if err := bpfdev.Attach(payload, p); err != nil {
		t.Fatal(err)
	}
	ours := bpfdev.NewTable(p.Rules).Check
	both := func(typ bpfdev.Type, major, minor uint32, a bpfdev.Access) bool {
		return ours(typ, major, minor, a) && systemdAllows(typ, major, minor, a)
	}
	devs := matrixDevices(t)
	want, err := bpfdev.Inspect(payload)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		checkMatrix(t, what, matrix(t, payload, devs), both)
		got, err := bpfdev.Inspect(payload)
		if err != nil {
			t.Fatal(err)
		}
		if got.Program == nil || got.Program.ID != want.Program.ID || entries(got.Rules) != entries(want.Rules) {
			t.Fatalf("%s: program %+v rules %q, want %+v %q", what, got.Program, entries(got.Rules), want.Program, entries(want.Rules))
		}
		t.Logf("%s: programs in force: %+v", what, got.Effective)
		if n := len(got.Effective); n != 2 {
			t.Fatalf("%s: %d programs in force, want 2 (systemd's and nsrun's): %+v", what, n, got.Effective)
		}
	}
	check("attached")
	for _, verb := range []string{"daemon-reload", "daemon-reexec"} {
		if _, err := b.Run(ctx, "systemctl", verb); err != nil {
			t.Fatal(err)
		}
		waitActive(t, b, unit)
		if out, _ := b.Run(ctx, "systemctl", "show", "-P", "NeedDaemonReload", unit); strings.TrimSpace(out) != "no" {
			t.Errorf("after %s: NeedDaemonReload=%s", verb, out)
		}
		check("after " + verb)
	}
}

func waitActive(t *testing.T, b *box.Box, unit string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := b.Run(context.Background(), "systemctl", "is-active", unit)
		if strings.TrimSpace(out) == "active" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not active: %s", unit, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
