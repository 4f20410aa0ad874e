package nsexec

import (
	"strings"
	"testing"
)

// The box's mount table, shortened: /etc and /home are mounts of their
// own with nothing below them; /var is not a mount but has some below it;
// /mnt has one two levels down; /dev is a mount with mounts on it.
const testMountinfo = `43 42 254:0 / / rw,relatime - ext4 /dev/root rw
44 43 0:25 / /mnt/sandboxing/env ro,nosuid - tmpfs none ro
45 43 0:41 / /proc rw,nosuid - proc proc rw
48 43 0:44 / /dev rw,nosuid - tmpfs tmpfs rw
49 48 0:6 /null /dev/null rw - devtmpfs udev rw
59 43 0:48 / /var/tmp rw - tmpfs tmpfs rw
65 59 254:0 /var/tmp/x /var/tmp/x rw - ext4 /dev/root rw
60 43 0:49 / /home rw - tmpfs tmpfs rw
76 43 0:54 / /etc rw - tmpfs tmpfs rw
80 76 0:55 / /etc rw - tmpfs tmpfs rw
81 80 0:56 / /etc/x rw - tmpfs tmpfs rw
90 43 0:57 / /with\040space/sub rw - tmpfs tmpfs rw
`

func TestLockedMounts(t *testing.T) {
	l := parseLocked(strings.NewReader(testMountinfo), 43)
	if l == nil {
		t.Fatal("parseLocked: nil")
	}
	if !l.any() {
		t.Error("any: false, want true (/ has mounts below it)")
	}
	for name, want := range map[string]bool{
		"usr": false, "home": false, "var": true, "mnt": true, "dev": true,
		"proc":       false, // a mount of its own with nothing below
		"etc":        true,  // the topmost of the stacked mounts has one below
		"with space": true,
	} {
		if got := l.dir(name); got != want {
			t.Errorf("dir(%q) = %v, want %v", name, got, want)
		}
	}
	if l := parseLocked(strings.NewReader("43 42 254:0 / / rw - ext4 /dev/root rw\n"), 43); l == nil || l.any() {
		t.Errorf("a root with nothing below: %+v", l)
	}
	if l := parseLocked(strings.NewReader("garbage\n"), 43); l != nil {
		t.Errorf("garbage: %+v, want nil", l)
	}
}
