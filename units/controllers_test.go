package units

import (
	"reflect"
	"testing"
)

func TestRequiredControllers(t *testing.T) {
	var props []Property
	for _, a := range []string{
		"MemoryMax=1G", "MemoryHigh=50%", "TasksMax=10", "CPUQuota=20%", "CPUWeight=idle",
		"AllowedCPUs=0-1", "IOWriteBandwidthMax=/dev/sda 2M", "MemoryAccounting=no",
		"Description=x", "KillMode=mixed", "Delegate=cpu pids",
	} {
		props = append(props, mustParse(t, a))
	}
	got := RequiredControllers(props)
	want := map[string][]string{
		"memory": {"MemoryHighScale", "MemoryMax"},
		"pids":   {"DelegateControllers", "TasksMax"},
		"cpu":    {"CPUQuotaPerSecUSec", "CPUWeight", "DelegateControllers"},
		"cpuset": {"AllowedCPUs"},
		"io":     {"IOWriteBandwidthMax"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RequiredControllers = %v\nwant %v", got, want)
	}
}

// Every resource property the parser accepts must say which controller it
// needs, or the enforcement check would wave it through.
func TestEveryResourcePropertyHasAController(t *testing.T) {
	samples := map[string]string{
		"CPUAccounting": "yes", "MemoryAccounting": "yes", "IOAccounting": "yes",
		"BlockIOAccounting": "yes", "TasksAccounting": "yes",
		"CPUWeight": "100", "StartupCPUWeight": "100", "IOWeight": "100", "StartupIOWeight": "100",
		"CPUShares": "100", "StartupCPUShares": "100", "BlockIOWeight": "100", "StartupBlockIOWeight": "100",
		"AllowedCPUs": "0", "StartupAllowedCPUs": "0", "AllowedMemoryNodes": "0", "StartupAllowedMemoryNodes": "0",
		"MemoryMin": "1M", "MemoryLow": "1M", "DefaultMemoryMin": "1M", "DefaultMemoryLow": "1M",
		"MemoryHigh": "1M", "MemoryMax": "1M", "MemorySwapMax": "1M", "MemoryLimit": "1M",
		"TasksMax": "5", "CPUQuota": "10%", "CPUQuotaPeriodSec": "10ms",
		"IOReadBandwidthMax": "/dev/sda 1M", "IOWriteBandwidthMax": "/dev/sda 1M",
		"IOReadIOPSMax": "/dev/sda 10", "IOWriteIOPSMax": "/dev/sda 10",
		"BlockIOReadBandwidth": "/dev/sda 1M", "BlockIOWriteBandwidth": "/dev/sda 1M",
		"IODeviceWeight": "/dev/sda 100", "BlockIODeviceWeight": "/dev/sda 100",
		"IODeviceLatencyTargetSec": "/dev/sda 10ms",
	}
	for name, value := range samples {
		p := mustParse(t, name+"="+value)
		if len(RequiredControllers([]Property{p})) != 1 {
			t.Errorf("%s=%s (sent as %s) needs no controller according to controllerOf", name, value, p.Name)
		}
	}
}
