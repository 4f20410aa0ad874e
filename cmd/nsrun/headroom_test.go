package main

import (
	"math"
	"os"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/nsrun/nsrun/units"
)

func TestCheckScopeTasksMax(t *testing.T) {
	mount := t.TempDir()
	if err := os.WriteFile(mount+"/cgroup.controllers", []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	checkScopeTasksMax := func(props []units.Property, sandboxed bool) error {
		return checkScopeTasksMax(mount, props, sandboxed)
	}
	prop := func(n uint64) []units.Property {
		return []units.Property{{Name: "TasksMax", Value: dbus.MakeVariant(n)}}
	}
	if err := checkScopeTasksMax(prop(5), false); err == nil || !strings.Contains(err.Error(), "TasksMax=5") {
		t.Errorf("TasksMax=5 accepted: %v", err)
	}
	if err := checkScopeTasksMax(prop(25), true); err == nil {
		t.Error("TasksMax=25 accepted for a sandbox")
	}
	if err := checkScopeTasksMax(prop(25), false); err != nil {
		t.Errorf("TasksMax=25 refused for a plain run: %v", err)
	}
	if err := checkScopeTasksMax(prop(math.MaxUint64), true); err != nil {
		t.Errorf("TasksMax=infinity refused: %v", err)
	}
	if err := checkScopeTasksMax(nil, true); err != nil {
		t.Errorf("no TasksMax refused: %v", err)
	}
	// Without the pids controller the limit never holds: nothing to protect.
	os.WriteFile(mount+"/cgroup.controllers", []byte("cpu memory\n"), 0o644)
	if err := checkScopeTasksMax(prop(5), true); err != nil {
		t.Errorf("TasksMax=5 refused without a pids controller: %v", err)
	}
}
