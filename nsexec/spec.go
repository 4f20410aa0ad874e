package nsexec

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ChildArg is the hidden first argument of the re-executed nsrun that
// becomes the sandbox. main() must call ChildMain when it sees it, before
// any flag parsing.
const ChildArg = "__nsrun-sandbox-child"

// Namespaces is a set of namespace kinds.
type Namespaces uint

// The namespace kinds, as --unshare names them.
const (
	NSUser Namespaces = 1 << iota
	NSMount
	NSPID
	NSNet
	NSIPC
	NSUTS
	NSCgroup
	NSTime

	NSAll = NSUser | NSMount | NSPID | NSNet | NSIPC | NSUTS | NSCgroup | NSTime
)

var nsNames = []struct {
	ns   Namespaces
	name string // --unshare and /proc/PID/ns name
	file string
	flag uintptr
}{
	{NSUser, "user", "user", unix.CLONE_NEWUSER},
	{NSMount, "mount", "mnt", unix.CLONE_NEWNS},
	{NSPID, "pid", "pid", unix.CLONE_NEWPID},
	{NSNet, "net", "net", unix.CLONE_NEWNET},
	{NSIPC, "ipc", "ipc", unix.CLONE_NEWIPC},
	{NSUTS, "uts", "uts", unix.CLONE_NEWUTS},
	{NSCgroup, "cgroup", "cgroup", unix.CLONE_NEWCGROUP},
	{NSTime, "time", "time", unix.CLONE_NEWTIME},
}

// ParseNamespaces parses a comma-separated list such as "user,mount,pid";
// "all" stands for every kind.
func ParseNamespaces(list string) (Namespaces, error) {
	var ns Namespaces
	for _, w := range strings.Split(list, ",") {
		w = strings.TrimSpace(w)
		if w == "all" {
			ns |= NSAll
			continue
		}
		found := false
		for _, n := range nsNames {
			if n.name == w || (n.file == w && w == "mnt") {
				ns |= n.ns
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown namespace %q (want user, mount, pid, net, ipc, uts, cgroup, time or all)", w)
		}
	}
	return ns, nil
}

// Has reports whether every kind in o is in ns.
func (ns Namespaces) Has(o Namespaces) bool { return ns&o == o }

func (ns Namespaces) String() string {
	var w []string
	for _, n := range nsNames {
		if ns.Has(n.ns) {
			w = append(w, n.name)
		}
	}
	return strings.Join(w, ",")
}

// NamespaceFiles are the names under /proc/PID/ns of every kind, in order.
func NamespaceFiles() []string {
	var f []string
	for _, n := range nsNames {
		f = append(f, n.file)
	}
	return f
}

// cloneFlags are the clone flags of the child. The time and cgroup
// namespaces are left out: the child unshares them itself (see child.go).
func (ns Namespaces) cloneFlags() uintptr {
	var f uintptr
	for _, n := range nsNames {
		if ns.Has(n.ns) && n.ns != NSTime && n.ns != NSCgroup {
			f |= n.flag
		}
	}
	return f
}

// NetMode is the network the sandbox gets.
type NetMode string

// Network modes.
const (
	NetDefault NetMode = ""     // a private network namespace if requested, else the host's
	NetNone    NetMode = "none" // a private network namespace with only lo, up
	NetHost    NetMode = "host" // the host's network
)

// MountKind is the kind of a user mount.
type MountKind string

// Mount kinds, as --bind, --ro-bind and --tmpfs name them.
const (
	Bind   MountKind = "bind"
	ROBind MountKind = "ro-bind"
	Tmpfs  MountKind = "tmpfs"
)

// Mount is one --bind, --ro-bind or --tmpfs, applied in order after the
// standard mounts.
type Mount struct {
	Kind   MountKind
	Source string // host path (bind kinds)
	Dest   string // absolute path inside the sandbox
}

// Overlay is --overlay-root with its optional upper and work directories.
type Overlay struct {
	Lowers []string // topmost first
	Upper  string   // empty: a tmpfs discarded at exit
	Work   string
}

// DeviceNode is a host device node bound into the sandbox's /dev.
type DeviceNode struct {
	Path string // host path, e.g. /dev/kvm; it appears at the same path inside
}

// TimeOffsets are the clock offsets of a time namespace, in seconds.
type TimeOffsets struct {
	Monotonic int64
	Boottime  int64
}

// set reports whether t moves a clock.
func (t *TimeOffsets) set() bool {
	return t != nil && (t.Monotonic != 0 || t.Boottime != 0)
}

// cloneFlags are the namespaces the child is cloned with. A time namespace
// without offsets is cloned too: the kernel puts the child in it at fork
// (or, when Go clones with CLONE_VM, at its execve), so the child never runs
// with a time namespace for its children that differs from its own, which
// Linux before 6.x refuses any later CLONE_VM fork for (EINVAL: the init's
// fork of the workload). Offsets can be written only before any process
// has entered the namespace, so with offsets the child unshares it itself
// (setupTime).
func (s *Spec) cloneFlags() uintptr {
	f := s.Namespaces.cloneFlags()
	if s.Namespaces.Has(NSTime) && !s.Time.set() {
		f |= unix.CLONE_NEWTIME
	}
	return f
}

// Winsize is a terminal size.
type Winsize struct {
	Rows, Cols uint16
}

// Seccomp selects the seccomp filter.
type Seccomp string

// Seccomp modes. SeccompFile uses Spec.SeccompProgram.
const (
	SeccompDefault Seccomp = "default"
	SeccompNone    Seccomp = "none"
	SeccompFile    Seccomp = "file"
)

// Spec is everything the sandbox child needs. It is plain data: it travels
// to the child as JSON over the sync socket.
type Spec struct {
	// Given by cmd, already final.
	Argv        []string
	Path        string   // the command; empty: Argv[0] looked up in PATH inside the sandbox
	Env         []string // the final environment
	Dir         string   // working directory inside; empty: "/" with a new root, else unchanged
	UID, GID    *uint32  // ids inside to switch to (--uid, --gid)
	Pty         bool     // a pty from the sandbox's devpts: its slave is 0, 1, 2 and the controlling tty, its master goes to the parent (Launch.Pty)
	Winsize     *Winsize // the pty's size at start (nil: the kernel's default)
	PreserveFDs int      // fds 3..3+N-1 pass through
	Devices     []DeviceNode

	// Namespaces and ids.
	Namespaces Namespaces
	UIDMap     []IDMap // empty: the default (see defaultMaps)
	GIDMap     []IDMap
	Hostname   string
	Net        NetMode
	Time       *TimeOffsets

	// Filesystem.
	Root    string // --root: DIR as a read-only /
	Overlay *Overlay
	Mounts  []Mount

	// Process security.
	Caps           []string // capabilities kept (names such as "net_admin"); none by default
	Seccomp        Seccomp  // empty means default
	SeccompProgram []byte   // compiled classic BPF (sock_filter array) for SeccompFile
	NoInit         bool     // with a pid namespace: the workload itself is PID 1

	// Filled by Prepare.
	HostMountNS string // readlink of the parent's /proc/self/ns/mnt: the child refuses to mount in it
	CallerUID   int
	CallerGID   int
}

// newRoot reports whether the sandbox gets its own root filesystem.
func (s *Spec) newRoot() bool { return s.Root != "" || s.Overlay != nil }

// Normalize fills in what the options imply, for a caller with effective
// ids euid, egid: a mount namespace for any filesystem option, a network
// namespace for --net=none, a uts namespace for --hostname, a time namespace
// for offsets, and a user namespace for an unprivileged caller that asks for
// any namespace. It is idempotent.
func (s *Spec) Normalize(euid, egid int) {
	s.CallerUID, s.CallerGID = euid, egid
	if s.newRoot() || len(s.Mounts) > 0 || len(s.Devices) > 0 {
		s.Namespaces |= NSMount
	}
	if s.Net == NetNone {
		s.Namespaces |= NSNet
	}
	if s.Hostname != "" {
		s.Namespaces |= NSUTS
	}
	if s.Time != nil {
		s.Namespaces |= NSTime
	}
	if len(s.UIDMap) > 0 || len(s.GIDMap) > 0 {
		s.Namespaces |= NSUser
	}
	if euid != 0 && s.Namespaces != 0 {
		s.Namespaces |= NSUser
	}
	if s.Seccomp == "" {
		s.Seccomp = SeccompDefault
	}
}

// Validate refuses a spec that cannot work, before anything exists. It
// reads /etc/subuid and /etc/subgid for an unprivileged caller's maps and
// nothing else. Call Normalize first.
func (s *Spec) Validate() error {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return fmt.Errorf("no command given")
	}
	if s.Path != "" && !filepath.IsAbs(s.Path) {
		return fmt.Errorf("command path %q: must be absolute", s.Path)
	}
	if s.Dir != "" && !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("working directory %q: must be absolute", s.Dir)
	}
	if strings.HasPrefix(filepath.Clean(s.Dir), "/proc/") {
		return fmt.Errorf("working directory %q: must not lie in /proc", s.Dir)
	}
	if s.PreserveFDs < 0 || s.PreserveFDs > 1000 {
		return fmt.Errorf("preserved fds %d: out of range 0..1000", s.PreserveFDs)
	}
	if err := s.validateNamespaces(); err != nil {
		return err
	}
	if err := s.validateMaps(); err != nil {
		return err
	}
	if err := s.validateFS(); err != nil {
		return err
	}
	return s.validateSecurity()
}

func (s *Spec) validateNamespaces() error {
	if s.Net == NetHost && s.Namespaces.Has(NSNet) {
		return fmt.Errorf("--net=host conflicts with a private network namespace (--unshare=net)")
	}
	if s.Net != NetDefault && s.Net != NetNone && s.Net != NetHost {
		return fmt.Errorf("network %q: want none or host", s.Net)
	}
	if s.Hostname != "" {
		if err := validHostname(s.Hostname); err != nil {
			return err
		}
	}
	if s.NoInit && !s.Namespaces.Has(NSPID) {
		return fmt.Errorf("the workload can be PID 1 only in a pid namespace (--unshare=pid)")
	}
	if s.Time != nil && !s.Namespaces.Has(NSTime) {
		return fmt.Errorf("time offsets need a time namespace")
	}
	return nil
}

func validHostname(h string) error {
	if len(h) > 64 {
		return fmt.Errorf("hostname %q: longer than 64 bytes", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("hostname %q: empty label or label starting or ending with '-'", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("hostname %q: character %q not allowed", h, c)
			}
		}
	}
	return nil
}

func (s *Spec) validateFS() error {
	if s.Root != "" && s.Overlay != nil {
		return fmt.Errorf("--root and --overlay-root exclude each other")
	}
	if s.Root != "" {
		if err := cleanAbs("--root", s.Root); err != nil {
			return err
		}
	}
	if o := s.Overlay; o != nil {
		if len(o.Lowers) == 0 {
			return fmt.Errorf("--overlay-root: no lower directory given")
		}
		if len(o.Lowers) > 100 {
			return fmt.Errorf("--overlay-root: more than 100 lower directories")
		}
		for _, l := range o.Lowers {
			if err := cleanAbs("--overlay-root", l); err != nil {
				return err
			}
		}
		if (o.Upper == "") != (o.Work == "") {
			return fmt.Errorf("--overlay-upper and --overlay-work go together")
		}
		if o.Upper != "" {
			if err := cleanAbs("--overlay-upper", o.Upper); err != nil {
				return err
			}
			if err := cleanAbs("--overlay-work", o.Work); err != nil {
				return err
			}
			if within(o.Work, o.Upper) || within(o.Upper, o.Work) {
				return fmt.Errorf("--overlay-upper %s and --overlay-work %s must not contain each other", o.Upper, o.Work)
			}
			for _, l := range o.Lowers {
				for _, d := range []string{o.Upper, o.Work} {
					if within(d, l) || within(l, d) {
						if l == "/" && len(o.Lowers) == 1 && !within(l, d) {
							// An upper inside "/" is refused by the kernel as
							// overlapping; the per-directory assembly (see
							// rootfs.go) leaves the directories holding it out.
							continue
						}
						return fmt.Errorf("overlay directory %s overlaps the lower directory %s", d, l)
					}
				}
			}
		}
	} else if s.Overlay == nil && s.Root == "" && len(s.Mounts) > 0 && !s.Namespaces.Has(NSMount) {
		return fmt.Errorf("mounts need a mount namespace")
	}
	for _, m := range s.Mounts {
		switch m.Kind {
		case Bind, ROBind:
			if err := cleanAbs("--"+string(m.Kind)+" source", m.Source); err != nil {
				return err
			}
		case Tmpfs:
		default:
			return fmt.Errorf("mount kind %q: want bind, ro-bind or tmpfs", m.Kind)
		}
		if err := cleanAbs("--"+string(m.Kind)+" destination", m.Dest); err != nil {
			return err
		}
		if m.Dest == "/" {
			return fmt.Errorf("--%s destination /: use --root or --overlay-root", m.Kind)
		}
		if within(m.Dest, "/proc") || within(m.Dest, "/dev") {
			return fmt.Errorf("--%s destination %s: /proc and /dev are nsrun's", m.Kind, m.Dest)
		}
	}
	for _, d := range s.Devices {
		if err := cleanAbs("device", d.Path); err != nil {
			return err
		}
		if !within(d.Path, "/dev") || d.Path == "/dev" {
			return fmt.Errorf("device %s: must lie below /dev", d.Path)
		}
	}
	return nil
}

func (s *Spec) validateSecurity() error {
	for _, c := range s.Caps {
		if _, err := capByName(c); err != nil {
			return err
		}
	}
	switch s.Seccomp {
	case SeccompDefault:
		if _, err := defaultFilter(); err != nil {
			return err
		}
	case SeccompNone:
	case SeccompFile:
		if err := checkProgram(s.SeccompProgram); err != nil {
			return err
		}
	default:
		return fmt.Errorf("seccomp %q: want default, none or a file", s.Seccomp)
	}
	return nil
}

// cleanAbs refuses a path that is relative, not clean, or holds characters
// that mount options or maps would misread.
func cleanAbs(what, p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%s: empty path", what)
	case !filepath.IsAbs(p):
		return fmt.Errorf("%s %q: must be an absolute path", what, p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("%s %q: not a clean path (want %q)", what, p, filepath.Clean(p))
	case strings.ContainsAny(p, "\x00\n,:\\\""):
		return fmt.Errorf("%s %q: contains one of , : \\ \" or a newline", what, p)
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// ParseTimeOffsets parses "monotonic:SECS,boottime:SECS" (either may be left out).
func ParseTimeOffsets(v string) (*TimeOffsets, error) {
	t := &TimeOffsets{}
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		name, secs, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("time offset %q: want CLOCK:SECONDS", part)
		}
		n, err := strconv.ParseInt(secs, 10, 64)
		if err != nil || n < -(1<<40) || n > 1<<40 {
			return nil, fmt.Errorf("time offset %q: seconds must be an integer within ±2^40", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("time offset %q: clock given twice", part)
		}
		seen[name] = true
		switch name {
		case "monotonic":
			t.Monotonic = n
		case "boottime":
			t.Boottime = n
		default:
			return nil, fmt.Errorf("time offset %q: clock must be monotonic or boottime", part)
		}
	}
	return t, nil
}

// ParseMount parses a --bind/--ro-bind value SRC[:DST] (DST defaults to
// SRC) or a --tmpfs value DST.
func ParseMount(kind MountKind, v string) (Mount, error) {
	m := Mount{Kind: kind}
	if kind == Tmpfs {
		m.Dest = v
	} else {
		src, dst, ok := strings.Cut(v, ":")
		if !ok {
			dst = src
		}
		m.Source, m.Dest = src, dst
	}
	if m.Kind == Tmpfs {
		return m, cleanAbs("--tmpfs", m.Dest)
	}
	if err := cleanAbs("--"+string(kind)+" source", m.Source); err != nil {
		return m, err
	}
	return m, cleanAbs("--"+string(kind)+" destination", m.Dest)
}

// CleanEnv removes the variables through which a workload could reach the
// caller's service manager, session bus or agents (DBUS_*, NOTIFY_SOCKET,
// LISTEN_*, ...), except those named in keep (set explicitly with -E).
func CleanEnv(env []string, keep []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if managerVar(name) && !slices.Contains(keep, name) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func managerVar(name string) bool {
	for _, p := range []string{"DBUS_", "LISTEN_", "WATCHDOG_", "SYSTEMD_", "XDG_RUNTIME_DIR", "NOTIFY_SOCKET",
		"INVOCATION_ID", "JOURNAL_STREAM", "MANAGERPID", "SSH_AUTH_SOCK", "GPG_AGENT_INFO", "MAINPID",
		"TRIGGER_", "MONITOR_", "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY", "STATE_DIRECTORY"} {
		if name == p || (strings.HasSuffix(p, "_") && strings.HasPrefix(name, p)) {
			return true
		}
	}
	return false
}
