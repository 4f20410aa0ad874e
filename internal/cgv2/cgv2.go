// Package cgv2 finds the cgroup v2 hierarchy and this process's place in it.
// It reads /proc; it never writes to a cgroup.
package cgv2

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoUnified reports a host with no cgroup v2 hierarchy mounted.
var ErrNoUnified = errors.New("no cgroup2 filesystem mounted")

// Mount returns the mount point of the cgroup v2 hierarchy as this process
// sees it: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
// hybrid one. A mount table can list cgroup2 mounts that later mounts hide
// (a container that mounted a fresh /sys keeps the copied ones below it), so
// the last listed one whose path really is cgroup2 wins.
func Mount() (string, error) {
	candidates, err := cgroup2Mounts()
	if err != nil {
		return "", err
	}
	for i := len(candidates) - 1; i >= 0; i-- {
		var st unix.Statfs_t
		if err := unix.Statfs(candidates[i], &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return candidates[i], nil
		}
	}
	return "", ErrNoUnified
}

// cgroup2Mounts lists the mount points of cgroup2 filesystems in
// /proc/self/mountinfo order.
func cgroup2Mounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fields[sep+1] == "cgroup2" {
			mounts = append(mounts, unescapeMountinfo(fields[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	return mounts, nil
}

// Self returns this process's cgroup v2 path relative to the hierarchy root
// (the "0::" line of /proc/self/cgroup).
func Self() (string, error) { return OfPid("self") }

// OfPid returns the cgroup v2 path of a process ("self" or a pid).
func OfPid(pid string) (string, error) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("read /proc/%s/cgroup: %w", pid, ErrNoUnified)
}

// Controllers returns the controllers available in the cgroup at dir.
func Controllers(dir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space ...) of
// /proc/self/mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
