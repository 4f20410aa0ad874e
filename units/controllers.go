package units

import "sort"

// controllerOf maps a resource property, by its D-Bus name, to the cgroup v2
// controller it needs to be in force. systemd accepts these properties even
// where the controller is missing and then enforces nothing (systemd #9641);
// nsrun checks the controller instead of trusting the job result.
// Legacy v1 names map to the controller systemd translates them for.
var controllerOf = map[string]string{
	"MemoryAccounting": "memory", "MemoryMin": "memory", "MemoryLow": "memory",
	"MemoryHigh": "memory", "MemoryMax": "memory", "MemorySwapMax": "memory",
	"MemoryLimit": "memory", "DefaultMemoryMin": "memory", "DefaultMemoryLow": "memory",
	"MemoryMinScale": "memory", "MemoryLowScale": "memory", "MemoryHighScale": "memory",
	"MemoryMaxScale": "memory", "MemorySwapMaxScale": "memory", "MemoryLimitScale": "memory",

	"TasksAccounting": "pids", "TasksMax": "pids", "TasksMaxScale": "pids",

	"CPUAccounting": "cpu", "CPUWeight": "cpu", "StartupCPUWeight": "cpu",
	"CPUShares": "cpu", "StartupCPUShares": "cpu", "CPUQuotaPerSecUSec": "cpu",
	"CPUQuotaPeriodUSec": "cpu",

	"AllowedCPUs": "cpuset", "StartupAllowedCPUs": "cpuset",
	"AllowedMemoryNodes": "cpuset", "StartupAllowedMemoryNodes": "cpuset",

	"IOAccounting": "io", "IOWeight": "io", "StartupIOWeight": "io", "IODeviceWeight": "io",
	"IOReadBandwidthMax": "io", "IOWriteBandwidthMax": "io", "IOReadIOPSMax": "io",
	"IOWriteIOPSMax": "io", "IODeviceLatencyTargetUSec": "io",
	"BlockIOAccounting": "io", "BlockIOWeight": "io", "StartupBlockIOWeight": "io",
	"BlockIODeviceWeight": "io", "BlockIOReadBandwidth": "io", "BlockIOWriteBandwidth": "io",
}

// RequiredControllers returns, for every cgroup v2 controller the properties
// need, the properties (by D-Bus name) that need it. Accounting switches set
// to "no" need nothing; DelegateControllers needs each controller it lists.
func RequiredControllers(props []Property) map[string][]string {
	need := map[string][]string{}
	add := func(ctrl, prop string) {
		for _, p := range need[ctrl] {
			if p == prop {
				return
			}
		}
		need[ctrl] = append(need[ctrl], prop)
	}
	for _, p := range props {
		if p.Name == "DelegateControllers" {
			if list, ok := p.Value.Value().([]string); ok {
				for _, c := range list {
					add(c, p.Name)
				}
			}
			continue
		}
		ctrl, ok := controllerOf[p.Name]
		if !ok {
			continue
		}
		if on, isBool := p.Value.Value().(bool); isBool && !on {
			continue
		}
		add(ctrl, p.Name)
	}
	for _, props := range need {
		sort.Strings(props)
	}
	return need
}
