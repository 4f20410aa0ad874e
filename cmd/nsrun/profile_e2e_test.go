package main

// Profiles against the real systemd in the box: merging compared with
// systemd's own, profiles applied to real scopes as root and as a user,
// bad profiles that create nothing, and contrib's nsrun@.service.

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/units"
)

// boxWrite writes content to path in the box (as u when set), making the
// directory; "@null" makes a symlink to /dev/null.
func boxWrite(t *testing.T, u *box.User, path, content string) {
	t.Helper()
	script := `mkdir -p "$(dirname "$1")" && printf %s "$2" > "$1"`
	if content == "@null" {
		script = `mkdir -p "$(dirname "$1")" && ln -sf /dev/null "$1"`
	}
	var err error
	if u != nil {
		_, err = testBox.RunAs(context.Background(), *u, "sh", "-c", script, "sh", path, content)
	} else {
		_, err = testBox.Run(context.Background(), "sh", "-c", script, "sh", path, content)
	}
	if err != nil {
		t.Fatalf("write %s in the box: %v", path, err)
	}
}

func boxRemove(t *testing.T, paths ...string) {
	t.Helper()
	t.Cleanup(func() {
		for _, p := range paths {
			_, _ = testBox.Run(context.Background(), "rm", "-rf", p)
		}
	})
}

// TestDropInsMergeLikeSystemd: the same main files and drop-ins, once as a
// service for the box's systemd (two unit directories of different
// priority) and once as a profile for nsrun (two profile directories):
// systemctl cat must list the files nsrun applies, in the same order, and
// systemctl show the values nsrun merges. Description= is single-valued,
// Environment= a list with resets, in both.
func TestDropInsMergeLikeSystemd(t *testing.T) {
	requireBox(t)
	name := uniqueName(t, "nsrun-cmp")
	// "hi" has the higher priority: system.control before system for
	// systemd, the first directory of the search path for nsrun.
	files := map[string]string{
		"hi/MAIN":              "[Unit]\nDescription=high main\n[S]\nEnvironment=M=hi\n",
		"lo/MAIN":              "[Unit]\nDescription=low main, masked\n[S]\nEnvironment=LOW=1\n",
		"lo/D/10-a.conf":       "[S]\nEnvironment=A=1 B=2\n",
		"hi/D/20-b.conf":       "[S]\nEnvironment=\nEnvironment=C=3\n",
		"lo/D/20-b.conf":       "[S]\nEnvironment=MASKED=1\n",
		"lo/D/30-c.conf":       "[Unit]\nDescription=from 30\n[S]\nEnvironment=\"D=4 5\"\n",
		"hi/D/40-d.conf":       "@null",
		"lo/D/40-d.conf":       "[S]\nEnvironment=NULLED=1\n",
		"lo/D/50-e.conf":       "# c\n[S]\nEnvironment=E=6 \\\n# inside\n  F=7\n",
		"hi/D/.60-hidden.conf": "[S]\nEnvironment=HIDDEN=1\n",
		"lo/D/70-f.txt":        "[S]\nEnvironment=TXT=1\n",
	}
	unitDir := map[string]string{"hi": "/run/systemd/system.control", "lo": "/run/systemd/system"}
	profDir := map[string]string{"hi": "/run/nsrun-cmp/hi", "lo": "/run/nsrun-cmp/lo"}
	boxRemove(t, "/run/nsrun-cmp", "/run/systemd/system.control/"+name+".service",
		"/run/systemd/system.control/"+name+".service.d", "/run/systemd/system/"+name+".service",
		"/run/systemd/system/"+name+".service.d")
	for p, c := range files {
		level, rest, _ := strings.Cut(p, "/")
		up := strings.NewReplacer("MAIN", name+".service", "D/", name+".service.d/").Replace(rest)
		pp := strings.NewReplacer("MAIN", name+".conf", "D/", name+".conf.d/").Replace(rest)
		uc, pc := strings.ReplaceAll(c, "[S]", "[Service]"), strings.ReplaceAll(c, "[S]", "[Sandbox]")
		if strings.HasSuffix(p, "MAIN") {
			uc += "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
		}
		boxWrite(t, nil, unitDir[level]+"/"+up, uc)
		boxWrite(t, nil, profDir[level]+"/"+pp, pc)
	}
	systemctl(t, nil, "daemon-reload")
	t.Cleanup(func() { _, _ = testBox.Run(context.Background(), "systemctl", "daemon-reload") })

	// systemd's view.
	cat := systemctl(t, nil, "cat", name+".service")
	var sdFiles []string
	for _, line := range strings.Split(cat, "\n") {
		if f, ok := strings.CutPrefix(line, "# /"); ok && strings.Contains(f, name) {
			f = "/" + f
			for level, d := range unitDir {
				if rest, ok := strings.CutPrefix(f, d+"/"); ok {
					sdFiles = append(sdFiles, level+"/"+strings.ReplaceAll(rest, ".service", ".conf"))
				}
			}
		}
	}
	show := showProps(t, nil, name+".service", "Description", "Environment")

	// nsrun's view, of the same files through the box's /run.
	root := "/proc/" + strconv.Itoa(testBox.Pid()) + "/root"
	p, err := units.LoadProfile(name, []string{root + profDir["hi"], root + profDir["lo"]})
	if err != nil {
		t.Fatal(err)
	}
	var nsFiles []string
	for _, f := range p.Files {
		for level, d := range profDir {
			if rest, ok := strings.CutPrefix(f, root+d+"/"); ok {
				nsFiles = append(nsFiles, level+"/"+rest)
			}
		}
	}
	if !slices.Equal(nsFiles, sdFiles) {
		t.Errorf("files applied:\nnsrun   %q\nsystemd %q", nsFiles, sdFiles)
	}
	set, err := p.Merge(profileSchema())
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	desc := ""
	for _, s := range set {
		for _, a := range s.Values {
			switch s.Key {
			case "Environment":
				ws, err := units.SplitWords(a.Value)
				if err != nil {
					t.Fatal(err)
				}
				env = append(env, ws...)
			case "Description":
				desc = a.Value
			}
		}
	}
	// systemctl show quotes an entry holding a space.
	sdEnv, err := units.SplitWords(show["Environment"])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(env, sdEnv) || desc != show["Description"] {
		t.Errorf("merged values:\nnsrun   Description=%q Environment=%q\nsystemd Description=%q Environment=%q",
			desc, env, show["Description"], sdEnv)
	}
	if want := []string{"C=3", "D=4 5", "E=6", "F=7"}; !slices.Equal(env, want) {
		t.Errorf("Environment %q, want %q", env, want)
	}
}

// TestProfileReachesTheScope: a profile from /etc with a drop-in from /run,
// and a command-line -p, arrive on the real scope as systemd reads it back;
// Command= runs when no command is given.
func TestProfileReachesTheScope(t *testing.T) {
	requireBox(t)
	name := uniqueName(t, "e2e-prof")
	boxRemove(t, "/etc/nsrun", "/run/nsrun/profiles/"+name+".conf.d")
	boxWrite(t, nil, "/etc/nsrun/profiles/"+name+".conf", `# a test profile
[Unit]
Description=profile `+name+`

[Scope]
Slice=e2e-prof.slice
RuntimeMaxSec=5min
KillMode=mixed

[Sandbox]
Command=sh -c "exit 3"
`)
	boxWrite(t, nil, "/run/nsrun/profiles/"+name+".conf.d/50-override.conf", "[Scope]\nRuntimeMaxSec=7min\n")

	unit := uniqueName(t, "e2e-profscope")
	g := newGate(t, nil)
	cmd := startGated(t, nil, g, g.script(0), "-q", "--unit="+unit, "--profile="+name, "-p", "SendSIGHUP=yes")
	got := showProps(t, nil, unit+".scope", "Description", "Slice", "RuntimeMaxUSec", "KillMode", "SendSIGHUP", "Delegate")
	want := map[string]string{"Description": "profile " + name, "Slice": "e2e-prof.slice", "RuntimeMaxUSec": "7min",
		"KillMode": "mixed", "SendSIGHUP": "yes", "Delegate": "yes"}
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

	// profile show names the files and lines.
	out, err := nsrun(context.Background(), nil, "profile", "show", name).CombinedOutput()
	if err != nil {
		t.Fatalf("profile show: %v %s", err, out)
	}
	for _, w := range []string{"# /run/nsrun/profiles/" + name + ".conf.d/50-override.conf:2\nRuntimeMaxSec=7min",
		"# /etc/nsrun/profiles/" + name + ".conf:3\nDescription=profile " + name} {
		if !strings.Contains(string(out), w) {
			t.Errorf("profile show lacks %q:\n%s", w, out)
		}
	}
	out, err = nsrun(context.Background(), nil, "profile", "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), name+" ") {
		t.Errorf("profile list: %v\n%s", err, out)
	}

	// Command= is the command when none is given.
	unit = uniqueName(t, "e2e-profcmd")
	out, err = nsrun(context.Background(), nil, "-q", "--unit="+unit, "--profile="+name).CombinedOutput()
	if code := exitCode(t, err); code != 3 {
		t.Errorf("--profile with Command=: exit %d, want 3; output %q", code, out)
	}
	waitUnitGone(t, nil, unit+".scope")
}

// TestBadProfileCreatesNothing: a bad profile is refused with one line naming
// file and line, status 125, and no unit.
func TestBadProfileCreatesNothing(t *testing.T) {
	requireBox(t)
	dir := "/run/nsrun-e2e-bad"
	boxRemove(t, dir)
	cases := []struct{ file, content, says string }{
		{"key.conf", "[Sandbox]\nAllowDegraded=yes\nNoSuchKey=1\n", dir + "/key.conf:3: unknown key NoSuchKey="},
		{"sect.conf", "[Service]\nExecStart=/bin/true\n", dir + "/sect.conf:2: unknown section [Service]"},
		{"prop.conf", "[Scope]\n\nMemoryMax=12Q\n", dir + "/prop.conf:3: "},
		{"syntax.conf", "[Unit]\nDescription\n", dir + "/syntax.conf:2: missing '='"},
		{"bool.conf", "[Sandbox]\nAllowDegraded=perhaps\n", dir + "/bool.conf:2: invalid boolean"},
		{"dropin.conf", "[Unit]\nDescription=x\n", dir + "/dropin.conf.d/1.conf:1: assignment outside of a section"},
		{"masked.conf", "@null", "profile is masked"},
	}
	for _, c := range cases {
		boxWrite(t, nil, dir+"/"+c.file, c.content)
	}
	boxWrite(t, nil, dir+"/dropin.conf.d/1.conf", "Description=y\n")
	before := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "*.scope")
	for _, c := range append(cases, struct{ file, content, says string }{"", "", "profile not found"}) {
		arg := dir + "/" + c.file
		if c.file == "" {
			arg = "no-such-profile"
		}
		out, err := nsrun(context.Background(), nil, "--profile="+arg, "--", "sh", "-c", "echo WORKLOAD RAN").CombinedOutput()
		if code := exitCode(t, err); code != 125 {
			t.Errorf("--profile=%s: exit %d, want 125", arg, code)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], c.says) {
			t.Errorf("--profile=%s said %q, want one line with %q", arg, out, c.says)
		}
	}
	if after := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "*.scope"); after != before {
		t.Errorf("bad profiles changed the units:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestUserProfile: for --user, ~/.config/nsrun/profiles comes first and
// masks /etc's profile of the same name; run as an unprivileged user.
func TestUserProfile(t *testing.T) {
	requireBox(t)
	u := *boxUser(t)
	name := uniqueName(t, "e2e-uprof")
	boxRemove(t, "/etc/nsrun/profiles/"+name+".conf", u.Home+"/.config/nsrun")
	boxWrite(t, nil, "/etc/nsrun/profiles/"+name+".conf", "[Unit]\nDescription=system's, masked\n")
	boxWrite(t, nil, "/etc/nsrun/profiles/"+name+".conf.d/10-x.conf", "[Scope]\nRuntimeMaxSec=9min\n")
	boxRemove(t, "/etc/nsrun/profiles/"+name+".conf.d")
	boxWrite(t, &u, u.Home+"/.config/nsrun/profiles/"+name+".conf", "[Unit]\nDescription=the user's\n[Scope]\nKillMode=mixed\n")

	unit := uniqueName(t, "e2e-uprofscope")
	g := newGate(t, &u)
	cmd := startGated(t, &u, g, g.script(0), "-q", "--unit="+unit, "--profile="+name)
	got := showProps(t, &u, unit+".scope", "Description", "KillMode", "RuntimeMaxUSec")
	// Drop-ins of every directory apply, the main file is the user's.
	want := map[string]string{"Description": "the user's", "KillMode": "mixed", "RuntimeMaxUSec": "9min"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	g.release(t)
	if code := exitCode(t, cmd.Wait()); code != 0 {
		t.Errorf("exit %d", code)
	}
	waitUnitGone(t, &u, unit+".scope")
}

// TestTemplateService: contrib's nsrun@.service and nsrun.slice, installed
// as make install does, run the profile's Command= in place (no nested
// scope) with the profile's settings.
func TestTemplateService(t *testing.T) {
	requireBox(t)
	name := uniqueName(t, "e2ejob")
	svc := "nsrun@" + name + ".service"
	unitText, err := os.ReadFile("../../contrib/systemd/nsrun@.service")
	if err != nil {
		t.Fatal(err)
	}
	sliceText, err := os.ReadFile("../../contrib/systemd/nsrun.slice")
	if err != nil {
		t.Fatal(err)
	}
	// What make install does with PREFIX: point ExecStart at the binary.
	installed := strings.Replace(string(unitText), "ExecStart=/usr/bin/nsrun ", "ExecStart="+nsrunBin+" ", 1)
	if installed == string(unitText) {
		t.Fatal("nsrun@.service has no ExecStart=/usr/bin/nsrun line for make install to rewrite")
	}
	// The box's hierarchy has no memory/cpu/io controllers: the slice's
	// limits would be refused; nothing in nsrun.slice is checked here.
	boxRemove(t, "/run/systemd/system/nsrun@.service", "/run/systemd/system/nsrun.slice", "/etc/nsrun/profiles/"+name+".conf")
	boxWrite(t, nil, "/run/systemd/system/nsrun@.service", installed)
	boxWrite(t, nil, "/run/systemd/system/nsrun.slice", string(sliceText))
	g := newGate(t, nil)
	// In place there is no unit of nsrun's own: the profile carries what
	// applies to the job (a cgroup limit, written to the payload leaf, and
	// process settings); a description or a slice would be refused.
	boxWrite(t, nil, "/etc/nsrun/profiles/"+name+".conf", `[Scope]
TasksMax=77
[Sandbox]
AllowDegraded=yes
Environment=E2E_PROFILE=yes
WorkingDirectory=/var
Command=sh -c 'cat /proc/self/cgroup > `+g.dir+`/cgroup; echo "$E2E_PROFILE $PWD" > `+g.dir+`/env; `+g.script(5)+`'
`)
	// nsrun's messages, for the log of a failure (the box has no journal).
	boxWrite(t, nil, "/run/systemd/system/"+svc+".d/stderr.conf", "[Service]\nStandardError=file:"+g.dir+"/stderr\n")
	boxRemove(t, "/run/systemd/system/"+svc+".d")
	systemctl(t, nil, "daemon-reload")
	t.Cleanup(func() {
		_, _ = testBox.Run(context.Background(), "systemctl", "stop", svc)
		_, _ = testBox.Run(context.Background(), "systemctl", "reset-failed", svc)
		_, _ = testBox.Run(context.Background(), "systemctl", "daemon-reload")
	})
	systemctl(t, nil, "start", svc)
	t.Cleanup(func() {
		if t.Failed() {
			st, _ := testBox.Run(context.Background(), "systemctl", "status", "--no-pager", "-n", "20", svc)
			stderr, _ := testBox.Run(context.Background(), "cat", g.dir+"/stderr")
			t.Logf("%s\nnsrun's stderr:\n%s", st, stderr)
		}
	})
	g.waitReady(t)

	// The job runs in place: in the payload leaf below the service's own
	// cgroup, with the profile's environment and directory, and TasksMax
	// in force there when the box's hierarchy has the pids controller.
	cg, err := testBox.Run(context.Background(), "cat", g.dir+"/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(cg, "\n") {
		if v2, ok := strings.CutPrefix(line, "0::"); ok {
			cg = v2 // the v2 line; a hybrid host lists v1 hierarchies too
		}
	}
	if !strings.HasPrefix(cg, "/nsrun.slice/"+svc+"/") || !strings.HasSuffix(cg, "/payload") {
		t.Errorf("job's cgroup %q, want the payload leaf below /nsrun.slice/%s", cg, svc)
	}
	if env, _ := testBox.Run(context.Background(), "cat", g.dir+"/env"); strings.TrimSpace(env) != "yes /var" {
		t.Errorf("job saw E2E_PROFILE and PWD %q, want the profile's \"yes /var\"", env)
	}
	ctrls, err := testBox.Controllers()
	if err != nil {
		t.Fatal(err)
	}
	stderr, _ := testBox.Run(context.Background(), "cat", g.dir+"/stderr")
	if slices.Contains(ctrls, "pids") {
		if max, err := os.ReadFile(testBox.Cgroup() + cg + "/pids.max"); err != nil || strings.TrimSpace(string(max)) != "77" {
			t.Errorf("pids.max of the job's cgroup: %q %v, want the profile's 77", max, err)
		}
	} else if !strings.Contains(stderr, "TasksMax not in force") {
		t.Errorf("no pids controller, but nsrun did not warn that TasksMax is not in force: %q", stderr)
	}
	if got := showProps(t, nil, svc, "Slice", "Delegate"); got["Slice"] != "nsrun.slice" || got["Delegate"] != "yes" {
		t.Errorf("%s: %v, want Slice=nsrun.slice Delegate=yes", svc, got)
	}
	g.release(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := showProps(t, nil, svc, "ActiveState", "ExecMainStatus", "ExecMainCode")
		if st["ActiveState"] == "inactive" || st["ActiveState"] == "failed" {
			if st["ExecMainStatus"] != "5" {
				t.Errorf("%s ended %v, want the job's status 5", svc, st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %v", svc, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDelegateDropIn: contrib's user@.service.d/delegate.conf, installed as
// make install does, delegates cpu, cpuset, io, memory and pids to user
// managers (systemd's default is cpu, memory and pids).
func TestDelegateDropIn(t *testing.T) {
	requireBox(t)
	text, err := os.ReadFile("../../contrib/systemd/user@.service.d/delegate.conf")
	if err != nil {
		t.Fatal(err)
	}
	path := "/run/systemd/system/user@.service.d/nsrun-delegate.conf"
	boxRemove(t, path)
	t.Cleanup(func() { _, _ = testBox.Run(context.Background(), "systemctl", "daemon-reload") })
	boxWrite(t, nil, path, string(text))
	systemctl(t, nil, "daemon-reload")
	got := showProps(t, nil, "user@4242.service", "Delegate", "DelegateControllers")
	if got["Delegate"] != "yes" || got["DelegateControllers"] != "cpu cpuset io memory pids" {
		t.Errorf("user@.service with the drop-in: %v, want Delegate=yes DelegateControllers=cpu cpuset io memory pids", got)
	}
}
