package nsexec

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	attrSafe  = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	attrNoDev = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
)

// mountAt attaches the detached mount mfd at path inside the root,
// creating the target (a directory, or a file when dir is false).
func (r *rootfs) mountAt(mfd int, path string, dir, strict bool) error {
	target, err := ensureTarget(r.root, path, dir, strict)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := attach(mfd, target); err != nil {
		return fmt.Errorf("mount on %s: %w", path, err)
	}
	return nil
}

// standardMounts gives the new root /proc, /sys, /dev, /tmp and /run.
func (r *rootfs) standardMounts() error {
	if err := r.mountProc(); err != nil {
		return err
	}
	if err := r.mountSys(); err != nil {
		return err
	}
	if err := r.mountDev(); err != nil {
		return err
	}
	// Fresh /tmp and /run: the lower layer's may hold the host's D-Bus,
	// systemd and X11 sockets.
	for _, d := range []struct{ path, mode string }{{"/tmp", "1777"}, {"/run", "0755"}} {
		mfd, err := newFS("tmpfs", attrNoDev, fsOpt{"mode", d.mode})
		if err != nil {
			return childErr("mount "+d.path, err)
		}
		err = r.mountAt(mfd, d.path, true, true)
		unix.Close(mfd)
		if err != nil {
			return childErr("mount "+d.path, err)
		}
	}
	return nil
}

// mountProc mounts a fresh proc for the sandbox's pid namespace, or, with
// no pid namespace, a copy of the caller's.
func (r *rootfs) mountProc() error {
	var mfd int
	var err error
	if r.spec.Namespaces.Has(NSPID) {
		mfd, err = newFS("proc", attrSafe)
		if err != nil && r.spec.Namespaces.Has(NSUser) {
			err = fmt.Errorf("%w (the kernel refuses a new proc in a user namespace while the caller's /proc has paths covered by mounts, as in a container)", err)
		}
	} else {
		mfd, err = cloneTree(unix.AT_FDCWD, "/proc", true)
	}
	if err != nil {
		return childErr("mount /proc", err)
	}
	defer unix.Close(mfd)
	if err := r.mountAt(mfd, "/proc", true, true); err != nil {
		return childErr("mount /proc", err)
	}
	return nil
}

// mountSys mounts sysfs read-only (a fresh one with a network namespace,
// else a read-only copy of the caller's), and a cgroup2 of the sandbox's own
// cgroup namespace on /sys/fs/cgroup.
func (r *rootfs) mountSys() error {
	var mfd int
	var err error
	fresh := r.spec.Namespaces.Has(NSNet)
	if fresh {
		mfd, err = newFS("sysfs", attrSafe|unix.MOUNT_ATTR_RDONLY)
	}
	if !fresh || err != nil {
		fresh = false
		if mfd, err = cloneTree(unix.AT_FDCWD, "/sys", true); err == nil {
			err = setAttrs(mfd, attrSafe|unix.MOUNT_ATTR_RDONLY, true)
		}
	}
	if err != nil {
		return childErr("mount /sys", err)
	}
	err = r.mountAt(mfd, "/sys", true, true)
	unix.Close(mfd)
	if err != nil {
		return childErr("mount /sys", err)
	}
	if !r.spec.Namespaces.Has(NSCgroup) || r.cgroupLater {
		return nil
	}
	return mountCgroup(r.root)
}

// mountCgroup mounts a cgroup2 of this process's cgroup namespace on
// sys/fs/cgroup below root (an fd of the sandbox's root).
func mountCgroup(root int) error {
	cg, err := newFS("cgroup2", attrSafe)
	if err != nil {
		return childErr("mount /sys/fs/cgroup", err)
	}
	defer unix.Close(cg)
	target, err := openIn(root, "sys/fs/cgroup", true)
	if err != nil {
		return childErr("mount /sys/fs/cgroup", err)
	}
	defer unix.Close(target)
	if err := attach(cg, target); err != nil {
		return childErr("mount /sys/fs/cgroup", err)
	}
	return nil
}

// mountDev builds the minimal /dev: a tmpfs with the host's null, zero,
// full, random, urandom and tty bound in (checked to be character devices),
// a private devpts with ptmx, shm, mqueue and the usual symlinks, plus the
// spec's device nodes.
func (r *rootfs) mountDev() error {
	dev, err := newFS("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, fsOpt{"mode", "0755"}, fsOpt{"size", "1m"})
	if err != nil {
		return childErr("mount /dev", err)
	}
	defer unix.Close(dev)
	if err := r.mountAt(dev, "/dev", true, true); err != nil {
		return childErr("mount /dev", err)
	}
	nodes := append([]string(nil), devNodes...)
	for _, d := range r.spec.Devices {
		nodes = append(nodes, d.Path)
	}
	for _, n := range nodes {
		if err := r.bindNode(n); err != nil {
			return childErr("bind "+n, err)
		}
	}
	pts, err := newFS("devpts", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC,
		fsOpt{"newinstance", ""}, fsOpt{"ptmxmode", "0666"}, fsOpt{"mode", "0620"})
	if err != nil {
		return childErr("mount /dev/pts", err)
	}
	defer unix.Close(pts)
	if err := r.mountAt(pts, "/dev/pts", true, true); err != nil {
		return childErr("mount /dev/pts", err)
	}
	shm, err := newFS("tmpfs", attrNoDev, fsOpt{"mode", "1777"})
	if err != nil {
		return childErr("mount /dev/shm", err)
	}
	defer unix.Close(shm)
	if err := r.mountAt(shm, "/dev/shm", true, true); err != nil {
		return childErr("mount /dev/shm", err)
	}
	if mq, err := newFS("mqueue", attrSafe); err == nil {
		err = r.mountAt(mq, "/dev/mqueue", true, true)
		unix.Close(mq)
		if err != nil {
			return childErr("mount /dev/mqueue", err)
		}
	} else if r.spec.Namespaces.Has(NSIPC) {
		return childErr("mount /dev/mqueue", err)
	}
	devdir, err := unix.Openat(r.root, "dev", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return childErr("open /dev", err)
	}
	defer unix.Close(devdir)
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := unix.Symlinkat(target, devdir, name); err != nil && !errors.Is(err, unix.EEXIST) {
			return childErr("create /dev/"+name, err)
		}
	}
	return nil
}

// bindNode binds the host's device node at path to the same path in the
// sandbox, after checking it is a device node (a symlink there would
// already have been followed on the host, so the clone is checked, not the
// name: CVE-2025-31133).
func (r *rootfs) bindNode(path string) error {
	mfd, err := cloneTree(unix.AT_FDCWD, path, false)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	var st unix.Stat_t
	if err := unix.Fstat(mfd, &st); err != nil {
		return err
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFCHR && t != unix.S_IFBLK {
		return fmt.Errorf("%s is not a device node", path)
	}
	return r.mountAt(mfd, path, false, true)
}

// userMounts applies --bind, --ro-bind and --tmpfs in order. Targets are
// resolved inside the root; without a new root they must exist (nsrun
// never creates files on the caller's filesystem).
func (r *rootfs) userMounts(binds map[int]int) error {
	for i, m := range r.spec.Mounts {
		what := "--" + string(m.Kind) + " " + m.Dest
		var mfd int
		dir := true
		if m.Kind == Tmpfs {
			var err error
			if mfd, err = newFS("tmpfs", attrNoDev, fsOpt{"mode", "0755"}); err != nil {
				return childErr(what, err)
			}
			defer unix.Close(mfd)
		} else {
			mfd = binds[i]
			var st unix.Stat_t
			if err := unix.Fstat(mfd, &st); err != nil {
				return childErr(what, err)
			}
			dir = st.Mode&unix.S_IFMT == unix.S_IFDIR
		}
		var err error
		if r.spec.newRoot() {
			err = r.mountAt(mfd, m.Dest, dir, false)
		} else {
			err = r.mountExisting(mfd, m.Dest)
		}
		if err != nil {
			return childErr(what, err)
		}
	}
	return nil
}

func (r *rootfs) mountExisting(mfd int, path string) error {
	target, err := openIn(r.root, strings.TrimPrefix(path, "/"), false)
	if err != nil {
		return fmt.Errorf("mount target %s (must exist without --root or --overlay-root): %w", path, err)
	}
	defer unix.Close(target)
	return attach(mfd, target)
}

// masks hides the sensitive /proc and /sys paths and makes /proc/sys and
// friends read-only. Any failure aborts the start (a mask silently not
// applied is worse than none: systemd PR #40833). The workload cannot lift
// them: it has no CAP_SYS_ADMIN, and the default seccomp filter refuses
// mount and umount even when --cap-add gives it.
func (r *rootfs) masks() error {
	masks := procMasks
	if r.spec.newRoot() {
		masks = append(append([]string(nil), procMasks...), sysMasks...)
	}
	for _, p := range masks {
		if err := r.mask(p); err != nil {
			return childErr("mask "+p, err)
		}
	}
	for _, p := range procReadOnly {
		if err := r.readOnly(p); err != nil {
			return childErr("make "+p+" read-only", err)
		}
	}
	return nil
}

func (r *rootfs) mask(path string) error {
	target, err := openIn(r.root, strings.TrimPrefix(path, "/"), true)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(target)
	var st unix.Stat_t
	if err := unix.Fstat(target, &st); err != nil {
		return err
	}
	var mfd int
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		mfd, err = newFS("tmpfs", attrSafe|unix.MOUNT_ATTR_RDONLY, fsOpt{"size", "0"}, fsOpt{"mode", "0555"})
	} else {
		mfd, err = nullClone()
	}
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	return attach(mfd, target)
}

// nullClone is a clone of the host's /dev/null, checked to be the 1:3
// character device (a planted symlink would fail the check).
func nullClone() (int, error) {
	mfd, err := cloneTree(unix.AT_FDCWD, "/dev/null", false)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(mfd, &st); err != nil {
		unix.Close(mfd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		unix.Close(mfd)
		return -1, fmt.Errorf("/dev/null is not the null device (1:3)")
	}
	if err := setAttrs(mfd, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, false); err != nil {
		unix.Close(mfd)
		return -1, err
	}
	return mfd, nil
}

func (r *rootfs) readOnly(path string) error {
	rel := strings.TrimPrefix(filepath.Clean(path), "/")
	src, err := openIn(r.root, rel, true)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(src)
	mfd, err := cloneTree(src, "", true)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := setAttrs(mfd, attrSafe|unix.MOUNT_ATTR_RDONLY, true); err != nil {
		return err
	}
	return attach(mfd, src)
}
