package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// MainOptions configures Main.
type MainOptions struct {
	// Setup runs before the tests, after the fd and host snapshots; its
	// teardown runs after them, before the checks. A Setup error fails the
	// run (it is not a reason to skip).
	Setup func() (teardown func() error, err error)
	// HostCheck snapshots the host before and compares after: mounts, the
	// /tmp canary, cgroups and systemd processes.
	HostCheck bool
}

// Main runs the package's tests and fails the run if a file descriptor opened
// during it is still open at the end, or (with HostCheck) if the host is not
// as it was. Use it from TestMain: os.Exit(testutil.Main(m, opts)).
func Main(m *testing.M, opts MainOptions) int {
	warmUp()
	fdsBefore := openFDs()
	var host *HostState
	if opts.HostCheck {
		var err error
		if host, err = TakeHostState(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: snapshot host: %v\n", err)
			return 1
		}
	}
	code := 0
	teardown := func() error { return nil }
	if opts.Setup != nil {
		td, err := opts.Setup()
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: test setup: %v\n", err)
			code = 1
		} else if td != nil {
			teardown = td
		}
	}
	if code == 0 {
		code = m.Run()
	}
	if err := teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: test teardown: %v\n", err)
		code = 1
	}
	if leaked := diffFDs(fdsBefore, openFDs()); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: file descriptors leaked by the tests: %s\n", strings.Join(leaked, ", "))
		code = 1
	}
	if host != nil {
		if problems := host.Compare(); len(problems) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: the host is not as the tests found it:\n  %s\n", strings.Join(problems, "\n  "))
			code = 1
		} else {
			fmt.Fprintln(os.Stderr, "host unchanged: mounts, /tmp canary, cgroups, systemd processes")
		}
	}
	return code
}

// warmUp makes the Go runtime open what it opens lazily once per process
// (the netpoller's epoll and eventfd), so that they are not taken for leaks.
func warmUp() {
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
}

// openFDs maps each open fd of this process to what it refers to.
func openFDs() map[string]string {
	fds := map[string]string{}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fds
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used, closed by now
		}
		fds[e.Name()] = target
	}
	return fds
}

func diffFDs(before, after map[string]string) []string {
	var leaked []string
	for fd, target := range after {
		if before[fd] != target {
			leaked = append(leaked, fd+" -> "+target)
		}
	}
	sort.Strings(leaked)
	return leaked
}
