package nsexec_test

// Box tests of the start exchange: its timeout (F12), the pty from the
// sandbox's own devpts, and the restrictions a joined command inherits
// (helpers in sandbox_test.go and join_test.go).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/nsexec"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A child that never answers (stopped with SIGSTOP right after it started)
// does not hang the parent: Start gives up after its timeout, says so, and
// kills the child.
func TestStartTimesOut(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		for _, ns := range []nsexec.Namespaces{nsexec.NSPID | nsexec.NSMount, nsexec.NSAll} {
			cmd := sandboxCmd(t, u, nsexec.Spec{Namespaces: ns, Argv: []string{"/bin/echo", "WORKLOAD RAN"}})
			cmd.Env = append(cmd.Env, "NSEXEC_TEST_STOP_CHILD=1", "NSEXEC_TEST_TIMEOUT=1s")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Without the bound the driver would wait forever: kill it
			// after a minute and fail rather than hang the suite.
			hung := false
			timer := time.AfterFunc(time.Minute, func() {
				hung = true
				if drv := descendant(cmd.Process.Pid, testBin); drv > 0 {
					_ = syscall.Kill(drv, syscall.SIGKILL)
				}
			})
			err := cmd.Wait()
			timer.Stop()
			if hung {
				t.Fatalf("%v: Start did not give up on a stopped child: %s", ns, stderr.String())
			}
			code := -1
			if ee, ok := err.(interface{ ExitCode() int }); ok {
				code = ee.ExitCode()
			}
			if code != 125 || !strings.Contains(stderr.String(), "did not answer within 1s") || strings.Contains(stdout.String(), "WORKLOAD RAN") {
				t.Fatalf("%v: exit %d (%v)\nstdout: %s\nstderr: %s", ns, code, err, stdout.String(), stderr.String())
			}
			var pid int
			fmt.Sscanf(stderr.String()[strings.Index(stderr.String(), "stopping child pid "):], "stopping child pid %d", &pid)
			if pid == 0 {
				t.Fatalf("no child pid in %s", stderr.String())
			}
			// Start reaped it (it was the driver's child): it is gone.
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
				data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
				t.Errorf("%v: the stopped child %d is still there: %s", ns, pid, data)
			}
		}
	})
}

// --pty: the terminal comes from the sandbox's own devpts, so it has a
// name inside; its size is the one asked for; input reaches the workload;
// the same for a joined command.
func TestPtyFromSandboxDevpts(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Namespaces: nsexec.NSAll, Overlay: &nsexec.Overlay{Lowers: []string{"/"}}, Net: nsexec.NetNone,
			Pty: true, Winsize: &nsexec.Winsize{Rows: 33, Cols: 77},
			Argv: []string{"/bin/sh", "-c", `tty; test -t 0 && test -t 1 && echo all-tty; stty size; read x; echo "got-$x"; ls -1 /dev/pts`}}
		cmd := sandboxCmd(t, u, spec)
		cmd.Env = append(cmd.Env, "NSEXEC_TEST_PTY_INPUT=hello\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v\nstdout: %q\nstderr: %s", err, stdout.String(), stderr.String())
		}
		out := strings.ReplaceAll(stdout.String(), "\r\n", "\n")
		// The terminal echoes the typed input whenever it arrives, so the
		// lines are checked one by one, not as one block.
		for _, want := range []string{"/dev/pts/0\n", "all-tty\n", "33 77\n", "got-hello\n", "\n0\nptmx\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("missing %q in %q", want, out)
			}
		}

		// A joined command gets a terminal of the same devpts.
		spec.Pty, spec.Winsize = false, nil
		spec.Argv = []string{"/bin/sh", "-c", "echo ready; exec sleep 60"}
		pid, _, _ := startSandbox(t, u, spec)
		join := nsexec.Spec{Pty: true, Winsize: &nsexec.Winsize{Rows: 20, Cols: 50},
			Argv: []string{"/bin/sh", "-c", "tty; stty size; ls -1 /dev/pts"}}
		jout, jerr, code := joinRun(t, u, pid, join)
		jout = strings.ReplaceAll(jout, "\r\n", "\n")
		if code != 0 || !strings.HasPrefix(jout, "/dev/pts/0\n20 50\n0\nptmx\n") {
			t.Fatalf("joined with a pty: exit %d, %q, %s", code, jout, jerr)
		}
	})
}

// startSandbox starts spec (whose workload prints "ready" once it runs) and
// returns the box pid and the host pid of its first process, and the
// workload's output up to "ready". Cleanup stops it.
func startSandbox(t *testing.T, u *box.User, spec nsexec.Spec) (boxPid, hostPid int, out string) {
	t.Helper()
	cmd := sandboxCmd(t, u, spec)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if drv := descendant(cmd.Process.Pid, testBin); drv > 0 {
			_ = syscall.Kill(drv, syscall.SIGKILL)
		}
		_ = cmd.Wait()
	})
	text := readUntil(t, stderr, "driver: child pid ")
	for !strings.Contains(text[strings.LastIndex(text, "driver: child pid "):], "\n") {
		text += readUntil(t, stderr, "\n")
	}
	fmt.Sscanf(text[strings.LastIndex(text, "driver: child pid "):], "driver: child pid %d", &boxPid)
	out = strings.TrimSuffix(readUntil(t, stdout, "ready\n"), "ready\n")
	kids := childrenOf(findDescendant(t, cmd.Process.Pid, testBin))
	if len(kids) != 1 {
		t.Fatalf("the driver has children %v", kids)
	}
	return boxPid, kids[0], out
}

// nsPid is the pid of host process pid as the box sees it (NSpid's second
// field).
func nsPid(t *testing.T, pid int) int {
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

// descendant is findDescendant without failing (0: none).
func descendant(pid int, exe string) int {
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if target, _ := os.Readlink("/proc/" + strconv.Itoa(p) + "/exe"); target == exe {
			return p
		}
		queue = append(queue, childrenOf(p)...)
	}
	return 0
}

// joinRun runs spec joined to the sandbox process pid.
func joinRun(t *testing.T, u *box.User, pid int, spec nsexec.Spec) (stdout, stderr string, code int) {
	t.Helper()
	cmd := sandboxCmd(t, u, spec)
	cmd.Env = append(cmd.Env, "NSEXEC_TEST_JOIN="+strconv.Itoa(pid))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// mkdirFilter is a seccomp program that refuses mkdir and mkdirat with
// EPERM and allows the rest: a filter the default one is not.
func mkdirFilter(t *testing.T) []byte {
	t.Helper()
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_MKDIR, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_MKDIRAT, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, r := range prog {
		out = binary.NativeEndian.AppendUint16(out, r.Op)
		out = append(out, r.Jt, r.Jf)
		out = binary.NativeEndian.AppendUint32(out, r.K)
	}
	return out
}

const statusScript = `grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status; id -u; mkdir /tmp/mkdir-$$ 2>/dev/null && echo mkdir-ok || echo mkdir-refused`

// A joined command is never less restricted than the workload: the same
// capabilities, no_new_privs, the same seccomp program (a --seccomp=FILE
// one included), and the default filter where the workload has none. A
// process whose filter nsrun has no record of is refused.
func TestJoinKeepsRestrictions(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		prog := mkdirFilter(t)
		base := nsexec.Spec{Namespaces: nsexec.NSAll, Overlay: &nsexec.Overlay{Lowers: []string{"/"}}, Net: nsexec.NetNone}
		for _, tc := range []struct {
			name   string
			spec   func(*nsexec.Spec)
			joined func(workload string) string // the joined command's expected output
		}{
			{"file-filter-and-caps", func(s *nsexec.Spec) {
				s.Seccomp, s.SeccompProgram, s.Caps = nsexec.SeccompFile, prog, []string{"net_admin", "net_raw"}
			}, func(w string) string { return w }},
			{"default", func(s *nsexec.Spec) {}, func(w string) string { return w }},
			{"no-filter", func(s *nsexec.Spec) { s.Seccomp = nsexec.SeccompNone }, func(w string) string {
				return strings.Replace(strings.Replace(w, "Seccomp:\t0", "Seccomp:\t2", 1), "Seccomp_filters:\t0", "Seccomp_filters:\t1", 1)
			}},
			{"no-init", func(s *nsexec.Spec) {
				s.NoInit, s.Seccomp, s.SeccompProgram = true, nsexec.SeccompFile, prog
			}, func(w string) string { return w }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				spec := base
				tc.spec(&spec)
				// The workload prints its own status, then waits.
				spec.Argv = []string{"/bin/sh", "-c", statusScript + "; echo ready; exec sleep 60"}
				pid, hostPid, workload := startSandbox(t, u, spec)
				if tc.name == "file-filter-and-caps" && (!strings.Contains(workload, "mkdir-refused") || !strings.Contains(workload, "CapEff:\t0000000000003000")) {
					t.Fatalf("the workload is not under the test's filter and caps:\n%s", workload)
				}
				out, errs, code := joinRun(t, u, pid, nsexec.Spec{Argv: []string{"/bin/sh", "-c", statusScript}})
				if code != 0 {
					t.Fatalf("join: exit %d: %s", code, errs)
				}
				if want := tc.joined(workload); out != want {
					t.Errorf("joined command:\n%s\nwant (workload's, or stricter):\n%s", out, want)
				}
				if tc.name == "no-init" {
					return
				}
				// The workload itself (the init's child) has no record
				// kept by its parent: joining it is refused, as nsrun
				// cannot know its filter.
				kids := childrenOf(hostPid)
				if len(kids) != 1 {
					t.Fatalf("init %d has children %v", hostPid, kids)
				}
				_, errs, code = joinRun(t, u, nsPid(t, kids[0]), nsexec.Spec{Argv: []string{"/bin/true"}})
				if tc.name == "no-filter" {
					if code != 0 {
						t.Errorf("joining an unfiltered process without a record: exit %d: %s", code, errs)
					}
				} else if code != 125 || !strings.Contains(errs, "keeps no record") {
					t.Errorf("joining a filtered process without a record: exit %d: %s", code, errs)
				}
			})
		}
	})
}
