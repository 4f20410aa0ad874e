package units

import (
	"strings"
	"testing"
)

func TestValidateUnitNameFlags(t *testing.T) {
	long := strings.Repeat("a", 249) + ".scope" // 255 bytes
	tests := []struct {
		name  string
		flags NameFlags
		err   string // substring of the error, "" when valid
	}{
		{"foo.service", NameAny, ""},
		{"foo.scope", NamePlain, ""},
		{"a:b_c-d.e\\x2d.slice", NamePlain, ""},
		{"foo.bar.scope", NamePlain, ""},
		{long, NamePlain, ""},
		{"getty@tty1.service", NameInstance, ""},
		{"a@b@c.service", NameInstance, ""},
		{"0@@.service", NameInstance, ""}, // instance "@", as in systemd
		{"getty@.service", NameTemplate, ""},
		{"-.slice", NamePlain, ""},
		{"", NameAny, `invalid unit name "": name is empty`},
		{long + "x", NameAny, "256 bytes long, the limit is 255"},
		{"foo", NameAny, `invalid unit name "foo": no unit type suffix`},
		{"foo.bar", NameAny, `unknown unit type "bar"`},
		{"foo.Service", NameAny, `unknown unit type "Service"`},
		{".scope", NameAny, "nothing before the unit type suffix"},
		{"a b.scope", NameAny, `invalid unit name "a b.scope": character ' ' is not allowed`},
		{"a/b.scope", NameAny, `character '/' is not allowed`},
		{"a\nb.scope", NameAny, `character '\n' is not allowed`},
		{"é.scope", NameAny, `character 'é' is not allowed`},
		{"a\xffb.scope", NameAny, "byte 0xff is not allowed"},
		{"@foo.service", NameAny, "'@' may not be the first character"},
		{"getty@.service", NamePlain | NameInstance, "templates (ending in '@') are not allowed"},
		{"getty@tty1.service", NamePlain | NameTemplate, "instance names (with '@') are not allowed"},
		{"foo.service", NameInstance | NameTemplate, "a template or instance name (with '@') is required"},
		{"foo.service", 0, "no form of unit name is allowed"},
	}
	for _, tt := range tests {
		err := ValidateUnitNameFlags(tt.name, tt.flags)
		if tt.err == "" {
			if err != nil {
				t.Errorf("ValidateUnitNameFlags(%q, %d) = %v, want nil", tt.name, tt.flags, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ValidateUnitNameFlags(%q, %d) = %v, want error containing %q", tt.name, tt.flags, err, tt.err)
		}
	}
}

func TestValidateUnitName(t *testing.T) {
	tests := []struct{ name, err string }{
		{"foo.scope", ""},
		{"getty@tty1.service", ""},
		{"foo@bar.socket", ""},
		{"foo@bar.timer", ""},
		{"getty@.service", "templates (ending in '@') are not allowed"},
		{"foo@bar.scope", `invalid unit name "foo@bar.scope": scope units cannot have instances`},
		{"foo@bar.slice", "slice units cannot have instances"},
		{"foo@bar.mount", "mount units cannot have instances"},
	}
	for _, tt := range tests {
		err := ValidateUnitName(tt.name)
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ValidateUnitName(%q) = %v, want %q", tt.name, err, tt.err)
		}
	}
}

func TestScopeName(t *testing.T) {
	tests := []struct{ arg, want, err string }{
		{"foo", "foo.scope", ""},
		{"foo.scope", "foo.scope", ""},
		{"foo.bar", "foo.bar.scope", ""},
		{"run-u42", "run-u42.scope", ""},
		{"", "", `invalid scope name "": name is empty`},
		{"x.service", "", `invalid scope name "x.service": it names a service unit`},
		{"x.slice", "", "it names a slice unit"},
		{"a b", "", `invalid unit name "a b.scope": character ' ' is not allowed`},
		{"foo@bar", "", "scope units cannot have instances"},
		{"foo@", "", "templates (ending in '@') are not allowed"},
		{"@foo", "", "'@' may not be the first character"},
		{".scope", "", "nothing before the unit type suffix"},
		{strings.Repeat("x", 250), "", "256 bytes long"},
	}
	for _, tt := range tests {
		got, err := ScopeName(tt.arg)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ScopeName(%q) = %q, %v; want %q, %q", tt.arg, got, err, tt.want, tt.err)
		}
	}
}

func TestSliceName(t *testing.T) {
	tests := []struct{ arg, want, err string }{
		{"-", "-.slice", ""},
		{"-.slice", "-.slice", ""},
		{"system", "system.slice", ""},
		{"user-1000.slice", "user-1000.slice", ""},
		{"a-b-c", "a-b-c.slice", ""},
		{"a.b-c", "a.b-c.slice", ""},
		{"", "", `invalid slice name "": name is empty`},
		{"-a", "", `invalid slice name "-a.slice": it starts with '-'`},
		{"a-", "", `invalid slice name "a-.slice": it ends with '-' before ".slice"`},
		{"a--b", "", `invalid slice name "a--b.slice": it contains "--"`},
		{"--", "", "it starts with '-'"},
		{"a@b", "", "slice units cannot have instances"},
		{"a@", "", "templates (ending in '@') are not allowed"},
		{"a.scope", "", `invalid slice name "a.scope": it names a scope unit`},
		{"a b", "", "character ' ' is not allowed"},
	}
	for _, tt := range tests {
		got, err := SliceName(tt.arg)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("SliceName(%q) = %q, %v; want %q, %q", tt.arg, got, err, tt.want, tt.err)
		}
	}
}

func TestSlicePath(t *testing.T) {
	tests := []struct{ slice, want, err string }{
		{"-.slice", "/", ""},
		{"-", "/", ""},
		{"a.slice", "/a.slice", ""},
		{"a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice", ""},
		{"user-1000", "/user.slice/user-1000.slice", ""},
		// cg_escape: components colliding with kernel file names get a '_'.
		{"_a.slice", "/__a.slice", ""},
		{".a.slice", "/_.a.slice", ""},
		{"cpu.slice", "/_cpu.slice", ""},
		{"cpu-x.slice", "/_cpu.slice/cpu-x.slice", ""},
		{"cpuset.slice", "/_cpuset.slice", ""},
		{"memory.slice", "/_memory.slice", ""},
		{"io.slice", "/_io.slice", ""},
		{"pids-a.slice", "/_pids.slice/pids-a.slice", ""},
		{"bpf-firewall.slice", "/bpf.slice/_bpf-firewall.slice", ""},
		{"cgroup.slice", "/_cgroup.slice", ""},
		{"cpux.slice", "/cpux.slice", ""},
		{"cpu..slice", "/cpu..slice", ""},   // 252 compares the text before the last '.'
		{"cpu.x.slice", "/cpu.x.slice", ""}, // systemd >= 255 would escape this one
		{"notify_on_release.slice", "/notify_on_release.slice", ""},
		{"tasks.slice", "/tasks.slice", ""},
		{strings.Repeat("_", 249) + ".slice", "", "too long once escaped"},
		{"a--b", "", `it contains "--"`},
		{"x.scope", "", "it names a scope unit"},
	}
	for _, tt := range tests {
		got, err := SlicePath(tt.slice)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("SlicePath(%q) = %q, %v; want %q, %q", tt.slice, got, err, tt.want, tt.err)
		}
	}
}

func TestParentSlice(t *testing.T) {
	tests := []struct{ slice, want string }{
		{"a-b.slice", "a.slice"},
		{"a-b-c.slice", "a-b.slice"},
		{"a.slice", "-.slice"},
		{"a", "-.slice"},
		{"-.slice", ""},
		{"a--b.slice", ""},
		{"x.scope", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := ParentSlice(tt.slice); got != tt.want {
			t.Errorf("ParentSlice(%q) = %q, want %q", tt.slice, got, tt.want)
		}
	}
}

// checkError fails when err is not a one-line error that names its input.
func checkError(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); strings.ContainsAny(msg, "\n\r") || !strings.HasPrefix(msg, "invalid ") {
		t.Fatalf("badly formed error %q", msg)
	}
}

func FuzzUnitName(f *testing.F) {
	for _, s := range []string{"foo.service", "foo.scope", "foo", "getty@tty1.service",
		"getty@.service", "@x.scope", "a b.scope", ".scope", "x.service", "foo@bar",
		"a\\x2db.scope", "é.scope", "a.b.c", "0@@.service", strings.Repeat("a", 250)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		anyErr := ValidateUnitNameFlags(s, NameAny)
		if anyErr != nil {
			checkError(t, anyErr)
		}
		if err := ValidateUnitName(s); err != nil {
			checkError(t, err)
		} else {
			if anyErr != nil {
				t.Fatalf("ValidateUnitName(%q) accepted what NameAny refused: %v", s, anyErr)
			}
			typ, ok := unitSuffix(s)
			prefix := strings.TrimSuffix(s, "."+typ)
			if !ok || len(s) > 255 || strings.IndexByte(prefix, '@') == len(prefix)-1 {
				t.Fatalf("ValidateUnitName(%q) accepted a bad name", s)
			}
			if strings.Contains(s, "@") && !mayInstantiate(typ) {
				t.Fatalf("ValidateUnitName(%q) accepted an instance of a %s", s, typ)
			}
		}
		scope, err := ScopeName(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if !strings.HasSuffix(scope, ".scope") || strings.Contains(scope, "@") {
			t.Fatalf("ScopeName(%q) = %q", s, scope)
		}
		if scope != s && scope != s+".scope" {
			t.Fatalf("ScopeName(%q) = %q changed the name", s, scope)
		}
		if err := ValidateUnitName(scope); err != nil {
			t.Fatalf("ScopeName(%q) = %q does not validate: %v", s, scope, err)
		}
		if again, err := ScopeName(scope); again != scope || err != nil {
			t.Fatalf("ScopeName(%q) = %q, %v; not idempotent", scope, again, err)
		}
	})
}

func FuzzSliceName(f *testing.F) {
	for _, s := range []string{"-", "-.slice", "system", "a-b-c.slice", "a--b", "-a", "a-",
		"a@b", "cpu-x", "_a", ".a", "cgroup", "x.scope", strings.Repeat("_", 249)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := SliceName(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			if p, perr := SlicePath(s); perr == nil || p != "" {
				t.Fatalf("SlicePath(%q) = %q, %v after SliceName refused it", s, p, perr)
			}
			if p := ParentSlice(s); p != "" {
				t.Fatalf("ParentSlice(%q) = %q after SliceName refused it", s, p)
			}
			return
		}
		if !strings.HasSuffix(name, ".slice") || strings.Contains(name, "@") {
			t.Fatalf("SliceName(%q) = %q", s, name)
		}
		if err := ValidateUnitName(name); err != nil {
			t.Fatalf("SliceName(%q) = %q does not validate: %v", s, name, err)
		}
		if again, err := SliceName(name); again != name || err != nil {
			t.Fatalf("SliceName(%q) = %q, %v; not idempotent", name, again, err)
		}
		path, err := SlicePath(name)
		if err != nil {
			if !strings.Contains(err.Error(), "too long once escaped") {
				t.Fatalf("SlicePath(%q): %v", name, err)
			}
			return
		}
		// Walk up the parents: each one's path is a prefix of the child's,
		// with one more component for each level, ending at the root.
		depth := 0
		for cur, curPath := name, path; cur != rootSlice; depth++ {
			parent := ParentSlice(cur)
			if parent == "" {
				t.Fatalf("ParentSlice(%q) = \"\" for a non-root slice", cur)
			}
			parentPath, err := SlicePath(parent)
			if err != nil {
				t.Fatalf("SlicePath(%q) of parent of %q: %v", parent, cur, err)
			}
			if want := strings.TrimSuffix(parentPath, "/") + "/"; !strings.HasPrefix(curPath, want) ||
				strings.Contains(curPath[len(want):], "/") {
				t.Fatalf("SlicePath(%q) = %q is not a child of SlicePath(%q) = %q", cur, curPath, parent, parentPath)
			}
			cur, curPath = parent, parentPath
		}
		if ParentSlice(rootSlice) != "" {
			t.Fatal("the root slice has a parent")
		}
		if want := strings.Count(path, "/"); name != rootSlice && depth != want {
			t.Fatalf("%q has %d parents but its path %q has %d components", name, depth, path, want)
		}
	})
}
