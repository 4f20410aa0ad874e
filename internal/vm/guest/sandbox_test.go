//go:build vmguest

package guest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The device policy holds on the VM as on the box: as root without a
// sandbox (the BPF program alone), and as root and the user in a sandbox.
func TestDevicePolicy(t *testing.T) {
	t.Run("root-no-sandbox", func(t *testing.T) {
		cases := []struct {
			name string
			args []string
			ok   bool
		}{
			{"strict-denies-null", []string{"--device-policy=strict", "--", "/bin/sh", "-c", "head -c1 /dev/zero >/dev/null"}, false},
			{"closed-allows-zero", []string{"--device-policy=closed", "--", "/bin/sh", "-c", "head -c1 /dev/zero >/dev/null"}, true},
			{"closed-denies-disk", []string{"--device-policy=closed", "--", "/bin/head", "-c1", disk}, false},
			{"closed-plus-disk-r", []string{"--device-policy=closed", "--device=" + disk + ":r", "--", "/bin/sh", "-c", "head -c1 " + disk + " >/dev/null"}, true},
			{"disk-r-denies-write", []string{"--device-policy=closed", "--device=" + disk + ":r", "--", "/bin/sh", "-c", "exec 3>>" + disk}, false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := nsrun(t, root, "vm-dev-"+c.name, c.args...)
				if c.ok && r.code != 0 {
					t.Errorf("want allowed: %s", r)
				}
				if !c.ok && (r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted")) {
					t.Errorf("want denied with EPERM: %s", r)
				}
			})
		}
	})
	// nsrun devices --allow/--deny change the policy of a running workload
	// by putting a new program in the old one's place (BPF_F_REPLACE) on
	// this kernel too.
	t.Run("root-live-change", func(t *testing.T) {
		var st unix.Stat_t
		if err := unix.Stat(disk, &st); err != nil {
			t.Fatal(err)
		}
		rule := fmt.Sprintf("b %d:%d r", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		unit := "vm-dev-live"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := command(ctx, root, nsrunBin(), "run", "--system", "--unit="+unit, "-q", "--device-policy=closed", "--",
			"/bin/sh", "-c", "while read x; do if head -c1 "+disk+" >/dev/null 2>&1; then echo yes; else echo no; fi; done")
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
		lines := bufio.NewReader(stdout)
		read := func(when string) string {
			fmt.Fprintln(stdin, "x")
			line, err := lines.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: the workload said nothing: %v", when, err)
			}
			return strings.TrimSpace(line)
		}
		devices := func(arg string) {
			r := run(command(ctx, root, nsrunBin(), "devices", "--system", unit, arg))
			t.Logf("nsrun devices %s %s: %s", unit, arg, r)
			if r.code != 0 {
				t.Fatalf("nsrun devices %s: %s", arg, r)
			}
		}
		if got := read("before"); got != "no" {
			t.Errorf("%s readable under the closed policy", disk)
		}
		devices("--allow=" + rule)
		if got := read("after --allow"); got != "yes" {
			t.Errorf("%s not readable after --allow=%s", disk, rule)
		}
		devices("--deny=" + rule)
		if got := read("after --deny"); got != "no" {
			t.Errorf("%s readable after --deny=%s", disk, rule)
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("nsrun: %v", err)
		}
		assertGone(t, root, unit+".scope")
	})
	forBoth(t, func(t *testing.T, w who) {
		r := nsrun(t, w, "vm-dev-sandbox-"+w.String(), "--sandbox", "--", "/bin/sh", "-c",
			"head -c1 /dev/zero | wc -c; ls /dev | tr '\\n' ' '; echo; if mknod /tmp/n c 1 3 2>/dev/null && head -c1 /tmp/n >/dev/null 2>&1; then echo mknod-opened; fi")
		if r.code != 0 {
			t.Fatalf("sandbox: %s", r)
		}
		lines := strings.Split(r.stdout, "\n")
		if lines[0] != "1" {
			t.Errorf("/dev/zero not readable in the sandbox: %q", r.stdout)
		}
		if strings.Contains(r.stdout, "vda") {
			t.Errorf("the disk is present in the sandbox's /dev: %q", lines[1])
		}
		if strings.Contains(r.stdout, "mknod-opened") {
			t.Errorf("a device made with mknod could be opened in the sandbox")
		}
	})
}

// The full --sandbox set works on the VM, with limits, as root and as the
// user: namespaces differ from the guest's, no_new_privs and seccomp are
// on, the cgroup namespace shows only the sandbox's own subtree, writes to
// the overlay root do not reach the guest, and the OOM kill under
// --memory-max is still seen and named.
func TestSandboxFullSet(t *testing.T) {
	forBoth(t, func(t *testing.T, w who) {
		probe := "/etc/nsrun-vm-probe-" + w.String()
		r := nsrun(t, w, "vm-sandbox-"+w.String(), "--sandbox", "--memory-max=64M", "--tasks-max=64", "--", "/bin/sh", "-c",
			"grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; id -u; cat /proc/self/cgroup; "+
				"for n in pid mnt net user ipc uts cgroup; do echo ns $n $(readlink /proc/self/ns/$n); done; "+
				"echo x > "+probe+" && echo wrote; ip -o link | cut -d: -f2")
		if r.code != 0 {
			t.Fatalf("sandbox: %s", r)
		}
		// Only /mnt has a mount below it (the shared folder, which a user
		// namespace may not overlay); every other top-level directory is
		// overlaid, writable, on this kernel too.
		if strings.Contains(r.stderr, "could not be overlaid") && !strings.Contains(r.stderr, "overlay-root=/: /mnt could not") {
			t.Errorf("the overlay root fell back for more than /mnt: %q", r.stderr)
		}
		for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "\n0\n", "0::/\n", "wrote", " lo"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("sandbox output lacks %q: %q", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "eth") || strings.Contains(r.stdout, "ens") {
			t.Errorf("a network interface other than lo in the sandbox: %q", r.stdout)
		}
		for _, line := range strings.Split(r.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "ns" {
				continue
			}
			mine, _ := os.Readlink("/proc/self/ns/" + f[1])
			if f[2] == mine {
				t.Errorf("the sandbox shares the guest's %s namespace (%s)", f[1], mine)
			}
		}
		if _, err := os.Stat(probe); err == nil {
			os.Remove(probe)
			t.Errorf("a write to the sandbox's overlay root reached the guest: %s", probe)
		}

		r = nsrun(t, w, "vm-sandbox-oom-"+w.String(), append([]string{"--sandbox", "--memory-max=50M"}, helperArgs("alloc", "200")...)...)
		if r.code != 137 || !strings.Contains(r.stderr, "the workload was OOM-killed") {
			t.Errorf("200 MiB in a sandbox under --memory-max=50M: %s", r)
		}
	})
}

// Time namespaces on the guest's 6.1 kernel: a pid and time namespace with
// an init works; --time-offset either moves the workload's clock or is
// refused with the reason, never silently ignored (6.1 moves a process into
// a new time namespace only at fork, not at execve).
func TestTimeNamespace(t *testing.T) {
	forBoth(t, func(t *testing.T, w who) {
		r := nsrun(t, w, "vm-time-"+w.String(), "--unshare=pid,time", "--", "/bin/sh", "-c", "readlink /proc/self/ns/time")
		mine, _ := os.Readlink("/proc/self/ns/time")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "time:[") || strings.TrimSpace(r.stdout) == mine {
			t.Errorf("pid and time namespaces with an init: want a time namespace other than %s: %s", mine, r)
		}
		for _, noInit := range []bool{true, false} {
			args := []string{"--unshare=pid,time", "--time-offset=boottime:100000"}
			if noInit {
				args = append(args, "--no-init")
			}
			r = nsrun(t, w, fmt.Sprintf("vm-time-offset-%s-%v", w, noInit), append(args, "--", "/bin/cat", "/proc/uptime")...)
			var up float64
			switch {
			case r.code == 0:
				if _, err := fmt.Sscan(r.stdout, &up); err != nil || up < 100000 {
					t.Errorf("%v: exit 0 but the boottime offset of 100000 s did not apply: uptime %q", args, r.stdout)
				}
				t.Logf("figure: %v: the offset applies on this kernel", args)
			case r.code == 125 && strings.Contains(r.stderr, "--time-offset: this kernel"):
				t.Logf("figure: %v: refused on this kernel with the reason", args)
			default:
				t.Errorf("%v: %s", args, r)
			}
		}
	})
}
