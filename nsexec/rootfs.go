package nsexec

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// The root filesystem, built in the child's private mount namespace:
//
//  1. every mount is made private, so nothing propagates to the host;
//  2. host-side inputs (lower, upper and work directories, --root, bind
//     sources, /dev nodes) are opened or cloned as fds, with the caller's
//     credentials, before anything is covered;
//  3. the root (overlay, or a read-only clone of --root) is built detached
//     and attached at /tmp of this namespace (a place to pivot from);
//  4. inside it, resolved safely (paths.go): /proc, /sys, /dev, /tmp, /run,
//     the user's mounts, then the masks;
//  5. pivot_root(".", ".") and the old root is detached.
//
// Without --root or --overlay-root the root stays the caller's: only /proc
// (with a pid namespace) and the user's mounts, onto targets that exist.

const stagingDir = "/tmp"

// procMasks are hidden behind /dev/null (files) or an empty read-only tmpfs
// (directories) when they exist; procReadOnly are remounted read-only.
var (
	procMasks = []string{
		"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
		"/proc/kallsyms", "/proc/kmsg", "/proc/sysrq-trigger", "/proc/config.gz", "/proc/vmallocinfo",
		"/proc/acpi", "/proc/scsi", "/proc/asound", "/proc/firmware",
	}
	procReadOnly = []string{"/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"}
	sysMasks     = []string{"/sys/firmware", "/sys/devices/virtual/powercap", "/sys/kernel/security", "/sys/kernel/debug"}
	devNodes     = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
)

// ProcMasks and SysMasks list what the sandbox hides (for tests and status).
func ProcMasks() []string { return append([]string(nil), procMasks...) }

type rootfs struct {
	spec *Spec
	warn func(string, ...any)
	root int // fd of the new root (the attached root mount)
	fds  []int
	// legacyLowerdir: the kernel refused "lowerdir+" (before 6.8).
	legacyLowerdir bool
	// cgroupLater: the cgroup namespace does not exist yet (a held
	// child); its cgroup2 is mounted once it does (waitRelease).
	cgroupLater bool
}

func (r *rootfs) keep(fd int) int { r.fds = append(r.fds, fd); return fd }

func (r *rootfs) closeAll() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
}

func setupMounts(s *Spec, warn func(string, ...any), cgroupLater bool) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return childErr("make mounts private", err)
	}
	r := &rootfs{spec: s, warn: warn, cgroupLater: cgroupLater}
	defer r.closeAll()
	if !s.newRoot() {
		return r.inPlace()
	}
	binds, err := r.openBinds()
	if err != nil {
		return err
	}
	var rootMnt int
	if s.Root != "" {
		rootMnt, err = r.cloneRoot()
	} else {
		rootMnt, err = r.overlayRoot()
	}
	if err != nil {
		return err
	}
	r.root = rootMnt
	if err := r.standardMounts(); err != nil {
		return err
	}
	if err := r.userMounts(binds); err != nil {
		return err
	}
	if err := r.masks(); err != nil {
		return err
	}
	return r.pivot()
}

// inPlace handles a mount namespace without a new root.
func (r *rootfs) inPlace() error {
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return childErr("open /", err)
	}
	r.root = r.keep(root)
	binds, err := r.openBinds()
	if err != nil {
		return err
	}
	if r.spec.Namespaces.Has(NSPID) {
		if err := r.mountProc(); err != nil {
			return err
		}
		if err := r.masks(); err != nil {
			return err
		}
	}
	return r.userMounts(binds)
}

// openBinds clones the bind sources before anything is covered.
func (r *rootfs) openBinds() (map[int]int, error) {
	binds := map[int]int{}
	for i, m := range r.spec.Mounts {
		if m.Kind == Tmpfs {
			continue
		}
		fd, err := cloneTree(unix.AT_FDCWD, m.Source, true)
		if err != nil {
			return nil, childErr("--"+string(m.Kind)+" "+m.Source, err)
		}
		r.keep(fd)
		attrs := uint64(unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID)
		if m.Kind == ROBind {
			attrs |= unix.MOUNT_ATTR_RDONLY
		}
		if err := setAttrs(fd, attrs, true); err != nil {
			return nil, childErr("--"+string(m.Kind)+" "+m.Source, err)
		}
		binds[i] = fd
	}
	return binds, nil
}

// cloneRoot is --root: a read-only recursive clone of DIR.
func (r *rootfs) cloneRoot() (int, error) {
	fd, err := cloneTree(unix.AT_FDCWD, r.spec.Root, true)
	if err != nil {
		return -1, childErr("--root "+r.spec.Root, err)
	}
	r.keep(fd)
	if err := setAttrs(fd, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID, true); err != nil {
		return -1, childErr("--root "+r.spec.Root, err)
	}
	return fd, r.attachRoot(fd)
}

// attachRoot attaches the root mount at the staging directory.
func (r *rootfs) attachRoot(mfd int) error {
	if err := r.attachAt(mfd, stagingDir); err != nil {
		return childErr("attach the new root", err)
	}
	return nil
}

// attachAt attaches a detached mount on a directory of this mount
// namespace (all of whose mounts setupMounts made private).
func (r *rootfs) attachAt(mfd int, dir string) error {
	st, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(st)
	return attach(mfd, st)
}

// overlayRoot is --overlay-root: an overlay of the lowers with the given
// upper and work directories, or on a tmpfs discarded at exit. When the
// kernel refuses a single lower "/" (in a user namespace, because of the
// locked mounts below it) or with an upper inside it, the root is
// assembled per top-level directory.
func (r *rootfs) overlayRoot() (int, error) {
	o := r.spec.Overlay
	var lowers []int
	for _, l := range o.Lowers {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, childErr("--overlay-root "+l, err)
		}
		lowers = append(lowers, r.keep(fd))
	}
	upper, work, err := r.upperWork()
	if err != nil {
		return -1, err
	}
	var locked *lockedMounts
	if len(o.Lowers) == 1 && o.Lowers[0] == "/" && r.spec.Namespaces.Has(NSUser) {
		// In a user namespace every mount inherited from the caller is
		// locked, and overlayfs refuses a layer with locked mounts below
		// it (EINVAL from clone_private_mount). A refused overlay is not
		// cheap: the kernel has set up the work directory and waits for
		// an RCU grace period while tearing it down. So what the mount
		// table says must fail is not tried (what it does not predict is
		// still tried, and falls back as before).
		locked = lockedBelow(lowers[0])
	}
	if locked != nil && locked.any() {
		return r.assembleRoot(lowers[0], upper, work, locked)
	}
	mfd, err := r.overlay(lowersPaths(lowers, ""), upper, work)
	if err == nil {
		r.keep(mfd)
		return mfd, r.attachRoot(mfd)
	}
	// Assemble per directory: in a user namespace (locked mounts below /),
	// or with an upper inside "/" (the kernel refuses overlapping layers).
	if len(o.Lowers) != 1 || o.Lowers[0] != "/" {
		return -1, childErr("--overlay-root", fmt.Errorf("%w%s", err, overlayHint(r.spec, err)))
	}
	return r.assembleRoot(lowers[0], upper, work, locked)
}

func overlayHint(s *Spec, err error) string {
	if s.Namespaces.Has(NSUser) && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL)) {
		return " (an overlay in a user namespace needs Linux 5.11 and lower directories without locked submounts)"
	}
	return ""
}

func lowersPaths(lowers []int, sub string) []string {
	var p []string
	for _, fd := range lowers {
		p = append(p, fdPath(fd)+sub)
	}
	return p
}

// upperWork opens --overlay-upper/--overlay-work, or makes both on a fresh
// tmpfs that lives only as long as the overlay.
func (r *rootfs) upperWork() (upper, work string, err error) {
	o := r.spec.Overlay
	if o.Upper != "" {
		var fds [2]int
		for i, d := range []string{o.Upper, o.Work} {
			fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", "", childErr("open overlay directory "+d, err)
			}
			fds[i] = r.keep(fd)
		}
		return fdPath(fds[0]), fdPath(fds[1]), nil
	}
	t, err := newFS("tmpfs", unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID, fsOpt{"mode", "0755"})
	if err != nil {
		return "", "", childErr("tmpfs for the overlay upper", err)
	}
	r.keep(t)
	// Attached in this (private) mount namespace, below where the root
	// will be staged: before Linux 6.15 overlayfs refuses layers on a
	// detached mount (clone_private_mount: EINVAL), as on Debian 12's 6.1.
	// pivot_root's detach of the old root takes it away again.
	if err := r.attachAt(t, stagingDir); err != nil {
		return "", "", childErr("tmpfs for the overlay upper", err)
	}
	for _, d := range []string{"upper", "work"} {
		if err := unix.Mkdirat(t, d, 0o755); err != nil {
			return "", "", childErr("tmpfs for the overlay upper", err)
		}
	}
	return fdPath(t) + "/upper", fdPath(t) + "/work", nil
}

// overlay mounts lowers (top first) with upper and work. It gives the
// layers one "lowerdir+" option each (Linux 6.8), which needs no escaping;
// where the kernel does not know that option (EINVAL) it falls back to one
// "lowerdir" list with ':' and '\' escaped.
func (r *rootfs) overlay(lowers []string, upper, work string) (int, error) {
	tail := []fsOpt{{"upperdir", upper}, {"workdir", work}}
	if r.spec.Namespaces.Has(NSUser) {
		tail = append(tail, fsOpt{"userxattr", ""})
	}
	if !r.legacyLowerdir {
		opts := []fsOpt{}
		for _, l := range lowers {
			opts = append(opts, fsOpt{"lowerdir+", l})
		}
		mfd, err := newFS("overlay", unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID, append(opts, tail...)...)
		// Before overlay used the new mount API (6.5), fsconfig accepts any
		// key and the unknown one fails only at create; so any EINVAL is
		// retried the old way, which fails again when it was not the key.
		if err == nil || !errors.Is(err, unix.EINVAL) {
			return checkWritable(mfd, err, work)
		}
		r.legacyLowerdir = true
	}
	mfd, err := newFS("overlay", unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID, append([]fsOpt{{"lowerdir", lowerdirList(lowers)}}, tail...)...)
	return checkWritable(mfd, err, work)
}

// checkWritable refuses an overlay that came up read-only: overlayfs does
// that, with only a kernel log line, when it cannot make its work directory
// (a full upper filesystem, say), and the writable root asked for would
// silently not be.
func checkWritable(mfd int, err error, work string) (int, error) {
	if err != nil {
		return -1, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(mfd, &st); err != nil {
		unix.Close(mfd)
		return -1, err
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		unix.Close(mfd)
		return -1, fmt.Errorf("the overlay came up read-only: overlayfs could not set up its work directory in %s (not writable by the sandbox's root, full, or not on the upper's filesystem; the kernel log says which)", work)
	}
	return mfd, nil
}

// lowerdirList joins layers for overlay's "lowerdir" option, escaping the
// separator ':' and the escape character itself.
func lowerdirList(lowers []string) string {
	esc := strings.NewReplacer(`\`, `\\`, ":", `\:`)
	parts := make([]string, len(lowers))
	for i, l := range lowers {
		parts[i] = esc.Replace(l)
	}
	return strings.Join(parts, ":")
}

// assembleRoot builds an overlay of "/" one top-level directory at a time
// on a tmpfs root: a user namespace may not overlay a directory with locked
// submounts, and / always has some. Directories that cannot be overlaid
// are left empty and reported; /proc, /sys, /dev, /tmp and /run get fresh
// mounts anyway. Symlinks are copied; files are bound read-only.
func (r *rootfs) assembleRoot(lower int, upper, work string, locked *lockedMounts) (int, error) {
	root, err := newFS("tmpfs", unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID, fsOpt{"mode", "0755"})
	if err != nil {
		return -1, childErr("tmpfs root", err)
	}
	r.keep(root)
	if err := r.attachRoot(root); err != nil {
		return -1, err
	}
	dir, err := unix.Openat(lower, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, childErr("read /", err)
	}
	f := os.NewFile(uintptr(dir), "/")
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return -1, childErr("read /", err)
	}
	sort.Strings(names)
	var readOnly, skipped []string
	var why []string
	for _, name := range names {
		err := r.assembleEntry(lower, root, name, upper, work, locked)
		if err == nil {
			continue
		}
		if msg := err.Error(); !slices.Contains(why, msg) {
			why = append(why, msg)
		}
		if r.bindReadOnly(lower, root, name) == nil {
			readOnly = append(readOnly, "/"+name)
		} else {
			skipped = append(skipped, "/"+name)
		}
	}
	if len(readOnly) > 0 {
		r.warn("--overlay-root=/: %s could not be overlaid in a user namespace (%s); bound read-only instead", strings.Join(readOnly, ", "), strings.Join(why, "; "))
	}
	if len(skipped) > 0 {
		r.warn("--overlay-root=/: %s could not be overlaid nor bound (%s); left empty", strings.Join(skipped, ", "), strings.Join(why, "; "))
	}
	return root, nil
}

func (r *rootfs) assembleEntry(lower, root int, name, upper, work string, locked *lockedMounts) error {
	switch name {
	case "proc", "sys", "dev", "tmp", "run":
		return unix.Mkdirat(root, name, 0o755)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(lower, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := readlinkat(lower, name)
		if err != nil {
			return err
		}
		return unix.Symlinkat(target, root, name)
	case unix.S_IFDIR:
	default:
		return nil // top-level files and nodes are rare and not needed
	}
	if err := unix.Mkdirat(root, name, 0o755); err != nil {
		return err
	}
	if locked != nil && locked.dir(name) {
		return errLockedBelow
	}
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d+"/"+name, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	mfd, err := r.overlay([]string{fdPath(lower) + "/" + name}, upper+"/"+name, work+"/"+name)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	target, err := openIn(root, name, true)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	return attach(mfd, target)
}

// bindReadOnly binds lower/name with everything mounted below it,
// read-only, onto the (already created) directory root/name.
func (r *rootfs) bindReadOnly(lower, root int, name string) error {
	mfd, err := cloneTree(lower, name, true)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := setAttrs(mfd, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, true); err != nil {
		return err
	}
	target, err := openIn(root, name, true)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	return attach(mfd, target)
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// pivot makes the new root "/" and detaches the old one.
func (r *rootfs) pivot() error {
	if err := unix.Fchdir(r.root); err != nil {
		return childErr("enter the new root", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return childErr("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return childErr("detach the old root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return childErr("chdir /", err)
	}
	return nil
}
