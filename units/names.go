package units

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// unitNameMax mirrors UNIT_NAME_MAX in systemd's src/basic/unit-name.h: a
// unit name must be strictly shorter than this many bytes.
const unitNameMax = 256

// nameMax mirrors NAME_MAX, the longest file name (and so cgroup directory
// name) the kernel accepts.
const nameMax = 255

// rootSlice is SPECIAL_ROOT_SLICE, the slice at the top of the cgroup tree.
const rootSlice = "-.slice"

// NameFlags selects which forms of unit name ValidateUnitNameFlags accepts.
// It mirrors UnitNameFlags in systemd's src/basic/unit-name.h.
type NameFlags uint8

const (
	// NamePlain accepts names without '@', like "foo.scope".
	NamePlain NameFlags = 1 << iota
	// NameInstance accepts instance names, like "getty@tty1.service".
	NameInstance
	// NameTemplate accepts template names, like "getty@.service".
	NameTemplate
	// NameAny accepts all three forms.
	NameAny = NamePlain | NameInstance | NameTemplate
)

// isUnitType reports whether s is a unit type suffix (without the dot), as
// listed in unit_type_table in systemd's src/basic/unit-def.c.
func isUnitType(s string) bool {
	switch s {
	case "service", "mount", "swap", "socket", "target", "device",
		"automount", "timer", "path", "slice", "scope":
		return true
	}
	return false
}

// mayInstantiate mirrors unit_type_may_template in systemd's
// src/shared/unit-file.c: only these types may be templates or instances.
// unit_add_name in src/core/unit.c refuses instance names of other types.
func mayInstantiate(typ string) bool {
	switch typ {
	case "service", "socket", "target", "timer", "path":
		return true
	}
	return false
}

// isNameChar reports whether c is in VALID_CHARS of systemd's
// src/basic/unit-name.c ('@' is handled separately).
func isNameChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c == ':' || c == '-' || c == '_' || c == '.' || c == '\\'
}

func nameError(name, why string) error {
	return fmt.Errorf("invalid unit name %q: %s", name, why)
}

// unitSuffix returns the unit type named by the suffix of name, if the text
// after its last '.' is a known unit type.
func unitSuffix(name string) (string, bool) {
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 || !isUnitType(name[dot+1:]) {
		return "", false
	}
	return name[dot+1:], true
}

// badChar describes the first character of s that may not appear in a unit
// name prefix, or returns "" when there is none.
func badChar(s string) string {
	for i := 0; i < len(s); {
		c := s[i]
		if c == '@' || isNameChar(c) {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return fmt.Sprintf("byte 0x%02x is not allowed", c)
		}
		return fmt.Sprintf("character %q is not allowed", r)
	}
	return ""
}

// ValidateUnitNameFlags checks name against systemd's syntax for unit names,
// accepting the forms selected by flags. It mirrors unit_name_is_valid in
// systemd's src/basic/unit-name.c: shorter than 256 bytes, a known unit type
// suffix after the last '.', a non-empty prefix of [A-Za-z0-9:_.\-] and at
// most an '@' that is not the first character (an instance may contain more
// '@').
func ValidateUnitNameFlags(name string, flags NameFlags) error {
	if flags&NameAny == 0 {
		return nameError(name, "no form of unit name is allowed")
	}
	if name == "" {
		return nameError(name, "name is empty")
	}
	if len(name) >= unitNameMax {
		return nameError(name, fmt.Sprintf("name is %d bytes long, the limit is %d", len(name), unitNameMax-1))
	}
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return nameError(name, "no unit type suffix such as \".scope\"")
	}
	if typ := name[dot+1:]; !isUnitType(typ) {
		return nameError(name, fmt.Sprintf("unknown unit type %q", typ))
	}
	if dot == 0 {
		return nameError(name, "nothing before the unit type suffix")
	}
	prefix := name[:dot]
	if why := badChar(prefix); why != "" {
		return nameError(name, why)
	}
	at := strings.IndexByte(prefix, '@')
	switch {
	case at == 0:
		return nameError(name, "'@' may not be the first character")
	case at < 0:
		if flags&NamePlain == 0 {
			return nameError(name, "a template or instance name (with '@') is required")
		}
	case at == len(prefix)-1:
		if flags&NameTemplate == 0 {
			return nameError(name, "templates (ending in '@') are not allowed")
		}
	default:
		if flags&NameInstance == 0 {
			return nameError(name, "instance names (with '@') are not allowed")
		}
	}
	return nil
}

// ValidateUnitName checks that name can name a loaded unit: a plain name or
// an instance name, but not a template. Instance names are only allowed for
// the unit types that can be instantiated (service, socket, target, timer,
// path), as unit_add_name in systemd's src/core/unit.c enforces.
func ValidateUnitName(name string) error {
	if err := ValidateUnitNameFlags(name, NamePlain|NameInstance); err != nil {
		return err
	}
	typ, _ := unitSuffix(name)
	if strings.IndexByte(name, '@') >= 0 && !mayInstantiate(typ) {
		return nameError(name, typ+" units cannot have instances")
	}
	return nil
}

// typedName appends "."+typ to arg unless arg already ends in a unit type
// suffix, refuses a suffix of another type and validates the result.
func typedName(arg, typ string) (string, error) {
	if arg == "" {
		return "", fmt.Errorf("invalid %s name %q: name is empty", typ, arg)
	}
	name := arg
	if t, ok := unitSuffix(arg); !ok {
		name = arg + "." + typ
	} else if t != typ {
		return "", fmt.Errorf("invalid %s name %q: it names a %s unit", typ, arg, t)
	}
	if err := ValidateUnitName(name); err != nil {
		return "", err
	}
	return name, nil
}

// ScopeName turns arg into a scope unit name: ".scope" is appended when arg
// has no unit type suffix, a suffix of another type ("x.service") is
// refused, and the result must be a valid plain unit name. Scopes cannot be
// templates or instances (unit_type_may_template in systemd), so any '@' is
// refused.
func ScopeName(arg string) (string, error) {
	return typedName(arg, "scope")
}

// SliceName turns arg into a slice unit name like ScopeName does for scopes
// (so "-" becomes the root slice "-.slice"), and applies systemd's extra
// rules for slices (slice_name_is_valid in src/basic/unit-name.c): apart
// from "-.slice", the prefix must not start or end with '-' nor contain
// "--", since each '-' separates a parent slice.
func SliceName(arg string) (string, error) {
	name, err := typedName(arg, "slice")
	if err != nil {
		return "", err
	}
	if name == rootSlice {
		return name, nil
	}
	prefix := strings.TrimSuffix(name, ".slice")
	var why string
	switch {
	case strings.HasPrefix(prefix, "-"):
		why = "it starts with '-'"
	case strings.HasSuffix(prefix, "-"):
		why = "it ends with '-' before \".slice\""
	case strings.Contains(prefix, "--"):
		why = "it contains \"--\""
	default:
		return name, nil
	}
	return "", fmt.Errorf("invalid slice name %q: %s", name, why)
}

// ParentSlice returns the slice that contains slice ("a-b.slice" ->
// "a.slice", "a.slice" -> "-.slice"), mirroring slice_build_parent_slice in
// systemd's src/basic/unit-name.c. It returns "" for the root slice and for
// names SliceName refuses. Like SliceName it accepts names without the
// ".slice" suffix.
func ParentSlice(slice string) string {
	name, err := SliceName(slice)
	if err != nil || name == rootSlice {
		return ""
	}
	prefix := strings.TrimSuffix(name, ".slice")
	dash := strings.LastIndexByte(prefix, '-')
	if dash < 0 {
		return rootSlice
	}
	return prefix[:dash] + ".slice"
}

// SlicePath returns the cgroup path, relative to the cgroup mount point and
// starting with '/', that systemd uses for slice: "-.slice" -> "/",
// "a-b.slice" -> "/a.slice/a-b.slice". It mirrors cg_slice_to_path in
// systemd's src/basic/cgroup-util.c, including cg_escape of each path
// component. Names without the ".slice" suffix are accepted, as in
// SliceName. SlicePath only computes the path: it never looks at cgroupfs.
func SlicePath(slice string) (string, error) {
	name, err := SliceName(slice)
	if err != nil {
		return "", err
	}
	if name == rootSlice {
		return "/", nil
	}
	prefix := strings.TrimSuffix(name, ".slice")
	var b strings.Builder
	for i := 0; i < len(prefix); i++ {
		if prefix[i] != '-' {
			continue
		}
		component, err := cgEscape(prefix[:i] + ".slice")
		if err != nil {
			return "", err
		}
		b.WriteByte('/')
		b.WriteString(component)
	}
	component, err := cgEscape(name)
	if err != nil {
		return "", err
	}
	b.WriteByte('/')
	b.WriteString(component)
	return b.String(), nil
}

// cgroupControllers lists the controller names of cgroup_controller_table in
// systemd 252's src/basic/cgroup-util.c, including the BPF pseudo
// controllers.
func cgroupControllers() []string {
	return []string{
		"cpu", "cpuacct", "cpuset", "io", "blkio", "memory", "devices", "pids",
		"bpf-firewall", "bpf-devices", "bpf-foreign", "bpf-socket-bind",
		"bpf-restrict-network-interfaces",
	}
}

// cgNeedsEscape mirrors the test in cg_escape of systemd 252's
// src/basic/cgroup-util.c: names that could collide with kernel file names
// in the cgroup tree need escaping. Those are names starting with '_' or
// '.', the cgroup v1 core files, "cgroup.*" and "<controller>.<suffix>"
// where the text before the last '.' is exactly a controller name. (From
// systemd 255 on, cg_needs_escape escapes any name starting with
// "<controller>.", such as "cpu.x.slice"; 252 leaves that one alone.)
func cgNeedsEscape(p string) bool {
	if p == "" || p[0] == '_' || p[0] == '.' {
		return true
	}
	switch p {
	case "notify_on_release", "release_agent", "tasks":
		return true
	}
	if strings.HasPrefix(p, "cgroup.") {
		return true
	}
	if dot := strings.LastIndexByte(p, '.'); dot >= 0 {
		return slices.Contains(cgroupControllers(), p[:dot])
	}
	return false
}

// cgEscape mirrors cg_escape in systemd's src/basic/cgroup-util.c: a name
// that needs escaping gets a '_' prepended. Unlike systemd 252, which would
// only fail later when creating the directory, a result longer than
// NAME_MAX is refused.
func cgEscape(p string) (string, error) {
	if !cgNeedsEscape(p) {
		return p, nil
	}
	if len(p)+1 > nameMax {
		return "", fmt.Errorf("invalid cgroup name %q: it is too long once escaped with a leading '_'", p)
	}
	return "_" + p, nil
}
