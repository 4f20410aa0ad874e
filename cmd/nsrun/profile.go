package main

// Profiles: nsrun settings in unit-file syntax (units.LoadProfile finds,
// parses and merges them). A profile is applied through the run command's
// own flag set, so every key reaches exactly the place its flag does:
//
//   - a single-valued key sets its flag unless the command line set it;
//   - a list key's values come first and the command line's after them
//     (so -p MemoryMax=1G on the command line overrides the profile's
//     MemoryMax=, and -E A=x its Environment=A=...); a profile's list is
//     never dropped because the command line added one entry;
//   - [Unit] Description= is --description, [Scope] Slice= is --slice, every
//     other [Unit] and [Scope] key is "-p Key=Value".
//
// Hooks for the run command: addProfileFlag(cmd) registers --profile;
// applyProfile(cmd, args) is called first thing when the command runs and
// returns the command to run (the profile's Command= when none was given).

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// How the value of a [Sandbox] key becomes flag values.
type valueMode int

const (
	asIs    valueMode = iota // the whole value is one flag value
	words                    // systemd words (quotes, escapes), one flag value each
	boolean                  // systemd boolean, "true" or "false"
)

// sandboxKey maps one [Sandbox] key to a run flag.
type sandboxKey struct {
	key  string
	flag string
	kind units.KeyKind
	mode valueMode
	// join, when set, joins a list key's words into one value for a flag
	// that takes a separated list in one string (e.g. --unshare=a,b).
	join string
	doc  string // what the man page adds to the flag's own help
}

// sandboxKeys is the [Sandbox] section: one entry per nsrun setting. Keep in
// step with cli.md; TestEveryRunFlagHasAKey checks that every run flag has a
// key here or a reason in notInProfiles.
var sandboxKeys = []sandboxKey{
	{key: "Scope", flag: "scope", kind: units.Single, doc: "auto, always or never."},
	{key: "AllowDegraded", flag: "allow-degraded", kind: units.Single, mode: boolean},
	// process
	{key: "Environment", flag: "setenv", kind: units.List, mode: words,
		doc: `For example Environment="A=b c" D=e.`},
	{key: "WorkingDirectory", flag: "chdir", kind: units.Single},
	{key: "PTY", flag: "pty", kind: units.Single, mode: boolean},
	{key: "User", flag: "uid", kind: units.Single},
	{key: "Group", flag: "gid", kind: units.Single},
	{key: "PreserveFDs", flag: "preserve-fds", kind: units.Single},
	// namespaces and ids
	{key: "Unshare", flag: "unshare", kind: units.List, mode: words, join: ",",
		doc: "Commas separate too: Unshare=user,mount."},
	{key: "UnshareAll", flag: "unshare-all", kind: units.Single, mode: boolean},
	{key: "MapRoot", flag: "map-root", kind: units.Single, mode: boolean},
	{key: "MapUser", flag: "map-user", kind: units.Single},
	{key: "UIDMap", flag: "uid-map", kind: units.List, mode: words},
	{key: "GIDMap", flag: "gid-map", kind: units.List, mode: words},
	{key: "Hostname", flag: "hostname", kind: units.Single},
	{key: "Network", flag: "net", kind: units.Single},
	{key: "TimeOffset", flag: "time-offset", kind: units.List, mode: words, join: ","},
	// filesystem
	{key: "RootDirectory", flag: "root", kind: units.Single},
	{key: "OverlayRoot", flag: "overlay-root", kind: units.Single},
	{key: "OverlayUpper", flag: "overlay-upper", kind: units.Single},
	{key: "OverlayWork", flag: "overlay-work", kind: units.Single},
	{key: "Bind", flag: "bind", kind: units.List, mode: words},
	{key: "ReadOnlyBind", flag: "ro-bind", kind: units.List, mode: words},
	{key: "TemporaryFileSystem", flag: "tmpfs", kind: units.List, mode: words},
	// devices
	{key: "Device", flag: "device", kind: units.List, mode: words},
	{key: "DeviceRule", flag: "device-rule", kind: units.List,
		doc: `One rule per assignment, as DeviceAllow= takes it: DeviceRule=c 195:* rw.`},
	{key: "DevicePolicy", flag: "device-policy", kind: units.Single},
	{key: "DeviceSet", flag: "device-set", kind: units.List, mode: words},
	// security
	{key: "Sandbox", flag: "sandbox", kind: units.Single, mode: boolean},
	{key: "Capabilities", flag: "cap-add", kind: units.List, mode: words,
		doc: "Capability names to add (--cap-add); a list starting with ~ names capabilities to drop (--cap-drop), as CapabilityBoundingSet= does: Capabilities=~CAP_NET_RAW CAP_SYS_ADMIN."},
	{key: "Seccomp", flag: "seccomp", kind: units.Single},
	{key: "NoInit", flag: "no-init", kind: units.Single, mode: boolean,
		doc: "With a pid namespace, run the workload itself as PID 1 instead of nsrun's init."},
	// the command
	{key: "Command", kind: units.Single, mode: words,
		doc: "The command to run, as words, when the command line names none (so a unit can say ExecStart=nsrun --profile=NAME)."},
}

// notInProfiles are run flags with no profile key, and why.
var notInProfiles = map[string]string{
	"system":                 "the manager decides where profiles are searched",
	"user":                   "the manager decides where profiles are searched",
	"unit":                   "a unit name must be unique per run",
	"quiet":                  "about the terminal, not the job",
	"profile":                "profiles do not nest",
	"help":                   "not a setting",
	"memory-max":             "use [Scope] MemoryMax=",
	"memory-high":            "use [Scope] MemoryHigh=",
	"memory-low":             "use [Scope] MemoryLow=",
	"memory-min":             "use [Scope] MemoryMin=",
	"memory-swap-max":        "use [Scope] MemorySwapMax=",
	"cpu-quota":              "use [Scope] CPUQuota=",
	"cpu-weight":             "use [Scope] CPUWeight=",
	"allowed-cpus":           "use [Scope] AllowedCPUs=",
	"tasks-max":              "use [Scope] TasksMax=",
	"io-weight":              "use [Scope] IOWeight=",
	"io-read-bandwidth-max":  "use [Scope] IOReadBandwidthMax=",
	"io-write-bandwidth-max": "use [Scope] IOWriteBandwidthMax=",
	"runtime-max":            "use [Scope] RuntimeMaxSec=",
	"description":            "use [Unit] Description=",
	"slice":                  "use [Scope] Slice=",
	"property":               "use [Unit] or [Scope] Key=Value",
	"cap-drop":               "use [Sandbox] Capabilities=~CAP...",
}

// profileSchema is every section and key a profile may have.
func profileSchema() units.Schema {
	s := units.PropertySchema()
	s["Sandbox"] = map[string]units.KeyKind{}
	for _, k := range sandboxKeys {
		s["Sandbox"][k.key] = k.kind
	}
	return s
}

func addProfileFlag(cmd *cobra.Command) {
	cmd.Flags().String("profile", "", "take settings from profile NAME (searched in /etc, /run, /usr/lib nsrun/profiles) or FILE (a path with a '/'); flags given here override it")
	_ = cmd.RegisterFlagCompletionFunc("profile", func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return profileNames(c), cobra.ShellCompDirectiveDefault
	})
}

// profileManager is the manager whose search path applies: the one the
// command line chose, else the default for this user.
func profileManager(f *pflag.FlagSet) units.Manager {
	if on, _ := f.GetBool("system"); on {
		return units.System
	}
	if on, _ := f.GetBool("user"); on {
		return units.User
	}
	return units.DefaultManager()
}

func profileDirs(f *pflag.FlagSet) []string {
	home, _ := os.UserConfigDir() // $XDG_CONFIG_HOME or ~/.config; none without $HOME
	return units.ProfileDirs(profileManager(f), home)
}

func profileNames(c *cobra.Command) []string {
	list, _ := units.ListProfiles(profileDirs(c.Flags()))
	var out []string
	for _, e := range list {
		if !e.Masked {
			out = append(out, e.Name)
		}
	}
	return out
}

// loadProfile reads NAME (searched) or FILE (any argument with a '/') and
// merges it, checking sections, keys and [Unit]/[Scope] values.
func loadProfile(f *pflag.FlagSet, arg string) (*units.Profile, []units.Setting, error) {
	var p *units.Profile
	var err error
	if strings.Contains(arg, "/") {
		p, err = units.LoadProfileFile(arg)
	} else {
		p, err = units.LoadProfile(arg, profileDirs(f))
	}
	if err != nil {
		return nil, nil, err
	}
	set, err := p.Merge(profileSchema())
	if err != nil {
		return nil, nil, err
	}
	if err := p.CheckProperties(); err != nil {
		return nil, nil, err
	}
	return p, set, nil
}

// flagValue is one value a profile gives a flag, with its origin.
type flagValue struct {
	value string
	src   units.Assignment
}

// applyProfile applies the --profile given on cmd's command line, if any,
// to cmd's flags and returns the command to run: args, or the profile's
// Command= when args is empty. Any error names the profile file and line;
// nothing has been created when it returns.
func applyProfile(cmd *cobra.Command, args []string) ([]string, error) {
	f := cmd.Flags()
	arg, _ := f.GetString("profile")
	if arg == "" {
		return args, nil
	}
	_, set, err := loadProfile(f, arg)
	if err != nil {
		return nil, profileError(arg, err)
	}
	var order []string
	values := map[string][]flagValue{}
	add := func(flag, v string, a units.Assignment) {
		if _, ok := values[flag]; !ok {
			order = append(order, flag)
		}
		values[flag] = append(values[flag], flagValue{v, a})
	}
	var command []string
	for _, s := range set {
		for _, a := range s.Values {
			flags, vals, err := profileFlagValues(s, a)
			if err != nil {
				return nil, profileError(arg, &units.ProfileError{Source: a.Source, Err: err})
			}
			if s.Section == "Sandbox" && s.Key == "Command" {
				command = vals
				continue
			}
			for i := range vals {
				add(flags[i], vals[i], a)
			}
		}
	}
	for _, name := range order {
		if err := setFlag(f, name, values[name]); err != nil {
			return nil, profileError(arg, err)
		}
	}
	if len(args) == 0 {
		args = command
	}
	return args, nil
}

// profileFlagValues turns one assignment into (flag, value) pairs.
func profileFlagValues(s units.Setting, a units.Assignment) (flags, vals []string, err error) {
	one := func(flag, v string) ([]string, []string, error) { return []string{flag}, []string{v}, nil }
	switch s.Section {
	case "Unit", "Scope":
		switch s.Key {
		case "Description":
			return one("description", a.Value)
		case "Slice":
			return one("slice", a.Value)
		}
		return one("property", s.Key+"="+a.Value)
	}
	k := sandboxKeyFor(s.Key)
	v := a.Value
	switch k.mode {
	case boolean:
		b, err := parseBoolean(v)
		if err != nil {
			return nil, nil, err
		}
		return one(k.flag, fmt.Sprint(b))
	case words:
		flag := k.flag
		if k.key == "Capabilities" {
			if rest, ok := strings.CutPrefix(v, "~"); ok {
				flag, v = "cap-drop", rest
			}
		}
		ws, err := units.SplitWords(v)
		if err != nil {
			return nil, nil, err
		}
		if k.join != "" {
			// "user mount" and "user,mount" alike
			var parts []string
			for _, w := range ws {
				parts = append(parts, strings.Split(w, k.join)...)
			}
			ws = slices.DeleteFunc(parts, func(p string) bool { return p == "" })
		}
		for range ws {
			flags = append(flags, flag)
		}
		return flags, ws, nil
	}
	return one(k.flag, v)
}

// profileError is a usage error (exit 125) that names the profile, unless
// it names the file and line already.
func profileError(arg string, err error) error {
	if errors.As(err, new(*units.ProfileError)) {
		return usageError("%v", err)
	}
	return usageError("profile %s: %v", arg, err)
}

func sandboxKeyFor(key string) sandboxKey {
	for _, k := range sandboxKeys {
		if k.key == key {
			return k
		}
	}
	panic("no [Sandbox] key " + key) // Merge admitted only schema keys
}

// setFlag gives flag name the profile's values; the command line's own
// values win (single) or come after them (list).
func setFlag(f *pflag.FlagSet, name string, vals []flagValue) error {
	fl := f.Lookup(name)
	first := vals[0].src
	if fl == nil {
		return &units.ProfileError{Source: first.Source,
			Err: fmt.Errorf("%s= is not supported by this nsrun (it has no --%s option)", first.Key, name)}
	}
	set := func(v flagValue) error {
		if err := f.Set(name, v.value); err != nil {
			return &units.ProfileError{Source: v.src.Source, Err: fmt.Errorf("%s=%s: %v", v.src.Key, v.src.Value, err)}
		}
		return nil
	}
	isList := name == "property" || first.Section == "Sandbox" && sandboxKeyFor(first.Key).kind == units.List
	if !isList {
		if fl.Changed {
			return nil // the command line overrides the profile
		}
		return set(vals[len(vals)-1])
	}
	// A list.
	sv, isSlice := fl.Value.(pflag.SliceValue)
	if !isSlice {
		if fl.Changed {
			return nil // cannot put the profile's values first: the command line's win
		}
		if k := sandboxKeyFor(first.Key); k.join != "" {
			var parts []string
			for _, v := range vals {
				parts = append(parts, v.value)
			}
			return set(flagValue{strings.Join(parts, k.join), first})
		}
		for _, v := range vals {
			if err := set(v); err != nil {
				return err
			}
		}
		return nil
	}
	var cli []string
	if fl.Changed {
		cli = sv.GetSlice()
		if err := sv.Replace(nil); err != nil {
			return err
		}
	}
	for _, v := range vals {
		if err := set(v); err != nil {
			return err
		}
	}
	return sv.Replace(append(sv.GetSlice(), cli...))
}

// parseBoolean reads a boolean as systemd does (parse_boolean).
func parseBoolean(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q", v)
}

// newProfileCmd is "nsrun profile show|list".
func newProfileCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "profile",
		Short: "Show and list profiles",
		Args:  cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.Bool("system", false, "the system manager's profiles (default for root)")
	pf.Bool("user", false, "your user manager's profiles, ~/.config/nsrun/profiles first (default for other users)")
	cmd.MarkFlagsMutuallyExclusive("system", "user")
	show := &cobra.Command{
		Use:   "show NAME|FILE",
		Short: "Print a profile merged with its drop-ins, each value with the file and line it came from",
		Args:  cobra.ExactArgs(1),
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return profileNames(c), cobra.ShellCompDirectiveDefault
		},
		RunE: func(c *cobra.Command, args []string) error {
			p, set, err := loadProfile(c.Flags(), args[0])
			if err != nil {
				return profileError(args[0], err)
			}
			return showProfile(c.OutOrStdout(), p, set)
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the profiles in the search path",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dirs := profileDirs(c.Flags())
			entries, err := units.ListProfiles(dirs)
			if err != nil {
				return &exitError{code: exitNsrunFailed, err: err}
			}
			return listProfiles(c.OutOrStdout(), dirs, entries)
		},
	}
	for _, c := range []*cobra.Command{cmd, show, list} {
		c.SilenceUsage, c.SilenceErrors = true, true
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	}
	cmd.AddCommand(show, list)
	return cmd
}

// showProfile prints the merged profile as a valid profile: each value
// preceded by a comment naming its file and line.
func showProfile(w io.Writer, p *units.Profile, set []units.Setting) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Profile %s, merged from:\n", p.Name)
	for _, f := range p.Files {
		fmt.Fprintf(&b, "#   %s\n", f)
	}
	for _, sec := range []string{"Unit", "Scope", "Sandbox"} {
		first := true
		for _, s := range set {
			if s.Section != sec {
				continue
			}
			if first {
				fmt.Fprintf(&b, "\n[%s]\n", sec)
				first = false
			}
			for _, a := range s.Values {
				fmt.Fprintf(&b, "# %s\n%s=%s\n", a.Source, a.Key, a.Value)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func listProfiles(w io.Writer, dirs []string, entries []units.ProfileEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tSTATE\tFILE\tDROP-INS")
	for _, e := range entries {
		state := "ok"
		if e.Masked {
			state = "masked"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", e.Name, state, e.Path, len(e.DropIns))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d profiles listed (searched %s).\n", len(entries), strings.Join(dirs, ", "))
	return err
}
