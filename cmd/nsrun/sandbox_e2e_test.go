package main

// End-to-end tests of the sandbox flags and "nsrun exec", driving the built
// binary in the shared box as root (system manager) and as a box user (its
// user manager).

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsrun/nsrun/internal/box"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func bothManagers(t *testing.T, f func(t *testing.T, u *box.User)) {
	requireBox(t)
	t.Run("system", func(t *testing.T) { f(t, nil) })
	t.Run("user", func(t *testing.T) { f(t, boxUser(t)) })
}

func TestSandboxFlag(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		var out, errb bytes.Buffer
		cmd := nsrun(context.Background(), u, "-q", "--sandbox", "--hostname=sbx", "--", "sh", "-c",
			`ls /sys/class/net; hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; echo $$; exit 7`)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if code := exitCode(t, cmd.Run()); code != 7 {
			t.Fatalf("exit %d, want 7: %s", code, errb.String())
		}
		for _, want := range []string{"lo\nsbx\n", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("missing %q in:\n%s", want, out.String())
			}
		}
		cmd = nsrun(context.Background(), u, "-q", "--sandbox", "--", "no-such-command")
		if code := exitCode(t, cmd.Run()); code != 127 {
			t.Errorf("missing command: exit %d, want 127", code)
		}
		cmd = nsrun(context.Background(), u, "-q", "--unshare=bogus", "--", "true")
		var e bytes.Buffer
		cmd.Stderr = &e
		if code := exitCode(t, cmd.Run()); code != 125 || !strings.Contains(e.String(), "bogus") {
			t.Errorf("--unshare=bogus: exit %d, %s", code, e.String())
		}
	})
}

func TestExecJoinsTheSandbox(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		unit := uniqueName(t, "e2e-exec")
		script := `echo marker > /etc/nsrun-marker; for n in mnt pid net uts; do readlink /proc/self/ns/$n; done; echo ready; exec sleep 60`
		cmd := nsrun(context.Background(), u, "-q", "--unit="+unit, "--sandbox", "--hostname=joined", "--", "sh", "-c", script)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			// cmd.Process is nsenter: stop nsrun through the manager.
			systemctl(t, u, "kill", "--signal=TERM", unit+".scope")
			_ = cmd.Wait()
			waitUnitGone(t, u, unit+".scope")
		}()
		var first strings.Builder
		buf := make([]byte, 512)
		for !strings.Contains(first.String(), "ready\n") {
			n, err := stdout.Read(buf)
			first.Write(buf[:n])
			if err != nil {
				t.Fatalf("sandbox did not start: %v (%q)", err, first.String())
			}
		}
		var out, errb bytes.Buffer
		exec := nsrun(context.Background(), u, "exec", unit, "--", "sh", "-c",
			`cat /etc/nsrun-marker; for n in mnt pid net uts; do readlink /proc/self/ns/$n; done; hostname; grep CapEff /proc/self/status`)
		exec.Stdout, exec.Stderr = &out, &errb
		if err := exec.Run(); err != nil {
			t.Fatalf("nsrun exec: %v: %s", err, errb.String())
		}
		want := "marker\n" + strings.TrimSuffix(first.String(), "ready\n") + "joined\nCapEff:\t0000000000000000\n"
		if out.String() != want {
			t.Fatalf("nsrun exec printed\n%s\nwant\n%s", out.String(), want)
		}
	})
}

func TestPrintSandboxStatus(t *testing.T) {
	var b bytes.Buffer
	if err := printSandboxStatus(&b, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "(shared with the caller)") != 8 || !strings.HasPrefix(b.String(), "Root: ") {
		t.Fatalf("status of nsrun itself:\n%s", b.String())
	}
}

// startUnit runs nsrun ARGS -- sh -c 'echo ready; exec sleep 60' in the
// unit and returns once the workload said ready; cleanup stops it through
// the manager and checks the unit is gone.
func startUnit(t *testing.T, u *box.User, unit string, args ...string) {
	t.Helper()
	args = append(append([]string{"-q", "--unit=" + unit}, args...), "--", "sh", "-c", "echo ready; exec sleep 60")
	cmd := nsrun(context.Background(), u, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, errs, code := lcRun(t, u, "stop", unit); code != 0 {
			t.Errorf("nsrun stop %s: exit %d: %s", unit, code, errs)
		}
		_ = cmd.Wait()
		waitUnitGone(t, u, unit+".scope")
	})
	var first strings.Builder
	buf := make([]byte, 64)
	for !strings.Contains(first.String(), "ready\n") {
		n, err := stdout.Read(buf)
		first.Write(buf[:n])
		if err != nil {
			t.Fatalf("workload did not start: %v (%q)", err, first.String())
		}
	}
}

// TestStatusShowsSandbox: status reads the sandbox child's namespaces and
// root and the device policy in force on payload/ back; a plain run has
// none of them.
func TestStatusShowsSandbox(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		sandboxed := uniqueName(t, "e2e-status-sbx")
		startUnit(t, u, sandboxed, "--sandbox")
		plain := uniqueName(t, "e2e-status-plain")
		startUnit(t, u, plain)

		st := lcJSON(t, u, "status", sandboxed, "--json")
		ns, ok := st["namespaces"].(map[string]any)
		if !ok {
			t.Fatalf("--sandbox: namespaces = %v, want an object", st["namespaces"])
		}
		// The box's own namespaces (its PID 1's), as "kind:[inode]".
		hostNS, err := testBox.Run(context.Background(), "sh", "-c", "for n in mnt pid net ipc uts user; do readlink /proc/1/ns/$n; done")
		if err != nil {
			t.Fatal(err)
		}
		private := map[string]bool{}
		entries, _ := ns["entries"].([]any)
		for _, e := range entries {
			m := e.(map[string]any)
			kind := m["kind"].(string)
			if m["private"] == true {
				private[kind] = true
			}
			if m["private"] == true && strings.Contains(string(hostNS), fmt.Sprintf("%s:[%.0f]", kind, m["inode"])) {
				t.Errorf("namespace %s %v is marked private but is the box's own", kind, m["inode"])
			}
		}
		for _, kind := range []string{"mnt", "pid", "net", "ipc", "uts", "user"} {
			if !private[kind] {
				t.Errorf("--sandbox: %s namespace is not private: %v", kind, entries)
			}
		}
		// --sandbox assembles an overlay of "/" on a tmpfs root.
		boxRoot, err := testBox.Run(context.Background(), "findmnt", "-no", "FSTYPE", "/")
		if err != nil {
			t.Fatal(err)
		}
		if root, _ := st["root"].(map[string]any); root == nil || root["fstype"] != "tmpfs" || strings.TrimSpace(string(boxRoot)) == "tmpfs" {
			t.Errorf("--sandbox: root = %v, want the sandbox's tmpfs (the box's / is %s)", st["root"], boxRoot)
		}
		dev, _ := st["devices"].(map[string]any)
		if dev == nil {
			t.Fatalf("--sandbox: devices = %v", st["devices"])
		}
		if u == nil {
			rules := fmt.Sprint(dev["rules"])
			prog, _ := dev["program"].(map[string]any)
			if dev["mechanism"] != "bpf" || prog == nil || prog["owner"] != "nsrun" || !strings.Contains(rules, "c 1:3 rw") || strings.Contains(rules, "*:*") {
				t.Errorf("--sandbox as root: devices %v, want nsrun's program with the closed rules", dev)
			}
		} else if dev["mechanism"] != "dev-nodes" || !strings.Contains(fmt.Sprint(dev["nodes"]), "/dev/null") {
			t.Errorf("--sandbox as a user: devices %v, want dev-nodes with /dev/null", dev)
		}
		text := lcOK(t, u, "status", sandboxed)
		want := []string{"Namespaces:", "private: user mnt pid net ipc uts", "Root:", "tmpfs", "Devices:"}
		if u == nil {
			want = append(want, "Devices:          bpf", "Device rules:", "c 1:3 rw")
		}
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("status of a --sandbox unit does not say %q:\n%s", w, text)
			}
		}

		st = lcJSON(t, u, "status", plain, "--json")
		if st["namespaces"] != nil || st["root"] != nil {
			t.Errorf("plain run: namespaces %v, root %v, want null", st["namespaces"], st["root"])
		}
		if dev, _ := st["devices"].(map[string]any); dev == nil || dev["mechanism"] != "none" || dev["program"] != nil {
			t.Errorf("plain run: devices %v, want mechanism none and no program", st["devices"])
		}
		if text := lcOK(t, u, "status", plain); !strings.Contains(text, "none of its own") || !strings.Contains(text, "Devices:") {
			t.Errorf("status of a plain unit:\n%s", text)
		}
	})
}

// TestExecPty: "nsrun exec --pty" gives the command a terminal of its own
// inside the sandbox, as "nsrun run --pty" does.
func TestExecPty(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		unit := uniqueName(t, "e2e-exec-pty")
		startUnit(t, u, unit, "--sandbox")
		var out, errb bytes.Buffer
		cmd := nsrun(context.Background(), u, "exec", "--pty", unit, "--", "sh", "-c", "tty; test -t 0 && echo stdin-is-tty")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("nsrun exec --pty: %v: %s%s", err, out.String(), errb.String())
		}
		lines := strings.Split(strings.ReplaceAll(out.String(), "\r\n", "\n"), "\n")
		if !strings.HasPrefix(lines[0], "/dev/pts/") || !strings.Contains(out.String(), "stdin-is-tty") {
			t.Errorf("nsrun exec --pty printed %q, want a /dev/pts path and stdin-is-tty", out.String())
		}
		// Without --pty the command has nsrun's stdio (pipes here).
		out.Reset()
		cmd = nsrun(context.Background(), u, "exec", unit, "--", "sh", "-c", "tty || true")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("nsrun exec: %v: %s", err, errb.String())
		}
		if strings.HasPrefix(out.String(), "/dev/pts/") {
			t.Errorf("nsrun exec without --pty has a terminal: %q", out.String())
		}
	})
}

// TestRunSandboxPty: "nsrun run --sandbox --pty" gives the workload a
// terminal of the sandbox's own devpts (tty names it inside), with the size
// of nsrun's terminal; driven through a real terminal by script(1).
func TestRunSandboxPty(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		var out, errb bytes.Buffer
		cmd := nsrun(context.Background(), u, "-q", "--sandbox", "--pty", "--", "sh", "-c", "tty; test -t 0 && test -t 1 && echo all-tty; ls -1 /dev/pts")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("nsrun --sandbox --pty: %v: %s%s", err, out.String(), errb.String())
		}
		if got := strings.ReplaceAll(out.String(), "\r\n", "\n"); got != "/dev/pts/0\nall-tty\n0\nptmx\n" {
			t.Errorf("nsrun --sandbox --pty printed %q, want the sandbox's /dev/pts/0", got)
		}
		// On a real terminal of the given size (script(1) runs the shell on
		// a pty; nsrun puts it in raw mode and relays).
		inner := nsrunBin + " -q --sandbox --pty -- sh -c 'tty; stty size; exit 3'"
		out.Reset()
		errb.Reset()
		cmd = boxCommand(u, "script", "-qec", "stty rows 27 cols 91; "+inner+"; echo nsrun-exit=$?", "/dev/null")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("script: %v: %s%s", err, out.String(), errb.String())
		}
		got := strings.ReplaceAll(out.String(), "\r\n", "\n")
		// script(1) may echo control bytes between the lines: check each.
		if !strings.Contains(got, "/dev/pts/0\n") || !strings.Contains(got, "27 91\n") || !strings.Contains(got, "nsrun-exit=3") {
			t.Errorf("under script(1): %q, want /dev/pts/0, 27 91 and exit 3", got)
		}
	})
}

// boxCommand prepares a command in the box, as root or as u.
func boxCommand(u *box.User, name string, args ...string) *exec.Cmd {
	if u != nil {
		return testBox.CommandAs(context.Background(), *u, name, args...)
	}
	return testBox.Command(context.Background(), name, args...)
}

// mkdirFilter is a compiled seccomp program that refuses mkdir and
// mkdirat with EPERM and allows everything else.
func mkdirFilter(t *testing.T) string {
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
	var raw []byte
	for _, r := range prog {
		raw = binary.NativeEndian.AppendUint16(raw, r.Op)
		raw = append(raw, r.Jt, r.Jf)
		raw = binary.NativeEndian.AppendUint32(raw, r.K)
	}
	path := filepath.Join(filepath.Dir(nsrunBin), "mkdir-filter.bpf")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExecKeepsRestrictions: the command "nsrun exec" joins is never less
// restricted than the workload: the same capabilities, no_new_privs and
// seccomp program (a --seccomp=FILE one included), and the default filter
// where the workload runs without one. Compared field by field from
// /proc/PID/status, and by a system call only the FILE program refuses.
func TestExecKeepsRestrictions(t *testing.T) {
	bothManagers(t, func(t *testing.T, u *box.User) {
		filter := mkdirFilter(t)
		const status = `grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status; mkdir /tmp/d$$ 2>/dev/null && echo mkdir-ok || echo mkdir-refused`
		for _, tc := range []struct {
			name  string
			flags []string
			fix   func(workload string) string // workload's status -> the joined one's
		}{
			{"seccomp-file-cap-add", []string{"--seccomp=" + filter, "--cap-add=net_admin", "--cap-add=net_raw"}, nil},
			{"no-init", []string{"--seccomp=" + filter, "--no-init"}, nil},
			{"seccomp-none", []string{"--seccomp=none"}, func(w string) string {
				return strings.NewReplacer("Seccomp:\t0", "Seccomp:\t2", "Seccomp_filters:\t0", "Seccomp_filters:\t1").Replace(w)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				unit := uniqueName(t, "e2e-exec-restr")
				args := append([]string{"-q", "--unit=" + unit, "--sandbox"}, tc.flags...)
				cmd := nsrun(context.Background(), u, append(args, "--", "sh", "-c", status+"; echo ready; exec sleep 60")...)
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				var errb bytes.Buffer
				cmd.Stderr = &errb
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					// KILL: with --no-init the workload is PID 1 and ignores TERM.
					if _, errs, code := lcRun(t, u, "kill", "--signal=KILL", unit); code != 0 {
						t.Errorf("nsrun kill %s: exit %d: %s", unit, code, errs)
					}
					_ = cmd.Wait()
					waitUnitGone(t, u, unit+".scope")
				}()
				var first strings.Builder
				buf := make([]byte, 512)
				for !strings.Contains(first.String(), "ready\n") {
					n, err := stdout.Read(buf)
					first.Write(buf[:n])
					if err != nil {
						t.Fatalf("workload did not start: %v (%q) %s", err, first.String(), errb.String())
					}
				}
				workload := strings.TrimSuffix(first.String(), "ready\n")
				if strings.Contains(tc.name, "file") && !strings.Contains(workload, "mkdir-refused") {
					t.Fatalf("the workload is not under the FILE program:\n%s", workload)
				}
				want := workload
				if tc.fix != nil {
					want = tc.fix(workload)
				}
				var out, eb bytes.Buffer
				ex := nsrun(context.Background(), u, "exec", unit, "--", "sh", "-c", status)
				ex.Stdout, ex.Stderr = &out, &eb
				if err := ex.Run(); err != nil {
					t.Fatalf("nsrun exec: %v: %s", err, eb.String())
				}
				if out.String() != want {
					t.Errorf("nsrun exec:\n%s\nwant (the workload's, or stricter):\n%s", out.String(), want)
				}
			})
		}
	})
}
