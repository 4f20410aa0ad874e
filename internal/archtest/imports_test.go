// Package archtest enforces the package dependency rules of
// docs/architecture.md with `go list -deps`.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/nsrun/nsrun"

var domain = []string{"units", "delegate", "bpfdev", "nsexec"}

type pkg struct {
	ImportPath string
	Deps       []string
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func isDomain(r string) bool {
	for _, d := range domain {
		if r == d || strings.HasPrefix(r, d+"/") {
			return true
		}
	}
	return false
}

func topOf(r string) string { return strings.SplitN(r, "/", 2)[0] }

// violations returns the rule each package breaks, given its transitive
// dependencies. It is separate from the test so that the rules themselves
// are tested.
func violations(p pkg) []string {
	var bad []string
	me := rel(p.ImportPath)
	for _, dep := range p.Deps {
		if !strings.HasPrefix(dep, module+"/") && dep != module {
			if me == "nsexec" || strings.HasPrefix(me, "nsexec/") {
				for _, heavy := range []string{"github.com/godbus/", "github.com/coreos/go-systemd", "github.com/cilium/ebpf", "github.com/spf13/"} {
					if strings.HasPrefix(dep, heavy) {
						bad = append(bad, me+" must stay cheap to import but depends on "+dep)
					}
				}
			}
			continue
		}
		d := rel(dep)
		switch {
		case strings.HasPrefix(d, "cmd/"):
			bad = append(bad, me+" imports the command package "+d)
		case isDomain(me) && isDomain(d) && topOf(d) != topOf(me):
			bad = append(bad, "domain package "+me+" depends on domain package "+d)
		case strings.HasPrefix(me, "internal/") && isDomain(d):
			bad = append(bad, "internal helper "+me+" depends on domain package "+d)
		case (me == "cmd/nsrun" || isDomain(me)) && (strings.HasPrefix(d, "internal/box") || strings.HasPrefix(d, "internal/testutil")):
			bad = append(bad, me+" ships in the binary but depends on the test helper "+d)
		}
	}
	return bad
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"/...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		p := pkg{ImportPath: f[0], Deps: f[1:]}
		n++
		for _, v := range violations(p) {
			t.Error(v)
		}
	}
	if n < 6 {
		t.Fatalf("checked only %d packages", n)
	}
}

func TestRulesCatchViolations(t *testing.T) {
	for _, tc := range []struct {
		p    pkg
		want string
	}{
		{pkg{ImportPath: module + "/units", Deps: []string{module + "/delegate"}}, "domain package units depends on domain package delegate"},
		{pkg{ImportPath: module + "/internal/cgv2", Deps: []string{module + "/bpfdev"}}, "internal helper internal/cgv2 depends on domain package bpfdev"},
		{pkg{ImportPath: module + "/nsexec", Deps: []string{"github.com/godbus/dbus/v5"}}, "must stay cheap"},
		{pkg{ImportPath: module + "/units", Deps: []string{module + "/cmd/nsrun"}}, "imports the command package"},
		{pkg{ImportPath: module + "/cmd/nsrun", Deps: []string{module + "/internal/box"}}, "test helper"},
	} {
		v := violations(tc.p)
		if len(v) != 1 || !strings.Contains(v[0], tc.want) {
			t.Errorf("violations(%s -> %v) = %v, want one saying %q", tc.p.ImportPath, tc.p.Deps, v, tc.want)
		}
	}
	if v := violations(pkg{ImportPath: module + "/units", Deps: []string{module + "/internal/cgv2", "github.com/godbus/dbus/v5"}}); len(v) != 0 {
		t.Errorf("allowed imports reported: %v", v)
	}
}
