package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nsrun/nsrun/internal/monitor"
	"github.com/nsrun/nsrun/internal/testutil"
)

// monitorExe is /proc/PID/exe of a process running the monitor.
const monitorExe = "/memfd:nsrun-monitor (deleted)"

// buildNsrun builds nsrun with the monitor (make monitor, then -tags
// nsrun_monitor); without musl-gcc it builds nsrun without it, which
// checkMonitorBuilt refuses under NSRUN_TEST_STRICT=1.
func buildNsrun(out string) ([]byte, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	if log, err := exec.Command("make", "-C", root, "monitor").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "nsrun e2e: building without the monitor: make monitor: %v\n%s", err, log)
		return exec.Command("go", "build", "-o", out, ".").CombinedOutput()
	}
	return exec.Command("go", "build", "-tags", "nsrun_monitor", "-o", out, ".").CombinedOutput()
}

// hasMonitor reports whether the nsrun binary at path embeds the monitor.
func hasMonitor(path string) bool {
	data, err := os.ReadFile(path)
	return err == nil && bytes.Contains(data, []byte(monitor.Marker))
}

func checkMonitorBuilt(path string) error {
	if !hasMonitor(path) && os.Getenv("NSRUN_TEST_STRICT") == "1" {
		return fmt.Errorf("%s has no monitor (internal/monitor) and NSRUN_TEST_STRICT=1: build it with make build (needs musl-gcc, Debian musl-tools)", path)
	}
	return nil
}

func requireMonitor(t *testing.T) {
	t.Helper()
	requireBox(t)
	if !hasMonitor(nsrunBin) {
		testutil.Skip(t, "nsrun was built without the monitor (make monitor needs musl-gcc)")
	}
}

func exeOf(pid int) string {
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return exe
}

func cmdlineOf(pid int) []string {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}

// childrenOf lists the children of pid (every thread's).
func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(data)) {
			c, _ := strconv.Atoi(f)
			out = append(out, c)
		}
	}
	return out
}

// startWaiting starts nsrun ARGS -- sh -c 'TRAP; echo ready; read x; exit
// 7' with env added and returns once the workload said ready; a line on
// the returned writer ends it. The test ends the run: cleanup only kills
// what is left.
func startWaiting(t *testing.T, env []string, trap string, args ...string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := nsrun(context.Background(), nil, append(args, "--", "sh", "-c", trap+"; echo ready; read x; exit 7")...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("workload said %q", line)
	}
	go io.Copy(io.Discard, stdout)
	return cmd, stdin
}

var monitorModes = [][]string{nil, {"--sandbox"}}

// TestMonitorTakesOver: once the workload runs, nsrun is the monitor (its
// exe the sealed memfd, its comm still nsrun, a single thread, few fds),
// the watcher is the monitor too, and the workload, forked by the Go
// thread that exec'd, is still alive under it (had the exec happened on
// another thread, the workload's parent-death signal would have killed it
// then) and its status passes through. With --sandbox the init is the
// monitor too.
func TestMonitorTakesOver(t *testing.T) {
	requireMonitor(t)
	for _, mode := range monitorModes {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			unit := uniqueName(t, "e2e-monitor")
			cmd, stdin := startWaiting(t, nil, "true", append([]string{"-q", "--unit=" + unit}, mode...)...)
			pid := nsrunPid(t, unit+".scope")
			waitFor(t, "nsrun to become the monitor", func() bool { return exeOf(pid) == monitorExe })
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "nsrun" {
				t.Errorf("the monitor's comm is %q, want nsrun", comm)
			}
			if tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); len(tasks) != 1 {
				t.Errorf("the monitor has %d threads", len(tasks))
			}
			// 0, 1, 2, the watcher's pipe, the signalfd; with a sandbox the
			// record of restrictions and the sync socket.
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			var links []string
			for _, fd := range fds {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
				links = append(links, fd.Name()+"="+l)
			}
			if want := 5 + 2*len(mode); len(fds) != want {
				t.Errorf("the monitor holds %d fds, want %d: %v", len(fds), want, links)
			}
			var watcher, workload int
			for _, c := range childrenOf(pid) {
				if cl := cmdlineOf(c); len(cl) == 1 && cl[0] == watchArg {
					watcher = c
				} else {
					workload = c
				}
			}
			if watcher == 0 || exeOf(watcher) != monitorExe {
				t.Errorf("watcher %d runs %q, want the monitor", watcher, exeOf(watcher))
			}
			if workload == 0 || syscall.Kill(workload, 0) != nil {
				t.Fatalf("the workload (or sandbox init) is not a live child of the monitor: children %v", childrenOf(pid))
			}
			if mode != nil {
				// The sandbox's PID 1: the monitor in init mode, a single
				// non-dumpable thread, its child the workload.
				waitFor(t, "the init to be the monitor", func() bool { return exeOf(workload) == monitorExe })
				if tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", workload)); len(tasks) != 1 {
					t.Errorf("the init has %d threads", len(tasks))
				}
				if cl := cmdlineOf(workload); len(cl) < 2 || cl[1] != monitor.InitArg {
					t.Errorf("the init's command line is %q", cl)
				}
				// The child was held (a scope to make): the monitor took
				// over right after its release and read {started} itself.
				// (It splits KEY=V in place: /proc shows KEY and V.)
				if cl := cmdlineOf(pid); !slices.Contains(cl, "await") {
					t.Errorf("the monitor's command line %q has no await=: it did not take over at the release", cl)
				}
				if kids := childrenOf(workload); len(kids) != 1 || cmdlineOf(kids[0])[0] != "sh" {
					t.Errorf("the init's children are %v", kids)
				}
			}
			fmt.Fprintln(stdin)
			if code := exitCode(t, cmd.Wait()); code != 7 {
				t.Errorf("exit %d, want the workload's 7", code)
			}
			waitUnitGone(t, nil, unit+".scope")
		})
	}
}

// TestMonitorSignalDuringHandover: a signal that arrives while the monitor
// starts (here: stopped right after it took the forwarded signals, before
// it forwards anything) reaches the workload; it neither kills the monitor
// nor is lost.
func TestMonitorSignalDuringHandover(t *testing.T) {
	requireMonitor(t)
	for _, mode := range monitorModes {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			unit := uniqueName(t, "e2e-handover")
			cmd, _ := startWaiting(t, []string{"NSRUN_TEST_STOP_AT=monitor"}, "trap 'exit 42' USR1",
				append([]string{"-q", "--unit=" + unit}, mode...)...)
			pid := nsrunPid(t, unit+".scope")
			waitFor(t, "the monitor to stop", func() bool { return exeOf(pid) == monitorExe && procState(pid) == "T" })
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = cmd.Process.Signal(syscall.SIGCONT) // nsenter stopped with its child
			if code := exitCode(t, cmd.Wait()); code != 42 {
				t.Errorf("exit %d, want the workload's trap status 42", code)
			}
			waitUnitGone(t, nil, unit+".scope")
		})
	}
}

// TestMonitorFallback: with NSRUN_TEST_NO_MONITOR=1 nsrun supervises in Go
// with the shell watcher, as a build without the monitor does: the status
// contract and signal forwarding hold, and nothing is left.
func TestMonitorFallback(t *testing.T) {
	requireBox(t)
	for _, mode := range monitorModes {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			unit := uniqueName(t, "e2e-fallback")
			cmd, _ := startWaiting(t, []string{monitor.DisableEnv + "=1"}, "trap 'exit 43' TERM",
				append([]string{"-q", "--unit=" + unit}, mode...)...)
			pid := nsrunPid(t, unit+".scope")
			if exe := exeOf(pid); exe != nsrunBin {
				t.Errorf("nsrun runs %q, want %s", exe, nsrunBin)
			}
			for _, c := range childrenOf(pid) {
				if exeOf(c) == monitorExe {
					t.Errorf("child %d %q is the monitor", c, cmdlineOf(c))
				}
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := exitCode(t, cmd.Wait()); code != 43 {
				t.Errorf("exit %d, want the workload's trap status 43", code)
			}
			waitUnitGone(t, nil, unit+".scope")
		})
	}
}
