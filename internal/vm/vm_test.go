package vm

import (
	"os"
	"strings"
	"testing"
)

func TestDecideAccel(t *testing.T) {
	withVMX := "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse\n"
	plain := "processor\t: 0\nflags\t\t: fpu vme de pse sse\n"
	cases := []struct {
		name     string
		cpuinfo  string
		pvm, kvm bool
		want     string
	}{
		{"hardware", withVMX, false, true, "kvm"},
		{"svm", strings.Replace(plain, "sse", "sse svm", 1), false, true, "kvm"},
		{"pvm", withVMX, true, true, "tcg"},
		{"pvm-no-flags", plain, true, true, "tcg"},
		{"no-flag", plain, false, true, "tcg"},
		{"no-dev", withVMX, false, false, "tcg"},
		{"vmx-elsewhere", "model name\t: vmx\nflags\t\t: fpu\n", false, true, "tcg"},
	}
	for _, c := range cases {
		if got := decideAccel(c.cpuinfo, c.pvm, c.kvm); got.Name != c.want || got.Why == "" {
			t.Errorf("%s: got %+v, want %s with a reason", c.name, got, c.want)
		}
	}
}

// The key changes with the recipe and only with it.
func TestRecipeKey(t *testing.T) {
	a, err := RecipeKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RecipeKey()
	if a != b || len(a) != 16 {
		t.Fatalf("key not stable: %q %q", a, b)
	}
	dir := t.TempDir()
	if err := writeRecipe(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"build.sh", "guest/nsrun-vm.service", "guest/nsrun-vm-run"} {
		st, err := os.Stat(dir + "/" + f)
		if err != nil {
			t.Fatalf("recipe file %s not written: %v", f, err)
		}
		if strings.HasSuffix(f, ".sh") || strings.HasSuffix(f, "-run") {
			if st.Mode()&0o100 == 0 {
				t.Errorf("%s not executable", f)
			}
		}
	}
}

func TestCacheDirRefusesTmp(t *testing.T) {
	t.Setenv("NSRUN_VM_CACHE", "/tmp/nsrun-vm")
	if _, err := CacheDir(); err == nil {
		t.Error("a cache below /tmp was accepted")
	}
	t.Setenv("NSRUN_VM_CACHE", "/var/tmp/nsrun-vm")
	if d, err := CacheDir(); err != nil || d != "/var/tmp/nsrun-vm" {
		t.Errorf("CacheDir = %q, %v", d, err)
	}
	t.Setenv("NSRUN_VM_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/srv/cache")
	if d, err := CacheDir(); err != nil || d != "/srv/cache/nsrun/vm" {
		t.Errorf("CacheDir with XDG_CACHE_HOME = %q, %v", d, err)
	}
}

func TestQemuArgs(t *testing.T) {
	img := imageIn("/c/k")
	args := strings.Join(qemuArgs(img, BootOptions{Share: "/s", Memory: 1024, CPUs: 2, Accel: Accel{Name: "tcg"}}), " ")
	for _, want := range []string{"snapshot=on", "mount_tag=nsrun", "-accel tcg", "-no-reboot", "-kernel /c/k/vmlinuz", "-nic none"} {
		if !strings.Contains(args, want) {
			t.Errorf("qemu args lack %q: %s", want, args)
		}
	}
	args = strings.Join(qemuArgs(img, BootOptions{Share: "/s", Accel: Accel{Name: "kvm"}}), " ")
	if !strings.Contains(args, "-accel kvm") {
		t.Errorf("kvm not used: %s", args)
	}
}

func TestWithSbin(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:/bin:/usr/sbin")
	withSbin()
	if got := os.Getenv("PATH"); got != "/usr/bin:/bin:/usr/sbin:/usr/local/sbin:/sbin" {
		t.Errorf("PATH = %q", got)
	}
}
