package nsexec_test

// Box tests of joining a running sandbox, the cgroup namespace, --root and
// the sandbox's lifetime (helpers in sandbox_test.go).

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
	"github.com/nsrun/nsrun/nsexec"
)

func TestJoin(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		spec := nsexec.Spec{Namespaces: nsexec.NSAll, Net: nsexec.NetNone, Hostname: "joined",
			Overlay: &nsexec.Overlay{Lowers: []string{"/"}},
			Argv:    []string{"/bin/sh", "-c", nsScript + `; echo marker > /etc/nsexec-marker; echo ready; exec sleep 60`}}
		if u == nil {
			spec.UIDMap = []nsexec.IDMap{{Inside: 0, Outside: 0, Count: 65536}} // root inside is root, to compare ids
		}
		hostBefore, _ := os.ReadFile("/proc/self/mountinfo")
		boxBefore := boxMounts(t)
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
		defer func() {
			_ = syscall.Kill(findDescendant(t, cmd.Process.Pid, testBin), syscall.SIGTERM)
			_ = cmd.Wait()
		}()
		var pid int
		errText := readUntil(t, stderr, "driver: child pid ")
		fmt.Sscanf(errText[strings.LastIndex(errText, "driver: child pid "):], "driver: child pid %d", &pid)
		outText := readUntil(t, stdout, "ready\n")
		want := nsLinks(t, strings.TrimSuffix(outText, "ready\n"))

		// While the sandbox runs, neither the host's nor the box's mount
		// table shows any of its mounts.
		if now, _ := os.ReadFile("/proc/self/mountinfo"); !bytes.Equal(now, hostBefore) {
			t.Errorf("the host's mount table changed while the sandbox runs:\n%s", now)
		}
		if now := boxMounts(t); now != boxBefore {
			t.Errorf("the box's mount table changed while the sandbox runs:\n%s", now)
		}
		join := nsexec.Spec{Argv: []string{"/bin/sh", "-c", nsScript + `; cat /etc/nsexec-marker; hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status`}}
		jcmd := sandboxCmd(t, u, join)
		jcmd.Env = append(jcmd.Env, "NSEXEC_TEST_JOIN="+strconv.Itoa(pid))
		var jout, jerr bytes.Buffer
		jcmd.Stdout, jcmd.Stderr = &jout, &jerr
		if err := jcmd.Run(); err != nil {
			t.Fatalf("join: %v\n%s", err, jerr.String())
		}
		got := nsLinks(t, jout.String())
		for _, name := range nsexec.NamespaceFiles() {
			if got[name] == "" || got[name] != want[name] {
				t.Errorf("%s: joined %q, sandbox %q", name, got[name], want[name])
			}
		}
		// Inspect (for nsrun status), from the host, on the sandbox's init.
		drv := findDescendant(t, cmd.Process.Pid, testBin)
		kids := childrenOf(drv)
		if len(kids) != 1 {
			t.Fatalf("driver %d has children %v", drv, kids)
		}
		initPid := kids[0]
		info, err := nsexec.Inspect(initPid)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range info.Namespaces {
			if !n.Private || !strings.Contains(want[n.Kind], fmt.Sprint(n.Inode)) {
				t.Errorf("Inspect: %s inode %d private %v, workload has %s", n.Kind, n.Inode, n.Private, want[n.Kind])
			}
		}
		// In a user namespace "/" is overlaid per directory on a tmpfs.
		if wantFS := "tmpfs"; info.RootFS != wantFS {
			t.Errorf("Inspect: root %s (%s), want %s", info.RootFS, info.RootSource, wantFS)
		}
		for _, w := range []string{"\nmarker\n", "\njoined\n", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
			if !strings.Contains(jout.String(), w) {
				t.Errorf("joined process: missing %q in\n%s", w, jout.String())
			}
		}
	})
}

// readUntil reads r until the text read contains s.
func readUntil(t *testing.T, r interface{ Read([]byte) (int, error) }, s string) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 256)
	for !strings.Contains(b.String(), s) {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			t.Fatalf("read until %q: %v (got %q)", s, err, b.String())
		}
	}
	return b.String()
}

// childrenOf lists the children of every thread of pid.
func childrenOf(pid int) []int {
	var kids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(data)) {
			c, _ := strconv.Atoi(f)
			kids = append(kids, c)
		}
	}
	return kids
}

func TestCgroupNamespaceShowsOwnSubtree(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBox(t)
	name := "nsrun-test-" + box.OwnerTag() + "-cgns"
	host := filepath.Join(testBox.Cgroup(), name)
	if err := os.Mkdir(host, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := os.Remove(host); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
		if _, err := os.Stat(host); err == nil {
			t.Error("test cgroup left behind")
		}
	}()
	spec := nsexec.Spec{Namespaces: nsexec.NSCgroup | nsexec.NSPID | nsexec.NSMount, Overlay: &nsexec.Overlay{Lowers: []string{"/"}},
		Argv: []string{"/bin/sh", "-c", "grep ^0:: /proc/self/cgroup; ls /sys/fs/cgroup | grep -c -e system.slice -e init.scope -e " + name + "; exit 0"}}
	cmd := sandboxCmd(t, nil, spec)
	cmd.Env = append(cmd.Env, "NSEXEC_TEST_CGROUP=/sys/fs/cgroup/"+name)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if string(out) != "0::/\n0\n" {
		t.Fatalf("inside the cgroup namespace: %q, want the sandbox's own cgroup as / and none of the box's", out)
	}
}

func TestRootReadOnlyWithTmpfsAndBinds(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		name := "root-dir"
		if u != nil {
			name = "root-dir-user"
		}
		root := overlayLower(t, name, nil)
		data := filepath.Join(shared, name+"-data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			t.Fatal(err)
		}
		if u != nil {
			_ = os.Chown(data, u.UID, u.GID)
		}
		spec := nsexec.Spec{Namespaces: nsexec.NSPID, Root: root, Mounts: append(withHostBinaries(),
			nsexec.Mount{Kind: nsexec.Tmpfs, Dest: "/scratch"},
			nsexec.Mount{Kind: nsexec.Bind, Source: data, Dest: "/data"},
			nsexec.Mount{Kind: nsexec.ROBind, Source: data, Dest: "/data-ro"})}
		// A read-only root must have its mount points: nsrun does not
		// create them there (it says so, see the error test below).
		for _, d := range []string{"scratch", "data", "data-ro", "proc", "sys", "dev", "tmp", "run"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		out := mustRun(t, u, spec, `cat /etc/lower-file
touch /etc/x 2>/dev/null && echo "ROOT WRITABLE"
touch /scratch/x && echo scratch-ok
echo d > /data/from-inside && echo data-ok
touch /data-ro/x 2>/dev/null && echo "RO-BIND WRITABLE"
true`)
		if out != "lower\nscratch-ok\ndata-ok\n" {
			t.Fatalf("inside --root: %q", out)
		}
		if got, _ := os.ReadFile(filepath.Join(data, "from-inside")); string(got) != "d\n" {
			t.Fatalf("write through --bind did not reach the host: %q", got)
		}
		spec.Mounts = append(spec.Mounts, nsexec.Mount{Kind: nsexec.Tmpfs, Dest: "/missing"})
		if r := sandbox(t, u, spec, "true"); r.code != 125 || !strings.Contains(r.stderr, "root is read-only") {
			t.Fatalf("a missing mount point in a read-only root: exit %d %s", r.code, r.stderr)
		}
	})
}

// The sandbox does not outlive the process that started it (F04).
func TestSandboxDiesWithItsCaller(t *testing.T) {
	modes(t, func(t *testing.T, u *box.User) {
		for _, noInit := range []bool{false, true} {
			spec := nsexec.Spec{Namespaces: nsexec.NSPID | nsexec.NSMount, NoInit: noInit,
				Argv: []string{"/bin/sh", "-c", "echo ready; exec sleep 60"}}
			cmd := sandboxCmd(t, u, spec)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			readUntil(t, stdout, "ready\n")
			drv := findDescendant(t, cmd.Process.Pid, testBin)
			kids := childrenOf(drv)
			if len(kids) != 1 {
				t.Fatalf("driver has children %v", kids)
			}
			all := append([]int{kids[0]}, childrenOf(kids[0])...)
			if err := syscall.Kill(drv, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			for _, pid := range all {
				// Bounded wait for the kernel to deliver the death signal;
				// nothing is timed.
				for i := 0; i < 1000; i++ {
					if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(data), ") Z ") {
					t.Errorf("noInit=%v: sandbox process %d outlived its caller: %s", noInit, pid, data)
				}
			}
		}
	})
}
