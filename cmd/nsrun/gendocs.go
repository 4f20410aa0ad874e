//go:build !nodocs

package main

// Man pages, generated from the same definitions as the flags so they
// cannot drift: nsrun(1) and its subcommands from the cobra command tree
// (github.com/spf13/cobra/doc), nsrun.profile(5) from the profile key table
// (sandboxKeys, units.PropertySchema) and each key's flag help. The hidden
// command "nsrun __gendocs DIR" writes them; "make man" runs it.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func newGenDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "__gendocs DIR",
		Short:  "Write the man pages nsrun.1, nsrun-*.1 and nsrun.profile.5 into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := genDocs(c.Root(), args[0]); err != nil {
				return &exitError{code: exitNsrunFailed, err: err}
			}
			return nil
		},
	}
}

func genDocs(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root.DisableAutoGenTag = true
	hdr := &doc.GenManHeader{Title: "NSRUN", Section: "1", Source: "nsrun", Manual: "nsrun manual"}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		return fmt.Errorf("generate nsrun(1): %w", err)
	}
	run := findRunCmd(root)
	page := md2man.Render([]byte(profileManMarkdown(run)))
	if err := os.WriteFile(filepath.Join(dir, "nsrun.profile.5"), page, 0o644); err != nil {
		return fmt.Errorf("generate nsrun.profile(5): %w", err)
	}
	return nil
}

// findRunCmd is the "run" subcommand (the root has the same flags).
func findRunCmd(root *cobra.Command) *cobra.Command {
	for _, c := range root.Commands() {
		if c.Name() == "run" {
			return c
		}
	}
	return root
}

// mdEscape keeps markdown from reading flag help as formatting.
func mdEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `_`, `\_`, "`", "\\`", `[`, `\[`, `]`, `\]`, `<`, `\<`, `>`, `\>`)
	return r.Replace(s)
}

// profileManMarkdown is nsrun.profile(5) in markdown, built from the key
// tables and run's flags.
func profileManMarkdown(run *cobra.Command) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("%% \"NSRUN.PROFILE\" \"5\" \"\" \"nsrun\" \"nsrun manual\"\n")
	w("# NAME\nnsrun.profile - nsrun settings in unit-file syntax, with drop-ins\n\n")
	w("# SYNOPSIS\n")
	for _, d := range units.ProfileDirs(units.User, "~/.config") {
		w("%s/*NAME*%s, %s/*NAME*%s.d/\\*.conf\n\n", mdEscape(d), units.ProfileSuffix, mdEscape(d), units.ProfileSuffix)
	}
	w("**nsrun --profile=**_NAME_|_FILE_ [*OPTIONS*] [**--** *COMMAND*...]\n\n")
	w(`# DESCRIPTION
A profile holds the settings of an **nsrun run** in the syntax of a systemd unit file
(see **systemd.syntax**(7)): sections, Key=Value assignments, comments starting with # or ;,
and lines continued with a trailing backslash. **--profile=**_NAME_ looks the file NAME.conf up
in the directories above, highest priority first: the first one found is used and masks those
of the same name below it (the user's own directory is searched only for **--user**).
A file that is empty or a symlink to /dev/null masks the profile. **--profile=**_FILE_ (any
argument containing a "/") reads FILE and the drop-ins in FILE.d/.

Drop-ins NAME.conf.d/\*.conf are read from every directory and merged exactly as systemd merges
a unit's drop-ins: a drop-in masks one of the same file name in a directory of lower priority;
the others are applied in the order of their file names, whatever their directory, after the
main file. A later assignment of a single-valued key replaces an earlier one; a list key
accumulates, and an empty assignment (Key=) resets it, or a single-valued key to its default.

An unknown section or key, a line that is not an assignment, or a value its setting refuses is
an error naming the file and line; nsrun then exits with status 125 and creates nothing.

Options given on the command line override the profile: a single-valued option replaces the
profile's value; a list option (**-p**, **-E**, **--bind**, ...) is added after the profile's
values, so **-p MemoryMax=1G** overrides only the profile's MemoryMax=.

**nsrun profile show** _NAME_ prints the merged profile with the file and line of every value;
**nsrun profile list** lists the profiles found.

`)
	schema := units.PropertySchema()
	w("# [Unit] SECTION\n")
	w("Description=\n: The scope's description (**--description**).\n\n")
	w("%s\n: Unit properties in **systemd.unit**(5) syntax, each passed as **-p** _Key=Value_.\n\n",
		mdEscape(keyList(schema["Unit"], "Description")))
	w("# [Scope] SECTION\n")
	w("Slice=\n: The slice to place the scope in (**--slice**).\n\n")
	w("%s\n: Resource-control, kill and scope properties in the syntax of **systemd.resource-control**(5), "+
		"**systemd.kill**(5) and **systemd.scope**(5), each passed as **-p** _Key=Value_; list properties accumulate. "+
		"As on the command line, a limit whose cgroup controller is not available is refused unless AllowDegraded=yes.\n\n",
		mdEscape(keyList(schema["Scope"], "Slice")))
	w("# [Sandbox] SECTION\n")
	for _, k := range sandboxKeys {
		w("%s=\n: ", k.key)
		var parts []string
		if k.flag != "" {
			if fl := run.Flags().Lookup(k.flag); fl != nil {
				parts = append(parts, mdEscape(strings.TrimSuffix(capitalize(fl.Usage), ".")+"."))
			} else {
				parts = append(parts, "(Not supported by this build of nsrun: an error.)")
			}
			opt := "**--" + k.flag + "**"
			if k.key == "Capabilities" {
				opt = "**--cap-add**, **--cap-drop**"
			}
			parts = append(parts, "Same as "+opt+".")
		}
		switch {
		case k.mode == boolean:
			parts = append(parts, "A boolean (yes/no).")
		case k.kind == units.List && k.mode == words:
			parts = append(parts, "A list of space-separated words (quote with \" or '); accumulates, empty resets.")
		case k.kind == units.List:
			parts = append(parts, "Accumulates; empty resets.")
		}
		if k.doc != "" {
			parts = append(parts, mdEscape(k.doc))
		}
		w("%s\n\n", strings.Join(parts, " "))
	}
	w(`# EXAMPLE
    # /etc/nsrun/profiles/build.conf
    [Unit]
    Description=Build job

    [Scope]
    Slice=nsrun.slice
    MemoryMax=4G
    TasksMax=512

    [Sandbox]
    Unshare=user mount pid ipc uts
    OverlayRoot=/
    Network=none

    # /etc/nsrun/profiles/build.conf.d/50-more-memory.conf
    [Scope]
    MemoryMax=8G

Run it with **nsrun --profile=build -- make**, or as a service: **systemctl start nsrun@build.service**
with Command= in the profile.

# SEE ALSO
**nsrun**(1), **systemd.syntax**(7), **systemd.unit**(5), **systemd.resource-control**(5), **systemd-run**(1)
`)
	return b.String()
}

func keyList(keys map[string]units.KeyKind, except string) string {
	var names []string
	for k := range keys {
		if k != except {
			names = append(names, k+"=")
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
