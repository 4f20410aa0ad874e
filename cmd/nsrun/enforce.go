package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsrun/nsrun/delegate"
	"github.com/nsrun/nsrun/internal/cgv2"
	"github.com/nsrun/nsrun/units"
)

// missingOnHost lists, one line each, the requested properties whose cgroup
// controller the hierarchy root lacks, and returns those controllers. It
// runs before any unit exists, so the common refusal (a hybrid or v1 host)
// creates nothing. systemd would accept such properties and enforce nothing
// (systemd #9641).
func missingOnHost(p *runPlan) (lines []string, missing map[string]bool, err error) {
	need := units.RequiredControllers(p.scope.Properties)
	if len(need) == 0 {
		return nil, nil, nil
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return nil, nil, fmt.Errorf("find the cgroup v2 hierarchy: %w", err)
	}
	atRoot, err := cgv2.Controllers(mount)
	if err != nil {
		return nil, nil, fmt.Errorf("read controllers of %s: %w", mount, err)
	}
	missing = map[string]bool{}
	for _, c := range sortedKeys(need) {
		if delegate.Check(c, atRoot, atRoot) == delegate.NotOnHost {
			missing[c] = true
			lines = append(lines, fmt.Sprintf("%s not in force: the %s controller is not available on this host's cgroup v2 hierarchy (%s offers: %s; a hybrid or v1 host binds it elsewhere; boot with systemd.unified_cgroup_hierarchy=1)",
				strings.Join(need[c], ", "), c, mount, orNone(atRoot)))
		}
	}
	return lines, missing, nil
}

// verify reads back, from the cgroup files, what is in force after the
// placement, and lists one line per requested setting that is not, saying
// why and how to fix it. Controllers in skip were reported already.
//
// For a scope, systemd applied the properties to the scope's cgroup; in
// place, nsrun wrote them to the payload leaf itself (applyInPlace).
func verify(pl *placement, p *runPlan, skip map[string]bool) ([]string, error) {
	dir := pl.tree.Dir
	if pl.inPlace {
		dir = pl.tree.Payload
	}
	atRoot, atDir, err := delegate.Controllers(pl.mount, dir)
	if err != nil {
		return nil, err
	}
	need := units.RequiredControllers(p.scope.Properties)
	var lines []string
	lost := map[string]bool{}
	for _, c := range sortedKeys(need) {
		if skip[c] {
			lost[c] = true
			continue
		}
		what := strings.Join(need[c], ", ")
		switch delegate.Check(c, atRoot, atDir) {
		case delegate.NotOnHost:
			lost[c] = true
			lines = append(lines, fmt.Sprintf("%s not in force: the %s controller is not available on this host's cgroup v2 hierarchy (%s offers: %s; a hybrid or v1 host binds it elsewhere; boot with systemd.unified_cgroup_hierarchy=1)",
				what, c, pl.mount, orNone(atRoot)))
		case delegate.NotDelegated:
			lost[c] = true
			switch {
			case pl.inPlace:
				lines = append(lines, fmt.Sprintf("%s not in force: the %s controller was not delegated to %s (give its unit Delegate=yes or Delegate=%s, or DelegateControllers=)",
					what, c, pl.tree.Dir, c))
			case pl.manager == units.User:
				lines = append(lines, fmt.Sprintf("%s not in force: the %s controller is not delegated to your user manager (install contrib/systemd/user@.service.d/delegate.conf as /etc/systemd/system/user@.service.d/delegate.conf, then systemctl daemon-reload and restart user@%d.service)",
					what, c, os.Getuid()))
			default:
				lines = append(lines, fmt.Sprintf("%s not in force: the %s controller was not enabled for %s (its cgroup offers: %s)",
					what, c, p.scope.Name, orNone(atDir)))
			}
		}
	}
	for _, e := range units.Expectations(p.scope.Properties, hostFacts()) {
		if lost[e.Controller] {
			continue
		}
		got, err := delegate.ReadSetting(dir, e.File)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			lines = append(lines, fmt.Sprintf("%s not in force: %s has no %s (the kernel lacks this %s feature)", e.Property, dir, e.File, e.Controller))
		case err != nil:
			return nil, err
		case !e.Matches(got):
			by := "systemd did not apply it"
			if pl.inPlace {
				by = "the kernel did not take it"
			}
			lines = append(lines, fmt.Sprintf("%s not in force: %s: %s reads %q, expected %s", e.Property, by, e.File, got, e.Want))
		}
	}
	return lines, nil
}

// hostFacts are what units.Expectations needs to know about the machine.
func hostFacts() units.Host {
	h := units.Host{PageSize: uint64(os.Getpagesize()), BlockDevice: delegate.WholeDisk}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		h.MemoryTotal = uint64(si.Totalram) * uint64(si.Unit)
	}
	return h
}

// inPlaceAllowed refuses, when nsrun runs in place, what only a unit of its
// own could carry.
func inPlaceAllowed(p *runPlan, dir string) error {
	why := func(what string) error {
		return usageError("%s needs a scope of its own, but nsrun runs in place in %s (delegated to it): set it on the unit that runs nsrun, or pass --scope=always", what, dir)
	}
	if len(p.unitFlags) > 0 {
		return why(strings.Join(p.unitFlags, ", "))
	}
	if p.manager != units.DefaultManager() {
		return why("--system/--user")
	}
	written := map[string]bool{}
	for _, e := range units.Expectations(p.scope.Properties, hostFacts()) {
		if e.Value == "" {
			return why(e.Property + " (as given)")
		}
		written[e.Property] = true
	}
	for _, prop := range p.scope.Properties {
		if !written[prop.Name] && !isAccounting(prop.Name) {
			return why("property " + prop.Name)
		}
	}
	return nil
}

func isAccounting(name string) bool { return strings.HasSuffix(name, "Accounting") }

// applyInPlace writes the resource properties to the payload leaf: in place
// there is no unit of nsrun's own to carry them, and a delegatee may set the
// limits of the cgroups it made below its delegated one.
func applyInPlace(pl *placement, p *runPlan) error {
	for _, e := range units.Expectations(p.scope.Properties, hostFacts()) {
		if !slices.Contains(pl.tree.Controllers, e.Controller) {
			continue // verify names it
		}
		if err := delegate.WriteSetting(pl.tree.Payload, e.File, e.Value); err != nil {
			return &exitError{code: exitNsrunFailed, err: fmt.Errorf("%s not in force: write %q to %s/%s: %w", e.Property, e.Value, pl.tree.Payload, e.File, err)}
		}
	}
	return nil
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// refuseOrWarn refuses (125) when limits are not in force, unless the user
// allowed degrading; then it warns and lets nsrun go on.
func refuseOrWarn(problems []string, allowDegraded bool) error {
	if len(problems) == 0 {
		return nil
	}
	if !allowDegraded {
		return &exitError{code: exitNsrunFailed, err: fmt.Errorf("refusing to run: %s\nnsrun: pass --allow-degraded to run without them", strings.Join(problems, "\nnsrun: "))}
	}
	for _, l := range problems {
		fmt.Fprintf(os.Stderr, "nsrun: warning: %s; running anyway (--allow-degraded)\n", l)
	}
	return nil
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, " ")
}
