package bpfdev

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Node is a device node that must be present in the sandbox /dev.
type Node struct {
	Path         string
	Type         Type
	Major, Minor uint32
	Access       Access
}

// Policy is a resolved device policy: the rules the kernel enforces and the
// nodes the sandbox /dev must hold.
type Policy struct {
	Mode Mode
	// Rules are normalised (see Normalise).
	Rules []Rule
	// Nodes are sorted by path, each path once.
	Nodes []Node
	// DevPts: pseudo-terminals are allowed, the sandbox needs its own
	// devpts instance (/dev/pts, /dev/ptmx).
	DevPts bool
	// Unprivileged: no device program can be loaded; the policy holds
	// because /dev holds only Nodes and a user namespace cannot mknod.
	Unprivileged bool
}

// Mechanism names what enforces the policy.
func (p *Policy) Mechanism() Mechanism {
	if p.Unprivileged {
		return MechanismDevNodes
	}
	return MechanismBPF
}

// Mechanism is what enforces a device policy.
type Mechanism string

// Mechanisms.
const (
	// MechanismBPF: nsrun's cgroup device program on the sandbox cgroup.
	MechanismBPF Mechanism = "bpf"
	// MechanismDevNodes: the sandbox /dev holds only the allowed nodes and
	// the kernel refuses mknod in a user namespace (needs CAP_MKNOD in the
	// initial user namespace).
	MechanismDevNodes Mechanism = "dev-nodes"
	// MechanismNone: no device policy of nsrun's is in force.
	MechanismNone Mechanism = "none"
)

// System is what resolving reads from the host. Host is the real one; tests
// of the pure logic use their own.
type System interface {
	// Lstat describes the node at path without following a final symlink.
	Lstat(path string) (NodeStat, error)
	// Glob lists the paths that match a filepath.Match pattern.
	Glob(pattern string) ([]string, error)
	// ProcDevices returns the content of /proc/devices.
	ProcDevices() ([]byte, error)
	// Permits says which of r and w the caller's own credentials allow on
	// path (without a device program, that is what decides).
	Permits(path string) Access
}

// NodeStat is what Lstat reports.
type NodeStat struct {
	Mode         fs.FileMode
	Major, Minor uint32
}

// Host reads the running system.
type Host struct{}

// Lstat implements System.
func (Host) Lstat(p string) (NodeStat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return NodeStat{}, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	var mode fs.FileMode
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		mode = fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode = fs.ModeDevice
	case unix.S_IFLNK:
		mode = fs.ModeSymlink
	case unix.S_IFDIR:
		mode = fs.ModeDir
	}
	return NodeStat{Mode: mode, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}, nil
}

// Glob implements System.
func (Host) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

// ProcDevices implements System.
func (Host) ProcDevices() ([]byte, error) { return os.ReadFile("/proc/devices") }

// Permits implements System.
func (Host) Permits(p string) Access {
	var a Access
	if unix.Access(p, unix.R_OK) == nil {
		a |= Read
	}
	if unix.Access(p, unix.W_OK) == nil {
		a |= Write
	}
	return a
}

// Policy parses s and resolves it against the running system. It returns
// nil when nothing is asked for (policy auto, no devices).
func (s Spec) Policy(unprivileged bool) (*Policy, error) {
	req, err := s.Parse()
	if err != nil {
		return nil, err
	}
	return Resolve(req, Host{}, unprivileged)
}

// closedDevices are the pseudo devices of the closed policy (systemd's
// DevicePolicy=closed list, with "rw": mknod only when asked). Their numbers
// are fixed by the kernel (Documentation/admin-guide/devices.txt), so they
// are not looked up: /dev/ptmx, for one, is a symlink to pts/ptmx in many
// containers.
var closedDevices = []Node{
	{Path: "/dev/null", Type: Char, Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: Char, Major: 1, Minor: 5},
	{Path: "/dev/full", Type: Char, Major: 1, Minor: 7},
	{Path: "/dev/random", Type: Char, Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: Char, Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: Char, Major: 5, Minor: 0},
	{Path: "/dev/ptmx", Type: Char, Major: 5, Minor: 2},
}

// Resolve turns a request into a policy, reading device nodes and
// /proc/devices through sys. Nothing that fails to resolve is dropped.
func Resolve(req *Request, sys System, unprivileged bool) (*Policy, error) {
	if req.Empty() {
		return nil, nil
	}
	r := &resolver{sys: sys, pol: &Policy{Mode: req.Mode, Unprivileged: unprivileged}}
	items := req.Items
	if req.Mode == Closed {
		for _, n := range closedDevices {
			n.Access = Read | Write
			r.pol.Rules = append(r.pol.Rules, Rule{Pattern: Pattern{Type: n.Type, Major: n.Major, Minor: n.Minor}, Access: n.Access})
			r.pol.Nodes = append(r.pol.Nodes, n)
		}
		items = append([]Item{{Kind: KindGroup, Group: "pts", Type: Char, Access: Read | Write, Source: "--device-policy closed"}}, items...)
	}
	for _, it := range items {
		if err := r.item(it); err != nil {
			return nil, err
		}
	}
	r.pol.Rules = Normalise(r.pol.Rules)
	slices.SortFunc(r.pol.Nodes, func(a, b Node) int { return strings.Compare(a.Path, b.Path) })
	return r.pol, nil
}

type resolver struct {
	sys    System
	pol    *Policy
	groups map[Type][]group
}

func (r *resolver) item(it Item) error {
	switch it.Kind {
	case KindPath:
		return r.path(it.Source, it.Path, it.Access, it.InDev)
	case KindGroup:
		return r.group(it)
	case KindNumeric:
		if r.pol.Unprivileged {
			if it.Rule.Major == Any || it.Rule.Minor == Any || it.Rule.Type == All {
				return fmt.Errorf("%s: a wildcard also covers nodes that do not exist yet, which %w (unprivileged: name the nodes with --device=PATH)", it.Source, ErrInexpressible)
			}
			return fmt.Errorf("%s: a numeric rule %w (unprivileged: name the node with --device=PATH)", it.Source, ErrInexpressible)
		}
		r.pol.Rules = append(r.pol.Rules, it.Rule)
		return nil
	case KindSet:
		return r.set(it)
	}
	return fmt.Errorf("%s: unknown item kind %d", it.Source, it.Kind)
}

func (r *resolver) path(src, p string, acc Access, inDev bool) error {
	st, err := r.sys.Lstat(p)
	if err != nil {
		return fmt.Errorf("%s: %s %w: %v", src, p, ErrUnresolved, err)
	}
	var t Type
	switch {
	case st.Mode&fs.ModeSymlink != 0:
		return fmt.Errorf("%s: %s is a symlink (name the device node itself)", src, p)
	case st.Mode&fs.ModeCharDevice != 0:
		t = Char
	case st.Mode&fs.ModeDevice != 0:
		t = Block
	default:
		return fmt.Errorf("%s: %s %w: not a device node", src, p, ErrUnresolved)
	}
	if r.pol.Unprivileged {
		if acc&Mknod != 0 {
			return fmt.Errorf("%s: mknod (m) %w: a user namespace may never mknod", src, ErrInexpressible)
		}
		if !strings.HasPrefix(p, "/dev/") {
			return fmt.Errorf("%s: %s is not below /dev, and a rule for a node the sandbox cannot reach %w", src, p, ErrInexpressible)
		}
		if extra := r.sys.Permits(p) &^ acc; extra != 0 {
			return fmt.Errorf("%s: narrowing %s to %s %w: the node's permissions let you %s it", src, p, acc, ErrInexpressible, verb(extra))
		}
		inDev = true // presence is what grants access
	}
	r.pol.Rules = append(r.pol.Rules, Rule{Pattern: Pattern{Type: t, Major: st.Major, Minor: st.Minor}, Access: acc})
	if inDev {
		r.addNode(Node{Path: p, Type: t, Major: st.Major, Minor: st.Minor, Access: acc})
	}
	return nil
}

func verb(a Access) string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return "read and write"
}

func (r *resolver) addNode(n Node) {
	for i, o := range r.pol.Nodes {
		if o.Path == n.Path {
			r.pol.Nodes[i].Access |= n.Access
			return
		}
	}
	r.pol.Nodes = append(r.pol.Nodes, n)
}

func (r *resolver) group(it Item) error {
	if it.Type == Char && it.Group == "pts" {
		r.pol.DevPts = true
		if r.pol.Unprivileged {
			// A devpts instance of the sandbox's own holds only its
			// own terminals; nothing else is needed.
			if it.Access&Mknod != 0 {
				return fmt.Errorf("%s: mknod (m) %w: a user namespace may never mknod", it.Source, ErrInexpressible)
			}
			return nil
		}
	}
	if r.pol.Unprivileged {
		return fmt.Errorf("%s: a device group also covers nodes that do not exist yet, which %w (unprivileged: name the nodes with --device=PATH)", it.Source, ErrInexpressible)
	}
	if r.groups == nil {
		data, err := r.sys.ProcDevices()
		if err != nil {
			return fmt.Errorf("%s: read /proc/devices: %w", it.Source, err)
		}
		r.groups = ParseProcDevices(data)
	}
	n := 0
	for _, g := range r.groups[it.Type] {
		if ok, _ := path.Match(it.Group, g.Name); ok {
			r.pol.Rules = append(r.pol.Rules, Rule{Pattern: Pattern{Type: it.Type, Major: g.Major, Minor: Any}, Access: it.Access})
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%s: %s-%s %w: no such group in /proc/devices", it.Source, map[Type]string{Char: "char", Block: "block"}[it.Type], it.Group, ErrUnresolved)
	}
	return nil
}

type group struct {
	Major uint32
	Name  string
}

// ParseProcDevices reads /proc/devices: the majors of each char and block
// driver by name. Malformed lines are skipped.
func ParseProcDevices(data []byte) map[Type][]group {
	out := map[Type][]group{}
	var cur Type
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch line {
		case "Character devices:":
			cur = Char
			continue
		case "Block devices:":
			cur = Block
			continue
		}
		f := strings.Fields(line)
		if cur == All || len(f) != 2 {
			continue
		}
		maj, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || maj > MaxMajor {
			continue
		}
		out[cur] = append(out[cur], group{Major: uint32(maj), Name: f[1]})
	}
	return out
}

// setPart is a group of nodes of a device set: globs below /dev, and whether
// at least one node must match.
type setPart struct {
	globs    []string
	required bool
}

// deviceSets are the named sets of --device-set.
var deviceSets = map[string][]setPart{
	"kvm":  {{globs: []string{"/dev/kvm"}, required: true}},
	"fuse": {{globs: []string{"/dev/fuse"}, required: true}},
	"tun":  {{globs: []string{"/dev/net/tun"}, required: true}},
	"dri":  {{globs: []string{"/dev/dri/card*", "/dev/dri/renderD*"}, required: true}},
	// NVIDIA's driver: the GPUs, the control node, unified memory (CUDA
	// needs it), and what is there of modeset and the capability nodes
	// (MIG).
	"nvidia": {
		{globs: []string{"/dev/nvidia[0-9]*"}, required: true},
		{globs: []string{"/dev/nvidiactl"}, required: true},
		{globs: []string{"/dev/nvidia-uvm"}, required: true},
		{globs: []string{"/dev/nvidia-uvm-tools"}},
		{globs: []string{"/dev/nvidia-modeset"}},
		{globs: []string{"/dev/nvidia-caps/nvidia-cap*"}},
	},
}

// SetNames lists the known device sets.
func SetNames() []string {
	var names []string
	for n := range deviceSets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *resolver) set(it Item) error {
	for _, part := range deviceSets[it.Set] {
		n := 0
		for _, g := range part.globs {
			matches, err := r.sys.Glob(g)
			if err != nil {
				return fmt.Errorf("%s: %w", it.Source, err)
			}
			for _, m := range matches {
				st, err := r.sys.Lstat(m)
				if err != nil || st.Mode&fs.ModeDevice == 0 {
					continue // a directory or symlink beside the nodes
				}
				if err := r.path(it.Source, m, Read|Write, true); err != nil {
					return err
				}
				n++
			}
		}
		if n == 0 && part.required {
			return fmt.Errorf("%s: %s %w: no such device node on this host", it.Source, strings.Join(part.globs, " "), ErrUnresolved)
		}
	}
	return nil
}

// Normalise merges rules for the same pattern (their accesses add up) and
// sorts them: char, block, all; by major, then minor, wildcards last. Rules
// without access are dropped.
func Normalise(rules []Rule) []Rule {
	merged := map[Pattern]Access{}
	for _, r := range rules {
		merged[r.Pattern] |= r.Access
	}
	out := make([]Rule, 0, len(merged))
	for p, a := range merged {
		if a != 0 {
			out = append(out, Rule{Pattern: p, Access: a})
		}
	}
	slices.SortFunc(out, func(a, b Rule) int { return comparePattern(a.Pattern, b.Pattern) })
	return out
}

func typeRank(t Type) int {
	switch t {
	case Char:
		return 0
	case Block:
		return 1
	}
	return 2
}

func comparePattern(a, b Pattern) int {
	if c := typeRank(a.Type) - typeRank(b.Type); c != 0 {
		return c
	}
	if a.Major != b.Major {
		if a.Major < b.Major {
			return -1
		}
		return 1
	}
	if a.Minor != b.Minor {
		if a.Minor < b.Minor {
			return -1
		}
		return 1
	}
	return 0
}
