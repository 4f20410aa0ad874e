package bpfdev

import (
	"testing"
)

// The reference model of live updates: every device of a small universe
// with the accesses it has. A sequence of ops applied to a Table must give
// the same answers as the same ops applied cell by cell ("the last change
// decides every device it names").
var (
	universeTypes  = []Type{Char, Block}
	universeNums   = []uint32{0, 1, 2}
	universePatNum = []uint32{0, 1, 2, Any}
	universePatTyp = []Type{Char, Block, All}
)

type cell struct {
	t            Type
	major, minor uint32
}

type model map[cell]Access

func (m model) apply(o Op) {
	for _, t := range universeTypes {
		for _, maj := range universeNums {
			for _, min := range universeNums {
				c := cell{t, maj, min}
				if !o.Pattern.Contains(Pattern{t, maj, min}) {
					continue
				}
				if o.Deny {
					m[c] &^= o.Access
				} else {
					m[c] |= o.Access
				}
			}
		}
	}
}

// opFromByte picks one op of the universe from two bytes.
func opFromBytes(a, b byte) Op {
	return Op{
		Rule: Rule{
			Pattern: Pattern{
				Type:  universePatTyp[int(a)%3],
				Major: universePatNum[int(a/3)%4],
				Minor: universePatNum[int(a/12)%4],
			},
			Access: Access(b%7) + 1,
		},
		Deny: b&0x80 != 0,
	}
}

func compare(t *testing.T, tab Table, m model, ops []Op) {
	t.Helper()
	for _, typ := range universeTypes {
		for _, maj := range universeNums {
			for _, min := range universeNums {
				have := m[cell{typ, maj, min}]
				for _, bit := range []Access{Read, Write, Mknod} {
					want := have&bit != 0
					if got := tab.Check(typ, maj, min, bit); got != want {
						t.Fatalf("after %v: %s %d:%d %v: table says %v, model %v\ntable: %v",
							ops, typ.Letter(), maj, min, bit, got, want, tab.Entries())
					}
				}
				// A request of several bits is allowed only if each is.
				if got := tab.Check(typ, maj, min, Read|Write); got != (have&(Read|Write) == Read|Write) {
					t.Fatalf("after %v: %s %d:%d rw: table says %v, model %v", ops, typ.Letter(), maj, min, got, have)
				}
			}
		}
	}
	for p, v := range tab {
		if v.Allow&v.Deny != 0 || v.Allow|v.Deny == 0 {
			t.Fatalf("after %v: malformed entry %v", ops, Entry{p, v})
		}
	}
}

func TestApplyExamples(t *testing.T) {
	tab := NewTable([]Rule{{Pattern{Char, 195, Any}, Read | Write}})
	tab.Apply(Op{Rule: Rule{Pattern{Char, 195, 0}, Write}, Deny: true})
	if !tab.Check(Char, 195, 1, Write) || tab.Check(Char, 195, 0, Write) || !tab.Check(Char, 195, 0, Read) {
		t.Fatalf("deny one node under a wildcard: %v", tab.Entries())
	}
	tab.Apply(Op{Rule: Rule{Pattern{Char, 195, Any}, Write}})
	if !tab.Check(Char, 195, 0, Write) {
		t.Fatalf("allowing the wildcard again must win over the older deny: %v", tab.Entries())
	}
	if len(tab) != 1 {
		t.Fatalf("the older deny should be gone: %v", tab.Entries())
	}
	// Partial overlap: c *:5 is consulted after c 1:*, so denying it needs
	// an entry for c 1:5.
	tab = NewTable([]Rule{{Pattern{Char, 1, Any}, Read | Write}})
	tab.Apply(Op{Rule: Rule{Pattern{Char, Any, 5}, Write}, Deny: true})
	if tab.Check(Char, 1, 5, Write) || !tab.Check(Char, 1, 3, Write) {
		t.Fatalf("deny c *:5 w: %v", tab.Entries())
	}
}

// FuzzApply checks Table.Apply and Table.Check against the cell model.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 5, 0x81, 47, 3})
	f.Add([]byte{2, 7, 3, 0x86, 14, 0x82})
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, m := Table{}, model{}
		var ops []Op
		for i := 0; i+1 < len(data) && i < 64; i += 2 {
			o := opFromBytes(data[i], data[i+1])
			ops = append(ops, o)
			tab.Apply(o)
			m.apply(o)
			compare(t, tab, m, ops)
		}
	})
}

// TestApplyPairs runs every op of the universe after a base policy, each
// followed by every seventh op (FuzzApply explores longer sequences).
func TestApplyPairs(t *testing.T) {
	var all []Op
	for a := 0; a < 48; a++ {
		for b := 0; b < 7; b++ {
			for _, deny := range []byte{0, 0x80} {
				all = append(all, opFromBytes(byte(a), byte(b)|deny))
			}
		}
	}
	base := []Rule{{Pattern{Char, 1, Any}, Read}, {Pattern{All, Any, 2}, Write}, {Pattern{Block, 0, 0}, Mknod | Read}}
	for i, x := range all {
		for j := i % 7; j < len(all); j += 7 {
			y := all[j]
			tab, m := NewTable(base), model{}
			for _, r := range base {
				m.apply(Op{Rule: r})
			}
			tab.Apply(x)
			m.apply(x)
			tab.Apply(y)
			m.apply(y)
			compare(t, tab, m, []Op{x, y})
		}
	}
}
