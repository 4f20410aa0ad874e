package units

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseProfile(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // "Section Key=Value @line"
	}{
		{"plain", "[Unit]\nDescription=hello world\n", []string{"Unit Description=hello world @2"}},
		{"spaces around =", "[Sandbox]\n  Hostname =  box  \n", []string{"Sandbox Hostname=box @2"}},
		{"comments and blanks", "# c\n\n; c\n[Scope]\n# x\nTasksMax=5\n", []string{"Scope TasksMax=5 @6"}},
		{"empty value", "[Sandbox]\nBind=\n", []string{"Sandbox Bind= @2"}},
		{"continuation", "[Sandbox]\nBind=/a \\\n  /b\nHostname=h\n", []string{"Sandbox Bind=/a    /b @2", "Sandbox Hostname=h @4"}},
		{"continuation, comment inside is skipped (systemd >= 240)", "[Sandbox]\nBind=/a\\\n# not part\n/b\n", []string{"Sandbox Bind=/a /b @2"}},
		{"comment ending in backslash does not continue", "[Sandbox]\n# x \\\nHostname=h\n", []string{"Sandbox Hostname=h @3"}},
		{"continuation to end of file", "[Sandbox]\nBind=/a \\", []string{"Sandbox Bind=/a @2"}},
		{"continuation ended by blank line", "[Sandbox]\nBind=/a \\\n\nHostname=h\n", []string{"Sandbox Bind=/a @2", "Sandbox Hostname=h @4"}},
		{"CRLF", "[Unit]\r\nDescription=x\r\n", []string{"Unit Description=x @2"}},
		{"two sections", "[Unit]\nDescription=d\n[Scope]\nTasksMax=1\n[Unit]\nDescription=e\n",
			[]string{"Unit Description=d @2", "Scope TasksMax=1 @4", "Unit Description=e @6"}},
		{"value with =", "[Sandbox]\nEnvironment=A=b\n", []string{"Sandbox Environment=A=b @2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as, err := ParseProfile("f.conf", []byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range as {
				if a.Source.File != "f.conf" {
					t.Errorf("source file %q", a.Source.File)
				}
				got = append(got, a.Section+" "+a.Key+"="+a.Value+" @"+strconv.Itoa(a.Source.Line))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseProfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{"outside section", "Hostname=x\n[Sandbox]\n", "f.conf:1: assignment outside of a section"},
		{"no =", "[Sandbox]\n\nHostname\n", "f.conf:3: missing '='"},
		{"bad header", "[Sandbox]\n[Unit\n", "f.conf:2: invalid section header"},
		{"garbage after header", "[Sandbox] x\n", "f.conf:1: invalid section header"},
		{"empty key", "[Sandbox]\n=x\n", "f.conf:2: missing key name"},
		{"control char", "[Sandbox]\nHostname=a\x01b\n", "f.conf:2: control character"},
		{"invalid utf8", "[Sandbox]\n\nHostname=a\xffb\n", "f.conf:3: invalid UTF-8"},
		{"long line", "[Sandbox]\nBind=" + strings.Repeat("a", 3000) + "\n", "f.conf:2: line too long"},
		// systemd reads an escaped backslash at the end as no continuation;
		// go-systemd continues: refused rather than guessed.
		{"escaped backslash at end", "[Sandbox]\nBind=/a\\\\\nHostname=x\n", "f.conf:2: ambiguous assignment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseProfile("f.conf", []byte(tc.text))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want prefix %q", err, tc.want)
			}
			var pe *ProfileError
			if !errors.As(err, &pe) {
				t.Errorf("error %T is no *ProfileError", err)
			}
		})
	}
}

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a b\tc", []string{"a", "b", "c"}},
		{`"A=b c" D=e`, []string{"A=b c", "D=e"}},
		{`'x y'z "q"`, []string{"x yz", "q"}},
		{`a\sb`, []string{"a b"}},
		{`\x41\n`, []string{"A\n"}},
		{`""`, []string{""}},
	} {
		got, err := SplitWords(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("SplitWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`"open`, `end\`, `\q`, `\xff`} {
		if got, err := SplitWords(bad); err == nil {
			t.Errorf("SplitWords(%q) = %q, want an error", bad, got)
		}
	}
}

// tree writes files (path -> content; content "@null" makes a symlink to
// /dev/null) below a temporary directory and returns it.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if c == "@null" {
			err = os.Symlink(os.DevNull, full)
		} else {
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var testSchema = Schema{
	"Unit":    {"Description": Single},
	"Sandbox": {"Hostname": Single, "Bind": List, "Environment": List},
}

// render prints merged settings one value a line with its source, relative
// to root: the golden form.
func render(root string, set []Setting) string {
	var b strings.Builder
	for _, s := range set {
		for _, v := range s.Values {
			rel, _ := filepath.Rel(root, v.Source.File)
			b.WriteString("[" + s.Section + "] " + s.Key + "=" + v.Value + "  # " + rel + ":" + strconv.Itoa(v.Source.Line) + "\n")
		}
	}
	return b.String()
}

// TestMergeGolden: the main file and drop-ins across three directories of
// the search path, merged as systemd merges a unit's drop-ins.
func TestMergeGolden(t *testing.T) {
	root := tree(t, map[string]string{
		// The main file in etc masks the one in usr entirely.
		"etc/job.conf": "[Unit]\nDescription=from etc\n[Sandbox]\nHostname=etc\nBind=/e1\nEnvironment=A=1\n",
		"usr/job.conf": "[Unit]\nDescription=from usr\n[Sandbox]\nBind=/never\n",
		// Drop-ins: sorted by file name across directories.
		"usr/job.conf.d/10-a.conf": "[Sandbox]\nBind=/u10\n",
		"run/job.conf.d/20-b.conf": "[Sandbox]\nHostname=run20\nBind=\nBind=/r20\n", // reset, then add
		"usr/job.conf.d/30-c.conf": "[Sandbox]\nBind=/u30a /u30b\n",
		// Same name: etc's masks run's and usr's.
		"etc/job.conf.d/40-d.conf": "[Sandbox]\nEnvironment=B=2\n",
		"run/job.conf.d/40-d.conf": "[Sandbox]\nHostname=masked\n",
		"usr/job.conf.d/40-d.conf": "[Sandbox]\nHostname=masked\n",
		// A /dev/null symlink masks a lower one and adds nothing.
		"etc/job.conf.d/50-e.conf": "@null",
		"usr/job.conf.d/50-e.conf": "[Sandbox]\nHostname=masked\n",
		// Empty assignment resets a single key to its default: no setting.
		"usr/job.conf.d/60-f.conf": "[Unit]\nDescription=\n",
		// Ignored: wrong suffix, hidden file, directory.
		"usr/job.conf.d/70-g.txt":   "[Nope]\n",
		"usr/job.conf.d/.80-h.conf": "[Nope]\n",
		"usr/job.conf.d/90.conf/x":  "",
	})
	dirs := []string{filepath.Join(root, "etc"), filepath.Join(root, "run"), filepath.Join(root, "usr")}
	p, err := LoadProfile("job", dirs)
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{"etc/job.conf", "usr/job.conf.d/10-a.conf", "run/job.conf.d/20-b.conf",
		"usr/job.conf.d/30-c.conf", "etc/job.conf.d/40-d.conf", "etc/job.conf.d/50-e.conf", "usr/job.conf.d/60-f.conf"}
	var files []string
	for _, f := range p.Files {
		rel, _ := filepath.Rel(root, f)
		files = append(files, rel)
	}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("files %q\nwant  %q", files, wantFiles)
	}
	set, err := p.Merge(testSchema)
	if err != nil {
		t.Fatal(err)
	}
	want := `[Sandbox] Hostname=run20  # run/job.conf.d/20-b.conf:2
[Sandbox] Bind=/r20  # run/job.conf.d/20-b.conf:4
[Sandbox] Bind=/u30a /u30b  # usr/job.conf.d/30-c.conf:2
[Sandbox] Environment=A=1  # etc/job.conf:6
[Sandbox] Environment=B=2  # etc/job.conf.d/40-d.conf:2
`
	if got := render(root, set); got != want {
		t.Errorf("merged:\n%s\nwant:\n%s", got, want)
	}
	// Same files via the suffixed name.
	if q, err := LoadProfile("job.conf", dirs); err != nil || len(q.Files) != len(p.Files) {
		t.Errorf("LoadProfile(job.conf): %v", err)
	}
}

func TestLoadProfileMaskedAndMissing(t *testing.T) {
	root := tree(t, map[string]string{
		"etc/null.conf":  "@null",
		"usr/null.conf":  "[Unit]\nDescription=x\n",
		"etc/empty.conf": "",
		"usr/only.conf":  "[Unit]\nDescription=x\n",
		"etc/bad.conf":   "[Unit]\nDescription=x\n",
		"usr/bad.conf.d/1.conf": "[Unit]\n" +
			"Description=x\nNoSuch\n",
	})
	dirs := []string{filepath.Join(root, "etc"), filepath.Join(root, "usr")}
	for _, n := range []string{"null", "empty"} {
		if _, err := LoadProfile(n, dirs); !errors.Is(err, ErrProfileMasked) {
			t.Errorf("LoadProfile(%s): %v, want ErrProfileMasked", n, err)
		}
	}
	if _, err := LoadProfile("nope", dirs); !errors.Is(err, ErrProfileNotFound) {
		t.Errorf("LoadProfile(nope): %v, want ErrProfileNotFound", err)
	}
	if _, err := LoadProfile("only", dirs); err != nil {
		t.Errorf("LoadProfile(only): %v", err)
	}
	_, err := LoadProfile("bad", dirs)
	if want := filepath.Join(root, "usr/bad.conf.d/1.conf") + ":3: missing '='"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("LoadProfile(bad): %v, want %q", err, want)
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden", "a b"} {
		if _, err := LoadProfile(bad, dirs); err == nil || errors.Is(err, ErrProfileNotFound) {
			t.Errorf("LoadProfile(%q): %v, want a name error", bad, err)
		}
	}
	list, err := ListProfiles(dirs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list {
		s := e.Name
		if e.Masked {
			s += "(masked)"
		}
		if len(e.Masks) > 0 {
			s += "(masks " + strconv.Itoa(len(e.Masks)) + ")"
		}
		if len(e.DropIns) > 0 {
			s += "(+" + strconv.Itoa(len(e.DropIns)) + ")"
		}
		got = append(got, s)
	}
	want := []string{"bad(+1)", "empty(masked)", "null(masked)(masks 1)", "only"}
	if !slices.Equal(got, want) {
		t.Errorf("ListProfiles: %q, want %q", got, want)
	}
}

func TestLoadProfileFile(t *testing.T) {
	root := tree(t, map[string]string{
		"x/my.conf":          "[Sandbox]\nBind=/a\n",
		"x/my.conf.d/1.conf": "[Sandbox]\nBind=/b\n",
	})
	p, err := LoadProfileFile(filepath.Join(root, "x/my.conf"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := p.Merge(testSchema)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 1 || len(set[0].Values) != 2 || p.Name != "my" {
		t.Errorf("LoadProfileFile: name %q, settings %+v", p.Name, set)
	}
}

func TestMergeUnknown(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"[Sandbox]\nHostname=x\n[Bogus]\nA=b\n", "f.conf:4: unknown section [Bogus]"},
		{"[Sandbox]\n\nNoSuchKey=1\n", "f.conf:3: unknown key NoSuchKey= in section [Sandbox]"},
		{"[Unit]\nHostname=x\n", "f.conf:2: unknown key Hostname= in section [Unit]"},
	} {
		as, err := ParseProfile("f.conf", []byte(tc.text))
		if err != nil {
			t.Fatal(err)
		}
		_, err = (&Profile{Assignments: as}).Merge(testSchema)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Merge(%q): %v, want %q", tc.text, err, tc.want)
		}
	}
}

func TestPropertySchema(t *testing.T) {
	s := PropertySchema()
	for _, tc := range []struct {
		section, key string
		kind         KeyKind
	}{
		{"Unit", "Description", Single}, {"Unit", "After", List}, {"Scope", "MemoryMax", Single},
		{"Scope", "DeviceAllow", List}, {"Scope", "Slice", Single}, {"Scope", "RuntimeMaxSec", Single},
	} {
		if got := s[tc.section][tc.key]; got != tc.kind {
			t.Errorf("[%s] %s: kind %v, want %v", tc.section, tc.key, got, tc.kind)
		}
	}
	if _, ok := s["Scope"]["Description"]; ok {
		t.Error("Description= is a [Unit] key, not [Scope]")
	}
	as, _ := ParseProfile("f.conf", []byte("[Scope]\nTasksMax=5\nMemoryMax=12Q\n"))
	err := (&Profile{Assignments: as}).CheckProperties()
	if err == nil || !strings.HasPrefix(err.Error(), "f.conf:3: ") || !strings.Contains(err.Error(), "12Q") {
		t.Errorf("CheckProperties: %v, want f.conf:3 naming 12Q", err)
	}
}

func TestProfileDirs(t *testing.T) {
	sys := ProfileDirs(System, "/home/u/.config")
	if sys[0] != "/etc/nsrun/profiles" || slices.Contains(sys, "/home/u/.config/nsrun/profiles") {
		t.Errorf("system dirs %q", sys)
	}
	usr := ProfileDirs(User, "/home/u/.config")
	if usr[0] != "/home/u/.config/nsrun/profiles" || usr[len(usr)-1] != "/usr/lib/nsrun/profiles" {
		t.Errorf("user dirs %q", usr)
	}
}

func FuzzParseProfile(f *testing.F) {
	for _, s := range []string{"[Unit]\nDescription=x\n", "[Sandbox]\nBind=/a \\\n /b\n", "# c\n[S]\nA=\\\\\n", "[A]\nB=\"c d\"\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		as, err := ParseProfile("f", []byte(s))
		if err != nil {
			var pe *ProfileError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is no *ProfileError", err, err)
			}
			return
		}
		for _, a := range as {
			if a.Source.Line < 1 || a.Key == "" || a.Section == "" {
				t.Fatalf("bad assignment %+v", a)
			}
		}
	})
}

func FuzzSplitWords(f *testing.F) {
	for _, s := range []string{`a "b c" 'd'`, `\x41\n`, `"open`, `a\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ws, err := SplitWords(s)
		if err != nil {
			return
		}
		for _, w := range ws {
			if !utf8.ValidString(w) && utf8.ValidString(s) {
				t.Fatalf("word %q of valid %q is invalid UTF-8", w, s)
			}
		}
	})
}
