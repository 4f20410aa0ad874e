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

// notInForce lists, one line each, the requested properties whose cgroup
// controller the scope does not have, with why and how to fix it. systemd
// accepts such properties and enforces nothing (systemd #9641).
func notInForce(ctx context.Context, conn *units.Conn, p *runPlan) ([]string, error) {
	need := units.RequiredControllers(p.scope.Properties)
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
	ctrls := make([]string, 0, len(need))
	for c := range need {
		ctrls = append(ctrls, c)
	}
	sort.Strings(ctrls)
	var lines []string
	for _, c := range ctrls {
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

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, " ")
}
