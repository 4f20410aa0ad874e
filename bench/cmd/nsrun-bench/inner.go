package main

// The inner half: runs as root inside the box and does the measuring, so that
// nothing of the box's plumbing (nsenter) is in the figures.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// scenario is one way of launching a command.
type scenario struct {
	Name string
	// Wrap turns the workload's argv into the full argv.
	Wrap func(workload ...string) []string
	// Wrapper names the launcher's own processes for the memory figure
	// ("" when the launcher execs into the workload and keeps none).
	Wrapper bool
}

// bwrapArgs is a minimal bwrap sandbox: every namespace and a read-only view
// of / with its own /dev and /proc, the nearest bwrap gets to nsrun --sandbox.
var bwrapArgs = []string{"bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"}

func scenarios(nsrun string) []scenario {
	cat := func(pre ...string) func(...string) []string {
		return func(w ...string) []string { return append(append([]string{}, pre...), w...) }
	}
	srBwrap := append([]string{"systemd-run", "--scope", "-q", "--"}, bwrapArgs...)
	return []scenario{
		{Name: "plain exec", Wrap: cat()},
		{Name: "unshare (all ns)", Wrap: cat("unshare", "--user", "--map-root-user", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--time", "--fork")},
		{Name: refBwrap, Wrap: cat(bwrapArgs...), Wrapper: true},
		{Name: "systemd-run --scope", Wrap: cat("systemd-run", "--scope", "-q", "--")},
		{Name: "systemd-run --scope + bwrap", Wrap: cat(srBwrap...), Wrapper: true},
		{Name: "nsrun (scope only)", Wrap: cat(nsrun, "-q", "--"), Wrapper: true},
		{Name: "nsrun --unshare-all", Wrap: cat(nsrun, "-q", "--unshare-all", "--"), Wrapper: true},
		{Name: "nsrun --sandbox", Wrap: cat(nsrun, "-q", "--sandbox", "--"), Wrapper: true},
	}
}

// The names the report's ratios refer to.
const (
	refCombo = "systemd-run --scope + bwrap"
	refScope = "systemd-run --scope"
	refBwrap = "bwrap --unshare-all"
)

// innerResult is what the inner half hands to the outer one, as JSON.
type innerResult struct {
	Runs, Warmup int
	// Launch holds launch-to-exit times of `true`, in nanoseconds, per
	// scenario, in scenario order.
	Launch []series
	// Quiet holds the same, each launch after GapNS of quiet: what a
	// launch costs when nothing ran just before (a cgroup move then waits
	// for an RCU grace period, which a launch right after another finds
	// just passed).
	Quiet []series
	GapNS int64
	// Concurrency holds, per level, the same for K launches started at once.
	Concurrency []concSeries
	// Memory holds the launcher's own resident and proportional set size
	// per running sandbox.
	Memory []memSample
	// Stderr keeps one sample of what each scenario wrote to stderr.
	Stderr map[string]string
	// Failures counts failed launches (left out of the figures) per
	// scenario; FirstError keeps the first error of each.
	Failures   map[string]int
	FirstError map[string]string
}

// fail notes a failed launch. A launcher that fails is reported, not
// hidden, and a bench on a busy machine still finishes.
func (r *innerResult) fail(name string, err error) {
	if r.Failures[name] == 0 {
		r.FirstError[name] = err.Error()
	}
	r.Failures[name]++
}

type series struct {
	Name string
	NS   []int64
	// CPU holds, per launch, the user and system time of the launcher's
	// own process tree (rusage of what it reaped: not systemd's PID 1).
	CPU []int64
}

type concSeries struct {
	Name string
	K    int
	// NS holds, for every launch of every round, the time from its start
	// until its workload ran (printed its first line).
	NS []int64
	// RoundNS is the time of each round from its start until the last of
	// its K workloads ran.
	RoundNS []int64
}

type memSample struct {
	Name      string
	Sandboxes int
	Procs     int   // launcher processes found, over all sandboxes
	RssKB     int64 // summed over all sandboxes
	PssKB     int64
}

func inner(args []string) error {
	fs := flag.NewFlagSet("inner", flag.ContinueOnError)
	nsrun := fs.String("nsrun", "", "nsrun binary")
	runs := fs.Int("runs", 50, "measured runs per scenario")
	warmup := fs.Int("warmup", 5, "unmeasured runs per scenario first")
	conc := fs.String("conc", "1,10,50,100", "concurrency levels (sandboxes started at once)")
	memN := fs.Int("mem", 10, "sandboxes running at once for the memory figure (0: skip)")
	quiet := fs.Int("quiet", 20, "runs per scenario after a quiet spell (0: skip)")
	gap := fs.Duration("gap", 100*time.Millisecond, "the quiet spell before each of those runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	trueBin, err := exec.LookPath("true")
	if err != nil {
		return err
	}
	sc := scenarios(*nsrun)
	res := innerResult{Runs: *runs, Warmup: *warmup, Stderr: map[string]string{},
		Failures: map[string]int{}, FirstError: map[string]string{}}

	// Launch-to-exit, back to back, then after a quiet spell each.
	res.Launch = make([]series, len(sc))
	for i, s := range sc {
		res.Launch[i].Name = s.Name
		if err := launchOnce(s.Wrap(trueBin), res.Stderr, s.Name); err != nil {
			return err
		}
	}
	roundRobin(sc, trueBin, &res, res.Launch, *warmup, *runs, 0)
	if *quiet > 0 {
		res.GapNS = gap.Nanoseconds()
		res.Quiet = make([]series, len(sc))
		for i, s := range sc {
			res.Quiet[i].Name = s.Name
		}
		roundRobin(sc, trueBin, &res, res.Quiet, 0, *quiet, *gap)
	}

	// Scaling: K sandboxes of a sleeping workload started at once, a few
	// rounds per level, the launchers in turn within each round.
	var levels []concSeries
	for _, f := range strings.Split(*conc, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			continue
		}
		var level []*concSeries
		for _, s := range sc {
			if s.Name == refCombo || s.Name == refScope || strings.HasPrefix(s.Name, "nsrun") {
				level = append(level, &concSeries{Name: s.Name, K: k})
			}
		}
		rounds := max(2, 40/k)
		for r := 0; r < rounds; r++ {
			for _, cs := range level {
				s := scenarioNamed(sc, cs.Name)
				ns, wall, errs := launchSleeping(s, k)
				for i, err := range errs {
					if err != nil {
						res.fail(fmt.Sprintf("%s x%d", s.Name, k), err)
					} else {
						cs.NS = append(cs.NS, ns[i])
					}
				}
				cs.RoundNS = append(cs.RoundNS, wall)
			}
		}
		for _, cs := range level {
			levels = append(levels, *cs)
		}
	}
	res.Concurrency = levels

	if *memN > 0 {
		sleepBin, err := exec.LookPath("sleep")
		if err != nil {
			return err
		}
		for _, s := range sc {
			if !s.Wrapper {
				continue
			}
			m, err := memory(s, sleepBin, *memN)
			if err != nil {
				return fmt.Errorf("memory %s: %w", s.Name, err)
			}
			res.Memory = append(res.Memory, m)
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// roundRobin launches `true` under every scenario, runs times after
// warmup unmeasured rounds, into out (one series per scenario), so that
// drift of the machine hits every scenario alike; the starting scenario
// rotates each round. With a gap, each launch comes after that long of
// quiet.
func roundRobin(sc []scenario, trueBin string, res *innerResult, out []series, warmup, runs int, gap time.Duration) {
	for r := 0; r < warmup+runs; r++ {
		for j := range sc {
			i := (j + r) % len(sc)
			time.Sleep(gap)
			start := time.Now()
			cpu, err := launch(sc[i].Wrap(trueBin))
			if err != nil {
				res.fail(sc[i].Name, err)
				continue
			}
			if r >= warmup {
				out[i].NS = append(out[i].NS, time.Since(start).Nanoseconds())
				out[i].CPU = append(out[i].CPU, cpu.Nanoseconds())
			}
		}
	}
}

// launch runs argv to its exit; anything but status 0 is an error. It
// returns the CPU time (user and system) of argv's process tree.
func launch(argv []string) (time.Duration, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// launchOnce runs argv once and keeps its stderr for the report.
func launchOnce(argv []string, keep map[string]string, name string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		keep[name] = s
	}
	return nil
}

func scenarioNamed(sc []scenario, name string) scenario {
	for _, s := range sc {
		if s.Name == name {
			return s
		}
	}
	panic("no scenario " + name)
}

// launchSleeping starts k sandboxes of s at once, each running a shell that
// prints a line and becomes `sleep TAG`. It returns, per launch, the time
// from its start until that line arrived (the workload runs), or its error,
// and the time until the last one ran. Then it kills the workloads (their
// launchers end with them) and reaps everything.
func launchSleeping(s scenario, k int) ([]int64, int64, []error) {
	tag := "2000" + strconv.Itoa(os.Getpid())
	argv := s.Wrap("sh", "-c", "echo ready; exec sleep "+tag)
	ns := make([]int64, k)
	errs := make([]error, k)
	cmds := make([]*exec.Cmd, k)
	stderrs := make([]bytes.Buffer, k)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, w, err := os.Pipe()
			if err != nil {
				errs[i] = err
				return
			}
			defer r.Close()
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Stdout, cmd.Stderr = w, &stderrs[i]
			<-gate
			start := time.Now()
			if err := cmd.Start(); err != nil {
				w.Close()
				errs[i] = err
				return
			}
			w.Close()
			cmds[i] = cmd
			_ = r.SetReadDeadline(start.Add(60 * time.Second))
			line, err := bufio.NewReader(r).ReadString('\n')
			if err != nil || line != "ready\n" {
				errs[i] = fmt.Errorf("no ready line (%q, %v)", line, err)
				return
			}
			ns[i] = time.Since(start).Nanoseconds()
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start).Nanoseconds()

	// End the workloads; the launchers exit with them. A shell that said
	// "ready" may not have become `sleep TAG` yet: kill until every
	// launcher is gone.
	done := make(chan struct{})
	go func() {
		for _, c := range cmds {
			if c != nil {
				_ = c.Wait()
			}
		}
		close(done)
	}()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for stop := false; !stop; {
		killTagged(tag)
		select {
		case <-done:
			stop = true
		case <-tick.C:
		case <-deadline:
			for _, c := range cmds {
				if c != nil {
					_ = c.Process.Kill()
				}
			}
			<-done
			stop = true
		}
	}
	for i := range errs {
		if errs[i] != nil {
			errs[i] = fmt.Errorf("%v: %s", errs[i], bytes.TrimSpace(stderrs[i].Bytes()))
		}
	}
	return ns, wall, errs
}

// killTagged SIGKILLs every `sleep TAG` process.
func killTagged(tag string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if isWorkload(pid, "sleep", tag) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// memory starts n sandboxes of `sleep`, waits until every workload runs, and
// sums Rss and Pss (smaps_rollup) of the launcher's own processes: the
// started process and its descendants, less the workload. It then kills the
// workloads (which ends the launchers) and reaps them.
func memory(s scenario, sleepBin string, n int) (memSample, error) {
	m := memSample{Name: s.Name, Sandboxes: n}
	// A distinct argument tells our workloads from any other sleep.
	tag := "1000" + strconv.Itoa(os.Getpid())
	cmds := make([]*exec.Cmd, 0, n)
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
	}()
	for i := 0; i < n; i++ {
		argv := s.Wrap(sleepBin, tag)
		c := exec.Command(argv[0], argv[1:]...)
		if err := c.Start(); err != nil {
			return m, err
		}
		cmds = append(cmds, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	var own, work []int
	for {
		own, work = nil, nil
		tree := procTree()
		for _, c := range cmds {
			for _, p := range descendants(tree, c.Process.Pid) {
				if isWorkload(p, sleepBin, tag) {
					work = append(work, p)
				} else {
					own = append(own, p)
				}
			}
		}
		if len(work) == n {
			break
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("%d of %d workloads running after 20 s", len(work), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range own {
		rss, pss, err := smapsRollup(p)
		if err != nil {
			return m, err
		}
		m.Procs++
		m.RssKB += rss
		m.PssKB += pss
	}
	// End the workloads; launchers exit with them.
	for _, p := range work {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	return m, nil
}

// procTree maps each pid to its children.
func procTree() map[int][]int {
	tree := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The comm field may hold spaces; the fields after its ')' do not.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		tree[ppid] = append(tree[ppid], pid)
	}
	return tree
}

func descendants(tree map[int][]int, pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, tree[out[i]]...)
	}
	sort.Ints(out)
	return out
}

func isWorkload(pid int, sleepBin, tag string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(argv) == 2 && filepath.Base(argv[0]) == filepath.Base(sleepBin) && argv[1] == tag
}

// smapsRollup reads Rss and Pss in kB.
func smapsRollup(pid int) (rss, pss int64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss, nil
}
