package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nsrun/nsrun/bpfdev"
	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/nsexec"
	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// runOptions are the flags of "nsrun run".
type runOptions struct {
	system, user  bool
	unit          string
	slice         string
	description   string
	properties    []string
	quiet         bool
	allowDegraded bool
	scopeMode     string
	short         shorthandValues
	proc          processOptions
	sandbox       sandboxOptions
	devices       deviceOptions
}

func (o *runOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&o.system, "system", false, "talk to the system manager (default for root)")
	f.BoolVar(&o.user, "user", false, "talk to your own user manager (default for other users)")
	f.StringVar(&o.unit, "unit", "", `scope name (".scope" is added when missing; default nsrun-RANDOM.scope)`)
	f.StringVar(&o.slice, "slice", "", `slice to place the scope in (".slice" is added when missing)`)
	f.StringVar(&o.description, "description", "", "description of the scope")
	f.StringArrayVarP(&o.properties, "property", "p", nil, "unit property NAME=VALUE in systemd's own syntax (repeatable; wins over a shorthand)")
	f.StringVar(&o.scopeMode, "scope", "auto", "auto: run in place when nsrun's own cgroup is delegated to it (a unit with Delegate=yes), else make a scope; always: make a scope; never: run in place or refuse")
	o.short = shorthandValues{}
	o.short.addFlags(cmd)
	f.BoolVar(&o.allowDegraded, "allow-degraded", false, "run even when a requested limit cannot be put in force (warn instead of refusing)")
	f.StringArrayVarP(&o.proc.setenv, "setenv", "E", nil, "set NAME=VALUE in the workload's environment, or pass NAME on from nsrun's (repeatable)")
	f.StringVar(&o.proc.chdir, "chdir", "", "working directory of the workload (absolute)")
	f.BoolVarP(&o.proc.pty, "pty", "t", false, "give the workload a pseudo-terminal of its own, connected to nsrun's stdin and stdout")
	f.StringVar(&o.proc.uid, "uid", "", "run the workload as this user (name or number; root only)")
	f.StringVar(&o.proc.gid, "gid", "", "run the workload with this group (name or number; root only)")
	f.IntVar(&o.proc.preserveFDs, "preserve-fds", 0, "pass fds 3..3+N-1 on to the workload (otherwise only 0, 1 and 2 reach it)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "do not print the unit name")
	o.sandbox.addFlags(f)
	o.devices.addFlags(f)
	cmd.MarkFlagsMutuallyExclusive("system", "user")
	addProfileFlag(cmd)
	_ = cmd.RegisterFlagCompletionFunc("property", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, p := range units.KnownProperties() {
			out = append(out, p+"=")
		}
		return out, cobra.ShellCompDirectiveNoSpace
	})
	_ = cmd.RegisterFlagCompletionFunc("scope", cobra.FixedCompletions([]string{"auto", "always", "never"}, cobra.ShellCompDirectiveNoFileComp))
}

// runPlan is everything "run" validated before it creates anything.
type runPlan struct {
	manager   units.Manager
	scope     units.ScopeSpec
	unitFlags []string // --unit, --slice, --description as given: they need a scope
	scopeMode string
	path      string // resolved COMMAND
	argv      []string
	proc      *processPlan
	spec      *nsexec.Spec   // the sandbox, when a namespace, filesystem or security option is set
	devices   *bpfdev.Policy // the device policy, when one is asked for
}

func (o *runOptions) plan(args []string) (*runPlan, error) {
	if len(args) == 0 {
		return nil, usageError("no command given (usage: nsrun [OPTIONS] [--] COMMAND [ARG...])")
	}
	p := &runPlan{manager: units.DefaultManager(), argv: args, scopeMode: o.scopeMode}
	switch o.scopeMode {
	case "auto", "always", "never":
	default:
		return nil, usageError("--scope %s: expected auto, always or never", o.scopeMode)
	}
	switch {
	case o.system:
		p.manager = units.System
	case o.user:
		p.manager = units.User
	}
	var err error
	if o.unit == "" {
		p.scope.Name = "nsrun-" + randomHex(6) + ".scope"
	} else if p.scope.Name, err = units.ScopeName(o.unit); err != nil {
		return nil, usageError("--unit: %v", err)
	} else {
		p.unitFlags = append(p.unitFlags, "--unit")
	}
	if o.slice != "" {
		if p.scope.Slice, err = units.SliceName(o.slice); err != nil {
			return nil, usageError("--slice: %v", err)
		}
		p.unitFlags = append(p.unitFlags, "--slice")
	}
	p.scope.Description = o.description
	if p.scope.Description == "" {
		p.scope.Description = "nsrun: " + strings.Join(args, " ")
		if len(p.scope.Description) > 200 {
			// Cut on a character boundary: D-Bus strings must be valid UTF-8.
			p.scope.Description = strings.ToValidUTF8(p.scope.Description[:200], "")
		}
	} else {
		p.unitFlags = append(p.unitFlags, "--description")
	}
	for _, a := range o.short.assignments() {
		prop, err := units.ParseProperty(a)
		if err != nil {
			return nil, usageError("%s: %v", shorthandFlagOf(a), err)
		}
		p.scope.Properties = append(p.scope.Properties, prop)
	}
	for _, a := range o.properties {
		prop, err := units.ParseProperty(a)
		if err != nil {
			return nil, usageError("-p %s: %v", a, err)
		}
		p.scope.Properties = append(p.scope.Properties, prop)
	}
	if _, err := units.ScopeProperties(p.scope); err != nil {
		return nil, usageError("%v", err)
	}
	if p.proc, err = o.proc.plan(); err != nil {
		return nil, err
	}
	// The device policy: --sandbox means a closed one unless another is
	// named.
	devMode := o.devices.mode
	if o.sandbox.sandbox && o.devices.mode == "auto" {
		o.devices.mode = "closed"
	}
	p.devices, err = o.devices.policy(os.Geteuid() != 0)
	o.devices.mode = devMode
	if err != nil {
		return nil, err
	}
	if o.sandbox.enabled() {
		var keep []string
		for name := range p.proc.setByUser {
			keep = append(keep, name)
		}
		base := nsexec.Spec{
			Argv:        args,
			Env:         nsexec.CleanEnv(p.proc.env, keep),
			Dir:         p.proc.dir,
			Pty:         p.proc.pty,
			PreserveFDs: p.proc.preserveFDs,
		}
		if c := p.proc.cred; c != nil {
			base.UID, base.GID = &c.Uid, &c.Gid
		}
		if p.devices != nil && (o.sandbox.root != "" || o.sandbox.overlayRoot != "" || o.sandbox.sandbox) {
			// The allowed nodes appear in the sandbox's minimal /dev.
			// (The pseudo devices and ptmx are there already.)
			for _, n := range p.devices.Nodes {
				switch n.Path {
				case "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx":
					continue
				}
				base.Devices = append(base.Devices, nsexec.DeviceNode{Path: n.Path})
			}
		}
		if p.spec, err = o.sandbox.spec(base); err != nil {
			return nil, usageError("%v", err)
		}
		if p.spec.Root != "" || p.spec.Overlay != nil {
			return p, nil // COMMAND is looked up inside the new root
		}
	}
	if p.devices != nil && p.devices.Unprivileged {
		// Without a device program, only a /dev that holds nothing else
		// enforces the policy.
		return nil, usageError("a device policy without root is enforced by the sandbox's own /dev: add --sandbox, --overlay-root or --root")
	}
	// Resolve COMMAND before creating anything: not found is 127, not
	// executable 126, and neither leaves a scope behind.
	if p.path, err = exec.LookPath(args[0]); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, &exitError{code: exitNotExecutable, err: fmt.Errorf("%s: not executable", args[0])}
		}
		return nil, &exitError{code: exitNotFound, err: fmt.Errorf("%s: command not found", args[0])}
	}
	return p, nil
}

// shorthandFlagOf names the flag an assignment came from, for messages.
func shorthandFlagOf(assignment string) string {
	name, value, _ := strings.Cut(assignment, "=")
	for _, sh := range shorthands {
		if sh.property == name {
			return "--" + sh.flag + " " + value
		}
	}
	return assignment
}

func runCommand(cmd *cobra.Command, o *runOptions, args []string) error {
	// The profile first: it may set --preserve-fds. Reading it leaves no
	// fd open, and never takes the number of an inherited one.
	args, err := applyProfile(cmd, args)
	if err != nil {
		return err
	}
	// Only 0, 1, 2 and the preserved fds may reach the workload; take the
	// preserved ones before nsrun opens anything of its own.
	if err := closeInherited(max(o.proc.preserveFDs, 0)); err != nil {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("close inherited fds: %w", err)}
	}
	p, err := o.plan(args)
	if err != nil {
		return err
	}
	p.proc.extraFiles = takePreserved(p.proc.preserveFDs)
	if err := checkTaskHeadroom(p.spec != nil); err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	// From here nsrun may open files and start threads of its own: the
	// device program loads and the connection to the manager
	// authenticates while nsrun checks what it can enforce.
	e := startEarly(p)
	defer e.close()
	dial := dialEarly(ctx, p)
	defer dial.close()
	// Fail closed: a limit systemd would accept but cannot enforce is
	// refused unless the user allowed degrading. A controller the whole
	// hierarchy lacks is found before anything exists.
	problems, onHost, err := missingOnHost(p)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("check limits: %w", err)}
	}
	if err := refuseOrWarn(problems, o.allowDegraded); err != nil {
		return err
	}
	var held *heldSandbox // a sandbox child cloned while systemd makes the scope (overlap.go)
	pl, err := place(ctx, p, dial, func() ([]int, error) {
		if p.spec == nil {
			return nil, nil
		}
		var err error
		if held, err = spawnHeld(p); err != nil {
			return nil, err
		}
		stopForTest("spawned")
		return []int{held.pid}, nil
	})
	if err != nil {
		if held != nil {
			// A child that failed early is gone before systemd or
			// nsrun could move it (a user manager cannot move a
			// zombie): its own error is the one to report.
			if cerr := held.wait(); cerr != nil {
				err = startError(p, true, cerr)
			}
		}
		held.abort()
		return err
	}
	pl.held = held
	pl.watch = startWatcherAsync(pl.tree)
	problems, err = verify(pl, p, onHost)
	if err != nil {
		pl.abandon()
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("check limits: %w", err)}
	}
	if err := refuseOrWarn(problems, o.allowDegraded); err != nil {
		pl.abandon()
		return err
	}
	if !o.quiet {
		if pl.inPlace {
			fmt.Fprintf(os.Stderr, "Running in place in delegated cgroup %s\n", pl.tree.Dir)
		} else {
			fmt.Fprintf(os.Stderr, "Running scope as unit: %s\n", p.scope.Name)
		}
	}
	return supervise(p, pl, e, o.allowDegraded)
}

// placement is where the workload runs: the subtree nsrun owns below a new
// scope, or below the delegated cgroup nsrun was started in.
type placement struct {
	inPlace bool
	tree    *delegate.Tree
	mount   string // the cgroup2 mount
	manager units.Manager
	watch   *pendingWatcher // started once the leaves exist
	held    *heldSandbox    // the sandbox child, in payload/, not yet released
}

// abandon gives up a placement before any workload ran: the watcher is
// released, the empty payload leaf goes, and a scope (holding only nsrun)
// is stopped and collected by systemd once nsrun exits.
func (pl *placement) abandon() {
	pl.held.abort()
	if pl.watch != nil {
		if w, err := pl.watch.wait(); err == nil {
			w.done()
		}
	}
	_ = pl.tree.RemoveLeaves()
}

// place decides between in-place and a new scope (--scope), and sets up the
// leaves. With a scope to make, spawn is called first: the processes it
// starts go into the scope with nsrun and then into payload/. The
// connection to the manager comes from dial (dialEarly).
func place(ctx context.Context, p *runPlan, dial *earlyDial, spawn func() ([]int, error)) (*placement, error) {
	mount, err := cgv2.Mount()
	if err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: fmt.Errorf("find the cgroup v2 hierarchy: %w", err)}
	}
	pl := &placement{mount: mount, manager: p.manager}
	if p.scopeMode != "always" {
		self, err := cgv2.Self()
		if err != nil {
			return nil, &exitError{code: exitNsrunFailed, err: err}
		}
		d := delegate.DelegatedTo(filepath.Join(mount, self), os.Geteuid())
		switch {
		case d.Delegated:
			if err := inPlaceAllowed(p, d.Dir); err != nil {
				return nil, err
			}
			pl.inPlace = true
			if pl.tree, err = delegate.Setup(d.Dir); err != nil {
				return nil, &exitError{code: exitNsrunFailed, err: fmt.Errorf("run in place: %w", err)}
			}
			if err := applyInPlace(pl, p); err != nil {
				pl.abandon()
				return nil, err
			}
			return pl, nil
		case p.scopeMode == "never":
			return nil, &exitError{code: exitNsrunFailed, err: fmt.Errorf("--scope=never: cannot run in place in %s: %s (run nsrun from a unit with Delegate=yes, or let it make a scope)", d.Dir, d.Why)}
		}
	}
	if err := checkScopeTasksMax(mount, p.scope.Properties, p.spec != nil); err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: err}
	}
	payload, err := spawn()
	if err != nil {
		return nil, err
	}
	conn, err := dial.get(ctx, p.manager)
	if err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: err}
	}
	defer conn.Close() // nothing more to ask once the scope runs
	// nsrun moves itself (and a sandbox child that is not yet running the
	// workload) into the scope before the workload exists, so the workload
	// never runs outside it.
	p.scope.PIDs = append([]int{os.Getpid()}, payload...)
	if err := conn.StartScope(ctx, p.scope); err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: withHint(err)}
	}
	stopForTest("scope")
	// systemd moved nsrun into the scope: its own cgroup names the scope's
	// (no round trip). Should it not, the manager says where the scope is.
	cg, err := units.OwnScopeCgroup(p.scope.Name)
	if err == nil && cg == "" {
		cg, err = conn.ControlGroup(ctx, p.scope.Name)
	}
	if err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: err}
	}
	if pl.tree, err = delegate.Setup(delegate.ScopeDir(mount, cg), payload...); err != nil {
		return nil, &exitError{code: exitNsrunFailed, err: fmt.Errorf("take over %s: %w", p.scope.Name, err)}
	}
	stopForTest("leaves")
	return pl, nil
}

// startError maps a failed start of the workload (or of the sandbox
// child) to nsrun's exit status: 127 not found, 126 not executable.
func startError(p *runPlan, sandbox bool, err error) error {
	code := exitNsrunFailed
	switch {
	case errors.Is(err, nsexec.ErrCommandNotFound):
		code = exitNotFound
	case errors.Is(err, nsexec.ErrCommandNotExecutable):
		code = exitNotExecutable
	case sandbox:
	case errors.Is(err, fs.ErrPermission):
		code = exitNotExecutable
	case errors.Is(err, fs.ErrNotExist):
		code = exitNotFound
	}
	if p.proc.dir != "" && errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(p.proc.dir); serr != nil {
			code = exitNsrunFailed
			err = fmt.Errorf("--chdir %s: %w", p.proc.dir, serr)
		}
	}
	return &exitError{code: code, err: fmt.Errorf("start %s: %w", p.argv[0], err)}
}

func withHint(err error) error {
	if errors.Is(err, units.ErrUnitExists) {
		return fmt.Errorf("%w (nsrun never adopts an existing unit: choose another --unit)", err)
	}
	return err
}

// forwarded are the signals nsrun passes on to the workload: every signal
// a process can catch, except SIGCHLD (nsrun's own), SIGURG (the Go runtime
// preempts goroutines with it), the job-control stops (they stop nsrun, as
// they would any supervisor) and glibc's reserved 32 and 33. Signals a
// terminal sends (SIGINT, SIGQUIT, SIGWINCH) go to the whole foreground
// process group; the workload gets them itself when it shares nsrun's
// terminal, so nsrun forwards them only when it does not (stdin is no
// terminal, or the workload has a session of its own).
func forwarded(ownSession bool) []os.Signal {
	sigs := []os.Signal{
		syscall.SIGHUP, syscall.SIGABRT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE,
		syscall.SIGALRM, syscall.SIGTERM, syscall.SIGSTKFLT, syscall.SIGCONT, syscall.SIGXCPU,
		syscall.SIGXFSZ, syscall.SIGVTALRM, syscall.SIGPROF, syscall.SIGIO, syscall.SIGPWR,
		syscall.SIGSYS,
	}
	for rt := 34; rt <= 64; rt++ {
		sigs = append(sigs, syscall.Signal(rt))
	}
	if ownSession || !term.IsTerminal(int(os.Stdin.Fd())) {
		sigs = append(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGWINCH)
	}
	return sigs
}

// supervise starts the workload directly in the payload leaf, forwards
// signals, and returns its status once it ended and nothing of it is left.
func supervise(p *runPlan, pl *placement, e *early, allowDegraded bool) error {
	var relay *ptyRelay
	if p.proc.pty && p.spec == nil { // a sandbox child opens its own (nsexec Spec.Pty)
		var err error
		if relay, err = newPtyRelay(); err != nil {
			pl.abandon()
			return &exitError{code: exitNsrunFailed, err: fmt.Errorf("--pty: open a pseudo-terminal: %w", err)}
		}
	}
	// The handlers stay until nsrun exits: a signal that comes after the
	// workload ended is dropped, and undoing them costs a thread switch
	// per signal for nothing.
	sigs := e.signals()

	// The device program goes on payload/ before anything runs there, and
	// must be read back in force (bpfdev.Loaded.Attach queries the cgroup).
	if p.devices != nil && !p.devices.Unprivileged {
		if err := e.attachDevices(pl.tree.Payload); err != nil {
			if err := refuseOrWarn([]string{fmt.Sprintf("device policy not in force: %v", err)}, allowDegraded); err != nil {
				pl.abandon()
				return err
			}
		}
	}
	// The watcher kills the payload if nsrun dies before it cleans up: it
	// must run before the workload does.
	w, err := pl.watch.wait()
	if err != nil {
		pl.abandon()
		return &exitError{code: exitNsrunFailed, err: err}
	}
	payload, err := pl.tree.OpenPayload()
	if err != nil {
		w.done()
		pl.abandon()
		return &exitError{code: exitNsrunFailed, err: err}
	}
	defer payload.Close()

	cmd := &exec.Cmd{
		Path:       p.path,
		Args:       p.argv,
		Env:        p.proc.env,
		Dir:        p.proc.dir,
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: p.proc.extraFiles,
		SysProcAttr: &syscall.SysProcAttr{
			// Born in payload/ (clone3 CLONE_INTO_CGROUP): the workload never
			// runs anywhere else, not even for a moment.
			UseCgroupFD: true,
			CgroupFD:    int(payload.Fd()),
			// The workload must not outlive nsrun. Pdeathsig fires when the
			// thread that forked exits, so that thread stays locked until
			// Wait returns (golang/go#27505). The watcher covers the rest of
			// the payload.
			Pdeathsig:  syscall.SIGKILL,
			Credential: p.proc.cred,
		},
	}
	if relay != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = relay.slave, relay.slave, relay.slave
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
	}
	start, wait := cmd.Start, func() error { return workloadStatus(cmd, cmd.Wait()) }
	var launch *nsexec.Launch
	if pl.held != nil {
		// Cloned while systemd made the scope, set up and waiting in
		// payload/ (overlap.go).
		launch = pl.held.launch
		cmd = launch.Cmd
	} else if p.spec != nil {
		// The sandbox child (nsrun re-executed with the clone flags) is
		// born in payload/ the same way; it makes the workload's session,
		// terminal and ids itself, so only stdio, fds, cgroup and
		// Pdeathsig carry over from cmd.
		spec := *p.spec
		if p.path != "" {
			spec.Path = p.path
		}
		if spec.Pty {
			spec.Winsize = termSize()
		}
		if launch, err = nsexec.Prepare(&spec); err != nil {
			w.done()
			pl.abandon()
			return usageError("%v", err)
		}
		lc := launch.Cmd
		lc.Stdin, lc.Stdout, lc.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
		lc.ExtraFiles = append(lc.ExtraFiles, p.proc.extraFiles...)
		lc.SysProcAttr.UseCgroupFD, lc.SysProcAttr.CgroupFD = true, int(payload.Fd())
		lc.SysProcAttr.Pdeathsig = syscall.SIGKILL
		cmd = lc
		start = launch.Start
		wait = func() error { return sandboxStatus(launch.Wait()) }
	}
	started := make(chan error, 1)
	waited := make(chan error, 1)
	handover := make(chan *handover, 1)
	handoverErr := make(chan error, 1)
	// The monitor takes over on the thread that started the child, or
	// nothing does.
	takeOver := func() {
		if h := <-handover; h != nil {
			handoverErr <- h.exec(sigs)
		}
	}
	if pl.held != nil {
		stopForTest("release")
		waited = pl.held.waited
		if !p.proc.pty {
			// The monitor takes over as soon as the release is sent and
			// reads the child's answer itself: its exec (about 1 ms, a
			// multi-threaded Go process ending) overlaps the child's last
			// steps instead of following them. Should the exec fail, the
			// Go path below goes on as without it.
			printWarnings(launch)
			if h := newHandover(p, pl, w, cmd, launch, nil, true); h != nil {
				pl.held.afterRelease = func() { _ = h.exec(sigs) }
			}
		}
		pl.held.afterStart = takeOver
		started <- pl.held.proceed()
	} else {
		go func() {
			runtime.LockOSThread()
			if err := start(); err != nil {
				started <- err
				return
			}
			started <- nil
			takeOver()
			waited <- wait()
		}()
	}
	if err := <-started; err != nil {
		close(handover)
		w.done()
		pl.abandon()
		return startError(p, launch != nil, err)
	}
	if launch != nil && p.proc.pty {
		relay = sandboxRelay(launch)
	}
	if relay != nil {
		relay.start()
	}
	stopForTest("started")
	printWarnings(launch)
	// From here on the monitor does the rest (wait, forward, clean up) in
	// place of this process, which it replaces; the Go loop below is the
	// fallback (no monitor, the pty relay, a failed exec).
	h := newHandover(p, pl, w, cmd, launch, relay, false)
	handover <- h
	if h != nil {
		if err := <-handoverErr; err != nil {
			fmt.Fprintf(os.Stderr, "nsrun: warning: the monitor did not take over: %v\n", err)
		}
	}
	var status error
loop:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGWINCH && relay != nil {
				relay.resize()
				continue
			}
			_ = cmd.Process.Signal(s)
		case status = <-waited:
			break loop
		}
	}
	oom := oomKills(pl.tree.Payload)
	// What the workload left running goes with it.
	if err := pl.tree.KillPayload(10 * time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "nsrun: warning: %v\n", err)
	}
	w.done()
	if relay != nil {
		relay.finish()
	}
	_ = pl.tree.RemoveLeaves()
	if oom > 0 {
		fmt.Fprintf(os.Stderr, "nsrun: the workload was OOM-killed (%d process(es) killed by the kernel for exceeding the memory limit; memory.events of %s)\n", oom, pl.tree.Payload)
	}
	return status
}

// oomKills reads how many processes of a cgroup the OOM killer killed.
func oomKills(dir string) int {
	v, err := delegate.ReadSetting(dir, "memory.events")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(v, "\n") {
		if n, ok := strings.CutPrefix(line, "oom_kill "); ok {
			k, _ := strconv.Atoi(n)
			return k
		}
	}
	return 0
}

// sandboxStatus maps what nsexec reports of the workload (its init exits
// with the workload's status) to nsrun's exit status.
func sandboxStatus(status int, signaled bool, sig syscall.Signal, err error) error {
	switch {
	case err != nil:
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("sandbox: %w", err)}
	case signaled:
		return exitStatus(128 + int(sig))
	case status == 0:
		return nil
	}
	return exitStatus(status)
}

// workloadStatus maps how the workload ended to nsrun's exit status: its own
// code, or 128+N for death by signal N.
func workloadStatus(cmd *exec.Cmd, err error) error {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("wait for workload: %v", err)}
	}
	switch {
	case ws.Exited():
		if ws.ExitStatus() == 0 {
			return nil
		}
		return exitStatus(ws.ExitStatus())
	case ws.Signaled():
		return exitStatus(128 + int(ws.Signal()))
	}
	return &exitError{code: exitNsrunFailed, err: fmt.Errorf("wait for workload: %v", err)}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// printWarnings prints what the sandbox child warned of while it set
// itself up, once.
func printWarnings(launch *nsexec.Launch) {
	if launch == nil {
		return
	}
	for _, warning := range launch.Warnings {
		fmt.Fprintf(os.Stderr, "nsrun: warning: %s\n", warning)
	}
	launch.Warnings = nil
}

// stopForTest stops nsrun (SIGSTOP) at a named point of its set-up when
// NSRUN_TEST_STOP_AT names it, so tests can kill it exactly there and check
// that nothing is left behind. It changes nothing else.
func stopForTest(point string) {
	if os.Getenv("NSRUN_TEST_STOP_AT") == point {
		// To this thread: it stops before it runs on. A SIGSTOP to the
		// process may be taken by another thread while this one goes
		// on for a moment (past a release, say).
		runtime.LockOSThread()
		_ = unix.Tgkill(os.Getpid(), unix.Gettid(), syscall.SIGSTOP)
		runtime.UnlockOSThread()
	}
}
