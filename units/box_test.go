package units

// Box tests: StartScope against a real systemd (the test box, internal/box)
// on the manager's private socket, the lean exchange of wire.go, as root
// with the system manager and as a box user with its user manager. The test
// binary is shared into the box and run there as a helper
// (UNITS_TEST_HELPER set): a scope's PIDs must be in the manager's pid
// namespace, and the private socket is the box's. The helper reports what
// StartScope returned as JSON; the test checks it and that the unit is gone.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/testutil"
)

func TestMain(m *testing.M) {
	if req := os.Getenv("UNITS_TEST_HELPER"); req != "" {
		os.Exit(helper(req))
	}
	os.Exit(testutil.Main(m, testutil.MainOptions{HostCheck: true, Setup: func() (func() error, error) {
		return closeBox, nil
	}}))
}

// The box is started by the first test that needs it (most of the
// package's tests need no root) and closed after the last.
var (
	boxOnce sync.Once
	boxErr  error
	testBox *box.Box
	shared  string // host directory shared into the box: the test binary
	testBin string
)

func startBox() error {
	var err error
	if shared, err = os.MkdirTemp("", "units-test-"); err != nil {
		return err
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err == nil {
		var data []byte
		if data, err = os.ReadFile(self); err == nil {
			testBin = filepath.Join(shared, "units.test")
			err = os.WriteFile(testBin, data, 0o755)
		}
	}
	if err == nil {
		testBox, err = box.Start(context.Background(), box.Options{Shares: []string{shared}})
	}
	return err
}

func closeBox() error {
	var err error
	if testBox != nil {
		err = testBox.Close()
	}
	if shared != "" {
		os.RemoveAll(shared)
	}
	return err
}

func requireBox(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBox(t)
	boxOnce.Do(func() { boxErr = startBox() })
	if boxErr != nil {
		t.Fatalf("start box: %v", boxErr)
	}
}

var (
	userOnce sync.Once
	theUser  box.User
	userErr  error
)

// boxUser is the suite's box user, with its user manager running.
func boxUser(t *testing.T) *box.User {
	t.Helper()
	userOnce.Do(func() {
		ctx := context.Background()
		if theUser, userErr = testBox.EnsureUser(ctx, "nsrun-units"); userErr == nil {
			userErr = testBox.StartUserManager(ctx, theUser)
		}
	})
	if userErr != nil {
		t.Fatal(userErr)
	}
	return &theUser
}

// managers runs f as root against the system manager and as the box user
// against its user manager.
func managers(t *testing.T, f func(t *testing.T, u *box.User)) {
	requireBox(t)
	t.Run("system", func(t *testing.T) { f(t, nil) })
	t.Run("user", func(t *testing.T) { f(t, boxUser(t)) })
}

// helperRequest is what the test asks the helper in the box to do.
type helperRequest struct {
	// Case: "dependency" (the scope Requires= and is After= Dep, a service
	// that fails), "failed" (the scope's process is gone when its job runs:
	// systemd cannot move it in and the scope fails) or "timeout" (the job
	// waits for Dep, which waits for Gate, past JobTimeout).
	Case       string
	Unit, Dep  string
	Gate       string
	JobTimeout time.Duration
}

// helperReport is what the helper saw.
type helperReport struct {
	Via       string // the address Dial connected to
	Wire      bool   // Dial connected the private socket: StartScope went through wire.go
	Err       string
	JobError  *JobError // errors.As(err, &JobError)
	JobFailed bool      // errors.Is(err, ErrJobFailed)
	Deadline  bool      // errors.Is(err, context.DeadlineExceeded)
	// Timeout case, after StartScope returned and the gate opened: the job
	// left queued started the scope with its process (systemd's doing, as
	// jobTimedOut says), and the process was then killed.
	ActiveAfterGate bool
	Problem         string // the helper could not do its part
}

// helper runs in the box: one StartScope as req asks, reported on stdout.
func helper(reqJSON string) int {
	var req helperRequest
	var rep helperReport
	if err := json.Unmarshal([]byte(reqJSON), &req); err != nil {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		return 2
	}
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(rep) }()
	ctx := context.Background()
	c, err := Dial(ctx, DefaultManager())
	if err != nil {
		rep.Problem = err.Error()
		return 0
	}
	defer c.Close()
	rep.Via, rep.Wire = c.Address(), c.raw != nil && !c.bus

	// The scope's process: a child of the helper, not the helper itself,
	// so that the helper never sits in a unit it is testing.
	sleep := exec.Command("/bin/sleep", "1000")
	if err := sleep.Start(); err != nil {
		rep.Problem = err.Error()
		return 0
	}
	var reapOnce sync.Once
	reap := func() {
		reapOnce.Do(func() {
			_ = sleep.Process.Kill()
			_ = sleep.Wait()
		})
	}
	defer reap()
	sequenced := make(chan string, 1) // the failed case's sequence, done

	spec := ScopeSpec{Name: req.Unit, PIDs: []int{sleep.Process.Pid}, JobTimeout: req.JobTimeout}
	var props []string
	switch req.Case {
	case "dependency":
		// The scope never starts: it ends inactive, not failed.
		props = []string{"Requires=" + req.Dep, "After=" + req.Dep, "CollectMode=inactive"}
	case "failed":
		// CollectMode=inactive: a scope left failed stays loaded until its
		// failed state is reset, so the test sees whether StartScope
		// reset it.
		props = []string{"Wants=" + req.Dep, "After=" + req.Dep, "CollectMode=inactive"}
		// Once the scope's job waits for Dep, its process goes; then the
		// gate opens and the job runs: systemd 252's scope_start cannot
		// move the process in ("Failed to add PIDs to scope's control
		// group") and the scope fails (result "failed").
		go func() {
			problem := ""
			if err := waitJobQueued(req.Unit); err != nil {
				problem = err.Error()
			}
			reap()
			if err := os.WriteFile(req.Gate, nil, 0o644); err != nil {
				problem = err.Error()
			}
			sequenced <- problem
		}()
	case "timeout":
		props = []string{"Wants=" + req.Dep, "After=" + req.Dep}
	default:
		rep.Problem = "unknown case " + req.Case
		return 0
	}
	for _, a := range props {
		p, err := ParseProperty(a)
		if err != nil {
			rep.Problem = err.Error()
			return 0
		}
		spec.Properties = append(spec.Properties, p)
	}
	err = c.StartScope(ctx, spec)
	if req.Case == "failed" {
		rep.Problem = <-sequenced
	}
	if err != nil {
		rep.Err = err.Error()
	}
	var je *JobError
	if errors.As(err, &je) {
		rep.JobError = je
	}
	rep.JobFailed = errors.Is(err, ErrJobFailed)
	rep.Deadline = errors.Is(err, context.DeadlineExceeded)

	if req.Case == "timeout" {
		// Only now may the job go on: the gate opens, the scope starts
		// with the sleep, and ends when the sleep is killed.
		if err := os.WriteFile(req.Gate, nil, 0o644); err != nil {
			rep.Problem = err.Error()
			return 0
		}
		if err := waitProp(req.Unit, "ActiveState", "active"); err != nil {
			rep.Problem = err.Error()
			return 0
		}
		rep.ActiveAfterGate = true
	}
	return 0
}

// systemctlArgs are args for systemctl with the manager the helper talks
// to (root's system manager, a user's own).
func systemctlArgs(args ...string) []string {
	if os.Geteuid() != 0 {
		return append([]string{"--user"}, args...)
	}
	return args
}

// waitJobQueued waits (bounded) until unit has a job queued.
func waitJobQueued(unit string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("systemctl", systemctlArgs("show", "--property=Job", "--value", unit)...).Output()
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no job queued for %s (%v)", unit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitProp waits (bounded) until unit's property has value.
func waitProp(unit, prop, value string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("systemctl", systemctlArgs("show", "--property="+prop, "--value", unit)...).Output()
		got := strings.TrimSpace(string(out))
		if err == nil && got == value {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s of %s is %q (%v), want %q", prop, unit, got, err, value)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runHelper runs the helper in the box as root (u nil) or u.
func runHelper(t *testing.T, u *box.User, req helperRequest) helperReport {
	t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if u != nil {
		cmd = testBox.CommandAs(ctx, *u, testBin)
	} else {
		cmd = testBox.Command(ctx, testBin)
	}
	cmd.Env = append(cmd.Env, "UNITS_TEST_HELPER="+string(data))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var rep helperReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("helper report %q: %v\nstderr: %s", stdout.String(), err, stderr.String())
	}
	if rep.Problem != "" {
		t.Fatalf("helper: %s", rep.Problem)
	}
	if !rep.Wire {
		t.Fatalf("StartScope did not take the private socket (connected to %s)", rep.Via)
	}
	return rep
}

// boxSystemctl runs systemctl in the box for u's manager (root's when nil).
func boxSystemctl(t *testing.T, u *box.User, args ...string) (string, error) {
	t.Helper()
	if u != nil {
		return testBox.RunAs(context.Background(), *u, "systemctl", append([]string{"--user"}, args...)...)
	}
	return testBox.Run(context.Background(), "systemctl", args...)
}

// unitState is LoadState/ActiveState of unit in u's manager.
func unitState(t *testing.T, u *box.User, unit string) string {
	t.Helper()
	out, err := boxSystemctl(t, u, "show", "--property=LoadState,ActiveState", unit)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(out), " ")
}

// waitUnitGone fails t unless u's manager forgets unit (bounded wait: a
// unit is collected shortly after it ends).
func waitUnitGone(t *testing.T, u *box.User, unit string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		state := unitState(t, u, unit)
		if strings.Contains(state, "LoadState=not-found") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("unit %s still there: %s", unit, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// installUnit writes a unit file for u's manager into the box's /run
// (root's /run/systemd/system, users' /run/systemd/user), reloads the
// manager, and removes it again when t ends, checking the unit is gone.
func installUnit(t *testing.T, u *box.User, name, text string) {
	t.Helper()
	dir := "/run/systemd/system"
	if u != nil {
		dir = "/run/systemd/user"
	}
	path := filepath.Join(dir, name)
	ctx := context.Background()
	if _, err := testBox.Run(ctx, "sh", "-c", `mkdir -p "$1" && printf %s "$2" > "$3"`, "sh", dir, text, path); err != nil {
		t.Fatal(err)
	}
	if _, err := boxSystemctl(t, u, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = boxSystemctl(t, u, "reset-failed", name)
		if _, err := testBox.Run(ctx, "rm", "-f", path); err != nil {
			t.Error(err)
		}
		if _, err := boxSystemctl(t, u, "daemon-reload"); err != nil {
			t.Error(err)
		}
		waitUnitGone(t, u, name)
	})
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9)
}

// gateService is a oneshot service that ends once file exists.
func gateService(file string) string {
	return fmt.Sprintf("[Service]\nType=oneshot\nExecStart=/bin/sh -c 'while [ ! -e %s ]; do sleep 0.02; done'\n", file)
}

// gateFile is a path u may create in the box, removed when t ends.
func gateFile(t *testing.T, u *box.User) string {
	t.Helper()
	dir := "/run"
	if u != nil {
		dir = u.RuntimeDir()
	}
	path := filepath.Join(dir, uniqueName("nsrun-units-gate"))
	t.Cleanup(func() { _, _ = testBox.Run(context.Background(), "rm", "-f", path) })
	return path
}

// TestStartScopeJobFails: a scope whose start job ends with a result other
// than "done", started on the private socket (wire.go): StartScope returns
// a *JobError naming the result (errors.Is ErrJobFailed), and no unit is
// left. In the "failed" case the scope itself fails, and with
// CollectMode=inactive only StartScope's ResetFailedUnit lets systemd
// collect it (without that reset this case fails: checked); in the
// "dependency" case the scope ends inactive and is collected anyway.
func TestStartScopeJobFails(t *testing.T) {
	managers(t, func(t *testing.T, u *box.User) {
		t.Run("dependency", func(t *testing.T) {
			dep := uniqueName("nsrun-units-fail") + ".service"
			installUnit(t, u, dep, "[Service]\nType=oneshot\nExecStart=/bin/false\n")
			unit := uniqueName("nsrun-units-dep") + ".scope"
			rep := runHelper(t, u, helperRequest{Case: "dependency", Unit: unit, Dep: dep})
			checkJobError(t, rep, unit, "dependency")
			waitUnitGone(t, u, unit)
		})
		t.Run("failed", func(t *testing.T) {
			gate := gateFile(t, u)
			dep := uniqueName("nsrun-units-gate") + ".service"
			installUnit(t, u, dep, gateService(gate))
			unit := uniqueName("nsrun-units-failed") + ".scope"
			rep := runHelper(t, u, helperRequest{Case: "failed", Unit: unit, Dep: dep, Gate: gate})
			checkJobError(t, rep, unit, "failed")
			waitUnitGone(t, u, unit)
		})
	})
}

func checkJobError(t *testing.T, rep helperReport, unit, result string) {
	t.Helper()
	if rep.JobError == nil || rep.JobError.Unit != unit || rep.JobError.Result != result || !rep.JobFailed {
		t.Fatalf("StartScope: %q (JobError %+v, errors.Is ErrJobFailed %v); want a *JobError for %s with result %q",
			rep.Err, rep.JobError, rep.JobFailed, unit, result)
	}
	if want := fmt.Sprintf("start unit %s: job for %s finished with result %q", unit, unit, result); rep.Err != want {
		t.Errorf("error %q, want %q", rep.Err, want)
	}
}

// TestStartScopeJobTimeout: a start job that cannot finish within
// JobTimeout (it waits for a service that waits for a gate the helper
// opens only after StartScope returned, so the order is fixed, not timed).
// StartScope returns the context's deadline error, not a JobError, and
// leaves the queued job to systemd (no StopUnit: the scope may hold the
// caller): once the gate opens the scope starts with its process, and is
// gone once that process ends.
func TestStartScopeJobTimeout(t *testing.T) {
	managers(t, func(t *testing.T, u *box.User) {
		gate := gateFile(t, u)
		dep := uniqueName("nsrun-units-gate") + ".service"
		installUnit(t, u, dep, gateService(gate))
		unit := uniqueName("nsrun-units-timeout") + ".scope"
		rep := runHelper(t, u, helperRequest{Case: "timeout", Unit: unit, Dep: dep, Gate: gate, JobTimeout: 300 * time.Millisecond})
		if !rep.Deadline || rep.JobError != nil || rep.JobFailed {
			t.Errorf("StartScope: %q (deadline %v, JobError %+v); want the deadline error", rep.Err, rep.Deadline, rep.JobError)
		}
		if want := "start unit " + unit + ": wait for job: context deadline exceeded"; rep.Err != want {
			t.Errorf("error %q, want %q", rep.Err, want)
		}
		if !rep.ActiveAfterGate {
			t.Error("the scope did not start once the gate opened")
		}
		waitUnitGone(t, u, unit)
		// The helper's sleep was the scope's only process: nothing of the
		// test is left running in the box.
		if out, err := testBox.Run(context.Background(), "pgrep", "-f", "^/bin/sleep 1000$"); err == nil {
			t.Errorf("the scope's process is still running: %s", out)
		}
	})
}
