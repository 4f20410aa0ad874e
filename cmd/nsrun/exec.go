package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/nsexec"
	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// newExecCmd is "nsrun exec UNIT [--pty] [--] COMMAND...": COMMAND joins
// the sandbox of a running nsrun unit (its namespaces, root and cgroup),
// with no capabilities, no_new_privs and the default seccomp filter. The
// sandbox is identified by the unit's cgroup (systemd's ControlGroup
// property), never by anything inside it.
func newExecCmd() *cobra.Command {
	var system, user, pty bool
	cmd := &cobra.Command{
		Use:           "exec UNIT [--pty] [--] COMMAND [ARG...]",
		Short:         "Run COMMAND inside the sandbox of a running unit",
		Args:          cobra.MinimumNArgs(2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			m := units.DefaultManager()
			if system {
				m = units.System
			} else if user {
				m = units.User
			}
			argv := args[1:]
			if argv[0] == "--" {
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return usageError("no command given (usage: nsrun exec UNIT [--] COMMAND [ARG...])")
			}
			return execInSandbox(cmd.Context(), m, args[0], argv, pty)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&system, "system", false, "the unit belongs to the system manager")
	f.BoolVar(&user, "user", false, "the unit belongs to your user manager")
	f.BoolVar(&pty, "pty", false, "run COMMAND on a new pseudo-terminal")
	f.SetInterspersed(false)
	cmd.MarkFlagsMutuallyExclusive("system", "user")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	return cmd
}

// enterUnit finds the cgroup directory of the unit's workload (payload/
// below the scope when it exists, else the scope's own) and moves nsrun
// itself into the unit (its supervisor/ leaf when there is one), through
// the manager: an unprivileged caller may not move itself there, and
// CLONE_INTO_CGROUP needs the caller below the same delegated subtree.
// It returns the workload's cgroup and whether nsrun now shares it.
func enterUnit(ctx context.Context, m units.Manager, unit string) (dir string, inside bool, err error) {
	name, err := units.ScopeName(unit)
	if err != nil {
		return "", false, usageError("%v", err)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	conn, err := units.Dial(ctx, m)
	if err != nil {
		return "", false, err
	}
	defer conn.Close()
	cg, err := conn.ControlGroup(ctx, name)
	if err != nil {
		return "", false, err
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return "", false, err
	}
	scope := delegate.ScopeDir(mount, cg)
	dir, sub, inside := scope, "", true
	if _, err := os.Stat(filepath.Join(scope, "payload")); err == nil {
		dir, inside = filepath.Join(scope, "payload"), false
		if _, err := os.Stat(filepath.Join(scope, "supervisor")); err == nil {
			sub = "/supervisor"
		}
	}
	if err := conn.AttachProcesses(ctx, name, sub, []int{os.Getpid()}); err != nil {
		return "", false, err
	}
	return dir, inside, nil
}

// sandboxInit is the sandbox child in the cgroup dir: the oldest process
// there whose mount, pid and user namespaces all differ from nsrun's and
// whose parent is outside dir (with payload/ and supervisor/ leaves, its
// parent is the supervising nsrun; a command joined earlier has nsenter,
// in payload/, as its parent). Without the leaves the supervising nsrun
// shares the cgroup: then the oldest whose parent is not sandboxed.
func sandboxInit(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0, err
	}
	in, sandboxed := map[int]bool{}, map[int]bool{}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			in[pid] = true
			if ownNamespaces(pid) == 0 {
				sandboxed[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	for _, outside := range []map[int]bool{in, sandboxed} {
		best, bestStart := 0, uint64(0)
		for _, pid := range pids {
			if outside[parentOf(pid)] {
				continue
			}
			if start, ok := startTime(pid); ok && (best == 0 || start < bestStart) {
				best, bestStart = pid, start
			}
		}
		if best != 0 {
			return best, nil
		}
	}
	return 0, fmt.Errorf("no sandboxed process in %s (was the unit started with namespace options?)", dir)
}

// ownNamespaces counts the mount, pid and user namespaces pid shares with
// nsrun (0: it is sandboxed; -1: unreadable).
func ownNamespaces(pid int) int {
	n := 0
	for _, ns := range []string{"mnt", "pid", "user"} {
		var a, b unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), &a) != nil || unix.Stat("/proc/self/ns/"+ns, &b) != nil {
			return -1
		}
		if a.Ino == b.Ino && a.Dev == b.Dev {
			n++
		}
	}
	return n
}

func parentOf(pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// inCgroup checks that pid is in dir (after its pidfd pins it, so a reused
// pid cannot pass).
func inCgroup(pid int, dir string) error {
	own, err := cgv2.OfPid(strconv.Itoa(pid))
	if err != nil {
		return err
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return err
	}
	if filepath.Join(mount, own) != filepath.Clean(dir) {
		return fmt.Errorf("pid %d is not in %s", pid, dir)
	}
	return nil
}

func execInSandbox(ctx context.Context, m units.Manager, unit string, argv []string, pty bool) error {
	if err := checkTaskHeadroom(true); err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	dir, inside, err := enterUnit(ctx, m, unit)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	pid, err := sandboxInit(dir)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("find the sandbox of %s: %w", unit, err)}
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("open pid %d: %w", pid, err)}
	}
	defer unix.Close(pidfd)
	if err := inCgroup(pid, dir); err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	cgfd, err := os.Open(dir)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	defer cgfd.Close()
	spec := &nsexec.Spec{Argv: argv, Env: nsexec.CleanEnv(os.Environ(), nil), Pty: pty}
	if pty {
		// As "nsrun run --pty": the joined child allocates the terminal
		// in the sandbox's own devpts and sends its master back.
		spec.Winsize = termSize()
	}
	l, err := nsexec.Join(pid, spec)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	l.Cmd.Stdin, l.Cmd.Stdout, l.Cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if !inside {
		l.Cmd.SysProcAttr.UseCgroupFD, l.Cmd.SysProcAttr.CgroupFD = true, int(cgfd.Fd())
	}
	l.Cmd.SysProcAttr.Pdeathsig = unix.SIGKILL
	return superviseLaunch(l, pidfd, pty)
}

// superviseLaunch starts l from a locked thread, forwards signals (with a
// pty: relays it and passes window-size changes on) and returns the status
// as nsrun's exit.
func superviseLaunch(l *nsexec.Launch, pidfd int, pty bool) error {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded(true)...)
	if pty {
		signal.Notify(sigs, unix.SIGWINCH)
	}
	defer signal.Stop(sigs)
	var relay *ptyRelay
	defer func() {
		// On every way out: the master closed, nsrun's terminal back from
		// raw mode (both are no-ops after finish).
		if relay != nil {
			relay.restore()
			relay.master.Close()
		}
	}()
	type result struct {
		status int
		err    error
	}
	started := make(chan error, 1)
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // Pdeathsig: this thread lives until Wait returns
		if err := l.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		st, _, _, err := l.Wait()
		done <- result{st, err}
	}()
	if err := <-started; err != nil {
		code := exitNsrunFailed
		switch {
		case errors.Is(err, nsexec.ErrCommandNotFound):
			code = exitNotFound
		case errors.Is(err, nsexec.ErrCommandNotExecutable):
			code = exitNotExecutable
		}
		return &exitError{code: code, err: err}
	}
	if pty {
		if relay = sandboxRelay(l); relay == nil {
			_ = l.Cmd.Process.Kill()
			return &exitError{code: exitNsrunFailed, err: fmt.Errorf("--pty: the sandbox sent no terminal")}
		}
		relay.start()
	}
	if pidfd >= 0 {
		// The sandbox's init is still the process we checked.
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
			_ = l.Cmd.Process.Kill()
			return &exitError{code: exitNsrunFailed, err: fmt.Errorf("the sandbox ended while joining it: %w", err)}
		}
	}
	for _, w := range l.Warnings {
		fmt.Fprintf(os.Stderr, "nsrun: warning: %s\n", w)
	}
	for {
		select {
		case s := <-sigs:
			if s == unix.SIGWINCH && relay != nil {
				relay.resize()
				continue
			}
			_ = l.Cmd.Process.Signal(s)
		case r := <-done:
			if relay != nil {
				relay.finish()
			}
			if r.err != nil {
				return &exitError{code: exitNsrunFailed, err: r.err}
			}
			if r.status == 0 {
				return nil
			}
			return exitStatus(r.status)
		}
	}
}

// printSandboxStatus is the namespace and root part of "nsrun status": one
// line per namespace with its inode, marked private or shared with nsrun's.
func printSandboxStatus(w io.Writer, pid int) error {
	info, err := nsexec.Inspect(pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Root: %s %s\n", info.RootFS, info.RootSource)
	for _, n := range info.Namespaces {
		state := "shared with the caller"
		if n.Private {
			state = "private"
		}
		fmt.Fprintf(w, "Namespace %-6s %d (%s)\n", n.Kind+":", n.Inode, state)
	}
	return nil
}
