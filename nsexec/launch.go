package nsexec

// The exchange between nsrun (the parent, in supervisor/) and the sandbox
// child (nsrun re-executed as "nsrun __nsrun-sandbox-child --sync-fd=N",
// cloned straight into payload/ and into the new namespaces, or, with
// Hold, cloned early and moved there by the caller before Release). The sync
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
//	byte 'M' ───────────────────────────────► setresuid/gid(0) unless already root;
//	                                          Pdeathsig again, then exit if the
//	                                          parent's end hung up meanwhile
//	                                          (capabilities kept through the
//	                                          unmapped execve as ambient ones)
//	send Spec ──────────────────────────────► decode Spec; refuse the host mount ns
//	                                          unshare time (only with offsets) and cgroup ns
//	                                          (not held)
//	                                          non-dumpable; hostname; lo up
//	                                          mounts, masks, pivot_root
//	           ◄──────────────────────────── {warn} ... (what could not be overlaid)
//	           ◄──────────────────────────── with Spec.Pty: {pty} + the master fd
//	                                          (SCM_RIGHTS; /dev/ptmx of the
//	                                          sandbox, slave on 0, 1, 2)
//	 with Launch.Hold (cloned before its cgroup exists, not into payload/;
//	 "--hold"): the cgroup namespace is not unshared nor cgroup2 mounted yet
//	           ◄──────────────────────────── {held}; blocks reading fd N
//	  (nsrun moves it into payload/, ...)
//	byte 'G' (Release) ─────────────────────► unshare cgroup ns (rooted at payload/),
//	  or the child killed (Abort)              cgroup2 on /sys/fs/cgroup; EOF: exit
//	                                          setsid, ids, caps, no_new_privs, seccomp
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
// step and errno; Start returns it as a *ChildError. The parent reads with
// recvmsg under a deadline (Launch.Timeout, sync.go): a child that never
// answers is killed. The parent also keeps the sealed record of the
// sandbox's restrictions for nsrun exec (restrict.go) until Wait returns.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/nsrun/nsrun/internal/monitor"
	"golang.org/x/sys/unix"
)

// mapsWritten is the byte that tells a child in a new user namespace that
// its id maps are in place.
const mapsWritten = 'M'

// released is the byte that lets a held child (Launch.Hold) go on.
const released = 'G'

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

	// Timeout bounds Start (DefaultStartTimeout when zero), and Release.
	Timeout time.Duration

	// Hold starts a child before its cgroup is ready (nsrun clones it
	// while systemd makes the scope): it sets up its namespaces and root
	// but takes its cgroup namespace and starts the workload only once
	// Release says so, after the caller moved it where it belongs.
	Hold bool
	// Spawned, when set, is called with the child's pid as soon as it
	// exists (before its id maps are written).
	Spawned func(pid int)
	held    bool

	spec   *Spec
	sync   *syncConn // parent end
	pty    *os.File  // the pty master the child sent (Spec.Pty)
	record *os.File  // the sealed record of the restrictions (restrict.go)

	startHook func(pid int) // tests: called right after the child is started

	join      *os.File                  // Join: the nsrun binary, passed after the sync fd
	childArgs func(syncFD int) []string // Join: nsenter's arguments
	dec       *json.Decoder

	final    chan *message // the {exit} message of an init; closed when there is none
	initRuns bool          // an init runs: its {exit} is still to come on sync
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
// *ChildError. The whole exchange is bounded by Timeout: a child that does
// not answer in time (stopped, stuck) is killed and Start returns an error
// wrapping ErrStartTimeout. Call it from a locked OS thread when Pdeathsig
// is set, and keep that thread until Wait returns.
//
// With Hold, Start returns once the child is set up but has neither its
// cgroup namespace nor the workload (see Hold); then Release or Abort, from
// the same goroutine. A held Start that fails leaves the child killed but
// not reaped, so its pid cannot be reused before Abort (or Wait) reaps it.
func (l *Launch) Start() (retErr error) {
	if l.spec.PreserveFDs != len(l.Cmd.ExtraFiles) {
		return fmt.Errorf("start sandbox: spec preserves %d fds but %d were given", l.spec.PreserveFDs, len(l.Cmd.ExtraFiles))
	}
	if l.join == nil {
		// What nsrun exec must reproduce, kept by this process for as
		// long as the sandbox runs (restrict.go).
		rec, err := recordRestrictions(l.spec)
		if err != nil {
			return fmt.Errorf("start sandbox: %w", err)
		}
		l.record = rec
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.closeRecord()
		return fmt.Errorf("start sandbox: socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "nsrun-sync-child")
	if l.sync, err = newSyncConn(fds[0]); err != nil {
		child.Close()
		l.closeRecord()
		return fmt.Errorf("start sandbox: sync socket: %w", err)
	}
	n := len(l.Cmd.ExtraFiles)
	if l.join == nil && l.spec.Namespaces.Has(NSPID) && !l.spec.NoInit && monitor.Available() {
		// An init becomes the monitor from this fd (init.go). It goes
		// before the sync fd: the child closes every fd after that one.
		if mon, err := monitor.Open(); err == nil {
			l.Cmd.Env = append(l.Cmd.Env[:len(l.Cmd.Env):len(l.Cmd.Env)], monitorFDEnv+"="+strconv.Itoa(3+n))
			l.Cmd.ExtraFiles = append(l.Cmd.ExtraFiles, mon)
		}
	}
	syncFD := 3 + len(l.Cmd.ExtraFiles)
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
		if l.Hold {
			l.Cmd.Args = append(l.Cmd.Args, "--hold")
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
		l.closeRecord()
		return fmt.Errorf("start sandbox: %w", err)
	}
	defer func() {
		if retErr != nil {
			l.cleanUp()
		}
	}()
	if l.startHook != nil {
		l.startHook(l.Cmd.Process.Pid)
	}
	if l.Spawned != nil {
		l.Spawned(l.Cmd.Process.Pid)
	}
	timeout := l.timeout()
	deadline := time.Now().Add(timeout)
	l.sync.setDeadline(deadline)
	if mapping {
		if err := l.spec.writeMaps(l.Cmd.Process.Pid, deadline); err != nil {
			return fmt.Errorf("start sandbox: %w", err)
		}
		if _, err := l.sync.Write([]byte{mapsWritten}); err != nil {
			return l.broken("write the id maps", err, timeout)
		}
	}
	if err := json.NewEncoder(l.sync).Encode(l.spec); err != nil {
		return l.broken("send the spec", err, timeout)
	}
	l.dec = json.NewDecoder(l.sync)
	return l.exchange(timeout)
}

// Release lets a held child (Hold, after Start returned) go on: it takes
// its cgroup namespace where it now is, mounts its cgroup2, and starts the
// workload. Release returns as Start does without Hold, under a new
// Timeout; a failure kills and reaps the child. It is SendRelease, then
// AwaitStart.
func (l *Launch) Release() error {
	if err := l.SendRelease(); err != nil {
		return err
	}
	return l.AwaitStart()
}

// SendRelease is the first half of Release: it sends the release and
// starts the Timeout. The child's answer is then read by AwaitStart, or by
// whoever takes AwaitHandover (the monitor, which nsrun becomes).
func (l *Launch) SendRelease() (retErr error) {
	if !l.Hold || !l.held {
		return fmt.Errorf("start sandbox: release of a child that is not held")
	}
	// From here on the child is an ordinary one: reaped on failure.
	l.held, l.Hold = false, false
	defer func() {
		if retErr != nil {
			l.cleanUp()
		}
	}()
	l.sync.setDeadline(time.Now().Add(l.timeout()))
	if _, err := l.sync.Write([]byte{released}); err != nil {
		return l.broken("release the sandbox", err, l.timeout())
	}
	return nil
}

// AwaitStart is the second half of Release: it waits until the workload
// runs, or the child failed.
func (l *Launch) AwaitStart() (retErr error) {
	defer func() {
		if retErr != nil {
			l.cleanUp()
		}
	}()
	return l.exchange(l.timeout())
}

// Abort kills a held child (Hold) that is not to be released, or reaps one
// whose Start failed, and releases what the launch holds. Call it from the
// goroutine that called Start.
func (l *Launch) Abort() {
	if l.Cmd.Process == nil || l.Cmd.ProcessState != nil {
		return
	}
	l.Hold = false // reap now
	l.held = false
	l.cleanUp()
}

// cleanUp kills the child and closes what the launch holds; it reaps the
// child unless it is held (Hold), whose pid must stay taken until Abort.
func (l *Launch) cleanUp() {
	_ = l.Cmd.Process.Kill()
	if !l.Hold && l.Cmd.ProcessState == nil {
		_ = l.Cmd.Wait()
	}
	if l.sync != nil {
		l.sync.Close()
	}
	l.closeRecord()
	if l.pty != nil {
		l.pty.Close()
		l.pty = nil
	}
}

func (l *Launch) timeout() time.Duration {
	if l.Timeout <= 0 {
		return DefaultStartTimeout
	}
	return l.Timeout
}

// exchange reads the child's messages until the workload runs (or, for a
// held child, until it is set up), or the child failed.
func (l *Launch) exchange(timeout time.Duration) error {
	execing := false
	for {
		var m message
		err := l.dec.Decode(&m)
		if errors.Is(err, io.EOF) && execing {
			if l.spec.Pty && l.pty == nil {
				return fmt.Errorf("start sandbox: the child sent no pty master")
			}
			l.sync.Close()
			close(l.final)
			return nil
		}
		if err != nil {
			return l.broken("wait for the workload to start", err, timeout)
		}
		switch m.Kind {
		case "warn":
			l.Warnings = append(l.Warnings, m.Text)
		case "pty":
			fd := l.sync.takeFD()
			if fd < 0 || l.pty != nil {
				if fd >= 0 {
					unix.Close(fd)
				}
				return fmt.Errorf("start sandbox: the child sent no pty master, or two")
			}
			l.pty = os.NewFile(uintptr(fd), "pty master")
		case "held":
			if !l.Hold || l.held {
				return fmt.Errorf("start sandbox: unexpected message %q", m.Kind)
			}
			l.held = true
			l.sync.setDeadline(time.Time{})
			return nil
		case "exec":
			execing = true
		case "started":
			if l.spec.Pty && l.pty == nil {
				return fmt.Errorf("start sandbox: the child sent no pty master")
			}
			l.InitPid = m.Pid
			l.sync.setDeadline(time.Time{})
			l.initRuns = true // Wait (or the taker of a Handover) reads {exit}
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

// Pty hands over the master of the pty the child allocated in the
// sandbox's own devpts (Spec.Pty); nil without one. Valid after Start; the
// caller owns (and closes) it.
func (l *Launch) Pty() *os.File {
	f := l.pty
	l.pty = nil
	return f
}

// broken turns a failed exchange into an error: a passed deadline into
// ErrStartTimeout (the child is killed by Start's cleanup), anything else
// into the child's exit status.
func (l *Launch) broken(step string, err error, timeout time.Duration) error {
	if isTimeout(err) {
		return fmt.Errorf("start sandbox: %s: %w within %v (stopped or stuck); killed it", step, ErrStartTimeout, timeout)
	}
	return fmt.Errorf("start sandbox: %s: %w", step, l.childGone(err))
}

// childGone turns a broken sync socket into the child's exit status. A
// held child's is read without reaping it (Hold).
func (l *Launch) childGone(err error) error {
	_ = l.Cmd.Process.Kill()
	if l.Hold {
		var info unix.Siginfo
		if werr := unix.Waitid(unix.P_PID, l.Cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); werr == nil {
			return fmt.Errorf("sandbox child died before the workload ran (%s)", describeSiginfo(&info))
		}
		return fmt.Errorf("sandbox child ended before the workload ran (%v)", err)
	}
	if werr := l.Cmd.Wait(); werr != nil {
		return fmt.Errorf("sandbox child died before the workload ran (%v)", werr)
	}
	return fmt.Errorf("sandbox child ended before the workload ran (%v)", err)
}

// describeSiginfo says how a child ended, as os.ProcessState does.
func describeSiginfo(info *unix.Siginfo) string {
	// The siginfo of a child's death: si_code, then si_status (exit code or
	// signal) after si_pid and si_uid.
	code := info.Code
	raw := unsafe.Slice((*byte)(unsafe.Pointer(info)), unsafe.Sizeof(*info))
	status := int32(binary.NativeEndian.Uint32(raw[24:28]))
	switch code {
	case 1: // CLD_EXITED
		return fmt.Sprintf("exit status %d", status)
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		return "signal: " + unix.SignalName(syscall.Signal(status))
	}
	return fmt.Sprintf("code %d, status %d", code, status)
}

func (l *Launch) closeRecord() {
	if l.record != nil {
		l.record.Close()
		l.record = nil
	}
}

// Handover is what a process that takes over waiting for a started sandbox
// in place of Wait (nsrun's monitor, after an execve) must be given: the
// fds to keep open (clear close-on-exec on them) and, with an init, the
// sync socket on which its {exit} message comes, as one JSON object a line
// (encoding/json's), after Buffered, which this side read and did not
// decode. The taker reads {"kind":"exit","status":N} or {...,"signal":N}
// once the child ended (Wait's semantics: that status wins over the
// child's own), and keeps Keep (the record of restrictions nsrun exec
// reads, restrict.go) open until the sandbox ends.
type Handover struct {
	Sync     *os.File // nil without an init
	Buffered []byte
	Keep     []*os.File
	// Timeout is, from AwaitHandover, how long the child may take to
	// answer the release.
	Timeout time.Duration
}

// AwaitHandover is Handover for a taker that also reads the child's answer
// to the release (after SendRelease, instead of AwaitStart): the sync
// socket comes whether or not an init will run, with the start Timeout
// (the taker, prepared before the release, counts it from when it takes
// over). The answer is one of the messages exchange reads:
// {started} (an init runs: its {exit} follows), {exec} and the socket's end
// (the workload itself runs), or {error}.
func (l *Launch) AwaitHandover() Handover {
	h := Handover{Sync: l.sync.f, Timeout: l.timeout()}
	if l.record != nil {
		h.Keep = append(h.Keep, l.record)
	}
	if l.dec != nil {
		h.Buffered, _ = io.ReadAll(l.dec.Buffered())
	}
	return h
}

// Handover returns what the taker of the wait needs (see Handover). Call it
// after Start, instead of Wait.
func (l *Launch) Handover() Handover {
	var h Handover
	if l.record != nil {
		h.Keep = append(h.Keep, l.record)
	}
	if l.initRuns {
		h.Sync = l.sync.f
		if l.dec != nil {
			h.Buffered, _ = io.ReadAll(l.dec.Buffered())
		}
	}
	return h
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
	if l.initRuns {
		l.initRuns = false
		go l.readFinal()
	}
	werr := l.Cmd.Wait()
	l.closeRecord()
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
