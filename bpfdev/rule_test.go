package bpfdev

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestParseNumeric(t *testing.T) {
	good := map[string]string{
		"c 195:* rw":       "c 195:* rw",
		"b 7:0 r":          "b 7:0 r",
		"a *:* rwm":        "a *:* rwm",
		"a":                "a *:* rw",
		"a rwm":            "a *:* rwm",
		"c 1:3":            "c 1:3 rw",
		"  c   1:3   mwr":  "c 1:3 rwm",
		"c *:5 w":          "c *:5 w",
		"b 4095:1048575 r": "b 4095:1048575 r",
		"c 007:0 r":        "c 7:0 r",
	}
	for in, want := range good {
		r, err := ParseNumeric(in)
		if err != nil {
			t.Errorf("ParseNumeric(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseNumeric(%q) = %q, want %q", in, r, want)
		}
	}
	bad := []string{
		"", "x 1:3 r", "c", "c 1 r", "c 1:3 rwz", "c 1:3 rr", "c 1:3 r w",
		"c -1:3 r", "c 1:-3 r", "c 4096:0 r", "c 1:1048576 r", "c 4294967295:0 r",
		"c 99999999999999999999:0 r", "c 1*:0 r", "c *1:0 r", "c :0 r", "c 1: r",
		"c 0x10:0 r", "c +1:0 r", "c 1:3 ", "C 1:3 r", "c 1:3 -",
	}
	for _, in := range bad {
		if in == "c 1:3 " {
			continue // trailing blanks are fine: same as "c 1:3"
		}
		if r, err := ParseNumeric(in); err == nil {
			t.Errorf("ParseNumeric(%q) = %q, want an error", in, r)
		}
	}
}

func TestParseDeviceAndRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		dev  bool // --device, else --device-rule
		want string
	}{
		{"/dev/kvm", true, "path /dev/kvm rw indev"},
		{"/dev/kvm:rwm", true, "path /dev/kvm rwm indev"},
		{"/dev/net/tun:r", true, "path /dev/net/tun r indev"},
		{"/dev/kvm rw", false, "path /dev/kvm rw"},
		{"/dev/kvm", false, "path /dev/kvm rw"},
		{"/run/systemd/inaccessible/chr rwm", false, "path /run/systemd/inaccessible/chr rwm"},
		{"char-pts rw", false, "group c pts rw"},
		{"block-loop r", false, "group b loop r"},
		{"char-nvidia*", false, "group c nvidia* rw"},
		{"c 195:* rw", false, "numeric c 195:* rw"},
	} {
		var it Item
		var err error
		if tc.dev {
			it, err = ParseDevice(tc.in)
		} else {
			it, err = ParseRule(tc.in)
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := itemString(it); got != tc.want {
			t.Errorf("%q = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{"", "dev/kvm", "/dev/../etc/kvm", "/dev/kvm/", "/etc/passwd", "/dev/kvm:x", "/dev/kvm:", "/dev/kvm:rr", "/dev"} {
		if it, err := ParseDevice(in); err == nil {
			t.Errorf("ParseDevice(%q) = %q, want an error", in, itemString(it))
		}
	}
	for _, in := range []string{"", "char-", "block-", "char-pts rx", "char-[ rw", "/dev//kvm rw", "/dev/kvm rw m", "tty rw", "char-pts rw extra"} {
		if it, err := ParseRule(in); err == nil {
			t.Errorf("ParseRule(%q) = %q, want an error", in, itemString(it))
		}
	}
}

func itemString(it Item) string {
	var s string
	switch it.Kind {
	case KindPath:
		s = "path " + it.Path + " " + it.Access.String()
	case KindGroup:
		s = "group " + it.Type.Letter() + " " + it.Group + " " + it.Access.String()
	case KindNumeric:
		s = "numeric " + it.Rule.String()
	case KindSet:
		s = "set " + it.Set
	}
	if it.InDev {
		s += " indev"
	}
	return s
}

func TestSpecParse(t *testing.T) {
	req, err := Spec{}.Parse()
	if err != nil || !req.Empty() {
		t.Fatalf("empty spec: %v %+v, want an empty request", err, req)
	}
	req, err = Spec{Devices: []string{"/dev/kvm"}}.Parse()
	if err != nil || req.Mode != Closed {
		t.Fatalf("--device without a policy: %v mode %v, want closed", err, req.Mode)
	}
	req, err = Spec{Mode: "strict"}.Parse()
	if err != nil || req.Mode != Strict || req.Empty() {
		t.Fatalf("strict alone: %v %+v, want a strict request that allows nothing", err, req)
	}
	for _, s := range []Spec{
		{Mode: "open"}, {Sets: []string{"gpu"}}, {Devices: []string{"kvm"}}, {Rules: []string{"char-"}},
	} {
		if _, err := s.Parse(); err == nil {
			t.Errorf("%+v: parsed, want an error", s)
		}
	}
}

// fakeSystem is a /dev and /proc/devices for the pure resolver tests.
type fakeSystem struct {
	nodes    map[string]NodeStat
	devices  string
	writable map[string]bool
}

func (f fakeSystem) Lstat(p string) (NodeStat, error) {
	if st, ok := f.nodes[p]; ok {
		return st, nil
	}
	return NodeStat{}, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
}

func (f fakeSystem) Glob(pattern string) ([]string, error) {
	var out []string
	for p := range f.nodes {
		if ok, _ := path.Match(pattern, p); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f fakeSystem) ProcDevices() ([]byte, error) { return []byte(f.devices), nil }

func (f fakeSystem) Permits(p string) Access {
	if f.writable[p] {
		return Read | Write
	}
	return Read
}

func chr(maj, min uint32) NodeStat {
	return NodeStat{Mode: fs.ModeDevice | fs.ModeCharDevice, Major: maj, Minor: min}
}

func blk(maj, min uint32) NodeStat { return NodeStat{Mode: fs.ModeDevice, Major: maj, Minor: min} }

var testSystem = fakeSystem{
	nodes: map[string]NodeStat{
		"/dev/null": chr(1, 3), "/dev/zero": chr(1, 5), "/dev/full": chr(1, 7),
		"/dev/random": chr(1, 8), "/dev/urandom": chr(1, 9), "/dev/tty": chr(5, 0),
		"/dev/ptmx": chr(5, 2), "/dev/kvm": chr(10, 232), "/dev/fuse": chr(10, 229),
		"/dev/net/tun": chr(10, 200), "/dev/loop0": blk(7, 0), "/dev/kmsg": chr(1, 11),
		"/dev/dri/card0": chr(226, 0), "/dev/dri/renderD128": chr(226, 128),
		"/dev/dri/by-path":             {Mode: fs.ModeDir},
		"/dev/nvidia0":                 chr(195, 0),
		"/dev/nvidia1":                 chr(195, 1),
		"/dev/nvidiactl":               chr(195, 255),
		"/dev/nvidia-uvm":              chr(508, 0),
		"/dev/nvidia-caps":             {Mode: fs.ModeDir},
		"/dev/stdout":                  {Mode: fs.ModeSymlink},
		"/dev/nvidia-caps/nvidia-cap1": chr(509, 1),
		"/etc/passwd":                  {},
	},
	devices: "Character devices:\n  1 mem\n  5 /dev/tty\n 10 misc\n136 pts\n195 nvidia-frontend\n226 drm\n508 nvidia-uvm\n509 nvidia-caps\n\nBlock devices:\n  7 loop\n259 blkext\n",
	writable: map[string]bool{
		"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true,
		"/dev/urandom": true, "/dev/tty": true, "/dev/ptmx": true, "/dev/kvm": true,
	},
}

// TestResolveGolden resolves representative requests against testSystem and
// compares the policy and the map the kernel would get with testdata.
func TestResolveGolden(t *testing.T) {
	cases := []struct {
		name         string
		spec         Spec
		unprivileged bool
	}{
		{"closed", Spec{Mode: "closed"}, false},
		{"strict-empty", Spec{Mode: "strict"}, false},
		{"kvm", Spec{Devices: []string{"/dev/kvm"}}, false},
		{"strict-readonly-loop", Spec{Mode: "strict", Rules: []string{"/dev/loop0 r", "b 7:* r"}}, false},
		{"groups", Spec{Mode: "strict", Rules: []string{"char-nvidia* rw", "block-loop rwm", "char-drm r"}}, false},
		{"wildcards", Spec{Mode: "strict", Rules: []string{"c 1:* r", "c 1:3 w", "a *:* m", "c *:5 w"}}, false},
		{"sets", Spec{Sets: []string{"kvm", "fuse", "tun", "dri", "nvidia"}}, false},
		{"unprivileged-closed-kvm", Spec{Devices: []string{"/dev/kvm"}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := tc.spec.Parse()
			if err != nil {
				t.Fatal(err)
			}
			pol, err := Resolve(req, testSystem, tc.unprivileged)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "policy-"+tc.name, describePolicy(pol))
		})
	}
}

func describePolicy(p *Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s, mechanism %s, devpts %v\n", p.Mode, p.Mechanism(), p.DevPts)
	b.WriteString("rules:\n")
	for _, r := range p.Rules {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	b.WriteString("nodes:\n")
	for _, n := range p.Nodes {
		fmt.Fprintf(&b, "  %s %s %d:%d %s\n", n.Path, n.Type.Letter(), n.Major, n.Minor, n.Access)
	}
	b.WriteString("map (key type major minor -> allow deny):\n")
	for _, e := range NewTable(p.Rules).Entries() {
		fmt.Fprintf(&b, "  %x -> %x\n", marshalKey(e.Pattern), marshalVerdict(e.Verdict))
	}
	return b.String()
}

func TestResolveRefuses(t *testing.T) {
	for _, tc := range []struct {
		spec         Spec
		unprivileged bool
		want         error // nil: any error
	}{
		{Spec{Devices: []string{"/dev/nonexistent"}}, false, ErrUnresolved},
		{Spec{Rules: []string{"/etc/passwd rw"}}, false, ErrUnresolved},
		{Spec{Rules: []string{"char-doesnotexist rw"}}, false, ErrUnresolved},
		{Spec{Rules: []string{"block-pts rw"}}, false, ErrUnresolved},
		{Spec{Devices: []string{"/dev/stdout"}}, false, nil},
		{Spec{Sets: []string{"nvidia"}}, false, nil}, // passes: see below for a missing one
		{Spec{Rules: []string{"c 195:* rw"}}, true, ErrInexpressible},
		{Spec{Rules: []string{"c 1:3 rw"}}, true, ErrInexpressible},
		{Spec{Rules: []string{"a"}}, true, ErrInexpressible},
		{Spec{Rules: []string{"char-drm rw"}}, true, ErrInexpressible},
		{Spec{Rules: []string{"char-pts rwm"}}, true, ErrInexpressible},
		{Spec{Devices: []string{"/dev/kvm:rwm"}}, true, ErrInexpressible},
		{Spec{Devices: []string{"/dev/kvm:r"}}, true, ErrInexpressible},
		{Spec{Rules: []string{"/run/x rw"}}, true, nil},
	} {
		if tc.spec.Sets != nil && tc.spec.Sets[0] == "nvidia" {
			continue
		}
		req, err := tc.spec.Parse()
		if err != nil {
			t.Errorf("%+v: parse: %v", tc.spec, err)
			continue
		}
		pol, err := Resolve(req, testSystem, tc.unprivileged)
		if err == nil {
			t.Errorf("%+v (unprivileged %v): resolved to %+v, want an error", tc.spec, tc.unprivileged, pol)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.spec, err, tc.want)
		}
	}
	// A set whose required node is missing is an error, never a partial set.
	sys := fakeSystem{nodes: map[string]NodeStat{"/dev/nvidia0": chr(195, 0), "/dev/nvidiactl": chr(195, 255)}}
	req, _ := Spec{Sets: []string{"nvidia"}}.Parse()
	if _, err := Resolve(req, sys, false); !errors.Is(err, ErrUnresolved) {
		t.Errorf("nvidia without nvidia-uvm: %v, want ErrUnresolved", err)
	}
}

func TestNothingRequested(t *testing.T) {
	pol, err := Spec{Mode: "auto"}.Policy(false)
	if err != nil || pol != nil {
		t.Fatalf("auto and nothing asked: %+v, %v; want no policy", pol, err)
	}
}

func TestProgramGolden(t *testing.T) {
	golden(t, "program", fmt.Sprintf("%v", Instructions()))
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", name, file, got, want)
	}
}

// FuzzParse: the parsers never panic, and what they accept prints back to
// something that parses to the same thing.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"c 195:* rw", "b 7:0 r", "a *:* rwm", "a", "/dev/kvm rw", "char-pts rw", "block-loop r", "c *:5", "/dev/kvm:rwm", "c 4095:1048575 m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseNumeric(s); err == nil {
			if r.Access == 0 || r.Access&^allAccess != 0 {
				t.Fatalf("ParseNumeric(%q) gave access %v", s, r.Access)
			}
			if (r.Major != Any && r.Major > MaxMajor) || (r.Minor != Any && r.Minor > MaxMinor) {
				t.Fatalf("ParseNumeric(%q) = %v beyond the kernel's numbers", s, r)
			}
			back, err := ParseNumeric(r.String())
			if err != nil || back != r {
				t.Fatalf("ParseNumeric(%q) = %v, which parses back to %v, %v", s, r, back, err)
			}
		}
		if it, err := ParseRule(s); err == nil && it.Kind == KindPath && filepath.Clean(it.Path) != it.Path {
			t.Fatalf("ParseRule(%q) accepted unclean path %q", s, it.Path)
		}
		if it, err := ParseDevice(s); err == nil && !strings.HasPrefix(it.Path, "/dev/") {
			t.Fatalf("ParseDevice(%q) accepted %q outside /dev", s, it.Path)
		}
		if a, err := ParseAccess(s); err == nil {
			if back, err := ParseAccess(a.String()); err != nil || back != a {
				t.Fatalf("ParseAccess(%q) = %v, parses back to %v, %v", s, a, back, err)
			}
		}
		rules := []Rule{}
		for _, part := range strings.Split(s, ";") {
			if r, err := ParseNumeric(part); err == nil {
				rules = append(rules, r)
			}
		}
		n := Normalise(rules)
		if m := Normalise(n); fmt.Sprint(m) != fmt.Sprint(n) {
			t.Fatalf("Normalise is not idempotent: %v then %v", n, m)
		}
		tab := NewTable(rules)
		for _, r := range rules {
			if !tab.Check(concrete(r.Pattern, Char), concreteNum(r.Major), concreteNum(r.Minor), r.Access) &&
				r.Type != Block {
				t.Fatalf("rules %v: a device of %v is denied %v", rules, r, r.Access)
			}
		}
	})
}

func concrete(p Pattern, def Type) Type {
	if p.Type == All {
		return def
	}
	return p.Type
}

func concreteNum(n uint32) uint32 {
	if n == Any {
		return 3
	}
	return n
}
