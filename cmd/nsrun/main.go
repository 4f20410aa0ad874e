// Command nsrun runs a command in a transient systemd scope with a delegated
// cgroup v2 subtree (and, as the other packages land, namespaces, an overlay
// root and a device policy). See docs/architecture.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/nsrun/nsrun/nsexec"
	"github.com/spf13/cobra"
)

// Exit statuses of nsrun itself (the workload's own status passes through).
const (
	exitNsrunFailed   = 125 // nsrun's own failure, or bad usage
	exitNotExecutable = 126
	exitNotFound      = 127
)

// exitError carries the exit status for an error; the message is printed
// once, prefixed with "nsrun: ".
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitStatus is returned by a command whose workload ran: nsrun exits with
// the workload's status and prints nothing.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("workload exited with status %d", int(e)) }

func usageError(format string, args ...any) error {
	return &exitError{code: exitNsrunFailed, err: fmt.Errorf(format, args...)}
}

func main() {
	// Hidden roles of the same binary, chosen before any CLI set-up.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case nsexec.ChildArg: // the re-executed sandbox child
			nsexec.ChildMain()
		}
	}
	os.Exit(execute(os.Args[1:]))
}

func execute(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	var status exitStatus
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		return int(status)
	case errors.As(err, &ee):
		fmt.Fprintf(os.Stderr, "nsrun: %v\n", ee.err)
		return ee.code
	default:
		fmt.Fprintf(os.Stderr, "nsrun: %v\n", err)
		return exitNsrunFailed
	}
}

func newRootCmd() *cobra.Command {
	root := newRunCmd("nsrun [run] [OPTIONS] [--] COMMAND [ARG...]",
		"Run a command in a transient systemd scope with a delegated cgroup")
	root.Long = `nsrun runs COMMAND in a transient systemd scope (Delegate=yes,
CollectMode=inactive-or-failed) created over D-Bus, in the slice and with the
properties you ask for, and exits with COMMAND's status: 128+N when it died of
signal N, 125 for nsrun's own errors, 126 when COMMAND is not executable, 127
when it is not found.

"nsrun run ..." and "nsrun ..." are the same. Use "nsrun -- COMMAND" when
COMMAND has the name of an nsrun subcommand.`
	root.AddCommand(newRunCmd("run [OPTIONS] [--] COMMAND [ARG...]",
		"Run COMMAND in a transient scope (the default command)"))
	root.AddCommand(newListCmd())
	root.AddCommand(newStatusCmd())
	root.AddCommand(newStopCmd())
	root.AddCommand(newKillCmd())
	root.AddCommand(newFreezeCmd())
	root.AddCommand(newThawCmd())
	root.AddCommand(newDevicesCmd())
	root.AddCommand(newExecCmd())
	root.AddCommand(newProfileCmd(), newGenDocsCmd())
	root.CompletionOptions.HiddenDefaultCmd = true
	return root
}

// newRunCmd makes a command that runs COMMAND under nsrun: the root command
// and "run" are the same.
func newRunCmd(use, short string) *cobra.Command {
	opts := &runOptions{}
	cmd := &cobra.Command{
		Use:           use,
		Short:         short,
		Args:          cobra.ArbitraryArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCommand(cmd, opts, args)
		},
	}
	opts.addFlags(cmd)
	// Flags end at COMMAND: "nsrun sh -c ..." must not read -c as nsrun's.
	cmd.Flags().SetInterspersed(false)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	return cmd
}
