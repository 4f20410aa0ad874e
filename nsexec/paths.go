package nsexec

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Safe path handling inside the new root. Every mount target is opened with
// openat2(RESOLVE_IN_ROOT): a symlink planted in a lower or upper layer (or
// in a --root) resolves inside the root, never to the host. Targets nsrun
// itself owns (/proc, /sys, /dev, /tmp, /run and what is below them) must not
// be symlinks at all (RESOLVE_NO_SYMLINKS): runc CVE-2023-27561, crun
// CVE-2019-18837. Missing components are created one at a time below a
// directory already resolved inside the root, never by path from "/".

// resolveFlags for targets: strict ones refuse any symlink on the way.
func resolveFlags(strict bool) uint64 {
	f := uint64(unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS)
	if strict {
		f |= unix.RESOLVE_NO_SYMLINKS
	}
	return f
}

// openIn opens rel (a path relative to the root fd) as O_PATH, resolved in
// the root.
func openIn(root int, rel string, strict bool) (int, error) {
	for {
		fd, err := unix.Openat2(root, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: resolveFlags(strict),
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// ensureTarget opens the mount target path (absolute, inside the root),
// creating what is missing: directories, and as the last component a
// directory (dir) or an empty file. It returns an O_PATH fd.
func ensureTarget(root int, path string, dir, strict bool) (int, error) {
	rel := strings.TrimPrefix(filepath.Clean("/"+path), "/")
	if rel == "" {
		return unix.Dup(root)
	}
	fd, err := openIn(root, rel, strict)
	if err == nil {
		return fd, nil
	}
	if err != unix.ENOENT {
		return -1, targetErr(path, err)
	}
	parent, err := ensureTarget(root, filepath.Dir("/"+rel), true, strict)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	// Reopen the parent as a real directory fd to create in it.
	pdir, err := unix.Openat(parent, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, targetErr(path, err)
	}
	defer unix.Close(pdir)
	base := filepath.Base(rel)
	if dir {
		err = unix.Mkdirat(pdir, base, 0o755)
	} else {
		var f int
		// O_EXCL|O_NOFOLLOW: a dangling symlink there is not followed.
		f, err = unix.Openat(pdir, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(f)
		}
	}
	if err != nil && err != unix.EEXIST {
		return -1, targetErr(path, err)
	}
	fd, err = openIn(root, rel, strict)
	if err != nil {
		return -1, targetErr(path, err)
	}
	return fd, nil
}

func targetErr(path string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("mount target %s: is or passes through a symlink, refused: %w", path, err)
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("mount target %s: a dangling symlink or a missing directory: %w", path, err)
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("mount target %s: missing, and the root is read-only: %w", path, err)
	}
	return fmt.Errorf("mount target %s: %w", path, err)
}
