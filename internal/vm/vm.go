// Package vm is the VM tier of nsrun's tests: a small Debian guest with
// systemd as its real PID 1 on a pure cgroup v2 kernel, where the memory,
// cpu, pids and io controllers exist, so that limits can be seen holding.
// The host this project runs on has none of them on its v2 hierarchy.
//
// The image is built once by recipe/build.sh (debootstrap in private pid and
// mount namespaces, then mkfs.ext4 -d: no loop mount, nothing mounted in the
// host's namespaces) and cached outside the checkout and outside /tmp, in a
// directory named after a hash of the recipe: a changed recipe rebuilds it.
// Boot uses qemu with KVM only where KVM really works (not under kvm_pvm),
// software emulation otherwise; the disk is opened with snapshot=on so the
// cached image never changes; a host folder is shared in over 9p, and the
// result comes back through it, since qemu itself always exits 0.
// See ../../docs/architecture.md ("The VM tier").
package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed recipe
var recipe embed.FS

// recipeVersion is mixed into the key with the recipe's files; bump it when
// something outside recipe/ changes what an image holds.
const recipeVersion = "1"

// RecipeKey names the image a recipe builds: a hash over every file of
// recipe/ (path, mode and content).
func RecipeKey() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "nsrun-vm %s\n", recipeVersion)
	var paths []string
	err := fs.WalkDir(recipe, "recipe", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(paths)
	for _, p := range paths {
		data, err := recipe.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// CacheDir is where images are kept: $NSRUN_VM_CACHE, else
// $XDG_CACHE_HOME/nsrun/vm, else ~/.cache/nsrun/vm. It refuses /tmp (a
// test box's systemd-tmpfiles or a reboot may wipe it, and the image is
// large).
func CacheDir() (string, error) {
	dir := os.Getenv("NSRUN_VM_CACHE")
	if dir == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("vm cache: no NSRUN_VM_CACHE, XDG_CACHE_HOME or HOME: %w", err)
			}
			base = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(base, "nsrun", "vm")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if underTmp(dir) {
		return "", fmt.Errorf("vm cache %s is below /tmp: set NSRUN_VM_CACHE to a directory elsewhere (e.g. /var/tmp/nsrun-vm)", dir)
	}
	return dir, nil
}

func underTmp(dir string) bool {
	return dir == "/tmp" || strings.HasPrefix(dir, "/tmp/")
}

// Image is a built, cached guest.
type Image struct {
	Dir    string
	Kernel string
	Initrd string
	Disk   string
}

func imageIn(dir string) Image {
	return Image{
		Dir:    dir,
		Kernel: filepath.Join(dir, "vmlinuz"),
		Initrd: filepath.Join(dir, "initrd.img"),
		Disk:   filepath.Join(dir, "disk.raw"),
	}
}

// RunsDir is the directory below the cache that holds the folders shared
// with running guests.
const RunsDir = "runs"

// readyFile marks a complete image; a directory without it is a build that
// did not finish and is rebuilt.
const readyFile = "ready"

// EnsureImage returns the cached image for the current recipe, building it
// first if needed (as root; about two minutes with a reachable Debian
// mirror). Images of other recipes in the cache are removed. Build output
// goes to log.
func EnsureImage(ctx context.Context, log io.Writer) (Image, bool, error) {
	key, err := RecipeKey()
	if err != nil {
		return Image{}, false, err
	}
	cache, err := CacheDir()
	if err != nil {
		return Image{}, false, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return Image{}, false, err
	}
	lock, err := os.OpenFile(filepath.Join(cache, "lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return Image{}, false, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return Image{}, false, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	dir := filepath.Join(cache, key)
	img := imageIn(dir)
	if _, err := os.Stat(filepath.Join(dir, readyFile)); err == nil {
		return img, false, nil
	}
	if os.Geteuid() != 0 {
		return Image{}, false, errors.New("building the VM image needs root (debootstrap)")
	}
	// Old images go first: each holds a 2 GiB (sparse) disk.
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if e.IsDir() && e.Name() != key && e.Name() != RunsDir {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
	if err := build(ctx, dir, log); err != nil {
		os.RemoveAll(dir)
		return Image{}, false, err
	}
	if err := os.WriteFile(filepath.Join(dir, readyFile), []byte(key+"\n"), 0o644); err != nil {
		return Image{}, false, err
	}
	return img, true, nil
}

// build runs recipe/build.sh as PID 1 of fresh pid and mount namespaces
// (unshare --fork --mount-proc), so that the mounts debootstrap and the
// kernel's scripts make inside the new root vanish with the namespace.
func build(ctx context.Context, dir string, log io.Writer) error {
	// debootstrap, mkfs.ext4 and chroot live in sbin, which a CI
	// environment's PATH may leave out.
	withSbin()
	for _, tool := range []string{"debootstrap", "mkfs.ext4", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("building the VM image needs %s (Debian: debootstrap, e2fsprogs, util-linux)", tool)
		}
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	recipeDir := filepath.Join(dir, "recipe")
	if err := writeRecipe(recipeDir); err != nil {
		return err
	}
	hostMnt, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
		"/bin/sh", filepath.Join(recipeDir, "build.sh"), dir)
	cmd.Env = append(os.Environ(),
		"NSRUN_VM_HOST_MNTNS="+hostMnt,
		"NSRUN_VM_RECIPE_DIR="+recipeDir,
	)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// Killing unshare (PID 1's parent) is not enough on timeout: the pid
	// namespace ends when its PID 1 does, and unshare forwards SIGKILL only
	// as its own death; kill the whole process group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build VM image (recipe/build.sh, %s): %w", time.Since(start).Round(time.Second), err)
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "disk.raw"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("build VM image: %s missing after the build", f)
		}
	}
	return os.RemoveAll(recipeDir)
}

// withSbin adds the sbin directories to PATH where they are missing.
func withSbin() {
	path := os.Getenv("PATH")
	have := filepath.SplitList(path)
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if !slices.Contains(have, d) {
			path += string(os.PathListSeparator) + d
		}
	}
	os.Setenv("PATH", path)
}

func writeRecipe(dst string) error {
	return fs.WalkDir(recipe, "recipe", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, strings.TrimPrefix(p, "recipe"))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := recipe.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if bytes.HasPrefix(data, []byte("#!")) {
			mode = 0o755
		}
		return os.WriteFile(target, data, mode)
	})
}
