package monitor

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nsrun/nsrun/internal/testutil"
)

// TestWatch: the watcher kills (writes "1" to its fd 4) when its pipe ends
// without "d", and does nothing after "d".
func TestWatch(t *testing.T) {
	if !Embedded() {
		testutil.Skip(t, "built without the monitor (make monitor, -tags nsrun_monitor)")
	}
	mon, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, write, want string
	}{{"EOF", "", "1\n"}, {"released", "d\n", ""}, {"released without newline", "d", ""}, {"other", "x\n", "1\n"}} {
		t.Run(tc.name, func(t *testing.T) {
			killFile := filepath.Join(t.TempDir(), "cgroup.kill")
			kill, err := os.Create(killFile)
			if err != nil {
				t.Fatal(err)
			}
			defer kill.Close()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd := &exec.Cmd{Path: Path(mon), Args: []string{WatchArg}, Env: []string{},
				ExtraFiles: []*os.File{r, kill}, SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			if _, err := w.WriteString(tc.write); err != nil {
				t.Fatal(err)
			}
			w.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("watcher: %v", err)
			}
			got, _ := os.ReadFile(killFile)
			if string(got) != tc.want {
				t.Errorf("wrote %q to cgroup.kill, want %q", got, tc.want)
			}
		})
	}
}
