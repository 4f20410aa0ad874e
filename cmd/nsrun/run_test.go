package main

// End-to-end tests of "nsrun run" beyond the first slice: the exit-status
// contract in full, signals, nsrun killed at every stage, process options,
// --pty, properties and shorthands as systemd reads them back, in-place
// mode. They share the box and binary of e2e_test.go.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"golang.org/x/sys/unix"
)

// TestExitStatusContract: the workload's status 0..255 passes through
// (a sample), and death by each catchable signal becomes 128+N.
func TestExitStatusContract(t *testing.T) {
	requireBox(t)
	for _, code := range []int{0, 1, 2, 63, 100, 124, 125, 126, 127, 128, 129, 200, 254, 255} {
		out, err := nsrun(context.Background(), nil, "-q", "--", "sh", "-c", "exit "+strconv.Itoa(code)).CombinedOutput()
		if got := exitCode(t, err); got != code {
			t.Errorf("workload exit %d: nsrun exited %d (%q)", code, got, out)
		}
	}
	// Signals whose default action ends the process (stop signals, SIGCHLD,
	// SIGURG, SIGWINCH and SIGCONT do not; SIGKILL cannot be caught but
	// ends it all the same). No core files: ulimit -c 0.
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGILL,
		syscall.SIGTRAP, syscall.SIGABRT, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGKILL,
		syscall.SIGUSR1, syscall.SIGSEGV, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM,
		syscall.SIGTERM, syscall.SIGSTKFLT, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGVTALRM,
		syscall.SIGPROF, syscall.SIGIO, syscall.SIGPWR, syscall.SIGSYS, 34, 50, 64}
	for _, sig := range sigs {
		out, err := nsrun(context.Background(), nil, "-q", "--", "sh", "-c",
			fmt.Sprintf("ulimit -c 0; kill -%d $$; sleep 5", int(sig))).CombinedOutput()
		if got := exitCode(t, err); got != 128+int(sig) {
			t.Errorf("workload killed by signal %d: nsrun exited %d, want %d (%q)", sig, got, 128+int(sig), out)
		}
	}
}

// TestSignalsReachTheWorkload: each signal sent to nsrun reaches the
// workload (stdin is no terminal here, so SIGINT too).
func TestSignalsReachTheWorkload(t *testing.T) {
	requireBox(t)
	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGQUIT, 40} {
		unit := uniqueName(t, "e2e-sigs")
		g := newGate(t, nil)
		code := 30 + i
		name := strconv.Itoa(int(sig))
		cmd := startGated(t, nil, g, fmt.Sprintf("trap 'exit %d' %s; %s", code, name, g.script(0)), "-q", "--unit="+unit)
		if err := syscall.Kill(nsrunPid(t, unit+".scope"), sig); err != nil {
			t.Fatal(err)
		}
		if got := exitCode(t, cmd.Wait()); got != code {
			t.Errorf("signal %d to nsrun: exit %d, want the workload's trap status %d", sig, got, code)
		}
		waitUnitGone(t, nil, unit+".scope")
	}
}

// procState reads the state letter of a host pid.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

// TestNsrunKilledLeavesNothing: SIGKILL to nsrun after the scope exists,
// after the leaves exist, right after the workload started, and while a
// workload with a daemonized grandchild runs: within seconds no process of
// the workload runs, and the unit and its cgroup are gone.
func TestNsrunKilledLeavesNothing(t *testing.T) {
	requireBox(t)
	for _, point := range []string{"scope", "leaves", "started", "running"} {
		t.Run(point, func(t *testing.T) {
			unit := uniqueName(t, "e2e-kill")
			// The marker is a sleep time no other process uses.
			marker := strconv.FormatInt(1e6+time.Now().UnixNano()%1e6, 10)
			// A grandchild in a session of its own: Pdeathsig does not
			// reach it, only the watcher's cgroup.kill.
			script := fmt.Sprintf(`setsid sleep %s & echo started; exec sleep %s`, marker, marker)
			args := []string{"-q", "--unit=" + unit, "--", "sh", "-c", script}
			cmd := nsrun(context.Background(), nil, args...)
			if point != "running" {
				cmd.Env = append(os.Environ(), "NSRUN_TEST_STOP_AT="+point)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var pid int
			deadline := time.Now().Add(15 * time.Second)
			if point == "running" {
				line, _ := bufio.NewReader(stdout).ReadString('\n')
				if line != "started\n" {
					t.Fatalf("workload said %q", line)
				}
				pid = nsrunPid(t, unit+".scope")
				// Wait until the grandchild runs, so the kill must reach it.
				for len(grandchildren(marker)) == 0 {
					if time.Now().After(deadline) {
						t.Fatal("grandchild did not start")
					}
					time.Sleep(10 * time.Millisecond)
				}
			} else {
				for pid == 0 || procState(pid) != "T" {
					if time.Now().After(deadline) {
						t.Fatalf("nsrun did not stop at %q", point)
					}
					time.Sleep(10 * time.Millisecond)
					if pid == 0 {
						pid = findNsrun(unit + ".scope")
					}
				}
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// nsenter stops itself when its child stops (and would stay
			// stopped once that child is gone): wake it.
			_ = cmd.Process.Signal(syscall.SIGCONT)
			go io.Copy(io.Discard, stdout)
			_ = cmd.Wait()
			waitUnitGone(t, nil, unit+".scope")
			deadline = time.Now().Add(10 * time.Second)
			for len(markedPids(marker)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("workload processes %v still run after nsrun was killed", markedPids(marker))
				}
				time.Sleep(20 * time.Millisecond)
			}
			cg := filepath.Join(testBox.Cgroup(), "system.slice", unit+".scope")
			if _, err := os.Stat(cg); err == nil {
				t.Errorf("cgroup %s left behind", cg)
			}
		})
	}
}

// markedPids lists host processes whose command line contains marker.
func markedPids(marker string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(cmdline), marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// grandchildren lists the "sleep MARKER" processes.
func grandchildren(marker string) []int {
	var pids []int
	for _, pid := range markedPids(marker) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if string(cmdline) == "sleep\x00"+marker+"\x00" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// findNsrun returns the pid of nsrun (not its watcher) in a scope's
// subtree, or 0.
func findNsrun(unit string) int {
	out, err := testBox.Run(context.Background(), "systemctl", "show", "--property=ControlGroup", "--value", unit)
	if err != nil || strings.TrimSpace(out) == "" {
		return 0
	}
	root := filepath.Join(testBox.Cgroup(), strings.TrimSpace(out))
	found := 0
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			comm, _ := os.ReadFile("/proc/" + f + "/comm")
			cmdline, _ := os.ReadFile("/proc/" + f + "/cmdline")
			if strings.TrimSpace(string(comm)) == "nsrun" && !strings.Contains(string(cmdline), watchArg) {
				found, _ = strconv.Atoi(f)
			}
		}
		return nil
	})
	return found
}

// TestProcessOptions: -E, --chdir, --uid/--gid, and only fds 0, 1, 2 (and
// --preserve-fds) reach the workload.
func TestProcessOptions(t *testing.T) {
	requireBox(t)
	ctx := context.Background()
	u, err := testBox.EnsureUser(ctx, "nsrun-e2e")
	if err != nil {
		t.Fatal(err)
	}
	run := func(extra []*os.File, env []string, args ...string) (string, int) {
		t.Helper()
		cmd := nsrun(ctx, nil, append([]string{"-q"}, args...)...)
		cmd.ExtraFiles = extra
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), exitCode(t, err)
	}
	out, code := run(nil, []string{"NSRUN_E2E_PASS=passed"}, "-E", "A=1", "-E", "B=x=y", "-E", "NSRUN_E2E_PASS", "--chdir=/var/tmp",
		"--", "sh", "-c", `echo "$A|$B|$NSRUN_E2E_PASS|$(pwd)"`)
	if code != 0 || out != "1|x=y|passed|/var/tmp" {
		t.Errorf("-E/--chdir: exit %d, output %q", code, out)
	}
	out, code = run(nil, nil, "-E", "NSRUN_E2E_UNSET_VAR", "--", "true")
	if code != 125 || !strings.Contains(out, "NSRUN_E2E_UNSET_VAR") {
		t.Errorf("-E of an unset variable: exit %d, output %q", code, out)
	}
	out, code = run(nil, nil, "--chdir=/nonexistent-dir", "--", "true")
	if code != 125 || !strings.Contains(out, "/nonexistent-dir") {
		t.Errorf("--chdir to a missing directory: exit %d, output %q", code, out)
	}
	out, code = run(nil, nil, "--uid=nsrun-e2e", "--gid=0", "--", "sh", "-c", `echo "$(id -u) $(id -g) $USER $HOME"`)
	if want := fmt.Sprintf("%d 0 nsrun-e2e /home/nsrun-e2e", u.UID); code != 0 || out != want {
		t.Errorf("--uid/--gid: exit %d, output %q, want %q", code, out, want)
	}

	// Two extra fds (3 and 4) go into nsrun; without --preserve-fds the
	// workload sees neither, with --preserve-fds=1 it sees fd 3 only.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// Which of fds 3, 4, 5 the workload holds (no glob: it would open a
	// directory fd of its own).
	listFDs := `for f in 3 4 5; do [ -e /proc/$$/fd/$f ] && printf '%s ' $f; done; true`
	out, code = run([]*os.File{r, w}, nil, "--", "sh", "-c", listFDs)
	if code != 0 || out != "" {
		t.Errorf("workload's fds above 2 without --preserve-fds: %q (exit %d), want none", out, code)
	}
	out, code = run([]*os.File{r, w}, nil, "--preserve-fds=1", "--", "sh", "-c", listFDs)
	if code != 0 || out != "3" {
		t.Errorf("workload's fds above 2 with --preserve-fds=1: %q (exit %d), want \"3\"", out, code)
	}
	out, code = run(nil, nil, "--preserve-fds=9", "--", "true")
	if code != 125 || !strings.Contains(out, "is not open") {
		t.Errorf("--preserve-fds beyond the open fds: exit %d, output %q", code, out)
	}
}

// TestPty: the workload gets a terminal of its own with nsrun's size, and
// follows a size change (SIGWINCH to nsrun).
func TestPty(t *testing.T) {
	requireBox(t)
	master, slave, err := openTestPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 101}); err != nil {
		t.Fatal(err)
	}
	unit := uniqueName(t, "e2e-pty")
	cmd := nsrun(context.Background(), nil, "-q", "--pty", "--unit="+unit, "--", "sh", "-c",
		`stty size; tty >/dev/null && echo has-tty; trap 'stty size; exit 3' WINCH; echo ready; while :; do sleep 0.05; done`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(master)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("output ended before %q", want)
				}
				if l == want {
					return
				}
			case <-timeout:
				t.Fatalf("no %q from the workload", want)
			}
		}
	}
	expect("33 101")
	expect("has-tty")
	expect("ready")
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(nsrunPid(t, unit+".scope"), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	expect("40 120")
	if code := exitCode(t, cmd.Wait()); code != 3 {
		t.Errorf("exit %d, want 3", code)
	}
	waitUnitGone(t, nil, unit+".scope")
}

func openTestPty() (master, slave *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// TestPropertiesAsSystemdShowsThem: every shorthand and a table of -p values
// in systemd's syntax reach the unit as systemctl show reports them. The box
// has no resource controllers, so these run under --allow-degraded: the
// values are systemd's to show all the same.
func TestPropertiesAsSystemdShowsThem(t *testing.T) {
	requireBox(t)
	for _, tc := range []struct {
		args []string
		want map[string]string
	}{
		{[]string{"--memory-max=64M", "--memory-high=48M", "--memory-low=1M", "--memory-min=512K", "--memory-swap-max=0"},
			map[string]string{"MemoryMax": "67108864", "MemoryHigh": "50331648", "MemoryLow": "1048576", "MemoryMin": "524288", "MemorySwapMax": "0"}},
		{[]string{"--cpu-quota=20", "--cpu-weight=50", "--allowed-cpus=0", "--tasks-max=64", "--io-weight=200", "--runtime-max=5min"},
			map[string]string{"CPUQuotaPerSecUSec": "200ms", "CPUWeight": "50", "AllowedCPUs": "0", "TasksMax": "64", "IOWeight": "200", "RuntimeMaxUSec": "5min"}},
		{[]string{"--cpu-quota=150%", "--io-read-bandwidth-max=/dev/null 1M", "--io-write-bandwidth-max=/dev/null 2K"},
			map[string]string{"CPUQuotaPerSecUSec": "1.500000s", "IOReadBandwidthMax": "/dev/null 1000000", "IOWriteBandwidthMax": "/dev/null 2000"}},
		{[]string{"-p", "MemoryMax=infinity", "-p", "TasksMax=infinity", "-p", "CPUWeight=idle", "-p", "IODeviceWeight=/dev/null 300"},
			map[string]string{"MemoryMax": "infinity", "TasksMax": "infinity", "CPUWeight": "idle", "IODeviceWeight": "/dev/null 300"}},
		{[]string{"-p", "MemoryMax=1.5G", "-p", "AllowedCPUs=0-2 5", "-p", "CPUQuotaPeriodSec=50ms", "-p", "RuntimeMaxSec=1h 30min", "-p", "MemoryAccounting=yes"},
			map[string]string{"MemoryMax": "1610612736", "AllowedCPUs": "0-2 5", "CPUQuotaPeriodUSec": "50ms", "RuntimeMaxUSec": "1h 30min", "MemoryAccounting": "yes"}},
		{[]string{"--memory-max=1G", "-p", "MemoryMax=2G"}, // -p wins over the shorthand
			map[string]string{"MemoryMax": "2147483648"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			unit := uniqueName(t, "e2e-show")
			g := newGate(t, nil)
			cmd := startGated(t, nil, g, g.script(0), append([]string{"-q", "--allow-degraded", "--unit=" + unit}, tc.args...)...)
			var names []string
			for k := range tc.want {
				names = append(names, k)
			}
			got := showProps(t, nil, unit+".scope", names...)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s=%q, want %q", k, got[k], v)
				}
			}
			g.release(t)
			_ = cmd.Wait()
			waitUnitGone(t, nil, unit+".scope")
		})
	}
}

// TestInPlace: from a service with Delegate=yes, nsrun runs in the
// service's own cgroup (no scope), the workload in its payload/ leaf; an
// option that needs a unit of nsrun's own is refused there; without
// Delegate=yes nsrun makes a scope.
func TestInPlace(t *testing.T) {
	requireBox(t)
	svc := uniqueName(t, "e2e-inplace")
	out := "/tmp/" + svc + ".out"
	defer testBox.Run(context.Background(), "rm", "-f", out)
	// systemd-run --wait exits with the service's status.
	runService := func(delegate bool, args ...string) (string, int) {
		t.Helper()
		sargs := []string{"--wait", "--quiet", "--unit=" + svc, "-p", "StandardOutput=file:" + out,
			"-p", "StandardError=file:" + out}
		if delegate {
			sargs = append(sargs, "-p", "Delegate=yes")
		}
		sargs = append(sargs, append([]string{nsrunBin}, args...)...)
		status := exitCode(t, testBox.Command(context.Background(), "systemd-run", sargs...).Run())
		data, _ := testBox.Run(context.Background(), "cat", out)
		_, _ = testBox.Run(context.Background(), "systemctl", "reset-failed", svc+".service")
		_, _ = testBox.Run(context.Background(), "rm", "-f", out)
		return strings.TrimSpace(data), status
	}
	before := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "nsrun-*.scope")
	got, status := runService(true, "--", "sh", "-c", "cat /proc/self/cgroup; exit 4")
	if want := "0::/system.slice/" + svc + ".service/payload"; !strings.Contains(got, want) || status != 4 {
		t.Errorf("in place: output %q, status %d; want %q and the workload's 4", got, status, want)
	}
	if !strings.Contains(got, "Running in place") {
		t.Errorf("in place: output %q does not say so", got)
	}
	if after := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "nsrun-*.scope"); after != before {
		t.Errorf("in place made a scope: %q", after)
	}
	got, status = runService(true, "--unit=x", "--", "true")
	if !strings.Contains(got, "--unit needs a scope of its own") || status != 125 {
		t.Errorf("--unit in place: output %q, status %d", got, status)
	}
	got, status = runService(true, "--scope=always", "-q", "--", "sh", "-c", "cat /proc/self/cgroup")
	if !strings.Contains(got, ".scope/payload") || status != 0 {
		t.Errorf("--scope=always from a service: output %q, status %d; want a scope", got, status)
	}
	got, status = runService(false, "--", "sh", "-c", "cat /proc/self/cgroup")
	if !strings.Contains(got, "Running scope as unit") || !strings.Contains(got, ".scope/payload") || status != 0 {
		t.Errorf("without Delegate=yes: output %q, status %d; want a scope", got, status)
	}
	got, status = runService(false, "--scope=never", "--", "true")
	if !strings.Contains(got, "cannot run in place") || status != 125 {
		t.Errorf("--scope=never without delegation: output %q, status %d", got, status)
	}
	waitUnitGone(t, nil, svc+".service")
}

// TestUserManagerHints: without a user manager to talk to, nsrun --user says
// what is missing.
func TestUserManagerHints(t *testing.T) {
	requireBox(t)
	u, err := testBox.EnsureUser(context.Background(), "nsrun-e2e-nobus")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		says string
	}{
		{"XDG_RUNTIME_DIR=", "XDG_RUNTIME_DIR is not set"},
		{"XDG_RUNTIME_DIR=/tmp", "dbus-user-session"},
	} {
		cmd := testBox.CommandAs(context.Background(), u, nsrunBin, "--user", "--", "true")
		cmd.Env = append(cmd.Env, tc.env)
		out, err := cmd.CombinedOutput()
		if code := exitCode(t, err); code != 125 || !strings.Contains(string(out), tc.says) {
			t.Errorf("%s: exit %d, output %q; want 125 and %q", tc.env, code, out, tc.says)
		}
	}
}

var _ = box.User{}

// TestDevicePolicyInRun: nsrun run puts the device policy on payload/
// before the workload starts, and refuses a policy it cannot enforce.
func TestDevicePolicyInRun(t *testing.T) {
	requireBox(t)
	ctx := context.Background()
	write := func(args ...string) (string, int) {
		t.Helper()
		unit := uniqueName(t, "e2e-dev")
		all := append([]string{"-q", "--unit=" + unit}, args...)
		all = append(all, "--", "sh", "-c", "echo x > /dev/null && echo WROTE")
		out, err := nsrun(ctx, nil, all...).CombinedOutput()
		waitUnitGone(t, nil, unit+".scope")
		return strings.TrimSpace(string(out)), exitCode(t, err)
	}
	if out, code := write(); code != 0 || out != "WROTE" {
		t.Errorf("no policy: exit %d, output %q", code, out)
	}
	if out, code := write("--device-policy=strict"); code == 0 || strings.Contains(out, "WROTE") || !strings.Contains(out, "not permitted") {
		t.Errorf("strict policy: exit %d, output %q; want the write refused", code, out)
	}
	if out, code := write("--device-policy=strict", "--device=/dev/null:r"); code == 0 || strings.Contains(out, "WROTE") {
		t.Errorf("strict policy, /dev/null read-only: exit %d, output %q; want the write refused", code, out)
	}
	if out, code := write("--device-policy=strict", "--device=/dev/null:rw"); code != 0 || out != "WROTE" {
		t.Errorf("strict policy, /dev/null rw: exit %d, output %q", code, out)
	}
	if out, code := write("--device-policy=closed"); code != 0 || out != "WROTE" {
		t.Errorf("closed policy: exit %d, output %q (the pseudo devices are allowed)", code, out)
	}
	if out, code := write("--device=/nonexistent-device"); code != 125 || !strings.Contains(out, "/nonexistent-device") {
		t.Errorf("a device that does not resolve: exit %d, output %q", code, out)
	}
	// Without root there is no device program: the policy needs the
	// sandbox's own /dev, and nsrun refuses it without one.
	u := *boxUser(t)
	out, err := nsrun(ctx, &u, "-q", "--device=/dev/null", "--", "true").CombinedOutput()
	if code := exitCode(t, err); code != 125 || !strings.Contains(string(out), "/dev") {
		t.Errorf("unprivileged policy without a sandbox /dev: exit %d, output %q", code, out)
	}
}

// TestReconnectDuringReexec: daemon-reexec drops every connection to the
// manager; launches that meet one reconnect and finish (no error, no hang,
// no unit left).
func TestReconnectDuringReexec(t *testing.T) {
	requireBox(t)
	ctx := context.Background()
	stop := make(chan struct{})
	reexecs := make(chan int)
	go func() {
		n := 0
		defer func() { reexecs <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := testBox.Run(ctx, "systemctl", "daemon-reexec"); err == nil {
				n++
			}
			time.Sleep(30 * time.Millisecond)
		}
	}()
	failed := 0
	for i := 0; i < 30; i++ {
		out, err := nsrun(ctx, nil, "-q", "--", "true").CombinedOutput()
		if code := exitCode(t, err); code != 0 {
			failed++
			t.Errorf("launch %d during daemon-reexec: exit %d, output %q", i, code, out)
		}
	}
	close(stop)
	t.Logf("30 launches, %d re-executions of the manager meanwhile", <-reexecs)
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := systemctl(t, nil, "list-units", "--all", "--plain", "--no-legend", "nsrun-*.scope")
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("units left: %s", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSandboxDevOnlyAllowed: with --sandbox the workload's /dev holds the
// closed policy's nodes and those asked for, nothing else, and mknod
// fails, as root (device program) and as a user (the /dev itself).
func TestSandboxDevOnlyAllowed(t *testing.T) {
	requireBox(t)
	ctx := context.Background()
	u := *boxUser(t)
	allowed := map[string]bool{"null": true, "zero": true, "full": true, "random": true, "urandom": true,
		"tty": true, "ptmx": true, "pts": true, "shm": true, "mqueue": true, "fd": true, "stdin": true,
		"stdout": true, "stderr": true, "core": true, "console": true}
	extra := []string{}
	if _, err := os.Stat("/dev/net/tun"); err == nil {
		extra = append(extra, "--device=/dev/net/tun")
		allowed["net"] = true
	}
	for _, who := range []*box.User{nil, &u} {
		args := append([]string{"-q", "--sandbox"}, extra...)
		args = append(args, "--", "sh", "-c", `ls -A /dev; echo ---; mknod /dev/nsrun-mem c 1 1 2>/dev/null && echo MKNOD; head -c 4 /dev/zero | wc -c`)
		cmd := nsrun(ctx, who, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if code := exitCode(t, err); code != 0 {
			t.Errorf("as %v: exit %d, output %q %q", who, code, out, stderr.String())
			continue
		}
		list, rest, _ := strings.Cut(string(out), "---\n")
		for _, name := range strings.Fields(list) {
			if !allowed[name] {
				t.Errorf("as %v: /dev holds %q, which no policy allowed (ls: %q)", who, name, list)
			}
		}
		if len(extra) > 0 && !strings.Contains(list, "net") {
			t.Errorf("as %v: /dev lacks net/tun, which --device asked for (ls: %q)", who, list)
		}
		if strings.Contains(rest, "MKNOD") || strings.TrimSpace(rest) != "4" {
			t.Errorf("as %v: after the listing %q, want mknod refused and /dev/zero readable", who, rest)
		}
	}
}

// TestSandboxNsrunKilledLeavesNothing: with a scope to make, the sandbox
// child is cloned before the scope exists and waits, set up, until nsrun
// releases it. SIGKILL to nsrun at each point of that (child cloned, scope
// made, child in payload/, watcher and limits ready) and right after the
// workload started: the child and the workload die, the workload never
// runs unless released, and the unit and its cgroup are gone.
func TestSandboxNsrunKilledLeavesNothing(t *testing.T) {
	requireBox(t)
	for _, u := range []*box.User{nil, boxUser(t)} {
		for _, point := range []string{"spawned", "scope", "leaves", "release", "started"} {
			name := point + "/root"
			if u != nil {
				name = point + "/user"
			}
			t.Run(name, func(t *testing.T) {
				unit := uniqueName(t, "e2e-skill")
				marker := strconv.FormatInt(1e6+time.Now().UnixNano()%1e6, 10)
				g := newGate(t, u)
				ranFile := g.dir + "/ran"
				script := fmt.Sprintf(`echo ran > %s; exec sleep %s`, ranFile, marker)
				cmd := nsrun(context.Background(), u, "-q", "--unit="+unit, "--sandbox", "--bind="+g.dir, "--", "sh", "-c", script)
				if cmd.Env == nil {
					cmd.Env = os.Environ()
				}
				cmd.Env = append(cmd.Env, "NSRUN_TEST_STOP_AT="+point)
				var stderr strings.Builder
				cmd.Stdout, cmd.Stderr = io.Discard, &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				waited := false
				defer func() {
					if !waited {
						_ = cmd.Process.Kill()
						_ = cmd.Wait()
					}
				}()
				deadline := time.Now().Add(15 * time.Second)
				pid := 0
				for pid == 0 || procState(pid) != "T" {
					if time.Now().After(deadline) {
						t.Fatalf("nsrun did not stop at %q (it said: %s)", point, stderr.String())
					}
					time.Sleep(10 * time.Millisecond)
					for _, p := range markedPids(marker) {
						comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
						if strings.TrimSpace(string(comm)) == "nsrun" {
							pid = p
						}
					}
				}
				child := sandboxChildOf(pid)
				if child == 0 {
					t.Fatalf("no sandbox child of nsrun (pid %d) at %q", pid, point)
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = cmd.Process.Signal(syscall.SIGCONT)
				_ = cmd.Wait()
				waited = true
				waitUnitGone(t, u, unit+".scope")
				deadline = time.Now().Add(10 * time.Second)
				for procState(child) != "" || len(markedPids(marker)) > 0 {
					if time.Now().After(deadline) {
						t.Fatalf("sandbox child %d (state %q) or workload %v still there after nsrun was killed at %q",
							child, procState(child), markedPids(marker), point)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := testBox.Run(context.Background(), "test", "-e", ranFile); err == nil && point != "started" {
					t.Errorf("the workload ran although nsrun was killed at %q, before it released the sandbox", point)
				}
				slice := "system.slice"
				if u != nil {
					slice = "user.slice"
				}
				var left []string
				_ = filepath.WalkDir(filepath.Join(testBox.Cgroup(), slice), func(path string, d os.DirEntry, err error) error {
					if err == nil && d.IsDir() && strings.Contains(d.Name(), unit) {
						left = append(left, path)
					}
					return nil
				})
				if len(left) > 0 {
					t.Errorf("cgroups left behind: %v", left)
				}
			})
		}
	}
}

// sandboxChildOf returns the pid of the sandbox child whose parent is pid
// (0 if none): nsrun's child that is not its watcher.
func sandboxChildOf(pid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		// Once the workload runs, the child may be the monitor (init
		// mode) instead; the watcher is nsrun's other child.
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if !strings.Contains(string(cmdline), watchArg) {
			return p
		}
	}
	return 0
}
