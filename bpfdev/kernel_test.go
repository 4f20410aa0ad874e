package bpfdev_test

// Tests against the kernel: a cgroup of the test's own below the box's
// cgroup, nsrun's program attached to it, and probe processes started
// directly in it (CLONE_INTO_CGROUP) that try to open and mknod devices.

import (
	"bufio"
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

	"github.com/cilium/ebpf"
	"github.com/nsrun/nsrun/bpfdev"
	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
	"golang.org/x/sys/unix"
)

var testBox *box.Box

func TestMain(m *testing.M) {
	if os.Getenv(probeEnv) != "" {
		os.Exit(probeMain(os.Args[1:]))
	}
	os.Exit(testutil.Main(m, testutil.MainOptions{HostCheck: true, Setup: setup}))
}

func setup() (func() error, error) {
	if box.Supported() != nil {
		return nil, nil // the box tests skip, or fail under NSRUN_TEST_STRICT=1
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	testBox, err = box.Start(context.Background(), box.Options{Shares: []string{filepath.Dir(exe)}})
	if err != nil {
		return nil, err
	}
	return testBox.Close, nil
}

func requireBox(t testing.TB) *box.Box {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBox(t)
	if testBox == nil {
		t.Fatal("box not started")
	}
	return testBox
}

// newCgroup makes a cgroup below parent (named for this test process) and
// removes it at the end of the test, checking that nsrun's program went
// with it.
func newCgroup(t testing.TB, parent, name string) string {
	t.Helper()
	dir := filepath.Join(parent, "nsrun-test-"+box.OwnerTag()+"-"+name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st, _ := bpfdev.Inspect(dir)
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup: %v", err)
			return
		}
		if st != nil && st.Program != nil {
			waitProgramGone(t, ebpf.ProgramID(st.Program.ID))
		}
	})
	return dir
}

// waitProgramGone waits until the kernel has released a program (a removed
// cgroup releases its programs from a work queue, not at once).
func waitProgramGone(t testing.TB, id ebpf.ProgramID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			p.Close()
		}
		if time.Now().After(deadline) {
			t.Errorf("device program %d still loaded after its cgroup was removed (%v)", id, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func policy(t testing.TB, s bpfdev.Spec) *bpfdev.Policy {
	t.Helper()
	p, err := s.Policy(false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// device is a cell row of the matrix.
type device struct {
	path         string
	typ          bpfdev.Type
	major, minor uint32
	present      bool // the node exists on the host: open can be tried
}

// matrixDevices are the devices of the matrix that this host knows of;
// mknod is tried for every one of them, open only where the node exists.
func matrixDevices(t *testing.T) []device {
	t.Helper()
	known := []device{
		{"/dev/null", bpfdev.Char, 1, 3, false}, {"/dev/zero", bpfdev.Char, 1, 5, false},
		{"/dev/full", bpfdev.Char, 1, 7, false}, {"/dev/random", bpfdev.Char, 1, 8, false},
		{"/dev/urandom", bpfdev.Char, 1, 9, false}, {"/dev/tty", bpfdev.Char, 5, 0, false},
		{"/dev/kmsg", bpfdev.Char, 1, 11, false}, {"/dev/mem", bpfdev.Char, 1, 1, false},
		{"/dev/loop-control", bpfdev.Char, 10, 237, false}, {"/dev/net/tun", bpfdev.Char, 10, 200, false},
		{"/dev/fuse", bpfdev.Char, 10, 229, false}, {"/dev/kvm", bpfdev.Char, 10, 232, false},
		{"/dev/loop0", bpfdev.Block, 7, 0, false},
	}
	for i, d := range known {
		var st unix.Stat_t
		if unix.Stat(d.path, &st) == nil && unix.Major(st.Rdev) == d.major && unix.Minor(st.Rdev) == d.minor {
			known[i].present = true
		}
	}
	return known
}

type cellResult struct {
	dev    device
	access bpfdev.Access
	err    error // nil: allowed
}

// matrix probes every device x (read, write, mknod) from a process in cg.
func matrix(t *testing.T, cg string, devs []device) []cellResult {
	t.Helper()
	var args []string
	var cells []cellResult
	for _, d := range devs {
		for _, a := range []bpfdev.Access{bpfdev.Read, bpfdev.Write, bpfdev.Mknod} {
			if a != bpfdev.Mknod && !d.present {
				continue
			}
			args = append(args, probeArg(d, a))
			cells = append(cells, cellResult{dev: d, access: a})
		}
	}
	res := probe(t, cg, args...)
	for i := range cells {
		cells[i].err = res[i]
	}
	return cells
}

// checkMatrix compares the cells with what want allows.
func checkMatrix(t *testing.T, what string, cells []cellResult, want func(bpfdev.Type, uint32, uint32, bpfdev.Access) bool) {
	t.Helper()
	allowed, denied := 0, 0
	for _, c := range cells {
		w := want(c.dev.typ, c.dev.major, c.dev.minor, c.access)
		got := c.err == nil || !errors.Is(c.err, unix.EPERM)
		if got != w {
			t.Errorf("%s: %s %v: allowed=%v (%v), want allowed=%v", what, c.dev.path, c.access, got, c.err, w)
		}
		if got {
			allowed++
		} else {
			denied++
		}
	}
	t.Logf("%s: %d cells, %d allowed, %d denied", what, len(cells), allowed, denied)
}

func probeArg(d device, a bpfdev.Access) string {
	return fmt.Sprintf("%s:%s:%d:%d:%s", a, d.typ.Letter(), d.major, d.minor, d.path)
}

const probeEnv = "NSRUN_BPFDEV_PROBE"

// probe runs the test binary as a probe in cg and returns one result per
// argument.
func probe(t *testing.T, cg string, args ...string) []error {
	t.Helper()
	out, err := probeCmd(t, cg, args...).Output()
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(args) {
		t.Fatalf("probe printed %d lines for %d cells: %q", len(lines), len(args), out)
	}
	res := make([]error, len(args))
	for i, l := range lines {
		if l != "ok" {
			n, err := strconv.Atoi(l)
			if err != nil {
				t.Fatalf("probe line %q", l)
			}
			res[i] = syscall.Errno(n)
		}
	}
	return res
}

func probeCmd(t testing.TB, cg string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := os.OpenFile(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{probeEnv + "=" + dir}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	return cmd
}

// probeMain is the probe: for each ACCESS:TYPE:MAJOR:MINOR:PATH it opens
// PATH for reading or writing, or makes a node of that number in a scratch
// directory, and prints "ok" or the errno. "hammer:PATH" opens PATH for
// reading until stdin closes and prints how often that succeeded and failed.
func probeMain(args []string) int {
	dir := os.Getenv(probeEnv)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for i, a := range args {
		if p, ok := strings.CutPrefix(a, "hammer:"); ok {
			hammer(w, p)
			continue
		}
		if p, ok := strings.CutPrefix(a, "bench:"); ok {
			n, p, _ := strings.Cut(p, ":")
			count, _ := strconv.Atoi(n)
			bench(w, p, count)
			continue
		}
		f := strings.SplitN(a, ":", 5)
		if len(f) != 5 {
			fmt.Fprintf(os.Stderr, "probe: bad argument %q\n", a)
			return 2
		}
		maj, _ := strconv.Atoi(f[2])
		min, _ := strconv.Atoi(f[3])
		var err error
		switch f[0] {
		case "r", "w":
			flags := unix.O_RDONLY
			if f[0] == "w" {
				flags = unix.O_WRONLY
			}
			var fd int
			fd, err = unix.Open(f[4], flags|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
		case "m":
			mode := uint32(unix.S_IFCHR)
			if f[1] == "b" {
				mode = unix.S_IFBLK
			}
			node := filepath.Join(dir, "node"+strconv.Itoa(i))
			err = unix.Mknod(node, mode|0o600, int(unix.Mkdev(uint32(maj), uint32(min))))
			if err == nil {
				os.Remove(node)
			}
		}
		if err == nil {
			fmt.Fprintln(w, "ok")
		} else {
			fmt.Fprintln(w, int(err.(syscall.Errno)))
		}
	}
	return 0
}

// bench opens path count times and prints the nanoseconds that took.
func bench(w *bufio.Writer, path string, count int) {
	start := time.Now()
	for i := 0; i < count; i++ {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		unix.Close(fd)
	}
	fmt.Fprintln(w, time.Since(start).Nanoseconds())
}

func hammer(w *bufio.Writer, path string) {
	done := make(chan struct{})
	go func() {
		var b [1]byte
		os.Stdin.Read(b[:])
		close(done)
	}()
	ok, failed := 0, 0
	for {
		select {
		case <-done:
			fmt.Fprintf(w, "%d %d\n", ok, failed)
			return
		default:
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
			ok++
		} else {
			failed++
		}
	}
}

// countOurs counts the device programs attached to cg itself.
func countAttached(t *testing.T, cg string) (all, ours int, oursID uint32) {
	t.Helper()
	st, err := bpfdev.Inspect(cg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Path {
		if p.Cgroup != cg {
			continue
		}
		all++
		if p.Owner == "nsrun" {
			ours++
			oursID = p.ID
		}
	}
	return all, ours, oursID
}

var syscallEPERM = unix.EPERM

func ebpfID(id uint32) ebpf.ProgramID { return ebpf.ProgramID(id) }
