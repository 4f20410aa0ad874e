package nsexec

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Thin helpers over the new mount API (fsopen/fsmount/move_mount/open_tree,
// Linux 5.2; mount_setattr 5.12; overlay "lowerdir+" 6.8). Mounts are built
// detached and attached to an O_PATH fd of their target, so no path is
// looked up between the check and the mount (CVE-2021-30465).

type fsOpt struct{ key, val string } // val "" sets a flag

// newFS creates a detached mount of a new filesystem.
func newFS(fstype string, attrs int, opts ...fsOpt) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	defer unix.Close(fsfd)
	for _, o := range opts {
		if o.val == "" {
			err = unix.FsconfigSetFlag(fsfd, o.key)
		} else {
			err = unix.FsconfigSetString(fsfd, o.key, o.val)
		}
		if err != nil {
			return -1, fmt.Errorf("%s option %s=%s: %w%s", fstype, o.key, o.val, err, fsLog(fsfd))
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create %s: %w%s", fstype, err, fsLog(fsfd))
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, fmt.Errorf("fsmount %s: %w", fstype, err)
	}
	return mfd, nil
}

// fsLog reads the kernel's messages about a failed fs context.
func fsLog(fsfd int) string {
	var msgs []string
	buf := make([]byte, 4096)
	for range 16 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (kernel: " + strings.Join(msgs, "; ") + ")"
}

// cloneTree makes a detached copy of the mount tree at path (host path,
// resolved with the caller's credentials), with submounts when recursive.
func cloneTree(dirfd int, path string, recursive bool) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	if path == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	fd, err := unix.OpenTree(dirfd, path, flags)
	if err != nil {
		return -1, fmt.Errorf("clone mount tree %s: %w", path, err)
	}
	return fd, nil
}

// setAttrs sets mount attributes on a (detached) mount tree.
func setAttrs(mfd int, set uint64, recursive bool) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(mfd, "", flags, &unix.MountAttr{Attr_set: set}); err != nil {
		return fmt.Errorf("set mount attributes: %w", err)
	}
	return nil
}

// attach moves the detached mount mfd onto the target fd.
func attach(mfd, target int) error {
	return unix.MoveMount(mfd, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// fdPath names an open fd as a path the kernel follows (for mount options
// that take paths).
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
