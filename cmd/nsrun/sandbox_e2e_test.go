package main

// End-to-end tests of the sandbox flags and "nsrun exec", driving the built
// binary in the shared box as root (system manager) and as a box user (its
// user manager).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/nsrun/nsrun/internal/box"
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
