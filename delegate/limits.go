package delegate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LimitFiles are the cgroup files that hold the resource limits nsrun
// reports, in the order it reports them.
var LimitFiles = []string{
	"memory.max", "memory.high", "memory.low", "memory.min", "memory.swap.max",
	"cpu.max", "cpu.weight", "cpu.idle", "cpuset.cpus", "cpuset.cpus.effective", "cpuset.mems",
	"pids.max", "io.max", "io.weight",
}

// Limits are the values the kernel holds for a cgroup's limits, file name
// -> content (trimmed). A file that does not exist (its controller is not
// enabled for the cgroup) is absent from the map: nothing of it is in force.
type Limits map[string]string

// ReadLimits reads LimitFiles from dir. Reading the files of a cgroup nsrun
// does not own is fine; it never writes them.
func ReadLimits(dir string) (Limits, error) {
	if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err != nil {
		return nil, fmt.Errorf("read limits: %s is not a cgroup: %w", dir, err)
	}
	l := Limits{}
	for _, f := range LimitFiles {
		v, err := ReadSetting(dir, f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		l[f] = v
	}
	return l, nil
}

// ReadSetting reads one cgroup file of dir, trimmed. A missing file gives an
// error that matches fs.ErrNotExist.
func ReadSetting(dir, file string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// WholeDisk resolves path the way systemd resolves the path of an IO
// property: a block device node stands for itself, any other file for the
// device its file system is on, and a partition for its whole disk. The
// result is "MAJ:MIN", the key of io.max and io.weight lines.
func WholeDisk(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	dev := st.Dev
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		dev = st.Rdev
	}
	if unix.Major(dev) == 0 {
		return "", fmt.Errorf("%s is on no block device", path)
	}
	key := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	sys := filepath.Join("/sys/dev/block", key)
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		// /sys/dev/block/M:m links to .../DISK/PART; the disk is the parent.
		real, err := filepath.EvalSymlinks(sys)
		if err != nil {
			return "", err
		}
		data, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
		if err != nil {
			return "", err
		}
		key = strings.TrimSpace(string(data))
	}
	return key, nil
}

// WriteSetting writes one cgroup file of dir. nsrun writes only to cgroups
// it made (the leaves), never to a unit's own cgroup, whose files belong to
// its manager.
func WriteSetting(dir, file, value string) error {
	if base := filepath.Base(dir); base != PayloadLeaf && base != SupervisorLeaf {
		return fmt.Errorf("refusing to write %s of %s: not a leaf nsrun made", file, dir)
	}
	return writeFile(filepath.Join(dir, file), value)
}
