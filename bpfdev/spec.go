package bpfdev

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// Mode is the device policy (--device-policy).
type Mode int

// Device policies.
const (
	// Auto: no device policy unless a device is asked for; then Closed.
	Auto Mode = iota
	// Closed: the pseudo devices (null, zero, full, random, urandom, tty,
	// ptmx, pts) and what is listed.
	Closed
	// Strict: only what is listed.
	Strict
)

// ParseMode reads a --device-policy value.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "closed":
		return Closed, nil
	case "strict":
		return Strict, nil
	}
	return Auto, fmt.Errorf("device policy %q: want auto, closed or strict", s)
}

func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case Closed:
		return "closed"
	case Strict:
		return "strict"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Spec is a device request as the user gave it on the command line.
type Spec struct {
	Mode    string   // --device-policy
	Devices []string // --device=PATH[:rwm]
	Rules   []string // --device-rule=RULE
	Sets    []string // --device-set=NAME
}

// Kind tells what an Item names.
type Kind int

// Item kinds.
const (
	// KindPath: a device node by path.
	KindPath Kind = iota
	// KindGroup: every major of a char-/block- group of /proc/devices.
	KindGroup
	// KindNumeric: a numeric rule ("c 195:* rw").
	KindNumeric
	// KindSet: a named device set.
	KindSet
)

// Item is one requested device rule, parsed but not yet resolved against
// the system.
type Item struct {
	Kind   Kind
	Source string // the flag and value it came from, for messages
	Path   string // KindPath
	Group  string // KindGroup: a /proc/devices name, possibly a glob
	Type   Type   // KindGroup: Char or Block
	Rule   Rule   // KindNumeric
	Set    string // KindSet
	Access Access // KindPath, KindGroup
	// InDev: the node must be present in the sandbox /dev (--device).
	InDev bool
}

// Request is a parsed Spec.
type Request struct {
	Mode  Mode
	Items []Item
}

// Empty tells whether nothing was asked for: no policy at all.
func (r *Request) Empty() bool { return r.Mode == Auto && len(r.Items) == 0 }

// Parse checks the syntax of every value; it reads nothing from the system.
func (s Spec) Parse() (*Request, error) {
	mode, err := ParseMode(s.Mode)
	if err != nil {
		return nil, fmt.Errorf("--device-policy: %w", err)
	}
	req := &Request{Mode: mode}
	for _, d := range s.Devices {
		it, err := ParseDevice(d)
		if err != nil {
			return nil, fmt.Errorf("--device %q: %w", d, err)
		}
		req.Items = append(req.Items, it)
	}
	for _, r := range s.Rules {
		it, err := ParseRule(r)
		if err != nil {
			return nil, fmt.Errorf("--device-rule %q: %w", r, err)
		}
		req.Items = append(req.Items, it)
	}
	for _, name := range s.Sets {
		if _, ok := deviceSets[name]; !ok {
			return nil, fmt.Errorf("--device-set %q: unknown set (known: %s)", name, strings.Join(SetNames(), ", "))
		}
		req.Items = append(req.Items, Item{Kind: KindSet, Set: name, Source: "--device-set " + name})
	}
	if req.Mode == Auto && len(req.Items) > 0 {
		req.Mode = Closed // any device request implies closed
	}
	return req, nil
}

// ParseDevice reads a --device value: PATH[:ACCESS], PATH a device node
// below /dev, ACCESS letters of r, w, m (default rw).
func ParseDevice(s string) (Item, error) {
	p, acc := s, Read|Write
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		a, err := ParseAccess(s[i+1:])
		if err != nil {
			return Item{}, err
		}
		p, acc = s[:i], a
	}
	if err := checkPath(p); err != nil {
		return Item{}, err
	}
	if !strings.HasPrefix(p, "/dev/") {
		return Item{}, fmt.Errorf("%s is not below /dev (the node is placed at the same path in the sandbox /dev)", p)
	}
	return Item{Kind: KindPath, Path: p, Access: acc, InDev: true, Source: "--device " + s}, nil
}

// ParseRule reads a --device-rule value in one of systemd's DeviceAllow=
// forms ("/dev/kvm rw", "char-pts rw", "block-loop r") or the numeric form
// ("c 195:* rw", "b 7:0 r", "a *:* rwm"). A missing ACCESS means rw (systemd
// would give rwm: nsrun grants mknod only when asked).
func ParseRule(s string) (Item, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Item{}, fmt.Errorf("empty device rule")
	}
	src := "--device-rule " + s
	switch {
	case strings.HasPrefix(f[0], "/"):
		if err := checkPath(f[0]); err != nil {
			return Item{}, err
		}
		acc, err := accessField(s, f[1:])
		if err != nil {
			return Item{}, err
		}
		return Item{Kind: KindPath, Path: f[0], Access: acc, Source: src}, nil
	case strings.HasPrefix(f[0], "char-"), strings.HasPrefix(f[0], "block-"):
		kind, name, _ := strings.Cut(f[0], "-")
		t := Char
		if kind == "block" {
			t = Block
		}
		if name == "" {
			return Item{}, fmt.Errorf("device rule %q: no group name after %q", s, kind+"-")
		}
		if _, err := path.Match(name, ""); err != nil {
			return Item{}, fmt.Errorf("device rule %q: bad group pattern %q", s, name)
		}
		acc, err := accessField(s, f[1:])
		if err != nil {
			return Item{}, err
		}
		return Item{Kind: KindGroup, Group: name, Type: t, Access: acc, Source: src}, nil
	}
	r, err := ParseNumeric(s)
	if err != nil {
		return Item{}, err
	}
	return Item{Kind: KindNumeric, Rule: r, Source: src}, nil
}

func checkPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty device path")
	case !filepath.IsAbs(p):
		return fmt.Errorf("device path %q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("device path %q is not clean (want %q)", p, filepath.Clean(p))
	case strings.ContainsAny(p, " \t\n\x00"):
		return fmt.Errorf("device path %q contains whitespace or NUL", p)
	}
	return nil
}
