package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/units"
	"golang.org/x/sys/unix"
)

// Task headroom is how many more tasks (threads count) nsrun wants to be
// able to start: its own runtime threads, the watcher's, the sandbox
// child's and the workload. Measured in the box: a --sandbox run needs
// about 20, a plain one about 15; the rest is margin, because a Go process
// that cannot start a thread dies with a runtime crash instead of an error.
const (
	taskHeadroomPlain   = 20
	taskHeadroomSandbox = 32
)

// checkTaskHeadroom refuses to start when pids.max of nsrun's cgroup (or
// an ancestor's) or RLIMIT_NPROC leaves fewer than the headroom, so that
// the limit shows as one line naming it, not as a crash of nsrun, its
// watcher or the sandbox child halfway through the setup.
func checkTaskHeadroom(sandboxed bool) error {
	taskHeadroom := taskHeadroomPlain
	if sandboxed {
		taskHeadroom = taskHeadroomSandbox
	}
	if free, where, ok := pidsFree(); ok && free < taskHeadroom {
		return fmt.Errorf("only %d more tasks may start in cgroup %s (pids.max); nsrun needs about %d for its own processes and threads: raise the limit", max(free, 0), where, taskHeadroom)
	}
	if free, limit, ok := nprocFree(); ok && free < taskHeadroom {
		return fmt.Errorf("only %d more tasks may start under RLIMIT_NPROC (ulimit -u %d for uid %d); nsrun needs about %d for its own processes and threads: raise the limit", max(free, 0), limit, os.Getuid(), taskHeadroom)
	}
	return nil
}

// checkScopeTasksMax refuses a TasksMax for a new scope that leaves nsrun
// no room: the scope holds nsrun's supervisor and watcher as well as the
// workload, and their threads count (measured on a full cgroup v2 guest:
// about 12 tasks). In place the limit goes to payload/ only, so this is for
// the scope path, and only where the pids controller exists (elsewhere
// the limit is refused or, with --allow-degraded, not in force).
func checkScopeTasksMax(mount string, props []units.Property, sandboxed bool) error {
	if ctrl, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers")); err != nil || !slices.Contains(strings.Fields(string(ctrl)), "pids") {
		return nil
	}
	need := taskHeadroomPlain
	if sandboxed {
		need = taskHeadroomSandbox
	}
	for _, p := range props {
		if p.Name != "TasksMax" {
			continue
		}
		if n, ok := p.Value.Value().(uint64); ok && n < uint64(need) {
			return fmt.Errorf("TasksMax=%d is too small for the scope: it counts nsrun's own supervisor and watcher threads (about 12) as well as the workload, and nsrun needs about %d to start without crashing; ask for at least %d plus what the workload needs", n, need, need)
		}
	}
	return nil
}

// pidsFree is the smallest pids.max - pids.current of nsrun's cgroup and
// its ancestors (ok false when no limit is set or nothing is readable).
func pidsFree() (free int, where string, ok bool) {
	mount, err := cgv2.Mount()
	if err != nil {
		return 0, "", false
	}
	self, err := cgv2.Self()
	if err != nil {
		return 0, "", false
	}
	return pidsFreeIn(mount, self)
}

// pidsFreeIn is pidsFree for cgroup self below the cgroup2 mount.
func pidsFreeIn(mount, self string) (free int, where string, ok bool) {
	for dir := filepath.Join(mount, self); strings.HasPrefix(dir, mount) && len(dir) > len(mount); dir = filepath.Dir(dir) {
		maxv, err1 := os.ReadFile(filepath.Join(dir, "pids.max"))
		cur, err2 := os.ReadFile(filepath.Join(dir, "pids.current"))
		if err1 != nil || err2 != nil || strings.TrimSpace(string(maxv)) == "max" {
			continue
		}
		m, err1 := strconv.Atoi(strings.TrimSpace(string(maxv)))
		c, err2 := strconv.Atoi(strings.TrimSpace(string(cur)))
		if err1 != nil || err2 != nil {
			continue
		}
		if !ok || m-c < free {
			free, where, ok = m-c, strings.TrimPrefix(dir, mount), true
		}
	}
	return free, where, ok
}

// nprocFree is RLIMIT_NPROC less the tasks of nsrun's real uid that this
// pid namespace shows (ok false for root, which the kernel exempts, or no
// limit).
func nprocFree() (free int, limit uint64, ok bool) {
	uid := os.Getuid()
	var rl unix.Rlimit
	if uid == 0 || unix.Getrlimit(unix.RLIMIT_NPROC, &rl) != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > 1<<22 {
		return 0, 0, false
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	used := 0
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		data, err := os.ReadFile("/proc/" + p.Name() + "/status")
		if err != nil {
			continue
		}
		var ruid, threads int = -1, 0
		for _, line := range strings.Split(string(data), "\n") {
			if v, found := strings.CutPrefix(line, "Uid:"); found {
				if f := strings.Fields(v); len(f) > 0 {
					ruid, _ = strconv.Atoi(f[0])
				}
			} else if v, found := strings.CutPrefix(line, "Threads:"); found {
				threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if ruid == uid {
			used += threads
		}
	}
	return int(rl.Cur) - used, rl.Cur, true
}
