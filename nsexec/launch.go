package nsexec

// The exchange between nsrun (the parent, in supervisor/) and the sandbox
// child (nsrun re-executed as "nsrun __nsrun-sandbox-child --sync-fd=N",
// cloned straight into payload/ and into the new namespaces). The sync
// socket is a SOCK_STREAM socketpair carrying JSON values; the child's end is
// close-on-exec, so exec'ing the workload closes it.
//
//	parent (Launch.Start)                     child (ChildMain)
//	─────────────────────                     ─────────────────
//	socketpair; clone3(CLONE_NEWUSER|NEWNS|…,
//	  CLONE_INTO_CGROUP payload/) ──────────► Go runtime starts, blocks reading fd N
//	write uid_map/gid_map
//	  (newuidmap/newgidmap if unprivileged)
//	 with a user namespace:
//	byte 'M' ───────────────────────────────► setresuid/gid(0) unless already root
//	                                          (capabilities kept through the
//	                                          unmapped execve as ambient ones)
//	send Spec ──────────────────────────────► decode Spec; refuse the host mount ns
//	                                          unshare time (only with offsets) and cgroup ns
//	                                          non-dumpable; hostname; lo up
//	                                          mounts, masks, pivot_root
//	                                          setsid, ids, caps, no_new_privs, seccomp
//	           ◄──────────────────────────── {warn} ... (what could not be overlaid)
//	 (a) no init (no pid ns, or NoInit):
//	           ◄──────────────────────────── {exec}; execve(workload)
//	EOF (fd closed on exec) = running;        or, if execve failed:
//	           ◄──────────────────────────── {error}; exit 125
//	 (b) init as PID 1:                       fork+exec workload from the
//	           ◄──────────────────────────── {started, pid}  (or {error})
//	  ... forward signals to the child ...    forward signals, reap orphans
//	           ◄──────────────────────────── {exit, status, signal}; exit
//	Launch.Wait: the workload's status from {exit}, else from the child's
//	own wait status (killed from outside: 128+N).
//
// Any error before the workload runs comes back as {error} with the
// step and errno; Start returns it as a *ChildError.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// mapsWritten is the byte that tells a child in a new user namespace that
// its id maps are in place.
const mapsWritten = 'M'

// message is one value on the sync socket from child to parent.
type message struct {
	Kind   string      `json:"kind"` // warn, exec, started, exit, error
	Text   string      `json:"text,omitempty"`
	Pid    int         `json:"pid,omitempty"`
	Status int         `json:"status,omitempty"`
	Signal int         `json:"signal,omitempty"`
	Err    *ChildError `json:"err,omitempty"`
}

// Launch is a prepared sandbox start.
type Launch struct {
	// Cmd re-executes /proc/self/exe as the sandbox child. Set its Stdin,
	// Stdout, Stderr, append preserved fds to ExtraFiles, and set
	// SysProcAttr.UseCgroupFD/CgroupFD and Pdeathsig before Start.
	Cmd *exec.Cmd
	// Warnings are what the child reported but did not refuse (for
	// example directories it could not overlay); valid after Start.
	Warnings []string
	// InitPid is the workload's pid as seen from the child's pid namespace
	// when an init runs as PID 1 (0 otherwise).
	InitPid int

	spec *Spec
	sync *os.File // parent end

	join      *os.File                  // Join: the nsrun binary, passed after the sync fd
	childArgs func(syncFD int) []string // Join: nsenter's arguments
	dec       *json.Decoder

	final chan *message // the {exit} message of an init; closed when there is none
}

// Prepare validates spec and builds the command that starts the sandbox.
func Prepare(spec *Spec) (*Launch, error) {
	s := *spec
	s.Normalize(os.Geteuid(), os.Getegid())
	if err := s.Validate(); err != nil {
		return nil, err
	}
	mnt, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return nil, fmt.Errorf("read own mount namespace: %w", err)
	}
	s.HostMountNS = mnt
	var ambient []uintptr
	if s.Namespaces.Has(NSUser) {
		// The child execs this binary before its maps exist, as an unmapped
		// uid: the kernel would drop every capability it has in its new
		// user namespace, unless they are ambient. Go raises them between
		// clone and execve. The child clears them again before the workload.
		last, err := lastCap()
		if err != nil {
			return nil, fmt.Errorf("read the last capability: %w", err)
		}
		for c := uintptr(0); c <= uintptr(last); c++ {
			ambient = append(ambient, c)
		}
	}
	cmd := &exec.Cmd{
		Path: "/proc/self/exe",
		Args: []string{"nsrun", ChildArg},
		Env:  []string{}, // the workload's environment travels in the spec
		Dir:  "/",
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  s.cloneFlags(),
			AmbientCaps: ambient,
		},
	}
	return &Launch{Cmd: cmd, spec: &s, final: make(chan *message, 1)}, nil
}

// Spec is the spec as the child gets it (normalised).
func (l *Launch) Spec() *Spec { return l.spec }

// Start starts the child, writes its id maps, sends the spec and waits until
// the workload runs or the child failed; a child failure is returned as a
// *ChildError. Call it from a locked OS thread when Pdeathsig is set, and
// keep that thread until Wait returns.
func (l *Launch) Start() (retErr error) {
	if l.spec.PreserveFDs != len(l.Cmd.ExtraFiles) {
		return fmt.Errorf("start sandbox: spec preserves %d fds but %d were given", l.spec.PreserveFDs, len(l.Cmd.ExtraFiles))
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("start sandbox: socketpair: %w", err)
	}
	l.sync = os.NewFile(uintptr(fds[0]), "nsrun-sync")
	child := os.NewFile(uintptr(fds[1]), "nsrun-sync-child")
	syncFD := 3 + len(l.Cmd.ExtraFiles)
	n := len(l.Cmd.ExtraFiles)
	l.Cmd.ExtraFiles = append(l.Cmd.ExtraFiles, child)
	mapping := l.spec.Namespaces.Has(NSUser) && l.join == nil
	switch {
	case l.join != nil:
		l.Cmd.ExtraFiles = append(l.Cmd.ExtraFiles, l.join)
		l.Cmd.Args = l.childArgs(syncFD)
	default:
		l.Cmd.Args = []string{"nsrun", ChildArg, "--sync-fd=" + strconv.Itoa(syncFD)}
		if mapping {
			l.Cmd.Args = append(l.Cmd.Args, "--userns")
		}
	}
	err = l.Cmd.Start()
	child.Close()
	if l.join != nil {
		l.join.Close()
	}
	l.Cmd.ExtraFiles = l.Cmd.ExtraFiles[:n]
	if err != nil {
		l.sync.Close()
		return fmt.Errorf("start sandbox: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = l.Cmd.Process.Kill()
			_ = l.Cmd.Wait()
			l.sync.Close()
		}
	}()
	if mapping {
		if err := l.spec.writeMaps(l.Cmd.Process.Pid); err != nil {
			return fmt.Errorf("start sandbox: %w", err)
		}
		if _, err := l.sync.Write([]byte{mapsWritten}); err != nil {
			return fmt.Errorf("start sandbox: %w", l.childGone(err))
		}
	}
	if err := json.NewEncoder(l.sync).Encode(l.spec); err != nil {
		return fmt.Errorf("start sandbox: send spec: %w", l.childGone(err))
	}
	l.dec = json.NewDecoder(l.sync)
	execing := false
	for {
		var m message
		err := l.dec.Decode(&m)
		if errors.Is(err, io.EOF) && execing {
			l.sync.Close()
			close(l.final)
			return nil
		}
		if err != nil {
			return fmt.Errorf("start sandbox: %w", l.childGone(err))
		}
		switch m.Kind {
		case "warn":
			l.Warnings = append(l.Warnings, m.Text)
		case "exec":
			execing = true
		case "started":
			l.InitPid = m.Pid
			go l.readFinal()
			return nil
		case "error":
			if m.Err == nil {
				return fmt.Errorf("start sandbox: child failed without a reason")
			}
			return m.Err
		default:
			return fmt.Errorf("start sandbox: unexpected message %q", m.Kind)
		}
	}
}

// childGone turns a broken sync socket into the child's exit status.
func (l *Launch) childGone(err error) error {
	_ = l.Cmd.Process.Kill()
	if werr := l.Cmd.Wait(); werr != nil {
		return fmt.Errorf("sandbox child died before the workload ran (%v)", werr)
	}
	return fmt.Errorf("sandbox child ended before the workload ran (%v)", err)
}

// readFinal waits for the init's {exit} message.
func (l *Launch) readFinal() {
	var m message
	if err := l.dec.Decode(&m); err == nil && m.Kind == "exit" {
		l.final <- &m
	}
	close(l.final)
	l.sync.Close()
}

// Wait waits for the sandbox to end and returns the workload's status: its
// exit code, or the signal that killed it. With an init as PID 1 this is the
// status the init saw for the workload; if the init itself was killed from
// outside it is the init's death.
func (l *Launch) Wait() (status int, signaled bool, sig syscall.Signal, err error) {
	werr := l.Cmd.Wait()
	var m *message
	for x := range l.final {
		m = x
	}
	if m != nil {
		if m.Signal != 0 {
			return 128 + m.Signal, true, syscall.Signal(m.Signal), nil
		}
		return m.Status, false, 0, nil
	}
	ws, ok := l.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return 0, false, 0, fmt.Errorf("wait for sandbox: %v", werr)
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), true, ws.Signal(), nil
	}
	return ws.ExitStatus(), false, 0, nil
}
