package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsrun/nsrun/units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// standIns registers, for flags other branches bring, a flag of the kind
// cli.md describes, so the generic mechanism is tested here whatever has
// landed.
func standIns(cmd *cobra.Command) {
	f := cmd.Flags()
	if f.Lookup("setenv") == nil {
		f.StringArray("setenv", nil, "")
	}
	if f.Lookup("unshare") == nil {
		f.String("unshare", "", "")
	}
	if f.Lookup("bind") == nil {
		f.StringSlice("bind", nil, "")
	}
	for _, n := range []string{"cap-add", "cap-drop"} {
		if f.Lookup(n) == nil {
			f.StringArray(n, nil, "")
		}
	}
	if f.Lookup("hostname") == nil {
		f.String("hostname", "", "")
	}
}

func getArray(t *testing.T, cmd *cobra.Command, name string) []string {
	t.Helper()
	fl := cmd.Flags().Lookup(name)
	if fl == nil {
		t.Fatalf("no flag --%s", name)
	}
	if sv, ok := fl.Value.(interface{ GetSlice() []string }); ok {
		return sv.GetSlice()
	}
	return []string{fl.Value.String()}
}

func TestApplyProfile(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"p.conf": `[Unit]
Description=from profile
[Scope]
Slice=prof.slice
RuntimeMaxSec=5min
TasksMax=10
DeviceAllow=/dev/null r
[Sandbox]
AllowDegraded=yes
Environment="A=1 2" B=3
Unshare=user mount
Bind=/a /b
Capabilities=CAP_X
Capabilities=~CAP_Y
Hostname=h
Command=sh -c "exit 3"
`,
		"p.conf.d/10-more.conf": `[Scope]
RuntimeMaxSec=10min
DeviceAllow=/dev/zero rw
[Sandbox]
Bind=
Bind=/d
`,
	})
	cmd := newRunCmd("run", "")
	standIns(cmd)
	cli := []string{"--profile=" + root + "/p.conf", "--slice=cli.slice", "-p", "TasksMax=20", "--setenv=C=4", "--bind=/c", "--unshare=pid"}
	if err := cmd.ParseFlags(cli); err != nil {
		t.Fatal(err)
	}
	args, err := applyProfile(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"sh", "-c", "exit 3"}; !slices.Equal(args, want) {
		t.Errorf("command %q, want the profile's %q", args, want)
	}
	for _, tc := range []struct {
		flag string
		want []string
	}{
		{"description", []string{"from profile"}},
		{"slice", []string{"cli.slice"}}, // the command line wins
		// The profile's properties first (the drop-in's RuntimeMaxSec
		// replaced the main file's; DeviceAllow accumulated), then the
		// command line's, which systemd applies last.
		{"property", []string{"RuntimeMaxSec=10min", "TasksMax=10", "DeviceAllow=/dev/null r", "DeviceAllow=/dev/zero rw", "TasksMax=20"}},
		{"allow-degraded", []string{"true"}},
		{"setenv", []string{"A=1 2", "B=3", "C=4"}},
		{"bind", []string{"/d", "/c"}}, // reset by the drop-in, then the command line's
		{"cap-add", []string{"CAP_X"}},
		{"cap-drop", []string{"CAP_Y"}},
		{"hostname", []string{"h"}},
	} {
		if got := getArray(t, cmd, tc.flag); !slices.Equal(got, tc.want) {
			t.Errorf("--%s = %q, want %q", tc.flag, got, tc.want)
		}
	}
	// --unshare is a list: the command line's namespaces join the
	// profile's (asking for more isolation never drops the profile's).
	if got := getArray(t, cmd, "unshare"); !slices.Equal(got, []string{"user", "mount", "pid"}) {
		t.Errorf("--unshare = %q, want the profile's user,mount and the command line's pid", got)
	}

	// A command on the command line replaces Command=; --unshare from the
	// profile alone joins the words.
	cmd = newRunCmd("run", "")
	standIns(cmd)
	if err := cmd.ParseFlags([]string{"--profile=" + root + "/p.conf"}); err != nil {
		t.Fatal(err)
	}
	args, err = applyProfile(cmd, []string{"true"})
	if err != nil || !slices.Equal(args, []string{"true"}) {
		t.Errorf("applyProfile with a command: %q, %v", args, err)
	}
	if got := getArray(t, cmd, "unshare"); !slices.Equal(got, []string{"user", "mount"}) {
		t.Errorf("--unshare = %q, want user,mount", got)
	}
}

func TestApplyProfileErrors(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"badbool.conf":  "[Sandbox]\nAllowDegraded=maybe\n",
		"badkey.conf":   "[Sandbox]\n\nNoSuchKey=1\n",
		"badsect.conf":  "[Service]\nExecStart=/bin/true\n",
		"badprop.conf":  "[Unit]\nDescription=x\n[Scope]\nMemoryMax=12Q\n",
		"badwords.conf": "[Sandbox]\nEnvironment=\"A=1\n",
		"noflag.conf":   "[Unit]\nDescription=x\n[Sandbox]\nHostname=h\n",
		"syntax.conf":   "[Unit]\nDescription\n",
		"badslice.conf": "[Scope]\nSlice=-x-.slice\n",
	})
	for _, tc := range []struct{ file, want string }{
		{"badbool.conf", ":2: invalid boolean"},
		{"badkey.conf", ":3: unknown key NoSuchKey="},
		{"badsect.conf", ":2: unknown section [Service]"},
		{"badprop.conf", ":4: "},
		{"badwords.conf", ":2: unterminated quote"},
		{"noflag.conf", ":4: Hostname= is not supported by this nsrun (it has no --hostname option)"},
		{"syntax.conf", ":2: missing '='"},
		{"badslice.conf", ":2: "},
	} {
		// A bare command with no sandbox flags: every [Sandbox] key that
		// reaches setFlag is unsupported.
		cmd := &cobra.Command{Use: "x"}
		cmd.Flags().Bool("allow-degraded", false, "")
		cmd.Flags().String("description", "", "")
		cmd.Flags().String("slice", "", "")
		cmd.Flags().StringArray("property", nil, "")
		addProfileFlag(cmd)
		path := filepath.Join(root, tc.file)
		if err := cmd.ParseFlags([]string{"--profile=" + path}); err != nil {
			t.Fatal(err)
		}
		_, err := applyProfile(cmd, nil)
		if err == nil || !strings.HasPrefix(err.Error(), path+tc.want) {
			t.Errorf("%s: error %v, want prefix %q", tc.file, err, path+tc.want)
			continue
		}
		if ee, ok := err.(*exitError); !ok || ee.code != exitNsrunFailed {
			t.Errorf("%s: error %T, want exit status 125", tc.file, err)
		}
	}
}

// TestBadProfileExits125: bad or missing profiles are usage errors.
func TestBadProfileExits125(t *testing.T) {
	root := writeFiles(t, map[string]string{"bad.conf": "[Sandbox]\nNoSuchKey=1\n"})
	if code := execute([]string{"--profile=" + root + "/bad.conf", "true"}); code != exitNsrunFailed {
		t.Errorf("exit %d, want 125", code)
	}
	if code := execute([]string{"--profile=no-such-profile-" + randomHex(4), "true"}); code != exitNsrunFailed {
		t.Errorf("missing profile: exit %d, want 125", code)
	}
	if code := execute([]string{"profile", "show", root + "/bad.conf"}); code != exitNsrunFailed {
		t.Errorf("profile show of a bad profile: exit %d, want 125", code)
	}
}

// TestEverySandboxKeyHasARunFlag: every [Sandbox] key reaches a run flag.
// It fails on a branch that lacks some flags (they come from other issues)
// and lists them.
func TestEverySandboxKeyHasARunFlag(t *testing.T) {
	run := newRunCmd("run", "")
	var missing []string
	for _, k := range sandboxKeys {
		if k.flag == "" {
			continue
		}
		if run.Flags().Lookup(k.flag) == nil {
			missing = append(missing, k.key+"= (--"+k.flag+")")
		}
	}
	if run.Flags().Lookup("cap-drop") == nil {
		missing = append(missing, "Capabilities=~ (--cap-drop)")
	}
	if len(missing) > 0 {
		t.Errorf("[Sandbox] keys whose run flag does not exist: %s", strings.Join(missing, ", "))
	}
}

// TestEveryRunFlagHasAKey: a run flag added without a profile key (or a
// reason in notInProfiles) fails here.
func TestEveryRunFlagHasAKey(t *testing.T) {
	run := newRunCmd("run", "")
	have := map[string]bool{}
	for _, k := range sandboxKeys {
		have[k.flag] = true
	}
	run.InitDefaultHelpFlag()
	run.Flags().VisitAll(func(fl *pflag.Flag) {
		if !have[fl.Name] && notInProfiles[fl.Name] == "" {
			t.Errorf("run flag --%s has no profile key and no reason in notInProfiles", fl.Name)
		}
	})
	schema := profileSchema()
	for _, p := range units.KnownProperties() {
		if _, ok := schema[units.PropertySection(p)][p]; !ok {
			t.Errorf("property %s has no profile key", p)
		}
	}
}

func TestManPages(t *testing.T) {
	dir := t.TempDir()
	root := newRootCmd()
	if err := genDocs(root, dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"nsrun.1", "nsrun-run.1", "nsrun-profile-show.1", "nsrun-profile-list.1", "nsrun.profile.5"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("man page %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nsrun-__gendocs.1")); err == nil {
		t.Error("the hidden __gendocs command has a man page")
	}
	page, err := os.ReadFile(filepath.Join(dir, "nsrun.profile.5"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range sandboxKeys {
		if !strings.Contains(string(page), "\n"+k.key+"=") && !strings.Contains(string(page), " "+k.key+"=") {
			t.Errorf("nsrun.profile(5) lacks %s=", k.key)
		}
	}
	for _, p := range []string{"MemoryMax=", "TasksMax=", "After=", "Description="} {
		if !strings.Contains(string(page), p) {
			t.Errorf("nsrun.profile(5) lacks %s", p)
		}
	}
	run, _ := os.ReadFile(filepath.Join(dir, "nsrun-run.1"))
	if !strings.Contains(string(run), "profile") {
		t.Error("nsrun-run(1) does not describe --profile")
	}
}

// profileSamples is, per key, a profile value and the command line that
// must give the same flags.
var profileSamples = map[string]struct {
	value string
	cli   []string
}{
	"Unit/Description":            {"a job", []string{"--description=a job"}},
	"Unit/After":                  {"x.service", []string{"-p", "After=x.service"}},
	"Scope/Slice":                 {"batch.slice", []string{"--slice=batch.slice"}},
	"Scope/MemoryMax":             {"2G", []string{"-p", "MemoryMax=2G"}},
	"Scope/DeviceAllow":           {"/dev/null rw", []string{"-p", "DeviceAllow=/dev/null rw"}},
	"Sandbox/Scope":               {"auto", []string{"--scope=auto"}},
	"Sandbox/AllowDegraded":       {"yes", []string{"--allow-degraded"}},
	"Sandbox/Environment":         {`"A=b c" D=e`, []string{"--setenv=A=b c", "--setenv=D=e"}},
	"Sandbox/WorkingDirectory":    {"/src", []string{"--chdir=/src"}},
	"Sandbox/PTY":                 {"yes", []string{"--pty"}},
	"Sandbox/User":                {"nobody", []string{"--uid=nobody"}},
	"Sandbox/Group":               {"nogroup", []string{"--gid=nogroup"}},
	"Sandbox/PreserveFDs":         {"2", []string{"--preserve-fds=2"}},
	"Sandbox/Unshare":             {"user mount,pid", []string{"--unshare=user,mount,pid"}},
	"Sandbox/UnshareAll":          {"yes", []string{"--unshare-all"}},
	"Sandbox/MapRoot":             {"yes", []string{"--map-root"}},
	"Sandbox/MapUser":             {"1000", []string{"--map-user=1000"}},
	"Sandbox/UIDMap":              {"0:100000:65536", []string{"--uid-map=0:100000:65536"}},
	"Sandbox/GIDMap":              {"0:100000:65536", []string{"--gid-map=0:100000:65536"}},
	"Sandbox/Hostname":            {"box", []string{"--hostname=box"}},
	"Sandbox/Network":             {"none", []string{"--net=none"}},
	"Sandbox/TimeOffset":          {"monotonic:10 boottime:20", []string{"--time-offset=monotonic:10,boottime:20"}},
	"Sandbox/RootDirectory":       {"/srv/root", []string{"--root=/srv/root"}},
	"Sandbox/OverlayRoot":         {"/", []string{"--overlay-root=/"}},
	"Sandbox/OverlayUpper":        {"/var/up", []string{"--overlay-upper=/var/up"}},
	"Sandbox/OverlayWork":         {"/var/work", []string{"--overlay-work=/var/work"}},
	"Sandbox/Bind":                {"/a:/b /c", []string{"--bind=/a:/b", "--bind=/c"}},
	"Sandbox/ReadOnlyBind":        {"/a", []string{"--ro-bind=/a"}},
	"Sandbox/TemporaryFileSystem": {"/tmp /run", []string{"--tmpfs=/tmp", "--tmpfs=/run"}},
	"Sandbox/Device":              {"/dev/kvm:rw", []string{"--device=/dev/kvm:rw"}},
	"Sandbox/DeviceRule":          {"c 195:* rw", []string{"--device-rule=c 195:* rw"}},
	"Sandbox/DevicePolicy":        {"strict", []string{"--device-policy=strict"}},
	"Sandbox/DeviceSet":           {"kvm fuse", []string{"--device-set=kvm", "--device-set=fuse"}},
	"Sandbox/Sandbox":             {"yes", []string{"--sandbox"}},
	"Sandbox/Capabilities":        {"CAP_NET_ADMIN", []string{"--cap-add=CAP_NET_ADMIN"}},
	"Sandbox/Seccomp":             {"none", []string{"--seccomp=none"}},
	"Sandbox/NoInit":              {"yes", []string{"--no-init"}},
}

// TestSandboxKeysReachTheirFlags: each key, in a profile, leaves the run
// command's flags exactly as the equivalent command line does. Keys whose
// flag this build lacks are reported by TestEverySandboxKeyHasARunFlag.
func TestSandboxKeysReachTheirFlags(t *testing.T) {
	dump := func(cmd *cobra.Command) map[string]string {
		m := map[string]string{}
		cmd.Flags().VisitAll(func(fl *pflag.Flag) {
			if fl.Name != "profile" {
				m[fl.Name] = fl.Value.String()
			}
		})
		return m
	}
	for id, sample := range profileSamples {
		section, key, _ := strings.Cut(id, "/")
		flags, _, err := profileFlagValues(units.Setting{Section: section, Key: key},
			units.Assignment{Section: section, Key: key, Value: sample.value})
		if err != nil {
			t.Errorf("%s=%s: %v", key, sample.value, err)
			continue
		}
		if newRunCmd("run", "").Flags().Lookup(flags[0]) == nil {
			continue
		}
		dir := writeFiles(t, map[string]string{"p.conf": "[" + section + "]\n" + key + "=" + sample.value + "\n"})
		viaProfile, viaCLI := newRunCmd("run", ""), newRunCmd("run", "")
		if err := viaProfile.ParseFlags([]string{"--profile=" + dir + "/p.conf"}); err != nil {
			t.Fatal(err)
		}
		if _, err := applyProfile(viaProfile, []string{"true"}); err != nil {
			t.Errorf("%s=%s: %v", key, sample.value, err)
			continue
		}
		if err := viaCLI.ParseFlags(sample.cli); err != nil {
			t.Errorf("%s: %v", strings.Join(sample.cli, " "), err)
			continue
		}
		p, c := dump(viaProfile), dump(viaCLI)
		for name := range c {
			if p[name] != c[name] {
				t.Errorf("[%s] %s=%s gives --%s=%s; %s gives %s", section, key, sample.value, name, p[name], strings.Join(sample.cli, " "), c[name])
			}
		}
	}
	for _, k := range sandboxKeys {
		if _, ok := profileSamples["Sandbox/"+k.key]; !ok && k.flag != "" {
			t.Errorf("no sample for [Sandbox] %s=", k.key)
		}
	}
}
