package units

import (
	"strings"
	"testing"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{
		"TERM": 15, "SIGTERM": 15, "15": 15, "KILL": 9, "SIGUSR1": 10, "USR2": 12, "HUP": 1,
		"1": 1, "64": 64, "RTMIN": 34, "SIGRTMIN+3": 37, "RTMAX": 64, "RTMAX-2": 62, "RTMIN+30": 64,
		"CONT": 18, "STOP": 19, "WINCH": 28,
	} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "65", "-1", "+15", "015", "term", "SIG", "SIGFOO", "RTMIN+31", "RTMIN+x", "RTMAX-31", "1.5", " 15"} {
		if got, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) = %d, want an error", bad, got)
		} else if !strings.Contains(err.Error(), "invalid signal") {
			t.Errorf("ParseSignal(%q): %v, want it to say invalid signal", bad, err)
		}
	}
}

func TestLifecycleName(t *testing.T) {
	for in, want := range map[string]string{
		"web": "web.scope", "web.scope": "web.scope", "web.service": "web.service",
		"build@1.service": "build@1.service", "a:b_c.scope": "a:b_c.scope",
	} {
		if got, err := LifecycleName(in); err != nil || got != want {
			t.Errorf("LifecycleName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, says := range map[string]string{
		"":               "empty",
		"a b":            "not allowed",
		"x.slice":        "names a slice unit",
		"x.socket":       "names a socket unit",
		"a@b.scope":      "cannot have instances",
		"getty@.service": "templates",
		"../x":           "not allowed",
	} {
		if _, err := LifecycleName(in); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("LifecycleName(%q) = %v, want an error saying %q", in, err, says)
		}
	}
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []string{"TERM", "SIGKILL", "15", "RTMIN+3", "RTMAX-1", "0", "", "SIGRTMIN+99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSignal(s)
		if err == nil && (n < 1 || n > 64) {
			t.Errorf("ParseSignal(%q) = %d, outside 1..64", s, n)
		}
	})
}
