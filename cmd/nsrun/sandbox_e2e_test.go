package main

// End-to-end tests of the sandbox flags and "nsrun exec", driving the built
// binary in the shared box as root (system manager) and as a box user (its
// user manager).

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/nsrun/nsrun/internal/box"
)

func sandboxUser(t *testing.T) *box.User {
	t.Helper()
	ctx := context.Background()
	u, err := testBox.EnsureUser(ctx, "nsrun-e2e")
	if err != nil {
		t.Fatal(err)
	}
	if err := testBox.StartUserManager(ctx, u); err != nil {
		t.Fatal(err)
	}
	return &u
}

func bothManagers(t *testing.T, f func(t *testing.T, u *box.User)) {
	requireBox(t)
	t.Run("system", func(t *testing.T) { f(t, nil) })
	t.Run("user", func(t *testing.T) { f(t, sandboxUser(t)) })
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
