package delegate

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/nsrun/nsrun/internal/cgv2"
)

// Availability says where a cgroup v2 controller stops being available on
// the way from the hierarchy root to a scope's cgroup.
type Availability int

const (
	// Available: the controller is in the scope's cgroup.controllers.
	Available Availability = iota
	// NotOnHost: the hierarchy root (as this process sees it) lacks it, e.g.
	// memory on a hybrid host where it is bound to a v1 hierarchy.
	NotOnHost
	// NotDelegated: the root has it, but it is not enabled down to the
	// scope (a user manager that was not delegated the controller, or a
	// manager that did not enable it).
	NotDelegated
)

// Controllers reads the controllers available in a scope's cgroup and at the
// root of the hierarchy it lives in. root and scope are paths of the cgroup2
// mount and of the scope's directory; only cgroup.controllers is read.
func Controllers(root, scope string) (atRoot, atScope []string, err error) {
	if atRoot, err = cgv2.Controllers(root); err != nil {
		return nil, nil, fmt.Errorf("read controllers of %s: %w", root, err)
	}
	if atScope, err = cgv2.Controllers(scope); err != nil {
		return nil, nil, fmt.Errorf("read controllers of %s: %w", scope, err)
	}
	return atRoot, atScope, nil
}

// Check says whether ctrl is available to the scope, and if not, where it
// was lost.
func Check(ctrl string, atRoot, atScope []string) Availability {
	switch {
	case slices.Contains(atScope, ctrl):
		return Available
	case !slices.Contains(atRoot, ctrl):
		return NotOnHost
	default:
		return NotDelegated
	}
}

// ScopeDir joins the cgroup2 mount and a unit's ControlGroup property.
func ScopeDir(mount, controlGroup string) string {
	return filepath.Join(mount, filepath.Clean("/"+controlGroup))
}
