package bpfdev

import (
	"fmt"
	"slices"
	"strings"
)

// Table is the policy as the kernel holds it: a hash map from a pattern to
// a verdict. The program looks a request up under at most eight patterns,
// most specific first (see lookupOrder), so the cost of a check does not
// grow with the number of rules. For each access bit, the first pattern
// whose verdict mentions it (allows or denies it) decides; a bit no pattern
// mentions is denied.
//
// A policy built from rules only allows, and then this is simply "allowed
// when any rule allows". Denies appear with live updates (Apply), which
// keep the rule "the last change decides every device it names".
type Table map[Pattern]Verdict

// Verdict is what one pattern decides. Allow and Deny never share a bit.
type Verdict struct {
	Allow Access
	Deny  Access
}

// Entry is one pattern of a table and its verdict.
type Entry struct {
	Pattern
	Verdict
}

// String gives "c 195:* rw" for an allow, "c 195:0 !w" for a deny, and
// "c 195:0 r !w" for both.
func (e Entry) String() string {
	var parts []string
	if e.Allow != 0 {
		parts = append(parts, e.Allow.String())
	}
	if e.Deny != 0 {
		parts = append(parts, "!"+e.Deny.String())
	}
	return e.Pattern.String() + " " + strings.Join(parts, " ")
}

// NewTable makes the table of a list of rules.
func NewTable(rules []Rule) Table {
	t := Table{}
	for _, r := range rules {
		v := t[r.Pattern]
		v.Allow |= r.Access
		t[r.Pattern] = v
	}
	return t
}

// Entries lists the table in Normalise's order.
func (t Table) Entries() []Entry {
	out := make([]Entry, 0, len(t))
	for p, v := range t {
		out = append(out, Entry{Pattern: p, Verdict: v})
	}
	slices.SortFunc(out, func(a, b Entry) int { return comparePattern(a.Pattern, b.Pattern) })
	return out
}

// Clone copies t.
func (t Table) Clone() Table {
	c := make(Table, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}

// shapes are the eight kinds of pattern, most specific first: the lookup
// order of the program. A pattern that contains another always comes later,
// so a narrower pattern is always consulted first.
var shapes = [8]struct {
	all, anyMajor, anyMinor bool
}{
	{false, false, false}, {false, false, true}, {false, true, false}, {false, true, true},
	{true, false, false}, {true, false, true}, {true, true, false}, {true, true, true},
}

func shapeOf(p Pattern) int {
	i := 0
	if p.Type == All {
		i += 4
	}
	if p.Major == Any {
		i += 2
	}
	if p.Minor == Any {
		i++
	}
	return i
}

// lookupOrder lists the patterns the program consults for a device, in
// order.
func lookupOrder(t Type, major, minor uint32) [8]Pattern {
	var out [8]Pattern
	for i, s := range shapes {
		p := Pattern{Type: t, Major: major, Minor: minor}
		if s.all {
			p.Type = All
		}
		if s.anyMajor {
			p.Major = Any
		}
		if s.anyMinor {
			p.Minor = Any
		}
		out[i] = p
	}
	return out
}

// Check decides a request the way the program does.
func (t Table) Check(typ Type, major, minor uint32, want Access) bool {
	var allowed, decided Access
	for _, p := range lookupOrder(typ, major, minor) {
		v, ok := t[p]
		if !ok {
			continue
		}
		allowed |= v.Allow &^ decided
		decided |= v.Allow | v.Deny
		if want&decided == want {
			break
		}
	}
	return want&allowed == want
}

// Op is one live change: allow or deny Access on a Pattern.
type Op struct {
	Rule
	Deny bool
}

// String gives "allow c 1:3 rw" or "deny c 1:3 w".
func (o Op) String() string {
	if o.Deny {
		return "deny " + o.Rule.String()
	}
	return "allow " + o.Rule.String()
}

// Apply changes t so that afterwards the op decides o.Access on every
// device of o.Pattern, and nothing else changes:
//   - narrower patterns stop deciding those bits (the op's pattern is
//     consulted after them);
//   - a pattern that overlaps only partly and is consulted first gets an
//     entry for the common part, carrying the op's verdict;
//   - broader patterns are consulted after the op's and need nothing.
func (t Table) Apply(o Op) {
	if o.Access == 0 {
		return
	}
	p := o.Pattern
	var cuts []Pattern
	for k, v := range t {
		if k == p {
			continue
		}
		common, ok := k.overlap(p)
		switch {
		case !ok:
		case common == k: // k is inside p
			v.Allow &^= o.Access
			v.Deny &^= o.Access
			t.set(k, v)
		case common == p: // p is inside k: p is consulted first
		case shapeOf(k) < shapeOf(p) && (v.Allow|v.Deny)&o.Access != 0:
			cuts = append(cuts, common)
		}
	}
	for _, k := range append(cuts, p) {
		v := t[k]
		if o.Deny {
			v.Allow &^= o.Access
			v.Deny |= o.Access
		} else {
			v.Deny &^= o.Access
			v.Allow |= o.Access
		}
		t.set(k, v)
	}
}

func (t Table) set(k Pattern, v Verdict) {
	if v.Allow == 0 && v.Deny == 0 {
		delete(t, k)
		return
	}
	t[k] = v
}

// ParseOp reads a live change: a rule in the numeric form and whether it
// denies.
func ParseOp(s string, deny bool) (Op, error) {
	r, err := ParseNumeric(s)
	if err != nil {
		return Op{}, err
	}
	if r.Access == 0 {
		return Op{}, fmt.Errorf("device rule %q: no access", s)
	}
	return Op{Rule: r, Deny: deny}, nil
}
