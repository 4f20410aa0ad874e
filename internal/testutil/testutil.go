// Package testutil holds the test vocabulary shared by nsrun's packages:
// privilege gates that become failures under NSRUN_TEST_STRICT=1, a TestMain
// wrapper that fails on leaked file descriptors, and a snapshot of the host
// that proves a suite left it as it found it.
package testutil

import (
	"fmt"
	"os"
	"testing"

	"github.com/nsrun/nsrun/internal/box"
)

// Strict reports whether skips are forbidden (NSRUN_TEST_STRICT=1, set by CI).
func Strict() bool { return os.Getenv("NSRUN_TEST_STRICT") == "1" }

// Skip skips t, or fails it when skips are forbidden.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (NSRUN_TEST_STRICT=1: a privileged test may not skip)", msg)
	}
	t.Skip(msg)
}

// RequireRoot skips (or fails, when strict) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
}

// RequireBox skips (or fails, when strict) unless a systemd box can be
// started here.
func RequireBox(t testing.TB) {
	t.Helper()
	if err := box.Supported(); err != nil {
		Skip(t, "needs the systemd box: %v", err)
	}
}
