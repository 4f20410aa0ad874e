// Package bpfdev is nsrun's device access control: it parses device rules
// (--device, --device-rule in systemd's DeviceAllow= forms and the numeric
// form, --device-policy, --device-set), resolves them against the system
// (device nodes, /proc/devices), and puts them in force with a
// BPF_PROG_TYPE_CGROUP_DEVICE program on a cgroup: attach, verify, read
// back, live update, detach.
//
// Layers, pure first:
//
//	rule.go, spec.go   syntax only: Rule, Pattern, Access, Spec.Parse
//	resolve.go         Spec/Request -> Policy through a System (Host{} is the real one)
//	table.go           the rules as the kernel holds them (Table) and the
//	                   semantics of checks and live changes, in Go
//	program.go         the program (asm.Instructions) and the map layout
//	kernel.go          cilium/ebpf: load, attach, query, read back, update
//
// The program is the same for every policy: rules live in a hash map keyed
// by type/major/minor, consulted under at most eight patterns (most specific
// first), so a check costs the same for one rule or a thousand. A live
// update loads a new program over a new hash map and attaches it in the
// old one's place with BPF_F_REPLACE, so no check sees a mix of policies.
// (No array of maps holds the rules map: putting a map into one waits for
// an RCU grace period, longer than systemd takes to make a scope.)
//
// Unprivileged callers cannot load device programs; for them a Policy is
// enforced by a /dev holding only Policy.Nodes (nsexec's job) and the
// kernel's refusal of mknod in a user namespace, and Resolve refuses what
// that cannot express.
//
// It never talks D-Bus and never enters namespaces.
package bpfdev
