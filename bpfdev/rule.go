package bpfdev

import (
	"fmt"
	"strconv"
	"strings"
)

// Access is a set of device accesses, with the kernel's bit values
// (BPF_DEVCG_ACC_MKNOD, _READ, _WRITE in include/uapi/linux/bpf.h).
type Access uint8

// The accesses a rule can grant.
const (
	Mknod Access = 1
	Read  Access = 2
	Write Access = 4

	allAccess = Mknod | Read | Write
)

// ParseAccess reads systemd's access letters: a non-empty combination of r,
// w and m, each at most once.
func ParseAccess(s string) (Access, error) {
	if s == "" {
		return 0, fmt.Errorf("empty access (want a combination of r, w, m)")
	}
	var a Access
	for _, c := range s {
		var bit Access
		switch c {
		case 'r':
			bit = Read
		case 'w':
			bit = Write
		case 'm':
			bit = Mknod
		default:
			return 0, fmt.Errorf("access %q: %q is not r, w or m", s, c)
		}
		if a&bit != 0 {
			return 0, fmt.Errorf("access %q: %q given twice", s, c)
		}
		a |= bit
	}
	return a, nil
}

// String gives the letters in the order r, w, m; "-" for no access.
func (a Access) String() string {
	var b strings.Builder
	if a&Read != 0 {
		b.WriteByte('r')
	}
	if a&Write != 0 {
		b.WriteByte('w')
	}
	if a&Mknod != 0 {
		b.WriteByte('m')
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// Type is a device type with the kernel's values (BPF_DEVCG_DEV_BLOCK,
// _CHAR); All matches both and never occurs in a request.
type Type uint8

// Device types.
const (
	All   Type = 0
	Block Type = 1
	Char  Type = 2
)

// Letter is the type as in a rule: c, b or a.
func (t Type) Letter() string {
	switch t {
	case Block:
		return "b"
	case Char:
		return "c"
	case All:
		return "a"
	}
	return "?" + strconv.Itoa(int(t))
}

// Any is the wildcard major or minor ("*"). The kernel's device numbers stay
// far below it (12-bit majors, 20-bit minors).
const Any = ^uint32(0)

// Highest device numbers the kernel can make (MINORBITS 20 in
// include/linux/kdev_t.h; majors fill the remaining 12 bits of dev_t).
const (
	MaxMajor = 1<<12 - 1
	MaxMinor = 1<<20 - 1
)

// Pattern names a set of devices: a type (or All) and a major and minor
// number, each of which may be Any.
type Pattern struct {
	Type  Type
	Major uint32
	Minor uint32
}

func num(n uint32) string {
	if n == Any {
		return "*"
	}
	return strconv.FormatUint(uint64(n), 10)
}

// String gives the pattern in the numeric rule form: "c 195:*".
func (p Pattern) String() string { return p.Type.Letter() + " " + num(p.Major) + ":" + num(p.Minor) }

// Contains tells whether every device of q is one of p's.
func (p Pattern) Contains(q Pattern) bool {
	return (p.Type == All || p.Type == q.Type) &&
		(p.Major == Any || p.Major == q.Major) &&
		(p.Minor == Any || p.Minor == q.Minor)
}

// overlap returns the devices p and q have in common, if any.
func (p Pattern) overlap(q Pattern) (Pattern, bool) {
	var r Pattern
	switch {
	case p.Type == q.Type || q.Type == All:
		r.Type = p.Type
	case p.Type == All:
		r.Type = q.Type
	default:
		return r, false
	}
	var ok bool
	if r.Major, ok = meet(p.Major, q.Major); !ok {
		return r, false
	}
	if r.Minor, ok = meet(p.Minor, q.Minor); !ok {
		return r, false
	}
	return r, true
}

func meet(a, b uint32) (uint32, bool) {
	switch {
	case a == b || b == Any:
		return a, true
	case a == Any:
		return b, true
	}
	return 0, false
}

// Rule allows Access to the devices of a Pattern.
type Rule struct {
	Pattern
	Access Access
}

// String gives the rule in the numeric form: "c 195:* rw".
func (r Rule) String() string { return r.Pattern.String() + " " + r.Access.String() }

// ParseNumeric reads the numeric rule form "TYPE MAJOR:MINOR [ACCESS]": TYPE
// is c, b or a, MAJOR and MINOR a number or "*", ACCESS defaults to rw.
// "a" stands for "a *:*" as in cgroup v1's devices.allow.
func ParseNumeric(s string) (Rule, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Rule{}, fmt.Errorf("empty device rule")
	}
	var r Rule
	switch f[0] {
	case "c":
		r.Type = Char
	case "b":
		r.Type = Block
	case "a":
		r.Type = All
	default:
		return Rule{}, fmt.Errorf("device rule %q: type %q is not c, b or a", s, f[0])
	}
	rest := f[1:]
	if r.Type == All && (len(rest) == 0 || !strings.Contains(rest[0], ":")) {
		r.Major, r.Minor = Any, Any
	} else {
		if len(rest) == 0 {
			return Rule{}, fmt.Errorf("device rule %q: want MAJOR:MINOR after the type", s)
		}
		maj, min, ok := strings.Cut(rest[0], ":")
		if !ok {
			return Rule{}, fmt.Errorf("device rule %q: %q is not MAJOR:MINOR", s, rest[0])
		}
		var err error
		if r.Major, err = parseNum(maj, MaxMajor); err != nil {
			return Rule{}, fmt.Errorf("device rule %q: major: %w", s, err)
		}
		if r.Minor, err = parseNum(min, MaxMinor); err != nil {
			return Rule{}, fmt.Errorf("device rule %q: minor: %w", s, err)
		}
		rest = rest[1:]
	}
	acc, err := accessField(s, rest)
	if err != nil {
		return Rule{}, err
	}
	r.Access = acc
	return r, nil
}

func accessField(s string, rest []string) (Access, error) {
	switch len(rest) {
	case 0:
		return Read | Write, nil
	case 1:
		a, err := ParseAccess(rest[0])
		if err != nil {
			return 0, fmt.Errorf("device rule %q: %w", s, err)
		}
		return a, nil
	}
	return 0, fmt.Errorf("device rule %q: unexpected %q after the access", s, strings.Join(rest[1:], " "))
}

func parseNum(s string, max uint64) (uint32, error) {
	if s == "*" {
		return Any, nil
	}
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number or *", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("%s is above the kernel's limit %d", s, max)
	}
	return uint32(n), nil
}
