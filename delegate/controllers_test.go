package delegate

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheck(t *testing.T) {
	root := []string{"cpu", "memory", "pids", "io"}
	scope := []string{"cpu", "pids"}
	for ctrl, want := range map[string]Availability{
		"cpu": Available, "pids": Available, "memory": NotDelegated, "io": NotDelegated, "hugetlb": NotOnHost,
	} {
		if got := Check(ctrl, root, scope); got != want {
			t.Errorf("Check(%s) = %v, want %v", ctrl, got, want)
		}
	}
}

func TestControllersReadsFiles(t *testing.T) {
	dir := t.TempDir()
	scope := filepath.Join(dir, "a.slice", "b.scope")
	if err := os.MkdirAll(scope, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(scope, "cgroup.controllers"), []byte("pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	atRoot, atScope, err := Controllers(dir, ScopeDir(dir, "/a.slice/b.scope"))
	if err != nil {
		t.Fatal(err)
	}
	if len(atRoot) != 3 || len(atScope) != 1 || atScope[0] != "pids" {
		t.Errorf("Controllers = %v, %v", atRoot, atScope)
	}
	if _, _, err := Controllers(dir, filepath.Join(dir, "missing")); err == nil {
		t.Error("missing scope cgroup: no error")
	}
}

func TestScopeDir(t *testing.T) {
	for cg, want := range map[string]string{
		"/a.slice/b.scope": "/sys/fs/cgroup/a.slice/b.scope",
		"a.slice/b.scope":  "/sys/fs/cgroup/a.slice/b.scope",
		"/../../etc":       "/sys/fs/cgroup/etc",
	} {
		if got := ScopeDir("/sys/fs/cgroup", cg); got != want {
			t.Errorf("ScopeDir(%q) = %q, want %q", cg, got, want)
		}
	}
}
