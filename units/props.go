package units

import (
	"fmt"
	"math"
	"slices"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Property is one (name, value) pair of the a(sv) array that
// StartTransientUnit takes.
type Property = sddbus.Property

// pathValue is one element of an a(st) property such as IOReadBandwidthMax:
// a device or file path and a number.
type pathValue struct {
	Path  string
	Value uint64
}

// deviceAccess is one element of the a(ss) DeviceAllow property.
type deviceAccess struct {
	Path   string
	Access string
}

// propertyParser turns the value of a "Name=value" assignment into the
// property systemd expects on D-Bus; name is the assignment's name.
type propertyParser func(name, value string) (Property, error)

// propertyParsers is the table of the properties ParseProperty accepts for
// a scope. Each entry mirrors systemd-run's handling of that name in
// src/shared/bus-unit-util.c (bus_append_cgroup_property,
// bus_append_kill_property, bus_append_scope_property,
// bus_append_unit_property) and sends the name and D-Bus type that
// src/core/dbus-cgroup.c, dbus-kill.c, dbus-scope.c and dbus-unit.c read.
// It is never modified.
var propertyParsers = map[string]propertyParser{
	// bus_append_cgroup_property
	"CPUAccounting":                 boolProp,
	"MemoryAccounting":              boolProp,
	"IOAccounting":                  boolProp,
	"BlockIOAccounting":             boolProp,
	"TasksAccounting":               boolProp,
	"IPAccounting":                  boolProp,
	"CPUWeight":                     weightProp(1, 10000, true),
	"StartupCPUWeight":              weightProp(1, 10000, true),
	"IOWeight":                      weightProp(1, 10000, false),
	"StartupIOWeight":               weightProp(1, 10000, false),
	"CPUShares":                     weightProp(2, 262144, false),
	"StartupCPUShares":              weightProp(2, 262144, false),
	"BlockIOWeight":                 weightProp(10, 1000, false),
	"StartupBlockIOWeight":          weightProp(10, 1000, false),
	"AllowedCPUs":                   cpuSetProp,
	"StartupAllowedCPUs":            cpuSetProp,
	"AllowedMemoryNodes":            cpuSetProp,
	"StartupAllowedMemoryNodes":     cpuSetProp,
	"MemoryMin":                     memoryProp(true),
	"MemoryLow":                     memoryProp(true),
	"DefaultMemoryMin":              memoryProp(true),
	"DefaultMemoryLow":              memoryProp(true),
	"MemoryHigh":                    memoryProp(false),
	"MemoryMax":                     memoryProp(false),
	"MemorySwapMax":                 memoryProp(false),
	"MemoryLimit":                   memoryProp(false),
	"TasksMax":                      tasksMaxProp,
	"CPUQuota":                      cpuQuotaProp,
	"CPUQuotaPeriodSec":             cpuQuotaPeriodProp,
	"IOReadBandwidthMax":            ioLimitProp,
	"IOWriteBandwidthMax":           ioLimitProp,
	"IOReadIOPSMax":                 ioLimitProp,
	"IOWriteIOPSMax":                ioLimitProp,
	"BlockIOReadBandwidth":          ioLimitProp,
	"BlockIOWriteBandwidth":         ioLimitProp,
	"IODeviceWeight":                deviceWeightProp(1, 10000),
	"BlockIODeviceWeight":           deviceWeightProp(10, 1000),
	"IODeviceLatencyTargetSec":      latencyTargetProp,
	"DevicePolicy":                  enumProp("auto", "closed", "strict"),
	"DeviceAllow":                   deviceAllowProp,
	"Delegate":                      delegateProp,
	"DisableControllers":            controllersProp,
	"Slice":                         sliceProp,
	"ManagedOOMSwap":                enumProp("auto", "kill"),
	"ManagedOOMMemoryPressure":      enumProp("auto", "kill"),
	"ManagedOOMMemoryPressureLimit": oomLimitProp,
	"ManagedOOMPreference":          enumProp("none", "avoid", "omit"),

	// bus_append_kill_property
	"KillMode":          enumProp("control-group", "process", "mixed", "none"),
	"SendSIGHUP":        boolProp,
	"SendSIGKILL":       boolProp,
	"KillSignal":        signalProp,
	"RestartKillSignal": signalProp,
	"FinalKillSignal":   signalProp,
	"WatchdogSignal":    signalProp,

	// bus_append_scope_property
	"RuntimeMaxSec":             secProp,
	"RuntimeRandomizedExtraSec": secProp,
	"TimeoutStopSec":            secProp,
	// User= and Group= own a delegated scope cgroup (systemd >= 252).
	"User":  userProp,
	"Group": userProp,
	// Scopes read OOMPolicy since upstream systemd 253; Debian's 252.38
	// carries the backport (its libsystemd-core has Scope.OOMPolicy).
	"OOMPolicy": enumProp("continue", "stop", "kill"),

	// bus_append_unit_property
	"Description":         descriptionProp,
	"CollectMode":         enumProp("inactive", "inactive-or-failed"),
	"DefaultDependencies": boolProp,
	"After":               dependencyProp,
	"Before":              dependencyProp,
	"Wants":               dependencyProp,
	"Requires":            dependencyProp,
	"Requisite":           dependencyProp,
	"BindsTo":             dependencyProp,
	"PartOf":              dependencyProp,
	"Conflicts":           dependencyProp,
}

// ParseProperty parses a "Name=Value" assignment written in systemd's unit
// file syntax, as systemd-run -p takes it, into the property that
// StartTransientUnit expects for a scope unit, with systemd's D-Bus name and
// type (for example "MemoryMax=1G" gives MemoryMax as a uint64, and
// "MemoryMax=50%" gives MemoryMaxScale as a uint32). The name is case
// sensitive and nothing is trimmed, as in systemd. An empty value resets
// the setting where systemd allows that.
func ParseProperty(assignment string) (Property, error) {
	name, value, ok := strings.Cut(assignment, "=")
	if !ok {
		return Property{}, fmt.Errorf("invalid property assignment %q: missing '='", assignment)
	}
	parse, ok := propertyParsers[name]
	if !ok {
		return Property{}, fmt.Errorf("unknown property %q", name)
	}
	p, err := parse(name, value)
	if err != nil {
		return Property{}, fmt.Errorf("parse %s=%q: %w", name, value, err)
	}
	return p, nil
}

// KnownProperties returns the sorted names ParseProperty accepts.
func KnownProperties() []string {
	names := make([]string, 0, len(propertyParsers))
	for name := range propertyParsers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func prop(name string, v any) Property {
	return Property{Name: name, Value: godbus.MakeVariant(v)}
}

// boolProp mirrors bus_append_parse_boolean: "b".
func boolProp(name, v string) (Property, error) {
	b, err := parseBoolean(v)
	if err != nil {
		return Property{}, err
	}
	return prop(name, b), nil
}

// weightProp mirrors cg_weight_parse, cg_cpu_weight_parse,
// cg_cpu_shares_parse and cg_blkio_weight_parse: "t" in [lo, hi], "idle"
// (0) for CPU weights, and empty for "unset" (UINT64_MAX).
func weightProp(lo, hi uint64, idle bool) propertyParser {
	return func(name, v string) (Property, error) {
		if v == "" {
			return prop(name, uint64(math.MaxUint64)), nil
		}
		if idle && v == "idle" {
			return prop(name, uint64(0)), nil
		}
		w, err := safeAtou64(v, "weight")
		if err != nil {
			return Property{}, err
		}
		if w < lo || w > hi {
			return Property{}, fmt.Errorf("weight %d out of range %d-%d", w, lo, hi)
		}
		return prop(name, w), nil
	}
}

// cpuSetProp mirrors the AllowedCPUs branch: parse_cpu_set and
// cpu_set_to_dbus, sent as "ay".
func cpuSetProp(name, v string) (Property, error) {
	set, err := parseCPUSet(v)
	if err != nil {
		return Property{}, err
	}
	return prop(name, set), nil
}

// memoryProp mirrors the MemoryMax branch: "infinity" is UINT64_MAX, empty
// is 0 for the protections (MemoryMin, MemoryLow, Default*) and UINT64_MAX
// for the limits, a percentage is sent as <Name>Scale ("u", 100% =
// UINT32_MAX, relative to the physical memory systemd sees), anything else
// is a size with base 1024 suffixes ("t").
func memoryProp(protection bool) propertyParser {
	return func(name, v string) (Property, error) {
		switch {
		case v == "infinity":
			return prop(name, uint64(math.MaxUint64)), nil
		case v == "" && protection:
			return prop(name, uint64(0)), nil
		case v == "":
			return prop(name, uint64(math.MaxUint64)), nil
		case hasPercentSuffix(v):
			p, err := parsePermyriad(v, 10000)
			if err != nil {
				return Property{}, err
			}
			return prop(name+"Scale", scaleFromPermyriad(p)), nil
		}
		size, err := parseSize(v, 1024)
		if err != nil {
			return Property{}, err
		}
		return prop(name, size), nil
	}
}

// tasksMaxProp is memoryProp for TasksMax, whose absolute value is a plain
// number. Zero is refused as systemd's bus_cgroup_set_tasks_max does.
func tasksMaxProp(name, v string) (Property, error) {
	switch {
	case v == "infinity", v == "":
		return prop(name, uint64(math.MaxUint64)), nil
	case hasPercentSuffix(v):
		p, err := parsePermyriad(v, 10000)
		if err != nil {
			return Property{}, err
		}
		if p == 0 {
			return Property{}, errRange("percentage")
		}
		return prop(name+"Scale", scaleFromPermyriad(p)), nil
	}
	n, err := safeAtou64(v, "number")
	if err != nil {
		return Property{}, err
	}
	if n == 0 {
		return Property{}, errRange("number")
	}
	return prop(name, n), nil
}

// cpuQuotaProp mirrors the CPUQuota branch: a percentage of one CPU
// (parse_permyriad_unbounded, so "200%" is two CPUs) sent as
// CPUQuotaPerSecUSec ("t"); empty removes the quota. systemd accepts no
// "infinity" here.
func cpuQuotaProp(_, v string) (Property, error) {
	const out = "CPUQuotaPerSecUSec"
	if v == "" {
		return prop(out, uint64(usecInfinity)), nil
	}
	p, err := parsePermyriad(v, -1)
	if err != nil {
		return Property{}, err
	}
	if p == 0 {
		return Property{}, fmt.Errorf("cpu quota too small")
	}
	return prop(out, uint64(p)*usecPerSec/10000), nil
}

// cpuQuotaPeriodProp mirrors the CPUQuotaPeriodSec branch
// (parse_sec_def_infinity): CPUQuotaPeriodUSec "t", empty is the default.
func cpuQuotaPeriodProp(_, v string) (Property, error) {
	const out = "CPUQuotaPeriodUSec"
	if strings.TrimLeft(v, whitespace) == "" {
		return prop(out, uint64(usecInfinity)), nil
	}
	usec, err := parseSec(v)
	if err != nil {
		return Property{}, err
	}
	return prop(out, usec), nil
}

// splitDeviceValue splits "PATH VALUE" at the first space, as systemd-run
// does for the a(st) and a(ss) properties, and checks the path the way
// systemd's dbus-cgroup.c does (path_is_normalized).
func splitDeviceValue(v string) (string, string, error) {
	path, rest, ok := strings.Cut(v, " ")
	if !ok {
		return "", "", fmt.Errorf("expected \"PATH VALUE\"")
	}
	if !pathIsNormalized(path) {
		return "", "", fmt.Errorf("path %q is not normalized", path)
	}
	if err := checkDBusString(path, "path"); err != nil {
		return "", "", err
	}
	return path, rest, nil
}

// ioLimitProp mirrors the IOReadBandwidthMax branch (also IOPS and the
// legacy BlockIO bandwidths): "PATH VALUE" with VALUE "infinity" or a size
// with base 1000 suffixes (parse_size(..., 1000)), sent as "a(st)"; empty
// clears the list.
func ioLimitProp(name, v string) (Property, error) {
	if v == "" {
		return prop(name, []pathValue{}), nil
	}
	path, limit, err := splitDeviceValue(v)
	if err != nil {
		return Property{}, err
	}
	n := uint64(math.MaxUint64)
	if limit != "infinity" {
		if n, err = parseSize(limit, 1000); err != nil {
			return Property{}, err
		}
	}
	return prop(name, []pathValue{{path, n}}), nil
}

// deviceWeightProp mirrors the IODeviceWeight branch: "PATH WEIGHT" sent as
// "a(st)", with the range dbus-cgroup.c enforces; empty clears the list.
func deviceWeightProp(lo, hi uint64) propertyParser {
	return func(name, v string) (Property, error) {
		if v == "" {
			return prop(name, []pathValue{}), nil
		}
		path, weight, err := splitDeviceValue(v)
		if err != nil {
			return Property{}, err
		}
		w, err := safeAtou64(weight, "weight")
		if err != nil {
			return Property{}, err
		}
		if w < lo || w > hi {
			return Property{}, fmt.Errorf("weight %d out of range %d-%d", w, lo, hi)
		}
		return prop(name, []pathValue{{path, w}}), nil
	}
}

// latencyTargetProp mirrors the IODeviceLatencyTargetSec branch: "PATH
// DURATION" sent as IODeviceLatencyTargetUSec "a(st)"; empty clears the
// list (systemd-run gets that case wrong and sends a bogus array).
func latencyTargetProp(_, v string) (Property, error) {
	const out = "IODeviceLatencyTargetUSec"
	if v == "" {
		return prop(out, []pathValue{}), nil
	}
	path, target, err := splitDeviceValue(v)
	if err != nil {
		return Property{}, err
	}
	usec, err := parseSec(target)
	if err != nil {
		return Property{}, err
	}
	return prop(out, []pathValue{{path, usec}}), nil
}

// deviceAllowProp mirrors the DeviceAllow branch: "PATH [rwm]" sent as
// "a(ss)"; empty clears the list. The checks are those of dbus-cgroup.c:
// PATH is a /dev/ or /run/systemd/inaccessible/ node or a "char-" or
// "block-" pattern (valid_device_allow_pattern), the access is a
// combination of r, w and m (empty means all).
func deviceAllowProp(name, v string) (Property, error) {
	if v == "" {
		return prop(name, []deviceAccess{}), nil
	}
	path, access, _ := strings.Cut(v, " ")
	if err := checkDBusString(path, "device"); err != nil {
		return Property{}, err
	}
	pattern := strings.HasPrefix(path, "char-") || strings.HasPrefix(path, "block-")
	node := (pathHasPrefix(path, "/dev") || pathHasPrefix(path, "/run/systemd/inaccessible")) &&
		!strings.HasSuffix(path, "/") && pathIsNormalized(path)
	if (!pattern && !node) || strings.ContainsAny(path, whitespace) {
		return Property{}, fmt.Errorf("%q is not a device node or a char-/block- pattern", path)
	}
	if strings.Trim(access, "rwm") != "" {
		return Property{}, fmt.Errorf("access %q is not a combination of r, w and m", access)
	}
	return prop(name, []deviceAccess{{path, access}}), nil
}

// pathHasPrefix reports whether path is dir or below it, like
// path_startswith for the normalized paths used here.
func pathHasPrefix(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// controllerList splits v into cgroup controller names, each of which must
// be known to systemd 252 (cgroup_controller_from_string).
func controllerList(v string) ([]string, error) {
	words := strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(whitespace, r) })
	known := cgroupControllers()
	for _, w := range words {
		if !slices.Contains(known, w) {
			return nil, fmt.Errorf("unknown cgroup controller %q", w)
		}
	}
	if words == nil {
		words = []string{}
	}
	return words, nil
}

// delegateProp mirrors the Delegate branch: a boolean is sent as Delegate
// ("b"), anything else as a list of controllers in DelegateControllers
// ("as"); an empty value delegates no controller.
func delegateProp(name, v string) (Property, error) {
	if b, err := parseBoolean(v); err == nil {
		return prop(name, b), nil
	}
	list, err := controllerList(v)
	if err != nil {
		return Property{}, fmt.Errorf("not a boolean nor a controller list: %w", err)
	}
	return prop("DelegateControllers", list), nil
}

// controllersProp mirrors DisableControllers: "as".
func controllersProp(name, v string) (Property, error) {
	list, err := controllerList(v)
	if err != nil {
		return Property{}, err
	}
	return prop(name, list), nil
}

// sliceProp validates Slice with SliceName, so "Slice=foo" sends
// "foo.slice" ("s").
func sliceProp(name, v string) (Property, error) {
	s, err := SliceName(v)
	if err != nil {
		return Property{}, err
	}
	return prop(name, s), nil
}

// oomLimitProp mirrors ManagedOOMMemoryPressureLimit: a percentage (at most
// 100%) scaled to UINT32_MAX, "u".
func oomLimitProp(name, v string) (Property, error) {
	p, err := parsePermyriad(v, 10000)
	if err != nil {
		return Property{}, err
	}
	return prop(name, scaleFromPermyriad(p)), nil
}

// enumProp sends one of values as "s", as systemd-run does for these
// string settings; the check spares a round trip to the manager.
func enumProp(values ...string) propertyParser {
	return func(name, v string) (Property, error) {
		if !slices.Contains(values, v) {
			return Property{}, fmt.Errorf("expected one of %s", strings.Join(values, ", "))
		}
		return prop(name, v), nil
	}
}

// signalProp mirrors bus_append_signal_from_string: "i".
func signalProp(name, v string) (Property, error) {
	n, err := parseSignal(v)
	if err != nil {
		return Property{}, err
	}
	return prop(name, n), nil
}

// secProp mirrors bus_append_parse_sec_rename: the name's "Sec" suffix
// becomes "USec" and the duration is sent in microseconds ("t").
func secProp(name, v string) (Property, error) {
	usec, err := parseSec(v)
	if err != nil {
		return Property{}, err
	}
	return prop(strings.TrimSuffix(name, "Sec")+"USec", usec), nil
}

// userProp sends User= or Group= ("s"). The check is a superficial version
// of the relaxed valid_user_group_name that dbus-scope.c applies; empty
// resets the setting.
func userProp(name, v string) (Property, error) {
	if err := checkDBusString(v, "name"); err != nil {
		return Property{}, err
	}
	if v != "" && (len(v) > nameMax || v[0] == '-' || strings.ContainsAny(v, ":/"+whitespace) ||
		strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f })) {
		return Property{}, fmt.Errorf("invalid user or group name")
	}
	return prop(name, v), nil
}

// descriptionProp sends Description= ("s") unchanged.
func descriptionProp(name, v string) (Property, error) {
	if err := checkDBusString(v, "description"); err != nil {
		return Property{}, err
	}
	return prop(name, v), nil
}

// dependencyProp mirrors the unit dependency branch of
// bus_append_unit_property: a whitespace separated list of unit names sent
// as "as", each checked as dbus-unit.c does (plain or instance name).
func dependencyProp(name, v string) (Property, error) {
	units := strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(whitespace, r) })
	for _, u := range units {
		if err := ValidateUnitNameFlags(u, NamePlain|NameInstance); err != nil {
			return Property{}, err
		}
	}
	if units == nil {
		units = []string{}
	}
	return prop(name, units), nil
}
