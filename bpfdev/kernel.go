package bpfdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// cgroup is an open cgroup directory, locked against concurrent changes of
// nsrun's program by other nsrun processes (flock on the directory).
type cgroup struct {
	dir string
	f   *os.File
}

func openCgroup(dir string, lock bool) (*cgroup, error) {
	f, err := os.OpenFile(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		f.Close()
		return nil, fmt.Errorf("%s is not a cgroup v2 directory", dir)
	}
	if lock {
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if err != unix.EINTR {
				break
			}
		}
		if err != nil {
			f.Close()
			return nil, &os.PathError{Op: "flock", Path: dir, Err: err}
		}
	}
	return &cgroup{dir: dir, f: f}, nil
}

func (c *cgroup) Close() error { return c.f.Close() } // also drops the lock

func (c *cgroup) fd() int { return int(c.f.Fd()) }

// attached lists the device programs attached to the cgroup itself
// (effective=false) or in force on it, ancestors' included (effective=true).
func (c *cgroup) attached(effective bool) ([]ebpf.ProgramID, error) {
	opts := link.QueryOptions{Target: c.fd(), Attach: ebpf.AttachCGroupDevice}
	if effective {
		opts.QueryFlags = unix.BPF_F_QUERY_EFFECTIVE
	}
	res, err := link.QueryPrograms(opts)
	if err != nil {
		if !privileged() {
			err = ErrPermission
		}
		return nil, fmt.Errorf("query device programs of %s: %w", c.dir, err)
	}
	ids := make([]ebpf.ProgramID, 0, len(res.Programs))
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids, nil
}

// ProgramRef describes a device program the kernel holds.
type ProgramRef struct {
	ID     uint32 `json:"id"`
	Name   string `json:"name"`
	Tag    string `json:"tag"`
	Owner  string `json:"owner"`            // "nsrun", "systemd" or ""
	Cgroup string `json:"cgroup,omitempty"` // where it is attached, when known
}

func describe(id ebpf.ProgramID) (ProgramRef, error) {
	ref := ProgramRef{ID: uint32(id)}
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ref, fmt.Errorf("open program %d: %w", id, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return ref, fmt.Errorf("read program %d: %w", id, err)
	}
	ref.Name, ref.Tag = info.Name, info.Tag
	switch info.Name {
	case ProgramName:
		ref.Owner = "nsrun"
	case "sd_devices": // systemd's name for its DevicePolicy= program (bpf-devices.c)
		ref.Owner = "systemd"
	}
	return ref, nil
}

// ours is nsrun's program on a cgroup with its rules map.
type ours struct {
	prog   *ebpf.Program
	id     ebpf.ProgramID
	rules  *ebpf.Map
	mapErr error // why a map of the program could not be opened
}

func (o *ours) Close() {
	o.prog.Close()
	if o.rules != nil {
		o.rules.Close()
	}
}

// findOurs opens nsrun's programs attached to c (normally one).
func findOurs(c *cgroup) ([]*ours, error) {
	ids, err := c.attached(false)
	if err != nil {
		return nil, err
	}
	var found []*ours
	for _, id := range ids {
		prog, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			// Not "not ours": a program that cannot be opened (no fd
			// left, say) cannot be told apart, and the caller must not
			// conclude that none is attached.
			closeAll(found)
			return nil, fmt.Errorf("open attached program %d: %w", id, err)
		}
		info, err := prog.Info()
		if err != nil {
			prog.Close()
			closeAll(found)
			return nil, fmt.Errorf("read attached program %d: %w", id, err)
		}
		if info.Name != ProgramName {
			prog.Close()
			continue
		}
		o := &ours{prog: prog, id: id}
		mapIDs, _ := info.MapIDs()
		for _, mid := range mapIDs {
			m, err := ebpf.NewMapFromID(mid)
			if err != nil {
				if o.mapErr == nil {
					o.mapErr = err
				}
				continue
			}
			mi, err := m.Info()
			if err == nil && mi.Name == rulesName && mi.Type == ebpf.Hash {
				o.rules = m
				break
			}
			if err != nil && o.mapErr == nil {
				o.mapErr = err
			}
			m.Close()
		}
		found = append(found, o)
	}
	return found, nil
}

func closeAll(os []*ours) {
	for _, o := range os {
		o.Close()
	}
}

func rulesSpec(n int) *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       rulesName,
		Type:       ebpf.Hash,
		KeySize:    keySize,
		ValueSize:  valueSize,
		MaxEntries: uint32(max(n, 1)),
	}
}

// readRules reads the table out of a rules map.
func readRules(m *ebpf.Map) (Table, error) {
	t := Table{}
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		p, err := unmarshalKey(k)
		if err != nil {
			return nil, err
		}
		verdict, err := unmarshalVerdict(v)
		if err != nil {
			return nil, err
		}
		t[p] = verdict
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read rules map: %w", err)
	}
	return t, nil
}

func (o *ours) table() (Table, error) {
	if o.rules == nil && o.mapErr != nil {
		// Out of fds, say: the map is there but could not be opened.
		return nil, fmt.Errorf("program %d: open its maps: %w", o.id, o.mapErr)
	}
	if o.rules == nil {
		return nil, fmt.Errorf("program %d has no %s map", o.id, rulesName)
	}
	return readRules(o.rules)
}

// load makes the rules map holding t and the program over it.
//
// The program refers to the rules map itself, not through an array of
// maps: putting a map into a map-in-map (BPF_MAP_UPDATE_ELEM) waits for an
// RCU grace period (maybe_wait_bpf_programs), 4 to 16 ms measured in the
// box, longer than systemd takes to make a scope when it has just made
// another, so nsrun waited for it before it could attach (bench/README.md).
// Nothing can run the program before it is attached, so no check ever sees
// the map half filled.
func load(t Table) (*ebpf.Program, *ebpf.Map, error) {
	rules, err := ebpf.NewMap(rulesSpec(len(t)))
	if err != nil {
		if !privileged() {
			err = fmt.Errorf("%w: %v", ErrPermission, err)
		}
		return nil, nil, fmt.Errorf("create rules map: %w", err)
	}
	for p, v := range t {
		if err := rules.Put(marshalKey(p), marshalVerdict(v)); err != nil {
			rules.Close()
			return nil, nil, fmt.Errorf("fill rules map: %w", err)
		}
	}
	insns := Instructions()
	if err := insns.AssociateMap(rulesName, rules); err != nil {
		rules.Close()
		return nil, nil, err
	}
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name:         ProgramName,
		Type:         ebpf.CGroupDevice,
		AttachType:   ebpf.AttachCGroupDevice,
		Instructions: insns,
		License:      "GPL",
	}, ebpf.ProgramOptions{})
	if err != nil {
		rules.Close()
		if !privileged() {
			err = fmt.Errorf("%w: %v", ErrPermission, err)
		}
		return nil, nil, fmt.Errorf("load device program: %w", err)
	}
	return prog, rules, nil
}

// Loaded is nsrun's device program loaded with a policy's rules, attached
// nowhere yet. Loading is the slow half of Attach (the library's feature
// probes, the map, the verifier: about a millisecond); it needs no cgroup,
// so a caller can load while it makes the cgroup, and attach when it is
// there.
type Loaded struct {
	prog  *ebpf.Program
	rules *ebpf.Map
	want  Table
}

// Load loads nsrun's device program with p's rules (see Loaded).
func Load(p *Policy) (*Loaded, error) {
	if p == nil {
		return nil, fmt.Errorf("load device program: no policy")
	}
	if p.Unprivileged {
		return nil, fmt.Errorf("load device program: an unprivileged policy is enforced by /dev, not a program")
	}
	want := NewTable(p.Rules)
	prog, rules, err := load(want)
	if err != nil {
		return nil, err
	}
	return &Loaded{prog: prog, rules: rules, want: want}, nil
}

// Close releases the program and its maps; an attached program stays in
// force on its cgroup (the kernel holds it).
func (l *Loaded) Close() {
	l.prog.Close()
	l.rules.Close()
}

// Attach puts p in force on the cgroup dir: it loads nsrun's device program
// with p's rules and attaches it (Load, then Loaded.Attach).
func Attach(dir string, p *Policy) error {
	l, err := Load(p)
	if err != nil {
		return fmt.Errorf("attach device program to %s: %w", dir, err)
	}
	defer l.Close()
	return l.Attach(dir)
}

// Attach attaches the loaded program to the cgroup dir with
// BPF_F_ALLOW_MULTI (a legacy attach: it lives as long as the cgroup, not as
// long as nsrun). A program of nsrun's already there is replaced in place
// (BPF_F_REPLACE), so programs never pile up. Afterwards it queries the
// cgroup (BPF_PROG_QUERY) and reads the rules back; unless exactly the new
// program holds exactly the policy's rules, it detaches what it attached
// and fails with ErrNotInForce. A Loaded is attached once.
func (l *Loaded) Attach(dir string) (retErr error) {
	c, err := openCgroup(dir, true)
	if err != nil {
		return fmt.Errorf("attach device program to %s: %w", dir, err)
	}
	defer c.Close()
	prog := l.prog
	old, err := findOurs(c)
	if err != nil {
		return fmt.Errorf("attach device program to %s: %w", dir, err)
	}
	defer closeAll(old)

	if len(old) > 0 {
		err = replace(c, old[0].prog, prog)
	} else {
		err = link.RawAttachProgram(link.RawAttachProgramOptions{
			Target:  c.fd(),
			Program: prog,
			Attach:  ebpf.AttachCGroupDevice,
			Flags:   unix.BPF_F_ALLOW_MULTI,
		})
	}
	if err != nil {
		return fmt.Errorf("attach device program to %s: %w", dir, err)
	}
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("attach device program to %s: %w", dir, err)
	}
	id, _ := info.ID()
	defer func() {
		if retErr != nil {
			_ = detach(c, prog)
		}
	}()
	// Stray programs of nsrun's (a crash between attach and replace could
	// leave two) go, so that exactly one holds the policy.
	for _, o := range old[min(1, len(old)):] {
		if err := detach(c, o.prog); err != nil {
			return fmt.Errorf("attach device program to %s: remove stray program %d: %w", dir, o.id, err)
		}
	}
	return verify(c, id, l.want)
}

// verify checks that program id is nsrun's only program on c, is in force
// there, and holds exactly want.
func verify(c *cgroup, id ebpf.ProgramID, want Table) error {
	effective, err := c.attached(true)
	if err != nil {
		return fmt.Errorf("%w on %s: %v", ErrNotInForce, c.dir, err)
	}
	if !slices.Contains(effective, id) {
		return fmt.Errorf("%w on %s: program %d is not among the effective programs %v", ErrNotInForce, c.dir, id, effective)
	}
	found, err := findOurs(c)
	if err != nil {
		return fmt.Errorf("%w on %s: %v", ErrNotInForce, c.dir, err)
	}
	defer closeAll(found)
	if len(found) != 1 || found[0].id != id {
		var ids []ebpf.ProgramID
		for _, o := range found {
			ids = append(ids, o.id)
		}
		return fmt.Errorf("%w on %s: want nsrun's program %d alone, found %v", ErrNotInForce, c.dir, id, ids)
	}
	got, err := found[0].table()
	if err != nil {
		return fmt.Errorf("%w on %s: %v", ErrNotInForce, c.dir, err)
	}
	if !tablesEqual(got, want) {
		return fmt.Errorf("%w on %s: the kernel holds %v, want %v", ErrNotInForce, c.dir, got.Entries(), want.Entries())
	}
	return nil
}

func tablesEqual(a, b Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func detach(c *cgroup, prog *ebpf.Program) error {
	return link.RawDetachProgram(link.RawDetachProgramOptions{
		Target:  c.fd(),
		Program: prog,
		Attach:  ebpf.AttachCGroupDevice,
	})
}

// Detach removes nsrun's device programs from the cgroup dir (for undoing a
// setup that failed after Attach; a removed cgroup drops them by itself).
func Detach(dir string) error {
	c, err := openCgroup(dir, true)
	if err != nil {
		return fmt.Errorf("detach device program from %s: %w", dir, err)
	}
	defer c.Close()
	found, err := findOurs(c)
	if err != nil {
		return fmt.Errorf("detach device program from %s: %w", dir, err)
	}
	defer closeAll(found)
	for _, o := range found {
		if err := detach(c, o.prog); err != nil {
			return fmt.Errorf("detach device program %d from %s: %w", o.id, dir, err)
		}
	}
	return nil
}

// Update changes the rules in force on the cgroup dir, live: it reads the
// rules back from the kernel, applies ops (Table.Apply), loads a new
// program over a new rules map and puts it in the old one's place in one
// BPF_PROG_ATTACH with BPF_F_REPLACE (the kernel swaps the cgroup's
// effective program array under RCU). A check sees either the old or the
// new rules, never a mix, and there is never a moment with no program. If
// the new rules cannot be read back as asked, the old program is put back.
// It returns the rules now in force, read back.
func Update(dir string, ops []Op) (Table, error) {
	c, err := openCgroup(dir, true)
	if err != nil {
		return nil, fmt.Errorf("update device policy of %s: %w", dir, err)
	}
	defer c.Close()
	found, err := findOurs(c)
	if err != nil {
		return nil, fmt.Errorf("update device policy of %s: %w", dir, err)
	}
	defer closeAll(found)
	if len(found) != 1 {
		return nil, fmt.Errorf("update device policy of %s: %w (found %d)", dir, ErrNoProgram, len(found))
	}
	o := found[0]
	t, err := o.table()
	if err != nil {
		return nil, fmt.Errorf("update device policy of %s: %w", dir, err)
	}
	for _, op := range ops {
		t.Apply(op)
	}
	prog, rules, err := load(t)
	if err != nil {
		return nil, fmt.Errorf("update device policy of %s: %w", dir, err)
	}
	defer prog.Close()
	defer rules.Close()
	if err := replace(c, o.prog, prog); err != nil {
		return nil, fmt.Errorf("update device policy of %s: swap programs: %w", dir, err)
	}
	info, err := prog.Info()
	if err == nil {
		id, _ := info.ID()
		err = verify(c, id, t)
	}
	if err != nil {
		if rerr := replace(c, prog, o.prog); rerr != nil {
			return nil, fmt.Errorf("update device policy of %s: %w (and putting program %d back: %v)", dir, err, o.id, rerr)
		}
		return nil, fmt.Errorf("update device policy of %s: %w (program %d put back)", dir, err, o.id)
	}
	return t, nil
}

// replace attaches prog to c in old's place (both nsrun's, legacy
// attachments with BPF_F_ALLOW_MULTI).
func replace(c *cgroup, old, prog *ebpf.Program) error {
	return link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  c.fd(),
		Program: prog,
		Attach:  ebpf.AttachCGroupDevice,
		Flags:   unix.BPF_F_ALLOW_MULTI,
		Anchor:  link.ReplaceProgram(old),
	})
}

// State is the device policy on a cgroup as the kernel reports it.
type State struct {
	Cgroup    string    `json:"cgroup"`
	Mechanism Mechanism `json:"mechanism"`
	// Program is nsrun's program on the cgroup, if any.
	Program *ProgramRef `json:"program,omitempty"`
	// Rules are read from the program's map.
	Rules []Entry `json:"rules"`
	// Path lists the device programs attached to the cgroup and to each
	// cgroup above it up to the root of the mount (nsrun's own included).
	Path []ProgramRef `json:"path"`
	// Effective lists every device program in force on the cgroup, also
	// those attached above the visible root (BPF_F_QUERY_EFFECTIVE). A
	// device is usable only if all of them allow it.
	Effective []ProgramRef `json:"effective"`
}

// Inspect reads the device policy in force on the cgroup dir from the
// kernel: nsrun's program and its rules, and the other device programs on
// the path up to the root (systemd's, from DevicePolicy=).
func Inspect(dir string) (*State, error) {
	c, err := openCgroup(dir, false)
	if err != nil {
		return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
	}
	defer c.Close()
	s := &State{Cgroup: dir, Mechanism: MechanismNone}
	found, err := findOurs(c)
	if err != nil {
		return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
	}
	defer closeAll(found)
	switch len(found) {
	case 0:
	case 1:
		ref, err := describe(found[0].id)
		if err != nil {
			return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
		}
		ref.Cgroup = dir
		s.Program = &ref
		t, err := found[0].table()
		if err != nil {
			return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
		}
		s.Rules = t.Entries()
		s.Mechanism = MechanismBPF
	default:
		return nil, fmt.Errorf("inspect device policy of %s: %d programs of nsrun's (want one)", dir, len(found))
	}
	eff, err := c.attached(true)
	if err != nil {
		return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
	}
	for _, id := range eff {
		ref, err := describe(id)
		if err != nil {
			return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
		}
		s.Effective = append(s.Effective, ref)
	}
	for d := dir; ; d = filepath.Dir(d) {
		pc, err := openCgroup(d, false)
		if err != nil {
			break // above the cgroup2 mount
		}
		ids, err := pc.attached(false)
		pc.Close()
		if err != nil {
			return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
		}
		for _, id := range ids {
			ref, err := describe(id)
			if err != nil {
				return nil, fmt.Errorf("inspect device policy of %s: %w", dir, err)
			}
			ref.Cgroup = d
			s.Path = append(s.Path, ref)
		}
		if d == "/" {
			break
		}
	}
	return s, nil
}
