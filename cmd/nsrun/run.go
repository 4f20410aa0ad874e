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
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
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
}

func (o *runOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&o.system, "system", false, "talk to the system manager (default for root)")
	f.BoolVar(&o.user, "user", false, "talk to your own user manager (default for other users)")
	f.StringVar(&o.unit, "unit", "", `scope name (".scope" is added when missing; default nsrun-RANDOM.scope)`)
	f.StringVar(&o.slice, "slice", "", `slice to place the scope in (".slice" is added when missing)`)
	f.StringVar(&o.description, "description", "", "description of the scope")
	f.StringArrayVarP(&o.properties, "property", "p", nil, "unit property NAME=VALUE in systemd's own syntax (repeatable)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "do not print the unit name")
	f.BoolVar(&o.allowDegraded, "allow-degraded", false, "run even when a requested limit cannot be put in force (warn instead of refusing)")
	cmd.MarkFlagsMutuallyExclusive("system", "user")
	addProfileFlag(cmd)
	_ = cmd.RegisterFlagCompletionFunc("property", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, p := range units.KnownProperties() {
			out = append(out, p+"=")
		}
		return out, cobra.ShellCompDirectiveNoSpace
	})
}

// runPlan is everything "run" validated before it creates anything.
type runPlan struct {
	manager units.Manager
	scope   units.ScopeSpec
	path    string // resolved COMMAND
	argv    []string
}

func (o *runOptions) plan(args []string) (*runPlan, error) {
	if len(args) == 0 {
		return nil, usageError("no command given (usage: nsrun [OPTIONS] [--] COMMAND [ARG...])")
	}
	p := &runPlan{manager: units.DefaultManager(), argv: args}
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
	}
	if o.slice != "" {
		if p.scope.Slice, err = units.SliceName(o.slice); err != nil {
			return nil, usageError("--slice: %v", err)
		}
	}
	p.scope.Description = o.description
	if p.scope.Description == "" {
		p.scope.Description = "nsrun: " + strings.Join(args, " ")
		if len(p.scope.Description) > 200 {
			// Cut on a character boundary: D-Bus strings must be valid UTF-8.
			p.scope.Description = strings.ToValidUTF8(p.scope.Description[:200], "")
		}
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

func runCommand(cmd *cobra.Command, o *runOptions, args []string) error {
	args, err := applyProfile(cmd, args)
	if err != nil {
		return err
	}
	p, err := o.plan(args)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	// Fail closed: a limit systemd would accept but cannot enforce is
	// refused unless the user allowed degrading. A controller the whole
	// hierarchy lacks is found before any unit exists.
	problems, onHost, err := missingOnHost(p)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("check limits: %w", err)}
	}
	if err := refuseOrWarn(problems, o.allowDegraded); err != nil {
		return err
	}
	conn, err := units.Dial(ctx, p.manager)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: err}
	}
	closeConn := sync.OnceFunc(conn.Close)
	defer closeConn()

	// nsrun moves itself into the scope before the workload exists, so the
	// workload never runs outside it.
	p.scope.PIDs = []int{os.Getpid()}
	if err := conn.StartScope(ctx, p.scope); err != nil {
		return &exitError{code: exitNsrunFailed, err: withHint(err)}
	}
	// A controller the host has but the scope did not get (not delegated to
	// a user manager, not enabled) shows only now. Returning leaves the
	// scope empty, and systemd stops and collects it once nsrun has exited.
	problems, err = notInForce(ctx, conn, p, onHost)
	if err != nil {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("check limits of %s: %w", p.scope.Name, err)}
	}
	if err := refuseOrWarn(problems, o.allowDegraded); err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintf(os.Stderr, "Running scope as unit: %s\n", p.scope.Name)
	}
	closeConn() // nothing more to ask; the scope goes away when it is empty
	return supervise(p)
}

func withHint(err error) error {
	if errors.Is(err, units.ErrUnitExists) {
		return fmt.Errorf("%w (nsrun never adopts an existing unit: choose another --unit)", err)
	}
	return err
}

// forwarded are the signals nsrun passes on to the workload. SIGINT and
// SIGQUIT come from the terminal to the whole foreground process group, the
// workload included, so they are forwarded only when stdin is no terminal.
// SIGCHLD is nsrun's own, and the Go runtime uses SIGURG for preemption.
func forwarded() []os.Signal {
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		sigs = append(sigs, syscall.SIGINT, syscall.SIGQUIT)
	}
	return sigs
}

// supervise starts the workload, forwards signals and returns its status.
func supervise(p *runPlan) error {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded()...)
	defer signal.Stop(sigs)

	cmd := &exec.Cmd{
		Path:   p.path,
		Args:   p.argv,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		// The workload must not outlive nsrun. Pdeathsig fires when the
		// thread that forked exits, so that thread stays locked until Wait
		// returns (golang/go#27505).
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		code := exitNsrunFailed
		if errors.Is(err, fs.ErrPermission) {
			code = exitNotExecutable
		} else if errors.Is(err, fs.ErrNotExist) {
			code = exitNotFound
		}
		return &exitError{code: code, err: fmt.Errorf("start %s: %w", p.argv[0], err)}
	}
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-waited:
			return workloadStatus(cmd, err)
		}
	}
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
