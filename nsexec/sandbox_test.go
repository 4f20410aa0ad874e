package nsexec_test

// Privileged tests: the test binary is shared into a systemd box and run
// there as a small driver (NSEXEC_TEST_SPEC set): it starts the sandbox
// with Prepare/Start/Wait, re-executing itself as the child (TestMain
// dispatches ChildArg), forwards SIGTERM, and exits with the workload's
// status. Every mount happens in namespaces the box or the sandbox made;
// testutil.Main checks the host afterwards, and the tests compare the
// box's own mount table before and after.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
	"github.com/nsrun/nsrun/nsexec"
)

var (
	testBox *box.Box
	shared  string // host directory shared into the box: the test binary and test files
	testBin string
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == nsexec.ChildArg {
		nsexec.ChildMain()
	}
	if spec := os.Getenv("NSEXEC_TEST_SPEC"); spec != "" {
		os.Exit(driver(spec))
	}
	os.Exit(testutil.Main(m, testutil.MainOptions{HostCheck: true, Setup: setup}))
}

func setup() (func() error, error) {
	if box.Supported() != nil {
		return nil, nil // the box tests skip, or fail under NSRUN_TEST_STRICT=1
	}
	var err error
	if shared, err = os.MkdirTemp("", "nsexec-test-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err == nil {
		var data []byte
		if data, err = os.ReadFile(self); err == nil {
			testBin = filepath.Join(shared, "nsexec.test")
			err = os.WriteFile(testBin, data, 0o755)
		}
	}
	if err == nil {
		testBox, err = box.Start(context.Background(), box.Options{Shares: []string{shared}})
	}
	if err != nil {
		os.RemoveAll(shared)
		return nil, err
	}
	return func() error {
		err := testBox.Close()
		os.RemoveAll(shared)
		return err
	}, nil
}

// driver runs one sandbox from the spec in JSON and returns the exit status
// nsrun would: the workload's, 128+N, or 125/126/127 for a start failure
// (printed on stderr as "driver: ...").
func driver(specJSON string) int {
	var spec nsexec.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "driver: %v\n", err)
		return 125
	}
	var l *nsexec.Launch
	var err error
	if j := os.Getenv("NSEXEC_TEST_JOIN"); j != "" {
		pid, _ := strconv.Atoi(j)
		l, err = nsexec.Join(pid, &spec)
	} else {
		l, err = nsexec.Prepare(&spec)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "driver: prepare: %v\n", err)
		return 125
	}
	l.Cmd.Stdin, l.Cmd.Stdout, l.Cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	for i := 0; i < spec.PreserveFDs; i++ {
		l.Cmd.ExtraFiles = append(l.Cmd.ExtraFiles, os.NewFile(uintptr(3+i), "preserved"))
	}
	l.Cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if cg := os.Getenv("NSEXEC_TEST_CGROUP"); cg != "" {
		// Cloned straight into its own cgroup, as nsrun does with payload/.
		f, err := os.Open(cg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "driver: %v\n", err)
			return 125
		}
		defer f.Close()
		l.Cmd.SysProcAttr.UseCgroupFD, l.Cmd.SysProcAttr.CgroupFD = true, int(f.Fd())
	}
	if d := os.Getenv("NSEXEC_TEST_TIMEOUT"); d != "" {
		l.Timeout, _ = time.ParseDuration(d)
	}
	if os.Getenv("NSEXEC_TEST_STOP_CHILD") != "" {
		// A child that never answers (F12): stopped right after it starts.
		nsexec.SetStartHook(l, func(pid int) {
			fmt.Fprintf(os.Stderr, "driver: stopping child pid %d\n", pid)
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		})
	}
	if os.Getenv("NSEXEC_TEST_LEAK") != "" {
		// A caller that leaks an fd without close-on-exec (A03).
		fd, _ := syscall.Open("/", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		fmt.Fprintf(os.Stderr, "driver: leaked fd %d\n", fd)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM)
	type result struct {
		status int
		err    error
	}
	started := make(chan error, 1)
	done := make(chan result, 1)
	// Held (NSEXEC_TEST_HOLD, hold_test.go): the test's signals are
	// caught from before the child exists.
	hold := holdSignals()
	go func() {
		runtime.LockOSThread()
		start := l.Start
		if hold != nil {
			start = func() error { return startHeld(l, hold) }
		}
		if err := start(); err != nil {
			started <- err
			return
		}
		started <- nil
		st, _, _, err := l.Wait()
		done <- result{st, err}
	}()
	if err := <-started; err != nil {
		if errors.Is(err, errHoldEnded) {
			return holdEndedStatus
		}
		fmt.Fprintf(os.Stderr, "driver: %v\n", err)
		switch {
		case errors.Is(err, nsexec.ErrCommandNotFound):
			return 127
		case errors.Is(err, nsexec.ErrCommandNotExecutable):
			return 126
		}
		return 125
	}
	fmt.Fprintf(os.Stderr, "driver: child pid %d\n", l.Cmd.Process.Pid)
	relayed := make(chan struct{})
	if m := l.Pty(); m != nil {
		if in := os.Getenv("NSEXEC_TEST_PTY_INPUT"); in != "" {
			_, _ = m.WriteString(in)
		}
		// The terminal's output, as nsrun relays it (ends with EIO once
		// no process holds the slave).
		go func() {
			_, _ = io.Copy(os.Stdout, m)
			m.Close()
			close(relayed)
		}()
	} else {
		close(relayed)
	}
	for _, w := range l.Warnings {
		fmt.Fprintf(os.Stderr, "driver: warning: %s\n", w)
	}
	for {
		select {
		case s := <-sigs:
			_ = l.Cmd.Process.Signal(s)
		case r := <-done:
			<-relayed
			if r.err != nil {
				fmt.Fprintf(os.Stderr, "driver: wait: %v\n", r.err)
				return 125
			}
			return r.status
		}
	}
}

type runResult struct {
	stdout, stderr string
	code           int
}

// sandboxCmd prepares the driver for spec in the box, as root (u nil) or u.
func sandboxCmd(t *testing.T, u *box.User, spec nsexec.Spec) *exec.Cmd {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBox(t)
	if testBox == nil {
		t.Fatal("box not started")
	}
	if spec.Env == nil {
		spec.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NSEXEC_INSIDE=1"}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if u != nil {
		cmd = testBox.CommandAs(context.Background(), *u, testBin)
	} else {
		cmd = testBox.Command(context.Background(), testBin)
	}
	cmd.Env = append(cmd.Env, "NSEXEC_TEST_SPEC="+string(data), "NOTIFY_SOCKET=/run/systemd/notify")
	return cmd
}

// sandbox runs a shell script in a sandbox made from spec.
func sandbox(t *testing.T, u *box.User, spec nsexec.Spec, script string) runResult {
	t.Helper()
	if spec.Argv == nil {
		spec.Argv = []string{"/bin/sh", "-c", script}
	}
	cmd := sandboxCmd(t, u, spec)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := runResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run sandbox: %v", err)
	}
	return r
}

// mustRun runs script and fails the test unless it exits 0.
func mustRun(t *testing.T, u *box.User, spec nsexec.Spec, script string) string {
	t.Helper()
	r := sandbox(t, u, spec, script)
	if r.code != 0 {
		t.Fatalf("sandbox exited %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// modes runs f as root and as an unprivileged box user.
func modes(t *testing.T, f func(t *testing.T, u *box.User)) {
	t.Run("root", func(t *testing.T) { f(t, nil) })
	t.Run("user", func(t *testing.T) { f(t, boxUser(t)) })
}

var theUser *box.User

func boxUser(t *testing.T) *box.User {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBox(t)
	if theUser == nil {
		u, err := testBox.EnsureUser(context.Background(), "nsexec")
		if err != nil {
			t.Fatal(err)
		}
		theUser = &u
	}
	return theUser
}

// boxMounts is the box's mount table (its PID 1's), without the
// per-mount ids that change on remounts.
func boxMounts(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(testBox.Pid()) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// checkBoxMountsUnchanged fails t if the box's mount table changed while
// f ran.
func checkBoxMountsUnchanged(t *testing.T, f func()) {
	t.Helper()
	before := boxMounts(t)
	f()
	if after := boxMounts(t); after != before {
		t.Fatalf("the box's mount table changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func nsLinks(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			m[k] = v
		}
	}
	return m
}

const nsScript = `for n in user mnt pid net ipc uts cgroup time; do echo "$n $(readlink /proc/self/ns/$n)"; done`

func TestNamespacesOnlyRequested(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		var outside string
		var err error
		if u != nil {
			outside, err = testBox.RunAs(context.Background(), *u, "/bin/sh", "-c", nsScript)
		} else {
			outside, err = testBox.Run(context.Background(), "/bin/sh", "-c", nsScript)
		}
		if err != nil {
			t.Fatal(err)
		}
		out := nsLinks(t, outside)
		for _, req := range []nsexec.Namespaces{nsexec.NSNet | nsexec.NSUTS, nsexec.NSPID | nsexec.NSMount | nsexec.NSIPC, nsexec.NSAll} {
			t.Run(req.String(), func(t *testing.T) {
				in := nsLinks(t, mustRun(t, u, nsexec.Spec{Namespaces: req}, nsScript))
				want := req
				if u != nil {
					want |= nsexec.NSUser // implied for an unprivileged caller
				}
				for i, name := range nsexec.NamespaceFiles() {
					kind := nsexec.Namespaces(1 << i)
					differs := in[name] != out[name]
					if in[name] == "" {
						t.Fatalf("no %s namespace read inside", name)
					}
					if differs != want.Has(kind) {
						t.Errorf("%s: inside %s, outside %s; requested: %v", name, in[name], out[name], want.Has(kind))
					}
				}
			})
		}
	})
}

func TestIDMaps(t *testing.T) {
	t.Run("user-map-root", func(t *testing.T) {
		u := boxUser(t)
		dir := filepath.Join(shared, "maps-user")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, u.UID, u.GID); err != nil {
			t.Fatal(err)
		}
		out := mustRun(t, u, nsexec.Spec{Namespaces: nsexec.NSMount}, "id -u; cat /proc/self/uid_map /proc/self/gid_map; touch "+dir+"/made-inside")
		f := strings.Fields(out)
		if want := []string{"0", "0", strconv.Itoa(u.UID), "1", "0", strconv.Itoa(u.GID), "1"}; strings.Join(f, " ") != strings.Join(want, " ") {
			t.Fatalf("inside: %q, want %q", f, want)
		}
		st, err := os.Stat(filepath.Join(dir, "made-inside"))
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != u.UID || int(s.Gid) != u.GID {
			t.Fatalf("file made by root inside is owned by %d:%d on the host, want %d:%d", s.Uid, s.Gid, u.UID, u.GID)
		}
	})
	t.Run("user-subuid-ranges", func(t *testing.T) {
		u := boxUser(t)
		sub, err := testBox.Run(context.Background(), "sh", "-c", "grep ^"+u.Name+": /etc/subuid | cut -d: -f2")
		if err != nil || strings.TrimSpace(sub) == "" {
			t.Fatalf("no /etc/subuid range for %s: %v", u.Name, err)
		}
		start, _ := strconv.Atoi(strings.TrimSpace(sub))
		m := []nsexec.IDMap{{Inside: 0, Outside: uint32(u.UID), Count: 1}, {Inside: 1, Outside: uint32(start), Count: 1000}}
		out := mustRun(t, u, nsexec.Spec{UIDMap: m, GIDMap: []nsexec.IDMap{{Inside: 0, Outside: uint32(u.GID), Count: 1}}}, "cat /proc/self/uid_map")
		f := strings.Fields(out)
		if want := fmt.Sprintf("0 %d 1 1 %d 1000", u.UID, start); strings.Join(f, " ") != want {
			t.Fatalf("uid_map %q, want %q", strings.Join(f, " "), want)
		}
		// Ranges the user does not own are refused before anything starts.
		r := sandbox(t, u, nsexec.Spec{UIDMap: []nsexec.IDMap{{Inside: 0, Outside: 0, Count: 1}}}, "true")
		if r.code != 125 || !strings.Contains(r.stderr, "not yours") {
			t.Fatalf("mapping host root as a user: exit %d, %s", r.code, r.stderr)
		}
	})
	t.Run("root-default-is-not-host-root", func(t *testing.T) {
		out := mustRun(t, nil, nsexec.Spec{Namespaces: nsexec.NSUser}, "cat /proc/self/uid_map")
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != "0" || f[1] == "0" {
			t.Fatalf("root's default uid_map %q maps host root", out)
		}
	})
}

// overlayLower makes a lower directory with a file and the given symlinks.
func overlayLower(t *testing.T, name string, links map[string]string) string {
	t.Helper()
	lower := filepath.Join(shared, name)
	for _, d := range []string{"", "etc", "usr", "mnt"} {
		if err := os.MkdirAll(filepath.Join(lower, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} { // merged /usr, as Debian 12
		if err := os.Symlink("usr/"+d, filepath.Join(lower, d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "etc/lower-file"), []byte("lower\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for n, target := range links {
		if err := os.Symlink(target, filepath.Join(lower, n)); err != nil {
			t.Fatal(err)
		}
	}
	return lower
}

// withHostBinaries binds the box's /usr into a test root so that /bin/sh
// runs inside.
func withHostBinaries() []nsexec.Mount {
	return []nsexec.Mount{{Kind: nsexec.ROBind, Source: "/usr", Dest: "/usr"}}
}

func TestOverlayWritesStayInUpper(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		name := "overlay-root"
		if u != nil {
			name = "overlay-user"
		}
		lower := overlayLower(t, name, nil)
		if u != nil {
			// The user's own files: in its namespace, host files of other
			// owners are read-only even to its root.
			for _, p := range []string{lower, lower + "/etc", lower + "/etc/lower-file"} {
				if err := os.Chown(p, u.UID, u.GID); err != nil {
					t.Fatal(err)
				}
			}
		}
		spec := nsexec.Spec{
			Namespaces: nsexec.NSPID | nsexec.NSMount,
			Overlay:    &nsexec.Overlay{Lowers: []string{lower}},
			Mounts:     withHostBinaries(),
		}
		checkBoxMountsUnchanged(t, func() {
			out := mustRun(t, u, spec, "echo changed > /etc/lower-file; echo new > /etc/new-file; cat /etc/lower-file")
			if out != "changed\n" {
				t.Fatalf("inside: %q", out)
			}
		})
		if data, _ := os.ReadFile(filepath.Join(lower, "etc/lower-file")); string(data) != "lower\n" {
			t.Fatalf("the write reached the lower layer: %q", data)
		}
		if _, err := os.Stat(filepath.Join(lower, "etc/new-file")); err == nil {
			t.Fatal("a new file reached the lower layer")
		}
		// With --overlay-upper the changes land there.
		upper, work := filepath.Join(shared, name+"-upper"), filepath.Join(shared, name+"-work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if u != nil {
				_ = os.Chown(d, u.UID, u.GID)
			}
		}
		spec.Overlay.Upper, spec.Overlay.Work = upper, work
		mustRun(t, u, spec, "echo kept > /etc/new-file")
		if data, err := os.ReadFile(filepath.Join(upper, "etc/new-file")); err != nil || string(data) != "kept\n" {
			t.Fatalf("upper/etc/new-file: %q, %v", data, err)
		}
	})
}

func TestMasks(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount | nsexec.NSNet, Overlay: &nsexec.Overlay{Lowers: []string{"/"}}}
		script := `
for p in /proc/keys /proc/timer_list /proc/kallsyms /proc/sysrq-trigger /proc/kcore; do
  [ -e "$p" ] || continue
  [ -s "$p" ] && echo "UNMASKED $p"
  [ -c "$p" ] || [ -d "$p" ] || echo "NOT-A-MASK $p"
done
[ -d /sys/firmware ] && [ -n "$(ls -A /sys/firmware)" ] && echo "UNMASKED /sys/firmware"
echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo "WROTE /proc/sys"
umount /proc/keys 2>/dev/null && echo "UNMOUNTED /proc/keys"
umount -l /proc/sys 2>/dev/null && echo "UNMOUNTED /proc/sys"
mount -o remount,rw /proc/sys 2>/dev/null && echo "REMOUNTED /proc/sys"
echo 1 > /sys/kernel/profiling 2>/dev/null && echo "WROTE /sys"
grep -c . /proc/keys 2>/dev/null
echo done`
		out := mustRun(t, u, spec, script)
		if strings.Contains(out, "UNMASKED") || strings.Contains(out, "WROTE") || strings.Contains(out, "UNMOUNTED") ||
			strings.Contains(out, "REMOUNTED") || strings.Contains(out, "NOT-A-MASK") || !strings.HasSuffix(out, "done\n") {
			t.Fatalf("masks:\n%s", out)
		}
		// Masks hold even with CAP_SYS_ADMIN kept: the default seccomp
		// filter refuses umount and mount.
		spec.Caps = []string{"sys_admin"}
		out = mustRun(t, u, spec, "umount /proc/keys 2>&1 && echo UNMOUNTED; echo done")
		if strings.Contains(out, "UNMOUNTED") {
			t.Fatalf("with CAP_SYS_ADMIN the mask came off:\n%s", out)
		}
	})
}

func TestInitReapsOrphans(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount}
		// 1000 orphans: each subshell starts a background true and exits,
		// so the true is reparented to PID 1. Then wait (bounded, no timing
		// asserted) until no zombie is left.
		script := `
i=0; while [ $i -lt 1000 ]; do ( true & ); i=$((i+1)); done
n=0; while [ $n -lt 1000 ]; do
  z=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
  [ "$z" = 0 ] && break
  n=$((n+1)); sleep 0.01
done
echo "zombies $z"; echo "pid $$"`
		out := mustRun(t, u, spec, script)
		if !strings.Contains(out, "zombies 0") {
			t.Fatalf("orphans not reaped:\n%s", out)
		}
		if strings.Contains(out, "pid 1\n") {
			t.Fatalf("the workload is PID 1, expected an init:\n%s", out)
		}
		// On request the workload itself is PID 1.
		spec.NoInit = true
		if out := mustRun(t, u, spec, `echo "pid $$"`); out != "pid 1\n" {
			t.Fatalf("NoInit: %q", out)
		}
	})
}

func TestExitStatusAndSignals(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		for _, noInit := range []bool{false, true} {
			spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount, NoInit: noInit}
			if r := sandbox(t, u, spec, "exit 7"); r.code != 7 {
				t.Errorf("noInit=%v: exit 7 gave %d (%s)", noInit, r.code, r.stderr)
			}
			if r := sandbox(t, u, nsexec.Spec{Namespaces: nsexec.NSPID, NoInit: noInit, Argv: []string{"/bin/sh", "-c", "kill -KILL $$"}}, ""); !noInit && r.code != 137 {
				t.Errorf("death by SIGKILL gave %d (%s)", r.code, r.stderr)
			}
		}
		// SIGTERM to the caller reaches the workload through the init.
		spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount,
			Argv: []string{"/bin/sh", "-c", `trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done`}}
		cmd := sandboxCmd(t, u, spec)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := stdout.Read(buf); err != nil || string(buf) != "ready\n" {
			t.Fatalf("workload did not start: %q %v %s", buf, err, stderr.String())
		}
		// cmd.Process is nsenter (or setpriv under it): signal the driver,
		// its descendant running the test binary, as nsrun's caller would.
		drv := findDescendant(t, cmd.Process.Pid, testBin)
		if err := syscall.Kill(drv, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		rest := make([]byte, 64)
		n, _ := stdout.Read(rest)
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 42 || !strings.Contains(string(rest[:n]), "got-term") {
			t.Fatalf("after SIGTERM: %v, output %q, stderr %s", err, rest[:n], stderr.String())
		}
	})
}

func TestNetNoneAndHostname(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Net: nsexec.NetNone, Hostname: "sbx-test", Namespaces: nsexec.NSMount | nsexec.NSPID,
			Overlay: &nsexec.Overlay{Lowers: []string{"/"}}}
		out := mustRun(t, u, spec, "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; hostname")
		f := strings.Fields(out)
		// lo, its operstate ("unknown" for loopback), flags with IFF_UP, hostname
		if len(f) != 4 || f[0] != "lo" || f[3] != "sbx-test" {
			t.Fatalf("inside: %q", out)
		}
		flags, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 32)
		if err != nil || flags&1 == 0 {
			t.Fatalf("lo flags %s: not up", f[2])
		}
		host, _ := testBox.Run(context.Background(), "hostname")
		if strings.TrimSpace(host) == "sbx-test" {
			t.Fatal("the box's hostname changed")
		}
	})
}

func TestProcessSecurity(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount}
		script := `
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
ls /proc/self/fd | tr '\n' ' '; echo
env | grep -c NOTIFY_SOCKET
echo "sid $(cut -d' ' -f6 /proc/self/stat) pid $$"
python3 -c '
import fcntl, termios, errno
for name, req in (("TIOCSTI", termios.TIOCSTI), ("TIOCLINUX", 0x541C)):
    try:
        fcntl.ioctl(999, req, b"x")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
'
cat /proc/1/exe > /dev/null 2>&1 && echo "READ /proc/1/exe"
echo x >> /proc/1/exe 2>/dev/null && echo "WROTE /proc/1/exe"
true`
		spec.Argv = []string{"/bin/sh", "-c", script}
		cmd := sandboxCmd(t, u, spec)
		cmd.Env = append(cmd.Env, "NSEXEC_TEST_LEAK=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
		out := stdout.String()
		for _, want := range []string{
			"CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
			"CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2",
			"\n0 1 2 3 \n", // 3 is ls's own directory fd
			"\n0\n",        // NOTIFY_SOCKET not passed
			"TIOCSTI EPERM", "TIOCLINUX EPERM",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
		var sid, pid int
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "sid ") {
				fmt.Sscanf(line, "sid %d pid %d", &sid, &pid)
			}
		}
		if sid == 0 || sid != pid {
			t.Errorf("the workload is not in a session of its own (sid %d, pid %d)", sid, pid)
		}
		if strings.Contains(out, "/proc/1/exe") {
			t.Errorf("the init's binary is reachable:\n%s", out)
		}
		if !strings.Contains(stderr.String(), "leaked fd") {
			t.Errorf("the driver did not leak an fd: %s", stderr.String())
		}
		// A kept capability is in every set; without seccomp the ioctl
		// reaches the kernel (EBADF), which shows the test can fail.
		spec.Caps, spec.Seccomp, spec.Argv = []string{"net_admin"}, nsexec.SeccompNone, nil
		out = mustRun(t, u, spec, `grep -E '^(CapEff|CapBnd):' /proc/self/status; python3 -c '
import fcntl, termios, errno
try: fcntl.ioctl(999, termios.TIOCSTI, b"x")
except OSError as e: print("TIOCSTI", errno.errorcode[e.errno])'`)
		for _, want := range []string{"CapEff:\t0000000000001000", "CapBnd:\t0000000000001000", "TIOCSTI EBADF"} {
			if !strings.Contains(out, want) {
				t.Errorf("with net_admin, no seccomp: missing %q in:\n%s", want, out)
			}
		}
	})
}

func TestPreservedFDs(t *testing.T) {
	cmd := sandboxCmd(t, nil, nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount, PreserveFDs: 1,
		Argv: []string{"/bin/sh", "-c", "cat <&3; ls /proc/self/fd | tr '\\n' ' '"}})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{r}
	// nsenter passes fd 3 through to the driver, which passes it on.
	fmt.Fprint(w, "through fd 3\n")
	w.Close()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if got := stdout.String(); got != "through fd 3\n0 1 2 3 4 " {
		t.Fatalf("inside: %q", got)
	}
}

func TestPlantedSymlinksCreateNothingOutside(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		name := "planted-root"
		if u != nil {
			name = "planted-user"
		}
		outside := filepath.Join(shared, name+"-outside")
		if err := os.MkdirAll(outside, 0o777); err != nil {
			t.Fatal(err)
		}
		// /dev and /proc symlinked out: refused.
		for _, link := range []string{"dev", "proc"} {
			lower := overlayLower(t, name+"-"+link, map[string]string{link: outside})
			r := sandbox(t, u, nsexec.Spec{Namespaces: nsexec.NSPID, Overlay: &nsexec.Overlay{Lowers: []string{lower}},
				Mounts: withHostBinaries()}, "true")
			if r.code != 125 || !strings.Contains(r.stderr, "symlink") {
				t.Errorf("%s symlinked out of the root: exit %d, %s", link, r.code, r.stderr)
			}
		}
		// etc/resolv.conf and a bind destination symlinked out: the start
		// goes on or is refused, and nothing appears outside.
		lower := overlayLower(t, name+"-binds", map[string]string{
			"etc/resolv.conf": outside + "/resolv.conf", "mnt/bind": outside + "/bind",
		})
		src := filepath.Join(shared, name+"-src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		spec := nsexec.Spec{Namespaces: nsexec.NSPID, Overlay: &nsexec.Overlay{Lowers: []string{lower}}, Mounts: withHostBinaries()}
		checkBoxMountsUnchanged(t, func() {
			mustRun(t, u, spec, "echo pwn > /etc/resolv.conf || true")
			spec.Mounts = append(spec.Mounts, nsexec.Mount{Kind: nsexec.Bind, Source: src, Dest: "/mnt/bind/x"})
			r := sandbox(t, u, spec, "true")
			t.Logf("bind onto a symlinked destination: exit %d %s", r.code, r.stderr)
		})
		entries, _ := os.ReadDir(outside)
		if len(entries) != 0 {
			t.Fatalf("created outside the root: %v", entries)
		}
	})
}

func TestStartErrors(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount, Overlay: &nsexec.Overlay{Lowers: []string{"/"}}}
		spec.Argv = []string{"no-such-command"}
		if r := sandbox(t, u, spec, ""); r.code != 127 || !strings.Contains(r.stderr, "no-such-command: command not found") {
			t.Errorf("missing command: %d %s", r.code, r.stderr)
		}
		spec.Argv = []string{"/etc/passwd"}
		if r := sandbox(t, u, spec, ""); r.code != 126 {
			t.Errorf("not executable: %d %s", r.code, r.stderr)
		}
		spec.Argv = []string{"/bin/true"}
		spec.Mounts = []nsexec.Mount{{Kind: nsexec.Bind, Source: "/no/such/source", Dest: "/x"}}
		if r := sandbox(t, u, spec, ""); r.code != 125 || !strings.Contains(r.stderr, "--bind /no/such/source") {
			t.Errorf("missing bind source: %d %s", r.code, r.stderr)
		}
	})
}

func TestTimeNamespace(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Time: &nsexec.TimeOffsets{Monotonic: 10 * 86400, Boottime: 10 * 86400}}
		out := mustRun(t, u, spec, "cut -d. -f1 /proc/uptime")
		in, _ := strconv.Atoi(strings.TrimSpace(out))
		// The host's boottime, read after: inside must be ahead by about
		// the offset (a day of slack; this is not a timing assertion).
		host := time.Duration(0)
		if data, err := os.ReadFile("/proc/uptime"); err == nil {
			f, _ := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
			host = time.Duration(f * float64(time.Second))
		}
		if d := time.Duration(in)*time.Second - host; d < 9*24*time.Hour || d > 11*24*time.Hour {
			t.Fatalf("uptime inside %ds, host %v: offset not applied", in, host)
		}
	})
}

// findDescendant finds the process below pid whose executable is exe.
func findDescendant(t *testing.T, pid int, exe string) int {
	t.Helper()
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if target, _ := os.Readlink("/proc/" + strconv.Itoa(p) + "/exe"); target == exe {
			return p
		}
		queue = append(queue, childrenOf(p)...)
	}
	t.Fatalf("no %s below pid %d", exe, pid)
	return 0
}
