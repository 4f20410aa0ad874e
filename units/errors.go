package units

import (
	"errors"
	"fmt"

	godbus "github.com/godbus/dbus/v5"
)

// Sentinels callers branch on.
var (
	// ErrUnitExists: a unit of the requested name is already loaded. nsrun
	// never adopts, stops or kills a unit it did not create.
	ErrUnitExists = errors.New("unit already exists")
	// ErrJobFailed: systemd finished the job with a result other than "done".
	ErrJobFailed = errors.New("job failed")
	// ErrNoManager: no manager could be reached on any of its sockets.
	ErrNoManager = errors.New("no systemd manager reachable")
)

// JobError reports a job that systemd finished with a result other than
// "done" ("failed", "timeout", "canceled", "dependency", "skipped").
type JobError struct {
	Unit   string
	Result string
}

func (e *JobError) Error() string {
	return fmt.Sprintf("job for %s finished with result %q", e.Unit, e.Result)
}

// Is makes errors.Is(err, ErrJobFailed) match.
func (e *JobError) Is(target error) bool { return target == ErrJobFailed }

// D-Bus error names systemd returns that nsrun maps to sentinels.
const (
	dbusUnitExists = "org.freedesktop.systemd1.UnitExists"
)

// dbusErrorName returns the D-Bus error name carried by err, if any.
func dbusErrorName(err error) string {
	var de godbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dep *godbus.Error
	if errors.As(err, &dep) && dep != nil {
		return dep.Name
	}
	return ""
}

// Sentinels of the lifecycle calls (list, status, stop, kill, freeze, thaw).
var (
	// ErrNoSuchUnit: the manager has no unit of that name loaded.
	ErrNoSuchUnit = errors.New("no such unit")
	// ErrUnitInactive: the unit is not running (e.g. freeze of a stopped unit).
	ErrUnitInactive = errors.New("unit is not active")
	// ErrNotSupported: the manager cannot do this for the unit (e.g. freeze
	// without the cgroup v2 freezer).
	ErrNotSupported = errors.New("not supported")
)
