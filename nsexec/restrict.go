package nsexec

// The restrictions a joined command must carry (nsrun exec).
//
// A command joining a running sandbox must be no less restricted than its
// workload: the same seccomp program (or the default one where the
// workload has none), the same capabilities, the same ids, no_new_privs.
// Only the process that started the sandbox knows the program: it cannot
// be read back from the kernel without CAP_SYS_ADMIN (PTRACE_SECCOMP_GET_FILTER),
// and nothing inside the sandbox may be trusted to say what it was.
//
// Choice: the starting process (Launch.Start, in nsrun's supervisor/ leaf)
// writes the restrictions into a memfd, seals it (no write, grow, shrink or
// new seals) and keeps it open until the sandbox ends. The joiner finds the
// sandbox's process by the unit's cgroup, takes its parent (a kernel fact,
// pinned by a pidfd), and reads the record through /proc/PARENT/fd, which
// needs ptrace-read access to that parent: its owner or root. The workload
// can neither write the record (sealed, in a process outside its
// namespaces) nor present another one (it cannot become the parent of the
// sandbox's first process). Weighed against it: an xattr on the payload
// cgroup (trusted.* is root-only; user.* can be set by any process of the
// user that reaches the cgroup, a workload with its cgroup namespace
// rooted there included), and letting the sandbox's init spawn the joined
// command (there is no init with --no-init or without a pid namespace, and
// the init would have to serve a socket).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// recordName is the memfd's name, as /proc/PID/fd shows it.
const recordName = "nsrun-restrictions"

// restrictions are what a joined command inherits from the sandbox.
type restrictions struct {
	Seccomp        Seccomp  `json:"seccomp"`
	SeccompProgram []byte   `json:"seccomp_program,omitempty"`
	Caps           []string `json:"caps,omitempty"`
	UID            *uint32  `json:"uid,omitempty"`
	GID            *uint32  `json:"gid,omitempty"`
}

// recordRestrictions writes s's restrictions into a sealed memfd.
func recordRestrictions(s *Spec) (*os.File, error) {
	data, err := json.Marshal(restrictions{Seccomp: s.Seccomp, SeccompProgram: s.SeccompProgram, Caps: s.Caps, UID: s.UID, GID: s.GID})
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate(recordName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("record the sandbox's restrictions: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), recordName)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("record the sandbox's restrictions: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, allSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("record the sandbox's restrictions: seal: %w", err)
	}
	return f, nil
}

const allSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// ErrNoRecord: the sandbox's process has no record of its restrictions
// (it was not started by nsrun, or its starter is gone).
var errNoRecord = fmt.Errorf("no record of the sandbox's restrictions")

// readRestrictions reads the record kept by the parent of pid. The parent
// is pinned with a pidfd and checked to still be pid's parent, so a reused
// pid cannot stand in for it.
func readRestrictions(pid int) (*restrictions, error) {
	ppid := parentPid(pid)
	if ppid <= 1 {
		return nil, errNoRecord
	}
	pidfd, err := unix.PidfdOpen(ppid, 0)
	if err != nil {
		return nil, errNoRecord
	}
	defer unix.Close(pidfd)
	if parentPid(pid) != ppid {
		return nil, errNoRecord
	}
	r, err := readRecord(ppid)
	if err != nil {
		return nil, err
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return nil, fmt.Errorf("the sandbox's starter (pid %d) ended while reading its record: %w", ppid, err)
	}
	return r, nil
}

// readRecord finds the sealed record among the fds of process ppid.
func readRecord(ppid int) (*restrictions, error) {
	dir := "/proc/" + strconv.Itoa(ppid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		// Not ours to read (another user's process), or gone.
		return nil, errNoRecord
	}
	want := "/memfd:" + recordName + " (deleted)"
	var found *restrictions
	for _, e := range entries {
		if link, err := os.Readlink(dir + "/" + e.Name()); err != nil || link != want {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("pid %d holds more than one record of restrictions", ppid)
		}
		if found, err = openRecord(dir + "/" + e.Name()); err != nil {
			return nil, err
		}
	}
	if found == nil {
		return nil, errNoRecord
	}
	return found, nil
}

func openRecord(path string) (*restrictions, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the record of restrictions: %w", err)
	}
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&allSeals != allSeals {
		return nil, fmt.Errorf("the record of restrictions %s is not sealed (seals %#x, %v)", path, seals, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the record of restrictions: %w", err)
	}
	var r restrictions
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("the record of restrictions: %w", err)
	}
	return &r, nil
}

// seccompOf reads the Seccomp mode of pid from /proc/PID/status (0: none).
func seccompOf(pid int) (int, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no Seccomp line in /proc/%d/status", pid)
}

// parentPid reads the parent of pid from /proc/PID/stat (0 if unknown).
func parentPid(pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// joinRestrictions sets what the joined command in s inherits from the
// sandbox process pid: its record, or, without one, nsrun's defaults (no
// capabilities, the default filter) provided the process has no seccomp
// filter those would fail to match. A sandbox started with --seccomp=none
// gets the default filter: stricter.
func joinRestrictions(pid int, s *Spec) error {
	r, err := readRestrictions(pid)
	switch {
	case err == errNoRecord:
		mode, serr := seccompOf(pid)
		if serr != nil {
			return fmt.Errorf("join sandbox: read the restrictions of pid %d: %w", pid, serr)
		}
		if mode != 0 {
			return fmt.Errorf("join sandbox: pid %d runs under a seccomp filter and its starter keeps no record of it: nsrun cannot give the command the same filter, refusing", pid)
		}
		s.Caps, s.Seccomp, s.SeccompProgram, s.UID, s.GID = nil, SeccompDefault, nil, nil, nil
		return nil
	case err != nil:
		return fmt.Errorf("join sandbox: %w", err)
	}
	s.Caps, s.UID, s.GID = r.Caps, r.UID, r.GID
	switch r.Seccomp {
	case SeccompFile:
		s.Seccomp, s.SeccompProgram = SeccompFile, r.SeccompProgram
	case SeccompDefault, SeccompNone, "":
		s.Seccomp, s.SeccompProgram = SeccompDefault, nil
	default:
		return fmt.Errorf("join sandbox: unknown seccomp mode %q in the record, refusing", r.Seccomp)
	}
	return nil
}
