package bpfdev_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nsrun/nsrun/bpfdev"
)

func TestAttachReadBackReplace(t *testing.T) {
	b := requireBox(t)
	cg := newCgroup(t, b.Cgroup(), "attach")
	p := policy(t, bpfdev.Spec{Mode: "strict", Rules: []string{"c 1:3 rw", "c 1:* r", "b 7:* rwm"}})
	if err := bpfdev.Attach(cg, p); err != nil {
		t.Fatal(err)
	}
	st, err := bpfdev.Inspect(cg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mechanism != bpfdev.MechanismBPF || st.Program == nil {
		t.Fatalf("after Attach: mechanism %s, program %v", st.Mechanism, st.Program)
	}
	if got, want := entries(st.Rules), "c 1:3 rw; c 1:* r; b 7:* rwm"; got != want {
		t.Fatalf("rules read back from the kernel: %q, want %q", got, want)
	}
	first := st.Program.ID
	if all, ours, _ := countAttached(t, cg); all != 1 || ours != 1 {
		t.Fatalf("after Attach: %d programs on the cgroup, %d of nsrun's; want 1, 1", all, ours)
	}

	// Attaching again replaces the program (BPF_F_REPLACE): never two.
	p2 := policy(t, bpfdev.Spec{Mode: "strict", Rules: []string{"c 1:5 r"}})
	for i := 0; i < 3; i++ {
		if err := bpfdev.Attach(cg, p2); err != nil {
			t.Fatal(err)
		}
	}
	all, ours, id := countAttached(t, cg)
	if all != 1 || ours != 1 || id == first {
		t.Fatalf("after re-attaching: %d programs, %d of nsrun's, id %d (first %d); want one new program", all, ours, id, first)
	}
	waitProgramGone(t, ebpfID(first))
	st, err = bpfdev.Inspect(cg)
	if err != nil {
		t.Fatal(err)
	}
	if got := entries(st.Rules); got != "c 1:5 r" {
		t.Fatalf("rules after replace: %q", got)
	}

	// Detach leaves the cgroup without a program.
	if err := bpfdev.Detach(cg); err != nil {
		t.Fatal(err)
	}
	if all, _, _ := countAttached(t, cg); all != 0 {
		t.Fatalf("after Detach: %d programs on the cgroup", all)
	}
	waitProgramGone(t, ebpfID(id))
}

func entries(es []bpfdev.Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.String())
	}
	return strings.Join(s, "; ")
}

// TestAttachFailsClosed: what cannot be put in force is an error, and
// nothing is left behind.
func TestAttachFailsClosed(t *testing.T) {
	b := requireBox(t)
	p := policy(t, bpfdev.Spec{Mode: "closed"})
	if err := bpfdev.Attach(t.TempDir(), p); err == nil {
		t.Fatal("Attach to a plain directory succeeded")
	}
	gone := filepath.Join(b.Cgroup(), "nsrun-test-"+strconv.Itoa(os.Getpid())+"-gone")
	if err := bpfdev.Attach(gone, p); err == nil {
		t.Fatal("Attach to a missing cgroup succeeded")
	}
	up := *p
	up.Unprivileged = true
	cg := newCgroup(t, b.Cgroup(), "failclosed")
	if err := bpfdev.Attach(cg, &up); err == nil {
		t.Fatal("Attach of an unprivileged policy succeeded")
	}
	if _, err := bpfdev.Update(cg, nil); !errors.Is(err, bpfdev.ErrNoProgram) {
		t.Fatalf("Update without a program: %v, want ErrNoProgram", err)
	}
	if all, _, _ := countAttached(t, cg); all != 0 {
		t.Fatalf("%d programs left on the cgroup", all)
	}
}

// TestDeviceMatrix: for each policy, every device x (read, write, mknod)
// cell succeeds exactly when the policy allows it.
func TestDeviceMatrix(t *testing.T) {
	b := requireBox(t)
	devs := matrixDevices(t)
	for _, tc := range []struct {
		name string
		spec bpfdev.Spec
	}{
		{"closed", bpfdev.Spec{Mode: "closed"}},
		{"closed-kvm-kmsg-ro", bpfdev.Spec{Devices: []string{"/dev/kvm"}, Rules: []string{"/dev/kmsg r"}}},
		{"strict-wildcard-major-ro", bpfdev.Spec{Mode: "strict", Rules: []string{"c 1:* r", "c 10:200 rwm"}}},
		{"strict-nothing", bpfdev.Spec{Mode: "strict"}},
		{"strict-mknod-only", bpfdev.Spec{Mode: "strict", Rules: []string{"a *:* m"}}},
		{"sets", bpfdev.Spec{Sets: []string{"kvm", "fuse", "tun"}, Rules: []string{"block-loop r"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policy(t, tc.spec)
			cg := newCgroup(t, b.Cgroup(), "matrix")
			// Before: no program of ours, everything the host allows.
			checkMatrix(t, "no policy", matrix(t, cg, devs), func(bpfdev.Type, uint32, uint32, bpfdev.Access) bool { return true })
			if err := bpfdev.Attach(cg, p); err != nil {
				t.Fatal(err)
			}
			checkMatrix(t, tc.name, matrix(t, cg, devs), bpfdev.NewTable(p.Rules).Check)
		})
	}
}

// TestLiveToggles: 300 live changes; after each the access is the new one
// and the cgroup holds one program of nsrun's, a new one in the old one's
// place (BPF_F_REPLACE), and the programs replaced are freed.
func TestLiveToggles(t *testing.T) {
	b := requireBox(t)
	cg := newCgroup(t, b.Cgroup(), "toggle")
	if err := bpfdev.Attach(cg, policy(t, bpfdev.Spec{Mode: "closed"})); err != nil {
		t.Fatal(err)
	}
	_, _, first := countAttached(t, cg)
	id := first
	full := device{path: "/dev/full", typ: bpfdev.Char, major: 1, minor: 7, present: true}
	null := device{path: "/dev/null", typ: bpfdev.Char, major: 1, minor: 3, present: true}
	for i := 0; i < 300; i++ {
		deny := i%2 == 0
		op, err := bpfdev.ParseOp("c 1:7 w", deny)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bpfdev.Update(cg, []bpfdev.Op{op}); err != nil {
			t.Fatal(err)
		}
		res := probe(t, cg, probeArg(full, bpfdev.Write), probeArg(full, bpfdev.Read), probeArg(null, bpfdev.Write))
		if deny != errors.Is(res[0], syscallEPERM) {
			t.Fatalf("toggle %d (%v): write /dev/full: %v", i, op, res[0])
		}
		if res[1] != nil || res[2] != nil {
			t.Fatalf("toggle %d (%v): the other cells changed: read /dev/full %v, write /dev/null %v", i, op, res[1], res[2])
		}
		all, ours, now := countAttached(t, cg)
		if all != 1 || ours != 1 || now == id {
			t.Fatalf("toggle %d: %d programs, %d of nsrun's, id %d (was %d); want one new program", i, all, ours, now, id)
		}
		id = now
	}
	waitProgramGone(t, ebpfID(first))
}

// TestLiveSwapIsAtomic swaps between two policies while a process opens
// devices without pause. /dev/null is readable in neither policy, but an
// in-place edit of the map would pass through a state that allows it (the
// deny on c 1:3 gone while the c 1:* allow is still there); /dev/zero is
// readable in both, and an in-place edit could deny it for a moment.
func TestLiveSwapIsAtomic(t *testing.T) {
	b := requireBox(t)
	cg := newCgroup(t, b.Cgroup(), "swap")
	if err := bpfdev.Attach(cg, policy(t, bpfdev.Spec{Mode: "strict", Rules: []string{"c 1:5 r"}})); err != nil {
		t.Fatal(err)
	}
	ops := func(s ...string) []bpfdev.Op {
		var out []bpfdev.Op
		for _, x := range s {
			deny := strings.HasPrefix(x, "!")
			op, err := bpfdev.ParseOp(strings.TrimPrefix(x, "!"), deny)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, op)
		}
		return out
	}
	wide := ops("c 1:* r", "!c 1:3 r")   // everything of major 1 but null
	narrow := ops("!c 1:* r", "c 1:5 r") // only zero
	for _, dev := range []string{"/dev/null", "/dev/zero"} {
		cmd := probeCmd(t, cg, "hammer:"+dev)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waited := false
		t.Cleanup(func() {
			if !waited {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
		for i := 0; i < 50; i++ {
			for _, o := range [][]bpfdev.Op{wide, narrow} {
				if _, err := bpfdev.Update(cg, o); err != nil {
					t.Fatal(err)
				}
			}
		}
		stdin.Close()
		data, _ := io.ReadAll(out)
		waited = true
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data))
		if len(f) != 2 {
			t.Fatalf("hammer printed %q", data)
		}
		ok, _ := strconv.Atoi(f[0])
		failed, _ := strconv.Atoi(f[1])
		t.Logf("%s during 100 swaps: %d opens succeeded, %d failed", dev, ok, failed)
		if dev == "/dev/null" && ok != 0 {
			t.Errorf("/dev/null was readable %d times while no policy allowed it", ok)
		}
		if dev == "/dev/zero" && failed != 0 {
			t.Errorf("/dev/zero was denied %d times while every policy allowed it", failed)
		}
	}
}
