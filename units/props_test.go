package units

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	godbus "github.com/godbus/dbus/v5"
)

const max64 = uint64(math.MaxUint64)

func TestParseProperty(t *testing.T) {
	type pv = []pathValue
	tests := []struct {
		in   string
		name string // D-Bus name
		sig  string // D-Bus signature
		val  any
	}{
		// Sizes, base 1024, with infinity, empty and percentages.
		{"MemoryMax=1G", "MemoryMax", "t", uint64(1 << 30)},
		{"MemoryMax=1073741824", "MemoryMax", "t", uint64(1 << 30)},
		{"MemoryMax=512K", "MemoryMax", "t", uint64(512 << 10)},
		{"MemoryMax=1.5M", "MemoryMax", "t", uint64(3 << 19)},
		{"MemoryMax=1G 512M", "MemoryMax", "t", uint64(3 << 29)},
		{"MemoryMax=2T", "MemoryMax", "t", uint64(2 << 40)},
		{"MemoryMax=1P", "MemoryMax", "t", uint64(1 << 50)},
		{"MemoryMax=15E", "MemoryMax", "t", uint64(15 << 60)},
		{"MemoryMax=100B", "MemoryMax", "t", uint64(100)},
		{"MemoryMax=infinity", "MemoryMax", "t", max64},
		{"MemoryMax=", "MemoryMax", "t", max64},
		{"MemoryMax=50%", "MemoryMaxScale", "u", uint32(2147483648)},
		{"MemoryMax=100%", "MemoryMaxScale", "u", uint32(math.MaxUint32)},
		{"MemoryMax=0%", "MemoryMaxScale", "u", uint32(0)},
		{"MemoryMax=12.5%", "MemoryMaxScale", "u", uint32(536870912)},
		{"MemoryMax=125\u2030", "MemoryMaxScale", "u", uint32(536870912)},
		{"MemoryMax=1250\u2031", "MemoryMaxScale", "u", uint32(536870912)},
		{"MemoryHigh=2G", "MemoryHigh", "t", uint64(2 << 30)},
		{"MemoryHigh=", "MemoryHigh", "t", max64},
		{"MemoryLow=", "MemoryLow", "t", uint64(0)},
		{"MemoryLow=10%", "MemoryLowScale", "u", uint32(429496730)},
		{"MemoryMin=64M", "MemoryMin", "t", uint64(64 << 20)},
		{"MemoryMin=", "MemoryMin", "t", uint64(0)},
		{"DefaultMemoryLow=1M", "DefaultMemoryLow", "t", uint64(1 << 20)},
		{"DefaultMemoryMin=", "DefaultMemoryMin", "t", uint64(0)},
		{"MemorySwapMax=0", "MemorySwapMax", "t", uint64(0)},
		{"MemorySwapMax=20%", "MemorySwapMaxScale", "u", uint32(858993459)},
		{"MemoryLimit=1G", "MemoryLimit", "t", uint64(1 << 30)},
		// TasksMax.
		{"TasksMax=100", "TasksMax", "t", uint64(100)},
		{"TasksMax=0x10", "TasksMax", "t", uint64(16)},
		{"TasksMax=infinity", "TasksMax", "t", max64},
		{"TasksMax=", "TasksMax", "t", max64},
		{"TasksMax=40%", "TasksMaxScale", "u", uint32(1717986918)},
		// CPU.
		{"CPUQuota=20%", "CPUQuotaPerSecUSec", "t", uint64(200000)},
		{"CPUQuota=150%", "CPUQuotaPerSecUSec", "t", uint64(1500000)},
		{"CPUQuota=0.5%", "CPUQuotaPerSecUSec", "t", uint64(5000)},
		{"CPUQuota=", "CPUQuotaPerSecUSec", "t", max64},
		{"CPUQuotaPeriodSec=10ms", "CPUQuotaPeriodUSec", "t", uint64(10000)},
		{"CPUQuotaPeriodSec=", "CPUQuotaPeriodUSec", "t", max64},
		{"CPUWeight=100", "CPUWeight", "t", uint64(100)},
		{"CPUWeight=idle", "CPUWeight", "t", uint64(0)},
		{"CPUWeight=", "CPUWeight", "t", max64},
		{"StartupCPUWeight=10000", "StartupCPUWeight", "t", uint64(10000)},
		{"IOWeight=1", "IOWeight", "t", uint64(1)},
		{"StartupIOWeight=500", "StartupIOWeight", "t", uint64(500)},
		{"CPUShares=1024", "CPUShares", "t", uint64(1024)},
		{"BlockIOWeight=10", "BlockIOWeight", "t", uint64(10)},
		{"StartupBlockIOWeight=", "StartupBlockIOWeight", "t", max64},
		{"StartupCPUShares=2", "StartupCPUShares", "t", uint64(2)},
		{"AllowedCPUs=0-3,5 7", "AllowedCPUs", "ay", []byte{0xaf, 0, 0, 0, 0, 0, 0, 0}},
		{"AllowedCPUs=64", "AllowedCPUs", "ay", []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}},
		{"AllowedCPUs=", "AllowedCPUs", "ay", []byte{}},
		{"StartupAllowedCPUs=1", "StartupAllowedCPUs", "ay", []byte{2, 0, 0, 0, 0, 0, 0, 0}},
		{"AllowedMemoryNodes=0", "AllowedMemoryNodes", "ay", []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		{"StartupAllowedMemoryNodes=0,1", "StartupAllowedMemoryNodes", "ay", []byte{3, 0, 0, 0, 0, 0, 0, 0}},
		// IO, with base 1000 suffixes as systemd uses for bandwidths.
		{"IOReadBandwidthMax=/dev/sda 1M", "IOReadBandwidthMax", "a(st)", pv{{"/dev/sda", 1000000}}},
		{"IOWriteBandwidthMax=/var/lib 5K", "IOWriteBandwidthMax", "a(st)", pv{{"/var/lib", 5000}}},
		{"IOWriteBandwidthMax=/dev/sda infinity", "IOWriteBandwidthMax", "a(st)", pv{{"/dev/sda", max64}}},
		{"IOReadIOPSMax=/dev/sda 1K", "IOReadIOPSMax", "a(st)", pv{{"/dev/sda", 1000}}},
		{"IOWriteIOPSMax=/dev/nvme0n1 200", "IOWriteIOPSMax", "a(st)", pv{{"/dev/nvme0n1", 200}}},
		{"IOReadBandwidthMax=", "IOReadBandwidthMax", "a(st)", pv{}},
		{"BlockIOReadBandwidth=/dev/sda 1M", "BlockIOReadBandwidth", "a(st)", pv{{"/dev/sda", 1000000}}},
		{"BlockIOWriteBandwidth=/dev/sda  2G", "BlockIOWriteBandwidth", "a(st)", pv{{"/dev/sda", 2000000000}}},
		{"IODeviceWeight=/dev/sda 200", "IODeviceWeight", "a(st)", pv{{"/dev/sda", 200}}},
		{"IODeviceWeight=", "IODeviceWeight", "a(st)", pv{}},
		{"BlockIODeviceWeight=/dev/sda 500", "BlockIODeviceWeight", "a(st)", pv{{"/dev/sda", 500}}},
		{"IODeviceLatencyTargetSec=/dev/sda 25ms", "IODeviceLatencyTargetUSec", "a(st)", pv{{"/dev/sda", 25000}}},
		{"IODeviceLatencyTargetSec=", "IODeviceLatencyTargetUSec", "a(st)", pv{}},
		// Devices.
		{"DevicePolicy=closed", "DevicePolicy", "s", "closed"},
		{"DeviceAllow=/dev/null rw", "DeviceAllow", "a(ss)", []deviceAccess{{"/dev/null", "rw"}}},
		{"DeviceAllow=char-pts rwm", "DeviceAllow", "a(ss)", []deviceAccess{{"char-pts", "rwm"}}},
		{"DeviceAllow=/dev/fuse", "DeviceAllow", "a(ss)", []deviceAccess{{"/dev/fuse", ""}}},
		{"DeviceAllow=", "DeviceAllow", "a(ss)", []deviceAccess{}},
		// Booleans.
		{"CPUAccounting=yes", "CPUAccounting", "b", true},
		{"MemoryAccounting=off", "MemoryAccounting", "b", false},
		{"TasksAccounting=TRUE", "TasksAccounting", "b", true},
		{"IOAccounting=0", "IOAccounting", "b", false},
		{"IPAccounting=y", "IPAccounting", "b", true},
		{"BlockIOAccounting=f", "BlockIOAccounting", "b", false},
		{"SendSIGHUP=On", "SendSIGHUP", "b", true},
		{"SendSIGKILL=n", "SendSIGKILL", "b", false},
		{"DefaultDependencies=no", "DefaultDependencies", "b", false},
		{"Delegate=yes", "Delegate", "b", true},
		{"Delegate=false", "Delegate", "b", false},
		{"Delegate=cpu memory pids", "DelegateControllers", "as", []string{"cpu", "memory", "pids"}},
		{"Delegate=", "DelegateControllers", "as", []string{}},
		{"DisableControllers=io", "DisableControllers", "as", []string{"io"}},
		// Durations.
		{"RuntimeMaxSec=5s", "RuntimeMaxUSec", "t", uint64(5000000)},
		{"RuntimeMaxSec=1min 30s", "RuntimeMaxUSec", "t", uint64(90000000)},
		{"RuntimeMaxSec=2h", "RuntimeMaxUSec", "t", uint64(7200000000)},
		{"RuntimeMaxSec=500ms", "RuntimeMaxUSec", "t", uint64(500000)},
		{"RuntimeMaxSec=90", "RuntimeMaxUSec", "t", uint64(90000000)},
		{"RuntimeMaxSec=1.5", "RuntimeMaxUSec", "t", uint64(1500000)},
		{"RuntimeMaxSec=infinity", "RuntimeMaxUSec", "t", max64},
		{"RuntimeMaxSec=1d 2h 3min 4s 5ms 6us", "RuntimeMaxUSec", "t", uint64(93784005006)},
		{"RuntimeRandomizedExtraSec=1w", "RuntimeRandomizedExtraUSec", "t", uint64(604800000000)},
		{"TimeoutStopSec=0", "TimeoutStopUSec", "t", uint64(0)},
		// Kill settings.
		{"KillMode=mixed", "KillMode", "s", "mixed"},
		{"KillSignal=SIGTERM", "KillSignal", "i", int32(15)},
		{"KillSignal=INT", "KillSignal", "i", int32(2)},
		{"KillSignal=9", "KillSignal", "i", int32(9)},
		{"KillSignal=RTMIN+2", "KillSignal", "i", int32(36)},
		{"KillSignal=SIGRTMAX-1", "KillSignal", "i", int32(63)},
		{"FinalKillSignal=SIGKILL", "FinalKillSignal", "i", int32(9)},
		{"RestartKillSignal=HUP", "RestartKillSignal", "i", int32(1)},
		{"WatchdogSignal=SIGABRT", "WatchdogSignal", "i", int32(6)},
		// Strings.
		{"Description=my job", "Description", "s", "my job"},
		{"Description=", "Description", "s", ""},
		{"Slice=batch", "Slice", "s", "batch.slice"},
		{"Slice=a-b.slice", "Slice", "s", "a-b.slice"},
		{"CollectMode=inactive-or-failed", "CollectMode", "s", "inactive-or-failed"},
		{"OOMPolicy=continue", "OOMPolicy", "s", "continue"},
		{"ManagedOOMSwap=kill", "ManagedOOMSwap", "s", "kill"},
		{"ManagedOOMMemoryPressure=auto", "ManagedOOMMemoryPressure", "s", "auto"},
		{"ManagedOOMMemoryPressureLimit=50%", "ManagedOOMMemoryPressureLimit", "u", uint32(2147483648)},
		{"ManagedOOMPreference=avoid", "ManagedOOMPreference", "s", "avoid"},
		{"User=nobody", "User", "s", "nobody"},
		{"Group=", "Group", "s", ""},
		{"After=network.target foo@bar.service", "After", "as", []string{"network.target", "foo@bar.service"}},
		{"Wants=", "Wants", "as", []string{}},
		{"Before=shutdown.target", "Before", "as", []string{"shutdown.target"}},
		{"Requires=a.service\tb.socket", "Requires", "as", []string{"a.service", "b.socket"}},
		{"Requisite=a.mount", "Requisite", "as", []string{"a.mount"}},
		{"BindsTo=a.service", "BindsTo", "as", []string{"a.service"}},
		{"PartOf=a.target", "PartOf", "as", []string{"a.target"}},
		{"Conflicts=a.scope", "Conflicts", "as", []string{"a.scope"}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		p, err := ParseProperty(tt.in)
		if err != nil {
			t.Errorf("ParseProperty(%q): %v", tt.in, err)
			continue
		}
		seen[strings.SplitN(tt.in, "=", 2)[0]] = true
		if p.Name != tt.name || p.Value.Signature().String() != tt.sig || !reflect.DeepEqual(p.Value.Value(), tt.val) {
			t.Errorf("ParseProperty(%q) = %s %s %#v, want %s %s %#v", tt.in,
				p.Name, p.Value.Signature(), p.Value.Value(), tt.name, tt.sig, tt.val)
		}
		if want := signatures()[p.Name]; want != tt.sig {
			t.Errorf("signatures()[%q] = %q, want %q", p.Name, want, tt.sig)
		}
		if err := encode(p); err != nil {
			t.Errorf("ParseProperty(%q) cannot be sent: %v", tt.in, err)
		}
	}
	for _, name := range KnownProperties() {
		if !seen[name] {
			t.Errorf("no accepted test case for %s", name)
		}
	}
}

func TestParsePropertyErrors(t *testing.T) {
	tests := []struct{ in, err string }{
		{"MemoryMax", `invalid property assignment "MemoryMax": missing '='`},
		{"", `invalid property assignment "": missing '='`},
		{"Foo=bar", `unknown property "Foo"`},
		{"memorymax=1G", `unknown property "memorymax"`},
		{" MemoryMax=1G", `unknown property " MemoryMax"`},
		{"=1", `unknown property ""`},
		{"CPUSchedulingPolicy=fifo", `unknown property "CPUSchedulingPolicy"`},
		{"MemoryZSwapMax=1G", `unknown property "MemoryZSwapMax"`},
		{"MemoryMax=12Q", `parse MemoryMax="12Q": invalid size`},
		{"MemoryMax=-1", `parse MemoryMax="-1": size out of range`},
		{"MemoryMax=1K 1M", `invalid size`},
		{"MemoryMax=16E", `size out of range`},
		{"MemoryMax=18446744073709551616", `size out of range`},
		{"MemoryMax=Infinity", `invalid size`},
		{"MemoryMax=101%", `parse MemoryMax="101%": percentage out of range`},
		{"MemoryMax=1.234%", `invalid percentage`},
		{"MemoryMax=-5%", `percentage out of range`},
		{"TasksMax=0", `parse TasksMax="0": number out of range`},
		{"TasksMax=0%", `percentage out of range`},
		{"TasksMax=10K", `invalid number`},
		{"CPUQuota=0%", `parse CPUQuota="0%": cpu quota too small`},
		{"CPUQuota=20", `invalid percentage`},
		{"CPUQuota=infinity", `invalid percentage`},
		{"CPUWeight=0", `weight 0 out of range 1-10000`},
		{"CPUWeight=10001", `weight 10001 out of range 1-10000`},
		{"IOWeight=idle", `invalid weight`},
		{"CPUShares=1", `weight 1 out of range 2-262144`},
		{"BlockIOWeight=1001", `weight 1001 out of range 10-1000`},
		{"AllowedCPUs=3-1", `invalid range "3-1": 3 > 1`},
		{"AllowedCPUs=1-", `invalid range "1-"`},
		{"AllowedCPUs=x", `invalid cpu number "x"`},
		{"AllowedCPUs=8192", `cpu 8192 out of range, the limit is 8191`},
		{"IOReadBandwidthMax=/dev/sda", `parse IOReadBandwidthMax="/dev/sda": expected "PATH VALUE"`},
		{"IOReadBandwidthMax=/dev/../sda 1M", `path "/dev/../sda" is not normalized`},
		{"IOReadBandwidthMax=/dev/sda 1X", `invalid size`},
		{"IODeviceWeight=/dev/sda 0", `weight 0 out of range 1-10000`},
		{"IODeviceLatencyTargetSec=/dev/sda soon", `invalid duration`},
		{"DeviceAllow=/tmp/x rw", `"/tmp/x" is not a device node or a char-/block- pattern`},
		{"DeviceAllow=/dev/null rwx", `access "rwx" is not a combination of r, w and m`},
		{"DevicePolicy=open", `parse DevicePolicy="open": expected one of auto, closed, strict`},
		{"CPUAccounting=maybe", `parse CPUAccounting="maybe": invalid boolean`},
		{"CPUAccounting=", `invalid boolean`},
		{"Delegate=cpu gpu", `not a boolean nor a controller list: unknown cgroup controller "gpu"`},
		{"RuntimeMaxSec=", `parse RuntimeMaxSec="": invalid duration`},
		{"RuntimeMaxSec=5x", `invalid duration`},
		{"RuntimeMaxSec=-5s", `duration out of range`},
		{"RuntimeMaxSec=1.2.3", `invalid duration`},
		{"RuntimeMaxSec=5.s", `invalid duration`},
		{"RuntimeMaxSec=infinity 5s", `invalid duration`},
		{"RuntimeMaxSec=600000y", `duration out of range`},
		{"KillSignal=TERMINATE", `parse KillSignal="TERMINATE": invalid signal`},
		{"KillSignal=0", `signal out of range`},
		{"KillSignal=65", `signal out of range`},
		{"KillSignal=sigterm", `invalid signal`},
		{"KillSignal=RTMIN+31", `signal out of range`},
		{"KillMode=all", `expected one of control-group, process, mixed, none`},
		{"Slice=a--b", `parse Slice="a--b": invalid slice name "a--b.slice": it contains "--"`},
		{"Slice=", `invalid slice name "": name is empty`},
		{"Slice=x.scope", `it names a scope unit`},
		{"OOMPolicy=", `expected one of continue, stop, kill`},
		{"ManagedOOMMemoryPressureLimit=", `invalid percentage`},
		{"User=-x", `invalid user or group name`},
		{"User=a b", `invalid user or group name`},
		{"Description=\xff", `description is not valid UTF-8`},
		{"Description=a\x00b", `description contains a NUL byte`},
		{"After=foo", `invalid unit name "foo": no unit type suffix`},
		{"Wants=x@.service", `templates (ending in '@') are not allowed`},
	}
	for _, tt := range tests {
		p, err := ParseProperty(tt.in)
		if err == nil {
			t.Errorf("ParseProperty(%q) = %s %v, want error %q", tt.in, p.Name, p.Value, tt.err)
			continue
		}
		if !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseProperty(%q) error %q, want %q", tt.in, err, tt.err)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		base uint64
		want uint64
		err  bool
	}{
		{"0", 1024, 0, false},
		{" 1 K ", 1024, 0, true}, // trailing blank after a suffix is not a part
		{"1 K", 1024, 1024, false},
		{"10.M", 1000, 10000000, false},
		{"1.5K", 1000, 1500, false},
		{"0.1K", 1024, 102, false},
		{"1G512M", 1024, 3 << 29, false},
		{"1M 1G", 1024, 0, true},
		{"1K 1K", 1024, 0, true},
		{"+1", 1024, 1, false},
		{"", 1024, 0, true},
		{".5K", 1024, 0, true},
		{"1.", 1024, 1, false},
		{"16E", 1000, 16 * 1000000000000000000, false},
		{"18446744073709551615", 1024, max64, false},
		{"18446744073709551615.5", 1024, max64, false}, // as systemd 252
		{"18446744073709551615.5K", 1024, 0, true},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in, tt.base)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseSize(%q, %d) = %d, %v; want %d, error %v", tt.in, tt.base, got, err, tt.want, tt.err)
		}
	}
}

func TestParseSec(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		err  bool
	}{
		{"1", usecPerSec, false},
		{" 5 min ", 5 * usecPerMin, false},
		{"1.5min", 90 * usecPerSec, false},
		{".5s", usecPerSec / 2, false},
		{"1M", usecPerMonth, false},
		{"1m", usecPerMin, false},
		{"1y", usecPerYear, false},
		{"3hr 2days", 3*usecPerHour + 2*usecPerDay, false},
		{"5 6", 11 * usecPerSec, false},
		{"12.34 .56", 12900000, false},
		{"1us", 1, false},
		{"1µs", 1, false},
		{"1msec", 1000, false},
		{" infinity ", usecInfinity, false},
		{"5\x00", 0, true},
		{"-0", 0, true},
		{"+5", 5 * usecPerSec, false},
		{"0x10", 0, true},
		{"", 0, true},
		{"  ", 0, true},
	}
	for _, tt := range tests {
		got, err := parseSec(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseSec(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestSafeAtou64(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		err  bool
	}{
		{"42", 42, false}, {" 42", 42, false}, {"0x2a", 42, false}, {"052", 42, false},
		{"0o52", 42, false}, {"0b101010", 42, false}, {"-0", 0, false}, {"-1", 0, true},
		{"42 ", 0, true}, {"", 0, true}, {"0x", 0, true}, {"18446744073709551616", 0, true},
	}
	for _, tt := range tests {
		got, err := safeAtou64(tt.in, "number")
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("safeAtou64(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestKnownProperties(t *testing.T) {
	names := KnownProperties()
	if !slices.IsSorted(names) || len(names) != len(propertyParsers) {
		t.Fatalf("KnownProperties() = %v", names)
	}
	for _, want := range []string{"MemoryMax", "TasksMax", "CPUQuota", "Delegate", "Slice", "KillSignal"} {
		if !slices.Contains(names, want) {
			t.Errorf("KnownProperties() lacks %s", want)
		}
	}
}

// signatures lists the D-Bus name and type systemd 252 reads for every
// property ParseProperty can produce (src/core/dbus-cgroup.c, dbus-kill.c,
// dbus-scope.c, dbus-unit.c).
func signatures() map[string]string {
	m := map[string]string{
		"ManagedOOMMemoryPressureLimit": "u", "TasksMaxScale": "u",
		"AllowedCPUs": "ay", "StartupAllowedCPUs": "ay", "AllowedMemoryNodes": "ay", "StartupAllowedMemoryNodes": "ay",
		"DeviceAllow": "a(ss)", "DelegateControllers": "as", "DisableControllers": "as",
		"IODeviceLatencyTargetUSec": "a(st)",
	}
	add := func(sig string, names ...string) {
		for _, n := range names {
			m[n] = sig
		}
	}
	add("b", "CPUAccounting", "MemoryAccounting", "IOAccounting", "BlockIOAccounting", "TasksAccounting",
		"IPAccounting", "Delegate", "SendSIGHUP", "SendSIGKILL", "DefaultDependencies")
	add("t", "CPUWeight", "StartupCPUWeight", "IOWeight", "StartupIOWeight", "CPUShares", "StartupCPUShares",
		"BlockIOWeight", "StartupBlockIOWeight", "TasksMax", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec",
		"RuntimeMaxUSec", "RuntimeRandomizedExtraUSec", "TimeoutStopUSec")
	for _, n := range []string{"MemoryMin", "MemoryLow", "DefaultMemoryMin", "DefaultMemoryLow", "MemoryHigh",
		"MemoryMax", "MemorySwapMax", "MemoryLimit"} {
		m[n], m[n+"Scale"] = "t", "u"
	}
	add("a(st)", "IOReadBandwidthMax", "IOWriteBandwidthMax", "IOReadIOPSMax", "IOWriteIOPSMax",
		"BlockIOReadBandwidth", "BlockIOWriteBandwidth", "IODeviceWeight", "BlockIODeviceWeight")
	add("s", "DevicePolicy", "Slice", "ManagedOOMSwap", "ManagedOOMMemoryPressure", "ManagedOOMPreference",
		"KillMode", "User", "Group", "OOMPolicy", "Description", "CollectMode")
	add("i", "KillSignal", "RestartKillSignal", "FinalKillSignal", "WatchdogSignal")
	add("as", "After", "Before", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Conflicts")
	return m
}

// encode marshals p as the a(sv) argument of StartTransientUnit, which
// fails on what D-Bus cannot carry (bad UTF-8, NUL bytes, bad types).
func encode(p Property) error {
	body := []any{[]Property{p}}
	msg := &godbus.Message{
		Type: godbus.TypeMethodCall,
		Headers: map[godbus.HeaderField]godbus.Variant{
			godbus.FieldPath:      godbus.MakeVariant(godbus.ObjectPath("/org/freedesktop/systemd1")),
			godbus.FieldMember:    godbus.MakeVariant("StartTransientUnit"),
			godbus.FieldSignature: godbus.MakeVariant(godbus.SignatureOf(body...)),
		},
		Body: body,
	}
	if err := msg.EncodeTo(io.Discard, binary.LittleEndian); err != nil {
		return err
	}
	if sig := godbus.SignatureOf(body...).String(); sig != "a(sv)" {
		return fmt.Errorf("body signature %q", sig)
	}
	return nil
}

// inputName maps a D-Bus property name back to the assignment name that
// produces it, for the properties format can render.
func inputName(name string) string {
	switch {
	case strings.HasSuffix(name, "USec"):
		return strings.TrimSuffix(name, "USec") + "Sec"
	case name == "DelegateControllers":
		return "Delegate"
	}
	return name
}

// format renders p back into an assignment ParseProperty must turn into
// the same property, or returns false for forms it does not render.
func format(p Property) (string, bool) {
	name := inputName(p.Name)
	var v string
	switch x := p.Value.Value().(type) {
	case bool:
		v = fmt.Sprint(x)
	case int32:
		v = fmt.Sprint(x)
	case string:
		v = x
	case []string:
		v = strings.Join(x, " ")
	case []byte:
		var cpus []string
		for i := range len(x) * 8 {
			if x[i/8]&(1<<(i%8)) != 0 {
				cpus = append(cpus, fmt.Sprint(i))
			}
		}
		v = strings.Join(cpus, ",")
		if len(x) > 0 && len(cpus) == 0 {
			return "", false
		}
	case uint64:
		switch {
		case p.Name == "CPUQuotaPerSecUSec", strings.Contains(name, "Weight"), strings.Contains(name, "Shares"):
			return "", false
		case strings.HasSuffix(p.Name, "USec") && x == usecInfinity:
			v = "infinity"
		case strings.HasSuffix(p.Name, "USec"):
			v = fmt.Sprintf("%dus", x)
		default:
			v = fmt.Sprint(x)
		}
	default:
		return "", false
	}
	return name + "=" + v, true
}

func FuzzParseProperty(f *testing.F) {
	for _, s := range []string{"MemoryMax=1G", "MemoryMax=50%", "MemoryMax=12Q", "TasksMax=infinity",
		"CPUQuota=20%", "CPUWeight=idle", "AllowedCPUs=0-3,5 7", "IOReadBandwidthMax=/dev/sda 1M",
		"IODeviceLatencyTargetSec=/dev/sda 25ms", "DeviceAllow=/dev/null rw", "Delegate=cpu memory",
		"RuntimeMaxSec=1min 30s", "KillSignal=SIGTERM", "KillSignal=RTMIN+3", "Slice=a-b",
		"Description=hello", "After=a.service b@c.service", "MemoryMax=1.5K 3B", "Foo=bar", "noequals",
		"CPUQuotaPeriodSec=", "TimeoutStopSec=.5h", "MemoryLow=125\u2030", "User=nobody"} {
		f.Add(s)
	}
	sigs := signatures()
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseProperty(s)
		if err != nil {
			msg := err.Error()
			if strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("multi-line error %q", msg)
			}
			if !strings.HasPrefix(msg, "parse ") && !strings.HasPrefix(msg, "unknown property ") &&
				!strings.HasPrefix(msg, "invalid property assignment ") {
				t.Fatalf("badly formed error %q", msg)
			}
			return
		}
		name, _, _ := strings.Cut(s, "=")
		if _, ok := propertyParsers[name]; !ok {
			t.Fatalf("ParseProperty(%q) accepted unknown name %q", s, name)
		}
		want, ok := sigs[p.Name]
		if !ok || p.Value.Signature().String() != want {
			t.Fatalf("ParseProperty(%q) = %s %s; want signature %q", s, p.Name, p.Value.Signature(), want)
		}
		if err := encode(p); err != nil {
			t.Fatalf("ParseProperty(%q) = %s %v cannot be sent: %v", s, p.Name, p.Value, err)
		}
		again, err := ParseProperty(s)
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("ParseProperty(%q) is not deterministic", s)
		}
		if p.Name == "Slice" {
			if n, err := SliceName(p.Value.Value().(string)); err != nil || n != p.Value.Value() {
				t.Fatalf("ParseProperty(%q) sent slice %v that does not re-validate", s, p.Value)
			}
		}
		if text, ok := format(p); ok {
			back, err := ParseProperty(text)
			if err != nil || !reflect.DeepEqual(back, p) {
				t.Fatalf("ParseProperty(%q) = %s %v, but its rendering %q gives %s %v, %v",
					s, p.Name, p.Value, text, back.Name, back.Value, err)
			}
		}
	})
}
