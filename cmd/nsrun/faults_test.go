package main

// Fault tests (threats F08, F09): errors injected at each class of system
// call nsrun makes (strace -e inject, or a capability taken away), and
// resources run out. Each must end in a non-zero exit with one clear line
// from nsrun (no Go panic or runtime crash), within a deadline (no hang),
// and leave nothing: no unit, no cgroup, no nsrun or strace process, no
// change to the box's mount table. As root with the system manager and as
// a box user with its user manager, where the fault applies.

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

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
)

// faultTimeout bounds every faulty run: longer means nsrun hung.
const faultTimeout = 60 * time.Second

type faultResult struct {
	stdout, stderr string
	code           int
}

// runFault runs argv in the box (as root, or as u) under a deadline and
// fails t if it did not end in time.
func runFault(t *testing.T, u *box.User, argv ...string) faultResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	cmd := boxCommandCtx(ctx, u, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%q did not end within %v (hang)\nstdout: %s\nstderr: %s", argv, faultTimeout, stdout.String(), stderr.String())
	}
	r := faultResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run %q: %v", argv, err)
	}
	return r
}

func boxCommandCtx(ctx context.Context, u *box.User, name string, args ...string) *exec.Cmd {
	if u != nil {
		return testBox.CommandAs(ctx, *u, name, args...)
	}
	return testBox.Command(ctx, name, args...)
}

// crashMarks are what a Go panic or runtime crash prints.
var crashMarks = []string{"panic:", "goroutine ", "runtime:", "fatal error", "SIGABRT", "SIGSEGV", "runtime/cgo"}

// checkCleanError fails t unless r is nsrun's refusal: exit 125, one line
// from nsrun naming want (a refusal may add its --allow-degraded hint),
// nothing of a crash, and the workload never ran.
func checkCleanError(t *testing.T, r faultResult, want string) {
	t.Helper()
	if r.code != 125 {
		t.Errorf("exit %d, want 125\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	checkNoCrash(t, r)
	// The error is one line naming the cause; a refusal adds its
	// --allow-degraded hint, a failed connection the other address it
	// tried. Warnings and strace's own notes are not nsrun's error.
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if strings.HasPrefix(l, "nsrun: warning: ") || strings.HasPrefix(l, "strace: ") {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 || len(lines) > 2 || !strings.HasPrefix(lines[0], "nsrun: ") || !strings.Contains(lines[0], want) {
		t.Errorf("stderr %q: want one line from nsrun naming %q", r.stderr, want)
	}
	if strings.Contains(r.stdout, "WORKLOAD RAN") {
		t.Errorf("the workload ran: %s", r.stdout)
	}
}

func checkNoCrash(t *testing.T, r faultResult) {
	t.Helper()
	for _, m := range crashMarks {
		if strings.Contains(r.stderr, m) {
			t.Fatalf("a crash (%q) in stderr:\n%s", m, r.stderr)
		}
	}
}

// checkNothingLeft fails t if unit (of u's manager), its cgroup, a process
// of nsrun or strace in the box, or a mount in the box outlived the run.
func checkNothingLeft(t *testing.T, u *box.User, unit, mountsBefore string) {
	t.Helper()
	waitUnitGone(t, u, unit+".scope")
	_ = filepath.WalkDir(testBox.Cgroup(), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.Contains(d.Name(), unit) {
			t.Errorf("cgroup %s left behind", path)
		}
		return nil
	})
	waitFor(t, "nsrun and strace processes gone", func() bool { return len(boxProcs(t, nsrunBin, "/usr/bin/strace")) == 0 })
	if after := boxMountTable(t); after != mountsBefore {
		t.Errorf("the box's mount table changed:\nbefore:\n%s\nafter:\n%s", mountsBefore, after)
	}
}

// boxProcs lists the processes in the box's pid namespace running one of
// exes.
func boxProcs(t *testing.T, exes ...string) []string {
	t.Helper()
	boxNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", testBox.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid"); ns != boxNS {
			continue
		}
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		for _, x := range exes {
			if exe == x {
				found = append(found, e.Name()+" "+exe)
			}
		}
	}
	return found
}

func boxMountTable(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", testBox.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		testutil.Skip(t, "%s is not installed (make deps installs it)", name)
	}
}

// TestFaultInjectedSyscalls (F08): each class of system call nsrun makes
// fails once strace injects an error into it.
func TestFaultInjectedSyscalls(t *testing.T) {
	requireBox(t)
	requireTool(t, "strace")
	for _, tc := range []struct {
		name   string
		inject []string // strace options
		flags  []string
		root   bool // root only (the user's sandbox makes no such call)
		says   string
	}{
		{"mount", []string{"-e", "inject=mount:error=EPERM"}, nil, false, "make mounts private: operation not permitted"},
		{"fsopen", []string{"-e", "inject=fsopen:error=ENOMEM"}, nil, false, "fsopen tmpfs: cannot allocate memory"},
		{"fsmount", []string{"-e", "inject=fsmount:error=EPERM"}, nil, false, "fsmount tmpfs: operation not permitted"},
		{"open_tree", []string{"-e", "inject=open_tree:error=EACCES"}, nil, false, "clone mount tree"},
		{"move_mount", []string{"-e", "inject=move_mount:error=EPERM"}, nil, false, "tmpfs for the overlay upper: operation not permitted"},
		{"move_mount root", []string{"-e", "inject=move_mount:error=EPERM:when=2"}, nil, false, "attach the new root: operation not permitted"},
		{"mount_setattr", []string{"-e", "inject=mount_setattr:error=EINVAL"}, nil, false, "set mount attributes: invalid argument"},
		{"pivot_root", []string{"-e", "inject=pivot_root:error=EPERM"}, nil, false, "pivot_root: operation not permitted"},
		{"unshare", []string{"-e", "inject=unshare:error=ENOSPC"}, nil, false, "unshare cgroup namespace: no space left on device"},
		{"unshare time", []string{"-e", "inject=unshare:error=ENOSPC"}, []string{"--time-offset=monotonic:10"}, false, "unshare time namespace: no space left on device"},
		// clone3 refused as old kernels and seccomp profiles do (the C
		// library falls back to clone for threads; Go's clone3 into the
		// payload cgroup has no fallback).
		{"clone3", []string{"-e", "inject=clone3:error=ENOSYS"}, nil, false, "function not implemented"},
		{"bpf", []string{"-e", "inject=bpf:error=EPERM"}, nil, true, "device policy not in force"},
		{"execve workload", []string{"-e", "inject=execve:error=ENOMEM", "-P", "/usr/bin/echo"}, nil, false, "/usr/bin/echo: cannot allocate memory"},
		{"execve workload no-init", []string{"-e", "inject=execve:error=ENOMEM", "-P", "/usr/bin/echo"}, []string{"--no-init"}, false, "/usr/bin/echo: cannot allocate memory"},
		{"execve nsrun", []string{"-e", "inject=execve:error=EACCES", "-P", "/proc/self/exe"}, nil, false, "fork/exec /proc/self/exe: permission denied"},
	} {
		for _, u := range []*box.User{nil, boxUser(t)} {
			if tc.root && u != nil {
				continue
			}
			name := tc.name + "/root"
			if u != nil {
				name = tc.name + "/user"
			}
			t.Run(name, func(t *testing.T) {
				unit := uniqueName(t, "e2e-fault")
				before := boxMountTable(t)
				argv := append([]string{"strace", "-f", "-qq", "-o", "/dev/null"}, tc.inject...)
				argv = append(append(append(argv, nsrunBin, "-q", "--unit="+unit, "--sandbox"), tc.flags...), "--", "/usr/bin/echo", "WORKLOAD RAN")
				r := runFault(t, u, argv...)
				checkCleanError(t, r, tc.says)
				checkNothingLeft(t, u, unit, before)
			})
		}
	}
}

// TestFaultIDMapWrite (F08, write uid_map/gid_map): root without
// CAP_SETUID (CAP_SETGID) may not write the child's uid (gid) map.
func TestFaultIDMapWrite(t *testing.T) {
	requireBox(t)
	for _, tc := range []struct{ drop, says string }{
		{"-setuid", "write uid map: write /proc/"},
		{"-setgid", "write gid map: write /proc/"},
	} {
		t.Run(tc.drop, func(t *testing.T) {
			unit := uniqueName(t, "e2e-fault-map")
			before := boxMountTable(t)
			r := runFault(t, nil, "setpriv", "--bounding-set="+tc.drop, "--", nsrunBin, "-q", "--unit="+unit, "--unshare=user,mount,pid", "--", "echo", "WORKLOAD RAN")
			checkCleanError(t, r, tc.says)
			if !strings.Contains(r.stderr, "operation not permitted") {
				t.Errorf("stderr %q does not give the cause", r.stderr)
			}
			checkNothingLeft(t, nil, unit, before)
		})
	}
}

// TestFaultFewFDs (F09, ulimit -n): with few file descriptors nsrun runs
// or refuses cleanly; it never crashes or leaves anything.
func TestFaultFewFDs(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		for _, n := range []int{16, 10, 8, 6} {
			t.Run(strconv.Itoa(n), func(t *testing.T) {
				unit := uniqueName(t, "e2e-fault-fds")
				before := boxMountTable(t)
				r := runFault(t, u, "sh", "-c", fmt.Sprintf("ulimit -n %d && exec %s -q --unit=%s --sandbox -- echo WORKLOAD RAN", n, nsrunBin, unit))
				if r.code == 0 {
					if r.stdout != "WORKLOAD RAN\n" {
						t.Errorf("ran, but printed %q", r.stdout)
					}
					checkNoCrash(t, r)
				} else {
					checkCleanError(t, r, "too many open files")
				}
				t.Logf("ulimit -n %d: exit %d %s", n, r.code, strings.TrimSpace(r.stderr))
				checkNothingLeft(t, u, unit, before)
			})
		}
	})
}

// TestFaultFewTasks (F09, pids.max / RLIMIT_NPROC): when few tasks may
// start, nsrun refuses before it starts anything, naming the limit,
// instead of crashing halfway when a thread cannot start. pids.max needs
// the pids controller in the box's cgroup v2 hierarchy (not on a hybrid
// host: then TestPidsFree covers the reading and RLIMIT_NPROC the rest).
func TestFaultFewTasks(t *testing.T) {
	requireBox(t)
	t.Run("RLIMIT_NPROC", func(t *testing.T) {
		u := nprocUser(t)
		for _, extra := range []int{5, 15, 25, 40} {
			t.Run(strconv.Itoa(extra), func(t *testing.T) {
				unit := uniqueName(t, "e2e-fault-nproc")
				before := boxMountTable(t)
				if outside := tasksOutsideBox(t, u.UID); len(outside) > 0 {
					t.Fatalf("tasks of uid %d outside the box would count against the limit: %v", u.UID, outside)
				}
				// The limit: what the user runs now (threads count), plus
				// extra. The uid is this test's alone, so the box shows
				// every task the kernel counts for it.
				script := fmt.Sprintf(`n=$(ps -u $(id -u) -L --no-headers | wc -l); exec prlimit --nproc=$((n+%d)) %s -q --unit=%s --sandbox -- echo WORKLOAD RAN`, extra, nsrunBin, unit)
				r := runFault(t, u, "sh", "-c", script)
				switch {
				case extra < taskHeadroomSandbox:
					checkCleanError(t, r, "RLIMIT_NPROC")
				case r.code != 0 || r.stdout != "WORKLOAD RAN\n":
					t.Errorf("with %d tasks to spare: exit %d, %q, %s", extra, r.code, r.stdout, r.stderr)
				}
				checkNoCrash(t, r)
				checkNothingLeft(t, u, unit, before)
			})
		}
	})
	t.Run("pids.max", func(t *testing.T) {
		ctrls, err := testBox.Controllers()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(" "+strings.Join(ctrls, " ")+" ", " pids ") {
			t.Logf("no pids controller in the box's cgroup v2 hierarchy (%v): pids.max is covered by TestPidsFree here", ctrls)
			return
		}
		name := "nsrun-test-" + box.OwnerTag() + "-pids"
		host := filepath.Join(testBox.Cgroup(), name)
		if err := os.Mkdir(host, 0o755); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.Remove(host); err != nil {
				t.Errorf("remove %s: %v", host, err)
			}
		}()
		if err := os.WriteFile(filepath.Join(testBox.Cgroup(), "cgroup.subtree_control"), []byte("+pids"), 0); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, "pids.max"), []byte("20"), 0); err != nil {
			t.Fatal(err)
		}
		unit := uniqueName(t, "e2e-fault-pids")
		before := boxMountTable(t)
		r := runFault(t, nil, "sh", "-c", fmt.Sprintf("echo $$ > /sys/fs/cgroup/%s/cgroup.procs && exec %s -q --unit=%s --sandbox -- echo WORKLOAD RAN", name, nsrunBin, unit))
		checkCleanError(t, r, "pids.max")
		checkNothingLeft(t, nil, unit, before)
	})
}

// nprocUser is a box user for the RLIMIT_NPROC test, with its user manager
// running (stopped again when t ends). The kernel counts RLIMIT_NPROC per
// real uid across the whole machine (the box has no user namespace), and
// every box's first user is uid 1001: the box user of another suite
// running at the same time would use up the few tasks the test leaves and
// make nsrun's Go runtime crash before nsrun's own check can run. So this
// user has a uid no other test process uses (box.OwnerUID).
func nprocUser(t *testing.T) *box.User {
	t.Helper()
	ctx := context.Background()
	u, err := testBox.EnsureUserID(ctx, "nsrun-e2e-nproc", box.OwnerUID())
	if err != nil {
		t.Fatal(err)
	}
	if err := testBox.StartUserManager(ctx, u); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testBox.StopUserManager(ctx, u); err != nil {
			t.Error(err)
		}
		if state := showProps(t, nil, fmt.Sprintf("user@%d.service", u.UID), "ActiveState")["ActiveState"]; state != "inactive" {
			t.Errorf("user@%d.service is %s after stopping it", u.UID, state)
		}
		waitFor(t, fmt.Sprintf("no task of uid %d left", u.UID), func() bool { return len(tasksOfUID(t, u.UID, "")) == 0 })
	})
	return &u
}

// tasksOfUID lists host processes whose real uid is uid (and their thread
// counts), leaving out those in pid namespace notNS (when not "").
func tasksOfUID(t *testing.T, uid int, notNS string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		var ruid, threads string
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					ruid = f[0]
				}
			} else if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				threads = strings.TrimSpace(v)
			}
		}
		if ruid != strconv.Itoa(uid) {
			continue
		}
		if ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid"); notNS != "" && ns == notNS {
			continue
		}
		found = append(found, e.Name()+" ("+threads+" threads)")
	}
	return found
}

// tasksOutsideBox lists host processes of uid outside the box's pid
// namespace.
func tasksOutsideBox(t *testing.T, uid int) []string {
	t.Helper()
	boxNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", testBox.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	return tasksOfUID(t, uid, boxNS)
}

// TestFaultFullUpper (F09, ENOSPC on the overlay's upper layer): a full
// upper makes the workload's writes fail (its own status passes through)
// or the start fail cleanly; a small tmpfs in the box stands in for it.
func TestFaultFullUpper(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		ctx := context.Background()
		dir := "/tmp/" + uniqueName(t, "nsrun-e2e-enospc")
		if _, err := testBox.Run(ctx, "sh", "-c", fmt.Sprintf("mkdir %[1]s && mount -t tmpfs -o size=64k,nr_inodes=64 nsrun-enospc %[1]s && mkdir %[1]s/upper %[1]s/work", dir)); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, err := testBox.Run(ctx, "sh", "-c", "umount "+dir+" && rmdir "+dir); err != nil {
				t.Errorf("clean up %s: %v", dir, err)
			}
		}()
		if u != nil {
			if _, err := testBox.Run(ctx, "chown", "-R", fmt.Sprintf("%d:%d", u.UID, u.GID), dir); err != nil {
				t.Fatal(err)
			}
		}
		lower := filepath.Join(filepath.Dir(nsrunBin), "enospc-lower")
		for _, d := range []string{"etc", "usr", "tmp", "proc", "sys", "dev", "run"} {
			if err := os.MkdirAll(filepath.Join(lower, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
			_ = os.Symlink("usr/"+l, filepath.Join(lower, l))
		}
		fs := []string{"--overlay-root=" + lower, "--overlay-upper=" + dir + "/upper", "--overlay-work=" + dir + "/work", "--ro-bind=/usr"}
		before := boxMountTable(t)

		// Room for the set-up, not for the workload's 1 MiB.
		unit := uniqueName(t, "e2e-fault-enospc")
		args := append(append([]string{nsrunBin, "-q", "--unit=" + unit, "--unshare=mount,pid"}, fs...),
			"--", "sh", "-c", "dd if=/dev/zero of=/etc/big bs=64k count=16 2>/dev/null; echo dd=$?; exit 3")
		r := runFault(t, u, args...)
		checkNoCrash(t, r)
		if r.code != 3 || !strings.Contains(r.stdout, "dd=1") {
			t.Errorf("a write beyond the upper's space: exit %d, %q, %s", r.code, r.stdout, r.stderr)
		}
		checkNothingLeft(t, u, unit, before)

		if u == nil {
			// Root's sandbox in a user namespace is not root of the
			// upper (owned by host root): overlayfs cannot make its work
			// directory and mounts read-only, which nsrun refuses rather
			// than run on a root that silently keeps nothing.
			unit := uniqueName(t, "e2e-fault-rdonly")
			args := append(append([]string{nsrunBin, "-q", "--unit=" + unit, "--unshare=user,mount,pid"}, fs...), "--", "echo", "WORKLOAD RAN")
			r := runFault(t, nil, args...)
			checkCleanError(t, r, "the overlay came up read-only")
			checkNothingLeft(t, nil, unit, before)
		}

		// No room left at all: the upper's files fill it.
		if _, err := testBox.Run(ctx, "sh", "-c", "dd if=/dev/zero of="+dir+"/fill bs=4k 2>/dev/null; i=0; while touch "+dir+"/i$i 2>/dev/null; do i=$((i+1)); done; true"); err != nil {
			t.Fatal(err)
		}
		unit = uniqueName(t, "e2e-fault-enospc-full")
		args[2] = "--unit=" + unit
		args[len(args)-1] = "mkdir /etc/d && echo WORKLOAD RAN; echo x > /etc/f || exit 4"
		r = runFault(t, u, args...)
		checkNoCrash(t, r)
		checkCleanError(t, r, "no space left on device")
		t.Logf("full upper: exit %d %s", r.code, strings.TrimSpace(r.stderr))
		checkNothingLeft(t, u, unit, before)
	})
}

// TestFaultReadOnlyRuntimeDir (F09, /run/user/$UID read-only): the user's
// runtime directory (its manager's sockets and transient units) turned
// read-only in the box: nsrun runs or fails cleanly.
func TestFaultReadOnlyRuntimeDir(t *testing.T) {
	requireBox(t)
	u := boxUser(t)
	ctx := context.Background()
	rt := u.RuntimeDir()
	// Its own mount (user-runtime-dir@ mounts a tmpfs there), remounted
	// read-only in the box's mount namespace, and back afterwards.
	before := boxMountTable(t)
	if _, err := testBox.Run(ctx, "mount", "-o", "remount,ro", rt); err != nil {
		t.Fatalf("remount %s read-only: %v", rt, err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if _, err := testBox.Run(ctx, "mount", "-o", "remount,rw", rt); err != nil {
				t.Errorf("remount %s read-write: %v", rt, err)
			}
		}
	}
	defer restore()
	unit := uniqueName(t, "e2e-fault-rort")
	r := runFault(t, u, nsrunBin, "-q", "--unit="+unit, "--sandbox", "--", "echo", "WORKLOAD RAN")
	t.Logf("read-only %s: exit %d %q %s", rt, r.code, r.stdout, strings.TrimSpace(r.stderr))
	if r.code != 0 {
		checkCleanError(t, r, "")
	} else if r.stdout != "WORKLOAD RAN\n" {
		t.Errorf("ran, but printed %q", r.stdout)
	}
	checkNoCrash(t, r)
	restore()
	checkNothingLeft(t, u, unit, before)
}

// TestFaultUserNamespaceLimit (F09, max_user_namespaces reached): nsrun runs
// in a user namespace of the test's own whose user.max_user_namespaces is
// 0 (set there, never on the host), so the sandbox's user namespace cannot
// be made.
func TestFaultUserNamespaceLimit(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
		defer cancel()
		// The holder: a user namespace mapping the caller to itself, with
		// its own pid namespace and proc to write the limit through.
		holder := boxCommandCtx(ctx, u, "unshare", "--user", "--map-current-user", "--keep-caps", "--mount", "--pid", "--fork", "sh", "-c",
			"mount -t proc proc /proc && echo 0 > /proc/sys/user/max_user_namespaces && echo ready && exec sleep 60")
		out, err := holder.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var herr bytes.Buffer
		holder.Stderr = &herr
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = holder.Process.Kill()
			_ = holder.Wait()
		}()
		buf := make([]byte, 6)
		if n, err := out.Read(buf); err != nil || string(buf[:n]) != "ready\n" {
			t.Fatalf("user namespace holder: %q %v %s", buf[:n], err, herr.String())
		}
		// The holder's sleep (in its user namespace) as the box sees it;
		// killing it (PID 1 of the holder's pid namespace) ends the holder.
		sleepPid := descendantExe(t, holder.Process.Pid, "/usr/bin/sleep")
		defer func() { _ = syscall.Kill(sleepPid, syscall.SIGKILL) }()
		pid := boxPidOf(t, sleepPid)
		unit := uniqueName(t, "e2e-fault-userns")
		before := boxMountTable(t)
		flags := []string{"--sandbox"}
		if u == nil {
			// Root in a user namespace has no CAP_BPF on the host: the
			// device policy would be refused first.
			flags = []string{"--unshare-all"}
		}
		argv := append([]string{"nsenter", "--user", "--target=" + strconv.Itoa(pid), "--preserve-credentials", "--", nsrunBin, "-q", "--unit=" + unit}, flags...)
		r := runFault(t, u, append(argv, "--", "echo", "WORKLOAD RAN")...)
		checkCleanError(t, r, "no space left on device")
		_ = syscall.Kill(sleepPid, syscall.SIGKILL)
		_ = holder.Wait()
		checkNothingLeft(t, u, unit, before)
	})
}

// boxPidOf is host process pid's pid in the box (NSpid's second field).
func boxPidOf(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			if f := strings.Fields(v); len(f) > 1 {
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
	}
	t.Fatalf("no box pid for %d", pid)
	return 0
}

// descendantExe finds the process below pid (host pids) running exe,
// waiting (bounded) for it to appear.
func descendantExe(t *testing.T, pid int, exe string) int {
	t.Helper()
	found := 0
	waitFor(t, exe+" below pid "+strconv.Itoa(pid), func() bool {
		found = findExeBelow(pid, exe)
		return found != 0
	})
	return found
}

func findExeBelow(pid int, exe string) int {
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if target, _ := os.Readlink("/proc/" + strconv.Itoa(p) + "/exe"); target == exe {
			return p
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, task := range tasks {
			data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, task.Name()))
			for _, f := range strings.Fields(string(data)) {
				c, _ := strconv.Atoi(f)
				queue = append(queue, c)
			}
		}
	}
	return 0
}

// TestPidsFree: the smallest room left under pids.max of a cgroup and its
// ancestors, read from files laid out as cgroupfs has them.
func TestPidsFree(t *testing.T) {
	mount := t.TempDir()
	for dir, files := range map[string][2]string{
		"a":     {"max", "7"},
		"a/b":   {"50", "30"},
		"a/b/c": {"100", "2"},
	} {
		if err := os.MkdirAll(filepath.Join(mount, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"pids.max", "pids.current"} {
			if err := os.WriteFile(filepath.Join(mount, dir, name), []byte(files[i]+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if free, where, ok := pidsFreeIn(mount, "/a/b/c"); !ok || free != 20 || where != "/a/b" {
		t.Fatalf("pidsFreeIn: %d %q %v, want 20 in /a/b", free, where, ok)
	}
	if _, _, ok := pidsFreeIn(mount, "/a"); ok {
		t.Fatal("pids.max=max counted as a limit")
	}
}
