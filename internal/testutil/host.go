package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nsrun/nsrun/internal/box"
	"github.com/nsrun/nsrun/internal/cgv2"
	"golang.org/x/sys/unix"
)

// HostState is what a test suite must leave as it found it.
type HostState struct {
	mounts   []string        // /proc/self/mountinfo of the host mount namespace
	canary   string          // a file in the host's /tmp
	canaryV  string          // its content
	cgroups  map[string]bool // cgroups named *nsrun* under the v2 mount
	systemds map[int]string  // running systemd instances: pid -> command line
}

// TakeHostState snapshots the host and plants a canary file in /tmp (a box
// that ran systemd-tmpfiles --remove against the host would delete it).
func TakeHostState() (*HostState, error) {
	h := &HostState{}
	var err error
	if h.mounts, err = mountLines(); err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	h.canary = filepath.Join("/tmp", ".nsrun-test-canary-"+hex.EncodeToString(id[:]))
	h.canaryV = "nsrun canary " + hex.EncodeToString(id[:]) + "\n"
	if err := os.WriteFile(h.canary, []byte(h.canaryV), 0o600); err != nil {
		return nil, fmt.Errorf("plant /tmp canary: %w", err)
	}
	h.cgroups = nsrunCgroups()
	h.systemds = systemdProcesses()
	return h, nil
}

// Compare lists every way the host differs from the snapshot, and removes
// the canary.
func (h *HostState) Compare() []string {
	var problems []string
	now, err := mountLines()
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, l := range setDiff(now, h.mounts) {
		problems = append(problems, "mount added: "+l)
	}
	for _, l := range setDiff(h.mounts, now) {
		problems = append(problems, "mount removed: "+l)
	}
	if data, err := os.ReadFile(h.canary); err != nil || string(data) != h.canaryV {
		problems = append(problems, fmt.Sprintf("/tmp canary %s gone or changed (%v)", h.canary, err))
	}
	os.Remove(h.canary)
	for cg := range nsrunCgroups() {
		if !h.cgroups[cg] && !otherOwner(cg) {
			problems = append(problems, "cgroup left behind: "+cg)
		}
	}
	for pid, cmdline := range systemdProcesses() {
		cg, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
		if _, ok := h.systemds[pid]; !ok && !otherOwner(string(cg)) {
			problems = append(problems, fmt.Sprintf("systemd still running: pid %d (%s)", pid, cmdline))
		}
	}
	sort.Strings(problems)
	return problems
}

// otherOwner tells whether a cgroup path belongs to another test process
// that is still running (it carries that process's box.OwnerTag): test
// suites run side by side on these machines, and one must not blame
// another's live box on itself.
func otherOwner(path string) bool {
	pid, ok := box.TagOwner(path)
	if !ok || pid == os.Getpid() {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}

func mountLines() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n"), nil
}

// nsrunCgroups lists cgroups whose name contains "nsrun", down to a depth
// that covers boxes and scopes made on the host (the host's own tree can be
// large on a systemd host, so the walk stays shallow).
func nsrunCgroups() map[string]bool {
	found := map[string]bool{}
	mnt, err := cgv2.Mount()
	if err != nil {
		return found
	}
	_ = filepath.WalkDir(mnt, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(mnt, path)
		if strings.Count(rel, "/") >= 4 {
			return filepath.SkipDir
		}
		if strings.Contains(d.Name(), "nsrun") {
			found[path] = true
			return filepath.SkipDir
		}
		return nil
	})
	return found
}

// systemdProcesses lists processes running the systemd binary.
func systemdProcesses() map[int]string {
	found := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return found
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "systemd" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		found[pid] = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return found
}

func setDiff(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}
