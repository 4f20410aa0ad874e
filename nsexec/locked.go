package nsexec

import (
	"bufio"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// errLockedBelow is why a top-level directory is not overlaid when the
// mount table shows a mount below it (see lockedBelow). It reads as the
// kernel's refusal did.
var errLockedBelow = errors.New("create overlay: invalid argument (mounts below it are locked)")

// lockedMounts is the part of the mount table below a lower layer "/".
type lockedMounts struct {
	root     uint64
	children map[uint64][]mountEntry // by parent mount id
}

type mountEntry struct {
	id    uint64
	point string // mount point, unescaped
}

// any says whether some mount lies below the root: then an overlay of
// all of "/" is refused.
func (l *lockedMounts) any() bool { return len(l.children[l.root]) > 0 }

// dir says whether an overlay of the top-level directory name would be
// refused: the mount name resolves to (the topmost one mounted on /name,
// or the root's) has a mount below /name.
func (l *lockedMounts) dir(name string) bool {
	point := "/" + name
	m := l.root
	for {
		next := uint64(0)
		for _, c := range l.children[m] {
			if c.point == point {
				next = c.id
			}
		}
		if next == 0 {
			break
		}
		m = next
	}
	for _, c := range l.children[m] {
		if m != l.root || strings.HasPrefix(c.point, point+"/") {
			return true
		}
	}
	return false
}

// lockedBelow reads /proc/self/mountinfo for the mounts below dir (an fd
// of "/"): in a user namespace all of them are locked, and overlayfs
// refuses a layer with locked mounts below it (the kernel's
// has_locked_children()). nil when the table cannot be read (then every
// overlay is tried, as without it).
func lockedBelow(dir int) *lockedMounts {
	var stx unix.Statx_t
	if err := unix.Statx(dir, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseLocked(f, stx.Mnt_id)
}

func parseLocked(r io.Reader, rootID uint64) *lockedMounts {
	l := &lockedMounts{root: rootID, children: map[uint64][]mountEntry{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			return nil
		}
		id, err1 := strconv.ParseUint(fields[0], 10, 64)
		parent, err2 := strconv.ParseUint(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil
		}
		if id == parent {
			continue // the root of the namespace names itself as parent
		}
		l.children[parent] = append(l.children[parent], mountEntry{id: id, point: unescapeMountinfo(fields[4])})
	}
	if sc.Err() != nil {
		return nil
	}
	return l
}

// unescapeMountinfo undoes the octal escapes (\040 and the like) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
