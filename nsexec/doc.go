// Package nsexec is the process that becomes the sandbox: clone flags, id
// maps, mounts (overlay root, pivot_root, /dev, /proc, /sys, binds, tmpfs,
// masks), hostname, capabilities, no_new_privs, seccomp and PID 1 duties,
// ending in execve of the workload.
//
// It never talks D-Bus or BPF, and it stays cheap to import: the re-executed
// child runs it before anything else.
//
// Status: not implemented yet (issue "namespaces"); nsrun has no --unshare
// flag until then.
package nsexec
