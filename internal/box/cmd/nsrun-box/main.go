// Command nsrun-box boots the test systemd "box" for manual use and demos.
//
//	nsrun-box [--share=DIR]...                  boot, print how to enter, wait for Ctrl-C
//	nsrun-box [--share=DIR]... [--user=NAME] -- COMMAND...
//	                                            boot, run COMMAND in the box, tear down,
//	                                            exit with COMMAND's status
//
// Needs root. Every mount happens in the box's own namespaces; Ctrl-C, SIGTERM
// or the end of COMMAND tears it down and removes its cgroup.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nsrun/nsrun/internal/box"
)

type shares []string

func (s *shares) String() string     { return strings.Join(*s, ",") }
func (s *shares) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	var sh shares
	flag.Var(&sh, "share", "host directory to keep visible at the same path in the box (repeatable)")
	user := flag.String("user", "", "run COMMAND as this box user (created if missing) with its user manager started")
	quiet := flag.Bool("quiet", false, "print nothing but COMMAND's own output")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := box.Start(ctx, box.Options{Shares: sh})
	if err != nil {
		fmt.Fprintf(os.Stderr, "nsrun-box: %v\n", err)
		return 125
	}
	defer func() {
		if err := b.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "nsrun-box: tear down: %v\n", err)
		}
	}()
	version, _ := b.SystemdVersion(ctx)
	ctrls, _ := b.Controllers()
	if !*quiet {
		fmt.Fprintf(os.Stderr, "nsrun-box: systemd %s running as PID 1 of a box (host pid %d, cgroup %s, v2 controllers: [%s])\n",
			version, b.Pid(), b.Cgroup(), strings.Join(ctrls, " "))
	}

	if flag.NArg() == 0 {
		// The shell joins the box's cgroup first, so that tearing the box
		// down ends it too.
		fmt.Printf("enter the box with:\n  sh -c 'echo $$ > %s/cgroup.procs && exec %s /bin/bash -l'\n",
			b.Cgroup(), strings.Join(b.EnterArgs(), " "))
		fmt.Println("Ctrl-C (or SIGTERM) tears it down.")
		<-ctx.Done()
		return 0
	}

	cmd := b.Command(ctx, flag.Arg(0), flag.Args()[1:]...)
	if *user != "" {
		u, err := b.EnsureUser(ctx, *user)
		if err == nil {
			err = b.StartUserManager(ctx, u)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "nsrun-box: %v\n", err)
			return 125
		}
		cmd = b.CommandAs(ctx, u, flag.Arg(0), flag.Args()[1:]...)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		return exitErr.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "nsrun-box: %v\n", err)
		return 125
	}
}
