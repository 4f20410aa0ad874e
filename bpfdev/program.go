package bpfdev

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf/asm"
)

// Names the kernel shows for nsrun's objects (at most 15 characters). Read
// back identifies nsrun's program by them.
const (
	ProgramName = "nsrun_devices"
	rulesName   = "nsrun_devrules" // hash map: key -> verdict
)

// Map layout shared by the program and user space.
//
//	key   struct { u32 type; u32 major; u32 minor; }  type 0 = "a", ~0 = "*"
//	value struct { u32 allow; u32 deny; }             BPF_DEVCG_ACC_* bits
const (
	keySize   = 12
	valueSize = 8
)

func marshalKey(p Pattern) []byte {
	b := make([]byte, keySize)
	binary.NativeEndian.PutUint32(b[0:], uint32(p.Type))
	binary.NativeEndian.PutUint32(b[4:], p.Major)
	binary.NativeEndian.PutUint32(b[8:], p.Minor)
	return b
}

func unmarshalKey(b []byte) (Pattern, error) {
	if len(b) != keySize {
		return Pattern{}, fmt.Errorf("key of %d bytes, want %d", len(b), keySize)
	}
	p := Pattern{
		Type:  Type(binary.NativeEndian.Uint32(b[0:])),
		Major: binary.NativeEndian.Uint32(b[4:]),
		Minor: binary.NativeEndian.Uint32(b[8:]),
	}
	if p.Type != All && p.Type != Char && p.Type != Block {
		return Pattern{}, fmt.Errorf("key with device type %d", p.Type)
	}
	return p, nil
}

func marshalVerdict(v Verdict) []byte {
	b := make([]byte, valueSize)
	binary.NativeEndian.PutUint32(b[0:], uint32(v.Allow))
	binary.NativeEndian.PutUint32(b[4:], uint32(v.Deny))
	return b
}

func unmarshalVerdict(b []byte) (Verdict, error) {
	if len(b) != valueSize {
		return Verdict{}, fmt.Errorf("value of %d bytes, want %d", len(b), valueSize)
	}
	a, d := binary.NativeEndian.Uint32(b[0:]), binary.NativeEndian.Uint32(b[4:])
	if a&^uint32(allAccess) != 0 || d&^uint32(allAccess) != 0 || a&d != 0 {
		return Verdict{}, fmt.Errorf("malformed verdict allow=%#x deny=%#x", a, d)
	}
	return Verdict{Allow: Access(a), Deny: Access(d)}, nil
}

// Stack slots of the program (offsets from r10).
const (
	slotKey   = -16 // the 12-byte key: type -16, major -12, minor -8
	slotType  = -20 // the request, copied from the context
	slotMajor = -24
	slotMinor = -28
)

// Instructions is the device program. It does not depend on the rules: they
// live in the map, so the program is the same for every policy and the cost
// of a check is at most eight hash lookups, whatever the number of rules.
//
//	r9 = requested access, type/major/minor saved on the stack
//	r6 = the rules map
//	r7 = allowed bits, r8 = decided bits
//	for each of the eight patterns, most specific first (Table.Check):
//	    v = lookup; if v: r7 |= v.allow &^ r8; r8 |= v.allow | v.deny
//	    stop early once every requested bit is decided
//	allow iff every requested bit is in r7
//
// The rules map is referenced by the symbol rulesName.
func Instructions() asm.Instructions {
	insns := asm.Instructions{
		// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
		// access_type = (access << 16) | type
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.And.Imm(asm.R3, 0xffff),
		asm.StoreMem(asm.RFP, slotType, asm.R3, asm.Word),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.RSh.Imm(asm.R9, 16),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.StoreMem(asm.RFP, slotMajor, asm.R3, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 8, asm.Word),
		asm.StoreMem(asm.RFP, slotMinor, asm.R3, asm.Word),
		asm.LoadMapPtr(asm.R6, 0).WithReference(rulesName),
		asm.Mov.Imm(asm.R7, 0),
		asm.Mov.Imm(asm.R8, 0),
	}
	for i, s := range shapes {
		next := fmt.Sprintf("pattern%d", i+1)
		if i == len(shapes)-1 {
			next = "verdict"
		}
		var typ asm.Instruction
		if s.all {
			typ = asm.StoreImm(asm.RFP, slotKey, int64(All), asm.Word)
		} else {
			typ = asm.LoadMem(asm.R1, asm.RFP, slotType, asm.Word)
		}
		insns = append(insns, typ.WithSymbol(fmt.Sprintf("pattern%d", i)))
		if !s.all {
			insns = append(insns, asm.StoreMem(asm.RFP, slotKey, asm.R1, asm.Word))
		}
		insns = append(insns, keyField(s.anyMajor, slotMajor, slotKey+4)...)
		insns = append(insns, keyField(s.anyMinor, slotMinor, slotKey+8)...)
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, slotKey),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, next),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.Word), // allow
			asm.LoadMem(asm.R2, asm.R0, 4, asm.Word), // deny
			asm.Mov.Reg(asm.R3, asm.R8),
			asm.Xor.Imm(asm.R3, -1),
			asm.And.Reg(asm.R3, asm.R1),
			asm.Or.Reg(asm.R7, asm.R3),
			asm.Or.Reg(asm.R8, asm.R1),
			asm.Or.Reg(asm.R8, asm.R2),
			asm.Mov.Reg(asm.R3, asm.R9),
			asm.And.Reg(asm.R3, asm.R8),
			asm.JNE.Reg(asm.R3, asm.R9, next),
			asm.Ja.Label("verdict"),
		)
	}
	insns = append(insns,
		asm.Mov.Reg(asm.R3, asm.R9).WithSymbol("verdict"),
		asm.And.Reg(asm.R3, asm.R7),
		asm.JEq.Reg(asm.R3, asm.R9, "allow"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("deny"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("allow"),
		asm.Return(),
	)
	return insns
}

// keyField fills one u32 of the key: the wildcard, or the request's number.
func keyField(wild bool, from, to int16) []asm.Instruction {
	if wild {
		return []asm.Instruction{asm.StoreImm(asm.RFP, to, int64(int32(-1)), asm.Word)}
	}
	return []asm.Instruction{
		asm.LoadMem(asm.R1, asm.RFP, from, asm.Word),
		asm.StoreMem(asm.RFP, to, asm.R1, asm.Word),
	}
}
