// Command nsrun-bench measures nsrun's launch cost side by side with the
// tools it replaces, in one run, in the systemd box (internal/box).
//
//	nsrun-bench [-nsrun=bin/nsrun] [-runs=50] [-warmup=5] [-conc=1,10,50,100]
//	            [-mem=10] [-results=bench/results] [-device=FILE] [-strace]
//
// It needs root. It copies itself and the nsrun binary into a directory
// shared with a fresh box, runs its inner half there ("nsrun-bench inner",
// which does the timing with no nsenter in the way), prints a report and
// writes it to RESULTS/<date>-<kernel>.txt. -device names a file holding the
// output of the bpfdev device-open benchmark, to include in the report.
//
// Nothing here asserts: it measures and reports.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nsrun/nsrun/internal/fileutil"

	"github.com/nsrun/nsrun/internal/box"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "inner" {
		err = inner(os.Args[2:])
	} else {
		err = outer(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nsrun-bench: %v\n", err)
		os.Exit(1)
	}
}

func outer(args []string) error {
	fs := flag.NewFlagSet("nsrun-bench", flag.ContinueOnError)
	nsrun := fs.String("nsrun", "bin/nsrun", "the nsrun binary to measure")
	runs := fs.Int("runs", 50, "measured runs per scenario")
	warmup := fs.Int("warmup", 5, "unmeasured runs per scenario first")
	conc := fs.String("conc", "1,10,50,100", "scaling levels (sleeping sandboxes started at once)")
	memN := fs.Int("mem", 10, "sandboxes running at once for the memory figure (0: skip)")
	quiet := fs.Int("quiet", 20, "runs per scenario after a quiet spell (0: skip)")
	gap := fs.Duration("gap", 100*time.Millisecond, "the quiet spell before each of those runs")
	results := fs.String("results", "bench/results", "directory for the report file (empty: do not write)")
	device := fs.String("device", "", "file with the bpfdev device-open benchmark's output, to include")
	strace := fs.Bool("strace", false, "also profile one `nsrun --sandbox -- true` with strace -f -c")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The box covers /tmp, /home ... with its own tmpfs; Shares keeps our
	// directory visible at the same path.
	dir, err := os.MkdirTemp("", "nsrun-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := fileutil.CopyExecutable(self, filepath.Join(dir, "nsrun-bench")); err != nil {
		return err
	}
	if err := fileutil.CopyExecutable(*nsrun, filepath.Join(dir, "nsrun")); err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "nsrun-bench: booting the box")
	b, err := box.Start(ctx, box.Options{Shares: []string{dir}})
	if err != nil {
		return err
	}
	defer func() {
		if err := b.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "nsrun-bench: tear down the box: %v\n", err)
		}
	}()
	env := environment(ctx, b)

	fmt.Fprintf(os.Stderr, "nsrun-bench: measuring (%d warm-up + %d runs per scenario, concurrency %s)\n", *warmup, *runs, *conc)
	cmd := b.Command(ctx, filepath.Join(dir, "nsrun-bench"), "inner",
		"-nsrun="+filepath.Join(dir, "nsrun"), fmt.Sprint("-runs=", *runs), fmt.Sprint("-warmup=", *warmup),
		"-conc="+*conc, fmt.Sprint("-mem=", *memN), fmt.Sprint("-quiet=", *quiet), "-gap="+gap.String())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("inner: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var res innerResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return fmt.Errorf("inner printed no result: %v: %q", err, stdout.String())
	}

	var profile string
	if *strace {
		out, err := b.Run(ctx, "strace", "-f", "-c", "-w", "-o", "/dev/stdout", filepath.Join(dir, "nsrun"), "-q", "--sandbox", "--", "true")
		if err != nil {
			profile = "strace failed: " + err.Error()
		} else {
			profile = out
		}
	}
	var deviceOut string
	if *device != "" {
		data, err := os.ReadFile(*device)
		if err != nil {
			return err
		}
		deviceOut = string(data)
	}

	// The scaling plot goes beside the report (or, with no results
	// directory, to the temporary one, which goes).
	base := env.Date.Format("2006-01-02") + "-" + env.Kernel
	plotDir := *results
	if plotDir == "" {
		plotDir = dir
	} else if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return err
	}
	png := filepath.Join(plotDir, base+"-scaling.png")
	plotNote := "scaling plot: " + filepath.Base(png) + " (data: " + filepath.Base(strings.TrimSuffix(png, ".png")+".dat") + ")"
	if err := plotScaling(res, png, fmt.Sprintf("nsrun-bench %s, kernel %s, systemd %s, %s", env.Date.Format("2006-01-02"), env.Kernel, env.Systemd, env.Machine)); err != nil {
		plotNote = "scaling plot: none: " + err.Error()
		fmt.Fprintf(os.Stderr, "nsrun-bench: %s\n", plotNote)
	}

	var rep bytes.Buffer
	report(&rep, env, res, deviceOut, profile, plotNote)
	os.Stdout.Write(rep.Bytes())
	if *results != "" {
		path := filepath.Join(*results, base+".txt")
		if err := os.WriteFile(path, rep.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "nsrun-bench: wrote %s and %s\n", path, png)
	}
	return nil
}

// env describes where the figures come from.
type env struct {
	Date                time.Time
	Host, Machine       string
	Kernel, Systemd     string
	Bwrap, Nsrun, GoVer string
}

func environment(ctx context.Context, b *box.Box) env {
	e := env{Date: time.Now().UTC(), GoVer: goVersion()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		e.Kernel = cstr(u.Release[:])
		e.Host = cstr(u.Nodename[:])
	}
	e.Machine = machine()
	if v, err := b.SystemdVersion(ctx); err == nil {
		e.Systemd = v
	}
	if out, err := b.Run(ctx, "bwrap", "--version"); err == nil {
		e.Bwrap = strings.TrimSpace(out)
	}
	if out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output(); err == nil {
		e.Nsrun = strings.TrimSpace(string(out))
	}
	return e
}

// machine names the CPU, its count and the memory.
func machine() string {
	model, cpus := "unknown CPU", 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				model = strings.TrimSpace(v)
			case "processor":
				cpus++
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%s, %d CPUs%s", model, cpus, mem)
}

func cstr[T int8 | uint8](b []T) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
