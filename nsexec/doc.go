// Package nsexec is the process that becomes the sandbox: clone flags, id
// maps, mounts (overlay root, pivot_root, /dev, /proc, /sys, binds, tmpfs,
// masks), hostname, loopback, time offsets, capabilities, no_new_privs,
// seccomp and PID 1 duties, ending in execve of the workload.
//
// The caller builds a Spec, calls Prepare for an *exec.Cmd that re-executes
// nsrun with ChildArg, adds stdio, preserved fds and its cgroup placement,
// then Launch.Start and Launch.Wait. The parent/child exchange is drawn in
// launch.go. main() must call ChildMain when os.Args[1] == ChildArg.
//
// It never talks D-Bus or BPF, never logs (errors and warnings go back to
// the caller), and stays cheap to import: the re-executed child runs it
// before anything else.
package nsexec
