package main

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/nsrun/nsrun/internal/monitor"
	"github.com/nsrun/nsrun/nsexec"
)

// handover is nsrun turning itself into the monitor's supervise mode
// (internal/monitor) once the workload runs: the monitor forwards the same
// signals, waits for the workload (or the sandbox init's {exit} message),
// reads the OOM kills, kills what is left in payload/, releases the
// watcher, removes the payload leaf and exits with the same status as
// supervise would. Only what it needs stays open across the execve: 0, 1,
// 2, the watcher's pipe, the sync socket of an init and the sandbox's
// record of restrictions (nsrun exec reads it from this process); the
// device program stays attached without an fd (legacy attach), D-Bus was
// closed after the scope started, and the monitor closes any other fd
// (the preserved ones) itself.
type handover struct {
	mon     *os.File
	argv    []string // up to and without pending=
	tail    []string // "--" and nsrun's own arguments (for ps)
	block   []syscall.Signal
	process *os.Process
}

// newHandover prepares the hand-over, or returns nil when the Go loop
// supervises: no monitor, or a pty relay (it stays Go). With await, the
// sandbox child has just been released (nsexec Launch.SendRelease) and the
// monitor reads its answer itself: {started} and on as usual, or a failed
// start, which it reports as startError would (the message's prefix goes
// along) after it undoes what abandon would.
func newHandover(p *runPlan, pl *placement, w *watcher, cmd *exec.Cmd, launch *nsexec.Launch, relay *ptyRelay, await bool) *handover {
	if relay != nil || !monitor.Available() {
		return nil
	}
	mon, err := monitor.Open()
	if err != nil {
		return nil
	}
	var sigs []syscall.Signal
	for _, s := range forwarded(p.proc.pty || p.spec != nil) {
		sigs = append(sigs, s.(syscall.Signal))
	}
	keep := []*os.File{w.pipe}
	argv := []string{"nsrun", monitor.SuperviseArg,
		"pid=" + strconv.Itoa(cmd.Process.Pid),
		"sigs=" + monitor.List(sigs),
		"payload=" + pl.tree.Payload,
		"supervisor=" + pl.tree.Supervisor,
		"watch=" + strconv.Itoa(int(w.pipe.Fd())),
	}
	if launch != nil {
		hs := launch.Handover()
		if await {
			hs = launch.AwaitHandover()
			argv = append(argv, "await="+strconv.FormatInt(max(hs.Timeout.Milliseconds(), 1), 10),
				"timeout="+hs.Timeout.String(), "errprefix=start "+p.argv[0]+": ")
		}
		var fds []int
		for _, f := range hs.Keep {
			keep = append(keep, f)
			fds = append(fds, int(f.Fd()))
		}
		argv = append(argv, "keep="+monitor.List(fds))
		if hs.Sync != nil {
			keep = append(keep, hs.Sync)
			argv = append(argv, "sync="+strconv.Itoa(int(hs.Sync.Fd())), "syncbuf="+string(hs.Buffered))
		}
	}
	for _, f := range keep {
		if err := monitor.KeepOpen(f); err != nil {
			return nil
		}
	}
	return &handover{
		mon:     mon,
		argv:    argv,
		tail:    append([]string{"--"}, os.Args[1:]...),
		block:   append(sigs, syscall.SIGCHLD),
		process: cmd.Process,
	}
}

// exec runs on the locked thread that started the workload (the
// workload's parent-death signal is that thread's). It blocks the
// forwarded signals there (the mask survives execve and the monitor reads
// them from a signalfd), takes what the Go handlers queued meanwhile
// (passed as pending=), and execs the monitor. It returns only if the exec
// failed, with the thread as it was and the taken signals queued again.
func (h *handover) exec(sigs chan os.Signal) error {
	restore, err := monitor.BlockOnThread(h.block)
	if err != nil {
		return err
	}
	var pending []os.Signal
	var nums []int
drain:
	for {
		select {
		case s := <-sigs:
			pending = append(pending, s)
			nums = append(nums, int(s.(syscall.Signal)))
		default:
			break drain
		}
	}
	argv := append(append(h.argv, "pending="+monitor.List(nums)), h.tail...)
	err = monitor.Exec(h.mon, argv, os.Environ())
	restore()
	for _, s := range pending {
		select {
		case sigs <- s:
		default:
			_ = h.process.Signal(s)
		}
	}
	return err
}
