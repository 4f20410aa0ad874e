package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

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

// notInForce lists, one line each, the requested properties whose cgroup
// controller is on the host but did not reach the scope, with why and how
// to fix it; controllers in skip were reported already.
func notInForce(ctx context.Context, conn *units.Conn, p *runPlan, skip map[string]bool) ([]string, error) {
	need := units.RequiredControllers(p.scope.Properties)
	for c := range skip {
		delete(need, c)
	}
	if len(need) == 0 {
		return nil, nil
	}
	cg, err := conn.ControlGroup(ctx, p.scope.Name)
	if err != nil {
		return nil, err
	}
	mount, err := cgv2.Mount()
	if err != nil {
		return nil, fmt.Errorf("find the cgroup v2 hierarchy: %w", err)
	}
	atRoot, atScope, err := delegate.Controllers(mount, delegate.ScopeDir(mount, cg))
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, c := range sortedKeys(need) {
		what := strings.Join(need[c], ", ")
		switch delegate.Check(c, atRoot, atScope) {
		case delegate.NotOnHost:
			lines = append(lines, fmt.Sprintf("%s not in force: the %s controller is not available on this host's cgroup v2 hierarchy (%s offers: %s; a hybrid or v1 host binds it elsewhere; boot with systemd.unified_cgroup_hierarchy=1)",
				what, c, mount, orNone(atRoot)))
		case delegate.NotDelegated:
			if conn.Manager() == units.User {
				lines = append(lines, fmt.Sprintf("%s not in force: the %s controller is not delegated to your user manager (install contrib/systemd/user@.service.d/delegate.conf as /etc/systemd/system/user@.service.d/delegate.conf, then systemctl daemon-reload and restart user@%d.service)",
					what, c, os.Getuid()))
			} else {
				lines = append(lines, fmt.Sprintf("%s not in force: the %s controller was not enabled for %s (its cgroup offers: %s)",
					what, c, p.scope.Name, orNone(atScope)))
			}
		}
	}
	return lines, nil
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
