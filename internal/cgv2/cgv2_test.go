package cgv2

import "testing"

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/sys/fs/cgroup`:      "/sys/fs/cgroup",
		`/mnt/a\040b`:         "/mnt/a b",
		`/x\134y`:             `/x\y`,
		`/trailing\04`:        `/trailing\04`,
		`/tab\011and\012line`: "/tab\tand\nline",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountAndSelf(t *testing.T) {
	mnt, err := Mount()
	if err != nil {
		t.Fatalf("no cgroup2 here: %v", err)
	}
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if mnt == "" || self == "" || self[0] != '/' {
		t.Fatalf("Mount()=%q Self()=%q", mnt, self)
	}
}
