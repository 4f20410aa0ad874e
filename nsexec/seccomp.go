package nsexec

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The default filter answers EPERM to system calls that reach the kernel's
// attack surface or escape the sandbox and that no ordinary workload needs,
// and to the terminal ioctls that inject input (TIOCSTI, CVE-2017-5226) or
// paste selections on a VT (TIOCLINUX, CVE-2023-28100). Everything else is
// allowed. Mounting is refused too, so that a workload given CAP_SYS_ADMIN
// still cannot remove the masks (use --seccomp=none to mount inside). Nested
// user namespaces stay allowed; without capabilities in the sandbox's own
// namespace they give no host privilege.
//
// The program is assembled with golang.org/x/net/bpf (the Go project's
// classic-BPF assembler, pure Go) instead of libseccomp, which needs cgo.

// blockedSyscalls are refused with EPERM by the default filter.
var blockedSyscalls = []string{
	"add_key", "request_key", "keyctl", // kernel keyrings
	"bpf", "perf_event_open", "userfaultfd", // kernel attack surface
	"kexec_load", "kexec_file_load", "reboot",
	"init_module", "finit_module", "delete_module",
	"open_by_handle_at", "name_to_handle_at", // escape by file handle (shocker)
	"acct", "swapon", "swapoff", "syslog", "quotactl", "lookup_dcookie",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"iopl", "ioperm", "uselib", "vhangup", "nfsservctl", "pivot_root",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "mount", "umount2",
}

// blockedIoctls are the ioctl requests the default filter refuses.
var blockedIoctls = []uint32{unix.TIOCSTI, unix.TIOCLINUX}

// Offsets in struct seccomp_data.
const (
	offNr       = 0
	offArch     = 4
	offArg1Low  = 24 // little-endian low half of args[1]
	offArg1High = 28
)

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

// defaultFilter is the compiled default program, in the kernel's struct
// sock_filter layout.
func defaultFilter() ([]byte, error) {
	if auditArch == 0 {
		return nil, fmt.Errorf("the default seccomp filter is not available on this architecture (use --seccomp=none or a FILE)")
	}
	var nrs []uint32
	for _, name := range blockedSyscalls {
		if nr, ok := syscallNumbers[name]; ok {
			nrs = append(nrs, nr)
		}
	}
	sort.Slice(nrs, func(i, j int) bool { return nrs[i] < nrs[j] })
	return assemble(nrs, blockedIoctls)
}

// assemble builds: kill on a foreign architecture; EPERM for x32 calls and
// the listed system calls; EPERM for ioctl with a listed request (the
// kernel compares the request as a 32-bit int, so only the low half is
// checked); allow the rest.
func assemble(nrs []uint32, ioctls []uint32) ([]byte, error) {
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	if x32Bit != 0 {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipFalse: 1},
			bpf.RetConstant{Val: retEPERM})
	}
	// ioctl first: it is frequent.
	prog = append(prog,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: ioctlNr, SkipFalse: uint8(3 + len(ioctls))},
		bpf.LoadAbsolute{Off: offArg1Low, Size: 4})
	for i, req := range ioctls {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: req, SkipTrue: uint8(len(ioctls) - i)})
	}
	prog = append(prog, bpf.RetConstant{Val: retAllow}, bpf.RetConstant{Val: retEPERM})
	for i, nr := range nrs {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipTrue: uint8(len(nrs) - i)})
	}
	prog = append(prog, bpf.RetConstant{Val: retAllow}, bpf.RetConstant{Val: retEPERM})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	out := make([]byte, 0, 8*len(raw))
	for _, r := range raw {
		out = binary.NativeEndian.AppendUint16(out, r.Op)
		out = append(out, r.Jt, r.Jf)
		out = binary.NativeEndian.AppendUint32(out, r.K)
	}
	return out, nil
}

// checkProgram refuses what the kernel would: an empty program, one that is
// not a whole number of instructions, or one longer than BPF_MAXINSNS.
func checkProgram(prog []byte) error {
	switch {
	case len(prog) == 0:
		return fmt.Errorf("seccomp program is empty")
	case len(prog)%8 != 0:
		return fmt.Errorf("seccomp program is %d bytes, not a whole number of 8-byte instructions", len(prog))
	case len(prog)/8 > 4096:
		return fmt.Errorf("seccomp program has %d instructions, the kernel takes at most 4096", len(prog)/8)
	}
	return nil
}

// LoadSeccompFile reads a compiled classic-BPF seccomp program (an array of
// struct sock_filter in native byte order, as bwrap --seccomp and
// libseccomp's seccomp_export_bpf produce) for --seccomp=FILE.
func LoadSeccompFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seccomp program: %w", err)
	}
	if err := checkProgram(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}
