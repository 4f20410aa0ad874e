package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nsrun/nsrun/bpfdev"
	"github.com/nsrun/nsrun/internal/box"
	"github.com/spf13/pflag"
)

func TestDeviceOptionsPolicy(t *testing.T) {
	parse := func(args ...string) *deviceOptions {
		t.Helper()
		o := &deviceOptions{}
		f := pflag.NewFlagSet("test", pflag.ContinueOnError)
		o.addFlags(f)
		if err := f.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o
	}
	if p, err := parse().policy(false); err != nil || p != nil {
		t.Fatalf("no device flags: %+v, %v; want no policy", p, err)
	}
	p, err := parse("--device=/dev/null:r").policy(false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != bpfdev.Closed || len(p.Nodes) == 0 || !p.DevPts {
		t.Fatalf("--device implies closed: %+v", p)
	}
	if p, err := parse("--device-policy=strict").policy(false); err != nil || p == nil || len(p.Rules) != 0 {
		t.Fatalf("strict alone: %+v, %v; want a policy that allows nothing", p, err)
	}
	for _, args := range [][]string{
		{"--device=/dev/doesnotexist"},
		{"--device-rule=char-doesnotexist rw"},
		{"--device-policy=open"},
		{"--device-set=gpu"},
		{"--device-rule=c 1:3 rwz"},
	} {
		_, err := parse(args...).policy(false)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitNsrunFailed {
			t.Errorf("%v: %v, want a usage error (125)", args, err)
		}
	}
	if _, err := parse("--device-rule=c 1:* r").policy(true); !errors.Is(err, bpfdev.ErrInexpressible) {
		t.Errorf("unprivileged wildcard: %v, want ErrInexpressible", err)
	}
}

// devicesScope starts a delegated scope in the box (for u's manager when u
// is set), makes its payload/ leaf with the scope's process in it, and
// returns the unit and the leaf's host path.
func devicesScope(t *testing.T, u *box.User) (unit, payload string) {
	t.Helper()
	ctx := context.Background()
	unit = uniqueName(t, "nsrun-e2e-devices") + ".scope"
	args := []string{"--quiet", "--scope", "--unit=" + unit, "-p", "Delegate=yes", "--", "sleep", "infinity"}
	var cmd *exec.Cmd
	if u != nil {
		cmd = testBox.CommandAs(ctx, *u, "systemd-run", append([]string{"--user"}, args...)...)
	} else {
		cmd = testBox.Command(ctx, "systemd-run", args...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		systemctl(t, u, "stop", unit)
		_ = cmd.Wait()
		waitUnitGone(t, u, unit)
	})
	deadline := time.Now().Add(30 * time.Second)
	for showProps(t, u, unit, "ActiveState")["ActiveState"] != "active" {
		if time.Now().After(deadline) {
			t.Fatalf("%s not active", unit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cg := showProps(t, u, unit, "ControlGroup")["ControlGroup"]
	payload = testBox.Cgroup() + cg + "/payload"
	// The leaf is made from inside the box, by the owner of the scope.
	script := "mkdir /sys/fs/cgroup" + cg + "/payload && echo $(cat /sys/fs/cgroup" + cg + "/cgroup.procs) | tr ' ' '\\n' | while read p; do echo $p > /sys/fs/cgroup" + cg + "/payload/cgroup.procs; done"
	var err error
	if u != nil {
		_, err = testBox.RunAs(ctx, *u, "sh", "-c", script)
	} else {
		_, err = testBox.Run(ctx, "sh", "-c", script)
	}
	if err != nil {
		t.Fatal(err)
	}
	return unit, payload
}

func nsrunDevices(t *testing.T, u *box.User, args ...string) (devicesJSON, string, error) {
	t.Helper()
	cmd := nsrun(context.Background(), u, append([]string{"devices"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var rep struct {
		devicesReport
		Rules []string         `json:"rules"`
		Nodes []map[string]any `json:"nodes"`
	}
	if err == nil && strings.Contains(strings.Join(args, " "), "--json") {
		if jerr := json.Unmarshal(out, &rep); jerr != nil {
			t.Fatalf("nsrun devices --json: %v\n%s", jerr, out)
		}
	}
	return devicesJSON{rep.devicesReport, rep.Rules, rep.Nodes}, string(out) + stderr.String(), err
}

// devicesJSON is "nsrun devices --json" read back, the rules as text.
type devicesJSON struct {
	devicesReport
	rules []string
	nodes []map[string]any
}

func ruleStrings(rep devicesJSON) string { return strings.Join(rep.rules, "; ") }

// TestDevicesCommand: "nsrun devices" reads the rules back from the kernel
// and changes them live, as root against the system manager.
func TestDevicesCommand(t *testing.T) {
	requireBox(t)
	unit, payload := devicesScope(t, nil)
	rep, out, err := nsrunDevices(t, nil, unit, "--json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Mechanism != bpfdev.MechanismNone {
		t.Fatalf("before attaching: mechanism %s", rep.Mechanism)
	}
	p, err := bpfdev.Spec{Mode: "strict", Rules: []string{"c 1:* r", "c 1:3 w"}}.Policy(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := bpfdev.Attach(payload, p); err != nil {
		t.Fatal(err)
	}
	rep, out, err = nsrunDevices(t, nil, unit, "--json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Mechanism != bpfdev.MechanismBPF || rep.Program == nil || ruleStrings(rep) != "c 1:3 w; c 1:* r" {
		t.Fatalf("after attaching: %+v", rep)
	}
	id := rep.Program.ID
	rep, out, err = nsrunDevices(t, nil, unit, "--deny=c 1:3 w", "--allow=c 10:232 rw", "--json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// A live change puts a new program in the old one's place.
	if got := ruleStrings(rep); got != "c 1:3 !w; c 1:* r; c 10:232 rw" || rep.Program.ID == id {
		t.Fatalf("after --deny/--allow: rules %q program %d (was %d)", got, rep.Program.ID, id)
	}
	for _, p := range rep.InForce {
		if p.ID == id {
			t.Fatalf("after --deny/--allow: the replaced program %d is still in force: %+v", id, rep.InForce)
		}
	}
	_, out, err = nsrunDevices(t, nil, unit)
	if err != nil || !strings.Contains(out, "mechanism: bpf") || !strings.Contains(out, "c 10:232 rw") {
		t.Fatalf("text output: %v\n%s", err, out)
	}
	if _, out, err = nsrunDevices(t, nil, unit, "--allow=c 1:3 rwz"); exitCode(t, err) != exitNsrunFailed {
		t.Fatalf("bad rule: %v\n%s", err, out)
	}
}

// TestDevicesUnprivileged: a user cannot load or query device programs; in
// the user manager "nsrun devices" reports the /dev mechanism and refuses
// live changes, and the kernel refuses mknod in a user namespace.
func TestDevicesUnprivileged(t *testing.T) {
	requireBox(t)
	ctx := context.Background()
	u := *boxUser(t)
	unit, _ := devicesScope(t, &u)
	rep, out, err := nsrunDevices(t, &u, "--user", unit, "--json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Mechanism != bpfdev.MechanismDevNodes {
		t.Fatalf("unprivileged: %+v", rep)
	}
	// The scope's process is no sandbox: its /dev is the box's, which has
	// null (bind-mounted over a file) and no kmsg.
	paths := map[string]bool{}
	for _, n := range rep.nodes {
		paths[n["path"].(string)] = true
	}
	if !paths["/dev/null"] || paths["/dev/kmsg"] {
		t.Fatalf("nodes of the scope's /dev: %v", rep.nodes)
	}
	if _, out, err = nsrunDevices(t, &u, "--user", unit, "--allow=c 1:3 r"); exitCode(t, err) != exitNsrunFailed || !strings.Contains(out, "/dev") {
		t.Fatalf("live change unprivileged: %v\n%s", err, out)
	}
	out2, err := testBox.RunAs(ctx, u, "unshare", "--user", "--map-root-user", "sh", "-c", "mknod /tmp/nsrun-e2e-node c 1 3; echo rc=$?")
	if err != nil || !strings.Contains(out2, "rc=1") {
		t.Fatalf("mknod in a user namespace: %v %q, want it refused", err, out2)
	}
}
