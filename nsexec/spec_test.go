package nsexec

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func TestParseNamespaces(t *testing.T) {
	ns, err := ParseNamespaces("user,mount,pid")
	if err != nil || ns != NSUser|NSMount|NSPID {
		t.Fatalf("got %v, %v", ns, err)
	}
	if ns, _ := ParseNamespaces("all"); ns != NSAll || ns.String() != "user,mount,pid,net,ipc,uts,cgroup,time" {
		t.Fatalf("all = %v", ns)
	}
	for _, bad := range []string{"", "users", "pid,", "net,bogus"} {
		if _, err := ParseNamespaces(bad); err == nil {
			t.Errorf("ParseNamespaces(%q) accepted", bad)
		}
	}
	// Time and cgroup namespaces are unshared by the child, not cloned.
	if f := NSAll.cloneFlags(); f&unix.CLONE_NEWTIME != 0 || f&unix.CLONE_NEWCGROUP != 0 || f&unix.CLONE_NEWUSER == 0 {
		t.Fatalf("clone flags %#x", f)
	}
}

func TestParseIDMap(t *testing.T) {
	m, err := ParseIDMap("0:100000:65536,65536:1000:1")
	if err != nil || len(m) != 2 || m[0] != (IDMap{0, 100000, 65536}) || m[1] != (IDMap{65536, 1000, 1}) {
		t.Fatalf("got %v, %v", m, err)
	}
	for _, bad := range []string{"", "0:1", "0:1:2:3", "a:1:1", "-1:0:1", "0:4294967296:1", "+1:0:1", "0::1"} {
		if _, err := ParseIDMap(bad); err == nil {
			t.Errorf("ParseIDMap(%q) accepted", bad)
		}
	}
}

func FuzzParseIDMap(f *testing.F) {
	for _, s := range []string{"0:1000:1", "0:100000:65536,65536:1000:1", "1:2", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		maps, err := ParseIDMap(s)
		if err != nil {
			return
		}
		_ = checkMaps("uid map", maps, nil, true)
		_ = formatMap(maps)
	})
}

func TestCheckMaps(t *testing.T) {
	owned := []IDMap{{Outside: 1000, Count: 1}, {Outside: 100000, Count: 65536}}
	good := [][]IDMap{
		{{0, 1000, 1}},
		{{0, 1000, 1}, {1, 100000, 65536}},
		{{0, 100000, 65536}},
	}
	for _, m := range good {
		if err := checkMaps("uid map", m, owned, false); err != nil {
			t.Errorf("%v refused: %v", m, err)
		}
	}
	bad := map[string][]IDMap{
		"count 0":          {{0, 1000, 0}},
		"host root":        {{0, 0, 1}},
		"not owned":        {{0, 2000, 1}},
		"beyond subuid":    {{0, 100000, 65537}},
		"inside overlap":   {{0, 1000, 1}, {0, 100000, 10}},
		"outside overlap":  {{0, 100000, 10}, {10, 100005, 10}},
		"overflow":         {{4294967290, 100000, 10}},
		"hostID 2^32-1":    {{0, 4294967295, 1}},
		"too many ranges":  make([]IDMap, 341),
		"outside overflow": {{0, 4294967294, 2}},
	}
	for name, m := range bad {
		if err := checkMaps("uid map", m, owned, false); err == nil {
			t.Errorf("%s: %v accepted", name, m)
		}
	}
	// Root may map host root, but still not overlapping ranges.
	if err := checkMaps("uid map", []IDMap{{0, 0, 1}}, nil, true); err != nil {
		t.Errorf("root mapping 0:0:1 refused: %v", err)
	}
	if err := checkMaps("uid map", bad["inside overlap"], nil, true); err == nil {
		t.Errorf("root: overlapping ranges accepted")
	}
}

func TestParseSubIDs(t *testing.T) {
	data := []byte("alice:100000:65536\n1001:200000:10\nbob:300000:5\nbroken\nalice:x:1\n")
	got := parseSubIDs(data, "1001", []string{"alice"})
	if len(got) != 2 || got[0].Outside != 100000 || got[1].Outside != 200000 {
		t.Fatalf("got %v", got)
	}
}

func TestDefaultMaps(t *testing.T) {
	s := &Spec{Argv: []string{"true"}, Namespaces: NSMount}
	s.Normalize(1000, 1000)
	if !s.Namespaces.Has(NSUser) {
		t.Fatal("an unprivileged caller asking for a namespace gets no user namespace")
	}
	u, g := s.maps()
	if len(u) != 1 || u[0] != (IDMap{0, 1000, 1}) || len(g) != 1 || g[0] != (IDMap{0, 1000, 1}) {
		t.Fatalf("unprivileged default maps %v %v", u, g)
	}
	r := &Spec{Argv: []string{"true"}, Namespaces: NSUser}
	r.Normalize(0, 0)
	u, _ = r.maps()
	for _, m := range u {
		if m.Outside == 0 {
			t.Fatalf("root's default map %v maps host root", u)
		}
	}
	// Root asking for no user namespace gets none.
	n := &Spec{Argv: []string{"true"}, Namespaces: NSMount}
	n.Normalize(0, 0)
	if n.Namespaces.Has(NSUser) {
		t.Fatal("root got a user namespace it did not ask for")
	}
}

func TestValidate(t *testing.T) {
	base := func() *Spec { return &Spec{Argv: []string{"true"}} }
	uid := uint32(5)
	bad := map[string]func(*Spec){
		"no command":            func(s *Spec) { s.Argv = nil },
		"relative dir":          func(s *Spec) { s.Dir = "tmp" },
		"proc fd cwd":           func(s *Spec) { s.Dir = "/proc/self/fd/7" },
		"root and overlay":      func(s *Spec) { s.Root = "/srv"; s.Overlay = &Overlay{Lowers: []string{"/"}} },
		"relative root":         func(s *Spec) { s.Root = "srv" },
		"unclean root":          func(s *Spec) { s.Root = "/srv/../etc" },
		"comma in lower":        func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/a,b"}} },
		"colon in lower":        func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/a:b"}} },
		"upper without work":    func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/usr"}, Upper: "/u"} },
		"upper in lower":        func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/srv"}, Upper: "/srv/u", Work: "/w"} },
		"work in upper":         func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/srv"}, Upper: "/u", Work: "/u/w"} },
		"upper equals lower":    func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/srv"}, Upper: "/srv", Work: "/w"} },
		"bind to /":             func(s *Spec) { s.Mounts = []Mount{{Kind: Bind, Source: "/a", Dest: "/"}} },
		"bind into /proc":       func(s *Spec) { s.Mounts = []Mount{{Kind: Bind, Source: "/a", Dest: "/proc/sys"}} },
		"tmpfs relative":        func(s *Spec) { s.Mounts = []Mount{{Kind: Tmpfs, Dest: "x"}} },
		"device outside dev":    func(s *Spec) { s.Devices = []DeviceNode{{Path: "/etc/passwd"}} },
		"net host and net ns":   func(s *Spec) { s.Net = NetHost; s.Namespaces = NSNet },
		"bad hostname":          func(s *Spec) { s.Hostname = "-bad" },
		"long hostname":         func(s *Spec) { s.Hostname = strings.Repeat("a", 65) },
		"no-init without pidns": func(s *Spec) { s.NoInit = true },
		"unknown cap":           func(s *Spec) { s.Caps = []string{"cap_bogus"} },
		"bad seccomp":           func(s *Spec) { s.Seccomp = "strict" },
		"empty seccomp file":    func(s *Spec) { s.Seccomp = SeccompFile },
		"uid not mapped":        func(s *Spec) { s.Namespaces = NSUser; s.UIDMap = []IDMap{{0, 1000, 1}}; s.UID = &uid },
		"zero-count map":        func(s *Spec) { s.UIDMap = []IDMap{{0, 1000, 0}} },
	}
	for name, mod := range bad {
		s := base()
		mod(s)
		s.Normalize(0, 0)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	good := map[string]func(*Spec){
		"plain":       func(s *Spec) {},
		"sandbox":     func(s *Spec) { s.Namespaces = NSAll; s.Net = NetNone; s.Overlay = &Overlay{Lowers: []string{"/"}} },
		"upper":       func(s *Spec) { s.Overlay = &Overlay{Lowers: []string{"/usr"}, Upper: "/var/u", Work: "/var/w"} },
		"binds":       func(s *Spec) { s.Root = "/srv"; s.Mounts = []Mount{{Kind: ROBind, Source: "/a", Dest: "/b"}} },
		"caps":        func(s *Spec) { s.Caps = []string{"CAP_NET_ADMIN", "sys_ptrace"} },
		"time":        func(s *Spec) { s.Time = &TimeOffsets{Monotonic: 10} },
		"host":        func(s *Spec) { s.Net = NetHost; s.Namespaces = NSPID },
		"map root":    func(s *Spec) { s.UIDMap = []IDMap{{0, 0, 1}} },
		"pid1":        func(s *Spec) { s.Namespaces = NSPID; s.NoInit = true },
		"hostname ok": func(s *Spec) { s.Hostname = "box-1.example" },
	}
	for name, mod := range good {
		s := base()
		mod(s)
		s.Normalize(0, 0)
		if err := s.Validate(); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

func TestNormalizeImplies(t *testing.T) {
	s := &Spec{Argv: []string{"x"}, Hostname: "h", Net: NetNone, Time: &TimeOffsets{}, Mounts: []Mount{{Kind: Tmpfs, Dest: "/x"}}}
	s.Normalize(0, 0)
	if want := NSUTS | NSNet | NSTime | NSMount; s.Namespaces != want {
		t.Fatalf("namespaces %v, want %v", s.Namespaces, want)
	}
	if s.Seccomp != SeccompDefault {
		t.Fatalf("seccomp %q", s.Seccomp)
	}
}

func TestParseTimeOffsets(t *testing.T) {
	o, err := ParseTimeOffsets("monotonic:86400,boottime:-5")
	if err != nil || o.Monotonic != 86400 || o.Boottime != -5 {
		t.Fatalf("got %+v, %v", o, err)
	}
	for _, bad := range []string{"", "monotonic", "realtime:5", "monotonic:x", "monotonic:1,monotonic:2", "boottime:99999999999999999"} {
		if _, err := ParseTimeOffsets(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseMount(t *testing.T) {
	m, err := ParseMount(Bind, "/src:/dst")
	if err != nil || m != (Mount{Bind, "/src", "/dst"}) {
		t.Fatalf("got %v, %v", m, err)
	}
	if m, _ := ParseMount(ROBind, "/src"); m.Dest != "/src" {
		t.Fatalf("default destination %q", m.Dest)
	}
	for _, bad := range []string{"", "rel:/x", "/x:rel", "/a/../b", "/a,b"} {
		if _, err := ParseMount(Bind, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCleanEnv(t *testing.T) {
	env := []string{"PATH=/bin", "DBUS_SESSION_BUS_ADDRESS=x", "NOTIFY_SOCKET=/run/n", "LISTEN_FDS=2",
		"LISTEN_PID=1", "INVOCATION_ID=a", "SSH_AUTH_SOCK=s", "XDG_RUNTIME_DIR=/run/user/1", "HOME=/root", "DBUSX=keep"}
	got := CleanEnv(env, []string{"XDG_RUNTIME_DIR"})
	want := []string{"PATH=/bin", "XDG_RUNTIME_DIR=/run/user/1", "HOME=/root", "DBUSX=keep"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestChildErrorMatching(t *testing.T) {
	notFound := &ChildError{Step: stepExec, Errno: syscall.ENOENT, Msg: "x: not found"}
	if !errors.Is(notFound, ErrCommandNotFound) || errors.Is(notFound, ErrCommandNotExecutable) {
		t.Fatal("exec ENOENT does not match ErrCommandNotFound only")
	}
	if !errors.Is(&ChildError{Step: stepExec, Errno: syscall.EACCES}, ErrCommandNotExecutable) {
		t.Fatal("exec EACCES does not match ErrCommandNotExecutable")
	}
	mount := childErr("--bind /nope", &os.PathError{Op: "open_tree", Path: "/nope", Err: syscall.ENOENT})
	if errors.Is(mount, ErrCommandNotFound) {
		t.Fatal("a missing bind source reads as a missing command")
	}
	if !errors.Is(mount, os.ErrNotExist) || !strings.Contains(mount.Error(), "--bind /nope") {
		t.Fatalf("mount error %v lost its cause or step", mount)
	}
}

// runFilter runs the seccomp program on a seccomp_data for nr and args.
func runFilter(t *testing.T, prog []byte, arch, nr uint32, args ...uint64) uint32 {
	t.Helper()
	var ins []bpf.RawInstruction
	for i := 0; i < len(prog); i += 8 {
		ins = append(ins, bpf.RawInstruction{
			Op: binary.NativeEndian.Uint16(prog[i:]), Jt: prog[i+2], Jf: prog[i+3], K: binary.NativeEndian.Uint32(prog[i+4:]),
		})
	}
	dec, ok := bpf.Disassemble(ins)
	if !ok {
		t.Fatal("program does not disassemble")
	}
	vm, err := bpf.NewVM(dec)
	if err != nil {
		t.Fatalf("load program: %v", err)
	}
	// The VM reads loads big-endian; seccomp_data is native (little)
	// endian, so the words are stored big-endian here to read back as the
	// kernel would see them.
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[0:], nr)
	binary.BigEndian.PutUint32(data[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[20+8*i:], uint32(a>>32))
	}
	out, err := vm.Run(data)
	if err != nil {
		t.Fatalf("run program: %v", err)
	}
	return uint32(out)
}

func TestDefaultFilter(t *testing.T) {
	if auditArch == 0 {
		t.Skip("no default filter on this architecture")
	}
	prog, err := defaultFilter()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", auditArch, unix.SYS_READ, nil, retAllow},
		{"bpf", auditArch, unix.SYS_BPF, nil, retEPERM},
		{"keyctl", auditArch, unix.SYS_KEYCTL, nil, retEPERM},
		{"kexec_load", auditArch, unix.SYS_KEXEC_LOAD, nil, retEPERM},
		{"open_by_handle_at", auditArch, unix.SYS_OPEN_BY_HANDLE_AT, nil, retEPERM},
		{"mount", auditArch, unix.SYS_MOUNT, nil, retEPERM},
		{"userfaultfd", auditArch, unix.SYS_USERFAULTFD, nil, retEPERM},
		{"ioctl TIOCSTI", auditArch, unix.SYS_IOCTL, []uint64{0, unix.TIOCSTI}, retEPERM},
		{"ioctl TIOCSTI high bits", auditArch, unix.SYS_IOCTL, []uint64{0, 1<<32 | unix.TIOCSTI}, retEPERM},
		{"ioctl TIOCLINUX", auditArch, unix.SYS_IOCTL, []uint64{0, unix.TIOCLINUX}, retEPERM},
		{"ioctl TCGETS", auditArch, unix.SYS_IOCTL, []uint64{0, unix.TCGETS}, retAllow},
		{"x32 read", auditArch, x32Bit | unix.SYS_READ, nil, retEPERM},
		{"i386", unix.AUDIT_ARCH_I386, 1, nil, retKill},
		{"unshare", auditArch, unix.SYS_UNSHARE, nil, retAllow},
	}
	for _, c := range cases {
		if got := runFilter(t, prog, c.arch, c.nr, c.args...); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
	if len(prog)/8 > 200 {
		t.Errorf("default filter has %d instructions", len(prog)/8)
	}
}

// A symlink planted in the root never makes ensureTarget create or open
// anything outside it.
func TestEnsureTargetStaysInRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "etc")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"dev":             outside,
		"proc":            "../../outside",
		"etc/resolv.conf": filepath.Join(outside, "resolv.conf"),
		"mnt":             filepath.Join(outside, "mnt"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	// nsrun's own targets refuse symlinks.
	for _, p := range []string{"/dev", "/dev/pts", "/proc"} {
		if fd, err := ensureTarget(rfd, p, true, true); err == nil {
			unix.Close(fd)
			t.Errorf("%s: symlinked target accepted", p)
		} else if !errors.Is(err, unix.ELOOP) {
			t.Errorf("%s: %v, want ELOOP", p, err)
		}
	}
	// User targets resolve inside the root.
	for _, c := range []struct {
		path string
		dir  bool
	}{{"/mnt/b", true}, {"/etc/resolv.conf", false}, {"/new/deep/dir", true}} {
		fd, err := ensureTarget(rfd, c.path, c.dir, false)
		if err == nil {
			unix.Close(fd)
		}
	}
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("created outside the root: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(root, "new/deep/dir")); err != nil {
		t.Fatalf("missing target not created inside the root: %v", err)
	}
}

func TestLoadSeccompFile(t *testing.T) {
	dir := t.TempDir()
	prog, err := defaultFilter()
	if err != nil {
		t.Skip(err)
	}
	good := filepath.Join(dir, "good.bpf")
	if err := os.WriteFile(good, prog, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadSeccompFile(good); err != nil || len(got) != len(prog) {
		t.Fatalf("load a compiled program: %v", err)
	}
	for name, data := range map[string][]byte{"empty": nil, "odd": prog[:len(prog)-3], "huge": make([]byte, 8*4097)} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadSeccompFile(p); err == nil {
			t.Errorf("%s program accepted", name)
		}
	}
	if _, err := LoadSeccompFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

// A time namespace is cloned with the child unless offsets must be written
// first, in which case the child unshares it (see Spec.cloneFlags).
func TestSpecCloneFlagsTime(t *testing.T) {
	s := &Spec{Namespaces: NSPID | NSTime}
	if s.cloneFlags()&unix.CLONE_NEWTIME == 0 {
		t.Errorf("time namespace without offsets not cloned: %#x", s.cloneFlags())
	}
	s.Time = &TimeOffsets{}
	if s.cloneFlags()&unix.CLONE_NEWTIME == 0 {
		t.Errorf("zero offsets: time namespace not cloned")
	}
	s.Time = &TimeOffsets{Monotonic: 10}
	if s.cloneFlags()&unix.CLONE_NEWTIME != 0 {
		t.Errorf("with offsets the time namespace must be unshared by the child, not cloned")
	}
	if (&Spec{Namespaces: NSPID}).cloneFlags()&unix.CLONE_NEWTIME != 0 {
		t.Errorf("time namespace cloned although not requested")
	}
}

func TestLowerdirList(t *testing.T) {
	got := lowerdirList([]string{"/a", `/b:c`, `/d\e`})
	if want := `/a:/b\:c:/d\\e`; got != want {
		t.Errorf("lowerdirList = %q, want %q", got, want)
	}
}
