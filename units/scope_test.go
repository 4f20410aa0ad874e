package units

import (
	"errors"
	"strings"
	"testing"
)

func propMap(t *testing.T, props []Property) map[string][]any {
	t.Helper()
	m := map[string][]any{}
	for _, p := range props {
		m[p.Name] = append(m[p.Name], p.Value.Value())
	}
	return m
}

func mustParse(t *testing.T, a string) Property {
	t.Helper()
	p, err := ParseProperty(a)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestScopePropertiesDefaults(t *testing.T) {
	props, err := ScopeProperties(ScopeSpec{Name: "x.scope", Slice: "a-b.slice", Description: "d", PIDs: []int{42}})
	if err != nil {
		t.Fatal(err)
	}
	m := propMap(t, props)
	for name, want := range map[string]any{
		"Delegate": true, "CollectMode": "inactive-or-failed", "Slice": "a-b.slice", "Description": "d",
	} {
		if len(m[name]) != 1 || m[name][0] != want {
			t.Errorf("%s = %v, want [%v]", name, m[name], want)
		}
	}
	if pids, ok := m["PIDs"][0].([]uint32); !ok || len(pids) != 1 || pids[0] != 42 {
		t.Errorf("PIDs = %v, want [42]", m["PIDs"])
	}
	for _, p := range props {
		if p.Name == "PIDs" && p.Value.Signature().String() != "au" {
			t.Errorf("PIDs signature %s, want au", p.Value.Signature())
		}
	}
}

func TestScopePropertiesCallerValues(t *testing.T) {
	props, err := ScopeProperties(ScopeSpec{Name: "x.scope", Slice: "a.slice", Properties: []Property{
		mustParse(t, "CollectMode=inactive"),
		mustParse(t, "Slice=b.slice"),
		mustParse(t, "MemoryMax=1G"),
		mustParse(t, "MemoryMax=2G"),
		mustParse(t, "DeviceAllow=/dev/null rw"),
		mustParse(t, "DeviceAllow=/dev/zero r"),
		mustParse(t, "Delegate=yes"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := propMap(t, props)
	if len(m["CollectMode"]) != 1 || m["CollectMode"][0] != "inactive" {
		t.Errorf("CollectMode = %v, want the caller's [inactive]", m["CollectMode"])
	}
	if len(m["Slice"]) != 1 || m["Slice"][0] != "b.slice" {
		t.Errorf("Slice = %v, want the last assignment [b.slice]", m["Slice"])
	}
	if len(m["MemoryMax"]) != 1 || m["MemoryMax"][0] != uint64(2<<30) {
		t.Errorf("MemoryMax = %v, want [2G]", m["MemoryMax"])
	}
	if len(m["DeviceAllow"]) != 2 {
		t.Errorf("DeviceAllow = %v, want both entries", m["DeviceAllow"])
	}
	if len(m["Delegate"]) != 1 || m["Delegate"][0] != true {
		t.Errorf("Delegate = %v, want [true]", m["Delegate"])
	}
}

func TestScopePropertiesRefused(t *testing.T) {
	for _, a := range []string{"Delegate=no"} {
		_, err := ScopeProperties(ScopeSpec{Name: "x.scope", Properties: []Property{mustParse(t, a)}})
		if err == nil || !strings.Contains(err.Error(), "Delegate") {
			t.Errorf("%s: err = %v, want a refusal naming Delegate", a, err)
		}
	}
	_, err := ScopeProperties(ScopeSpec{Name: "x.scope", Properties: []Property{{Name: "PIDs"}}})
	if err == nil {
		t.Error("PIDs from the caller accepted")
	}
}

func TestJobErrorIs(t *testing.T) {
	var err error = &JobError{Unit: "x.scope", Result: "failed"}
	if !errors.Is(err, ErrJobFailed) {
		t.Error("JobError does not match ErrJobFailed")
	}
	if !strings.Contains(err.Error(), `"failed"`) {
		t.Errorf("JobError message %q", err)
	}
}
