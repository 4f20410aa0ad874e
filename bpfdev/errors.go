package bpfdev

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Sentinels callers branch on.
var (
	// ErrUnresolved: a path, group or set names no device. It is never
	// dropped silently: the request is refused.
	ErrUnresolved = errors.New("does not resolve to a device")
	// ErrInexpressible: a rule the unprivileged mechanism (a /dev of
	// allowed nodes) cannot enforce.
	ErrInexpressible = errors.New("cannot be enforced without a device program")
	// ErrNotInForce: after attaching, the kernel does not hold the policy
	// as asked; the workload must not start.
	ErrNotInForce = errors.New("device policy not in force")
	// ErrNoProgram: the cgroup has no device program of nsrun's.
	ErrNoProgram = errors.New("no nsrun device program")
	// ErrPermission: the caller may not load, attach or query device
	// programs (it lacks CAP_SYS_ADMIN / CAP_NET_ADMIN in the initial user
	// namespace). It matches unix.EPERM.
	ErrPermission = &permissionError{}
)

type permissionError struct{}

func (*permissionError) Error() string {
	return "device programs need CAP_SYS_ADMIN and CAP_NET_ADMIN (an unprivileged sandbox is limited by its /dev instead)"
}

func (*permissionError) Is(target error) bool { return target == unix.EPERM }

// privileged tells whether this process may query and attach cgroup
// programs. cilium/ebpf reports a refused BPF_PROG_QUERY as "not supported"
// (its feature probe fails without privileges too), so the reason is found
// here instead.
func privileged() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SYS_ADMIN) && has(unix.CAP_NET_ADMIN)
}
