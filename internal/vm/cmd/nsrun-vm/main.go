// Command nsrun-vm runs nsrun's VM tier (make test-vm): it builds or reuses
// the cached guest image, shares the freshly built nsrun and guest test
// binaries in, boots the guest, and brings back the tests' results as
// `go test -json` and an exit status.
//
//	nsrun-vm image                       build the image if the recipe changed
//	nsrun-vm test -nsrun BIN -tests BIN  run the VM tests
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nsrun/nsrun/internal/fileutil"

	"github.com/nsrun/nsrun/internal/vm"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	status := 0
	switch os.Args[1] {
	case "image":
		err = image(ctx)
	case "test":
		status, err = test(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun-vm:", err)
		os.Exit(1)
	}
	os.Exit(status)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: nsrun-vm image | nsrun-vm test -nsrun BIN -tests BIN [-json FILE] [-timeout D] [-run REGEXP]")
	os.Exit(2)
}

func image(ctx context.Context) error {
	start := time.Now()
	img, built, err := vm.EnsureImage(ctx, os.Stderr)
	if err != nil {
		return err
	}
	if built {
		fmt.Printf("nsrun-vm: image built in %s: %s\n", time.Since(start).Round(time.Second), img.Dir)
	} else {
		fmt.Printf("nsrun-vm: image up to date: %s\n", img.Dir)
	}
	return nil
}

func test(ctx context.Context, args []string) (int, error) {
	fl := flag.NewFlagSet("test", flag.ExitOnError)
	nsrunBin := fl.String("nsrun", "", "the nsrun binary to test")
	testsBin := fl.String("tests", "", "the guest test binary (go test -c -tags vmguest ./internal/vm/guest)")
	jsonOut := fl.String("json", "", "write the results as go test -json here")
	serialOut := fl.String("serial", "", "write the guest's console here")
	timeout := fl.Duration("timeout", 40*time.Minute, "hard bound on boot, tests and poweroff")
	run := fl.String("run", "", "run only the guest tests matching this regexp")
	dropIn := fl.String("delegate-dropin", "contrib/systemd/user@.service.d/delegate.conf", "the delegate drop-in the tests install in the guest")
	fl.Parse(args)
	if *nsrunBin == "" || *testsBin == "" {
		usage()
	}

	t0 := time.Now()
	img, built, err := vm.EnsureImage(ctx, os.Stderr)
	if err != nil {
		return 0, err
	}
	imageTime := time.Since(t0)
	if built {
		fmt.Printf("nsrun-vm: image built in %s\n", imageTime.Round(time.Second))
	} else {
		fmt.Printf("nsrun-vm: cached image %s\n", img.Dir)
	}

	// The shared folder sits beside the cache, outside /tmp and the checkout.
	cache, err := vm.CacheDir()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(cache, vm.RunsDir), 0o755); err != nil {
		return 0, err
	}
	share, err := os.MkdirTemp(filepath.Join(cache, vm.RunsDir), "run-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(share)
	if err := os.Chmod(share, 0o755); err != nil {
		return 0, err
	}
	for src, dst := range map[string]string{*nsrunBin: "nsrun", *testsBin: "nsrun-vm.test", *dropIn: "delegate.conf"} {
		if err := fileutil.CopyExecutable(src, filepath.Join(share, dst)); err != nil {
			return 0, err
		}
	}
	if err := os.WriteFile(filepath.Join(share, "run.sh"), []byte(runScript(*run, *timeout)), 0o755); err != nil {
		return 0, err
	}

	var serial io.Writer = io.Discard
	var serialBuf bytes.Buffer
	serial = &serialBuf
	accel := vm.DetectAccel()
	fmt.Printf("nsrun-vm: booting with %s (%s), timeout %s\n", accel.Name, accel.Why, *timeout)
	res, bootErr := vm.Boot(ctx, img, vm.BootOptions{Share: share, Timeout: *timeout, Serial: serial, Accel: accel})
	if *serialOut != "" {
		os.WriteFile(*serialOut, bytes.ReplaceAll(serialBuf.Bytes(), []byte("\r\n"), []byte("\n")), 0o644)
	}

	raw, _ := os.ReadFile(filepath.Join(share, "results.txt"))
	jsonData, convErr := toJSON(raw)
	if *jsonOut != "" && convErr == nil {
		if err := os.WriteFile(*jsonOut, jsonData, 0o644); err != nil {
			return 0, err
		}
	}
	failed := summarize(jsonData)
	if log, err := os.ReadFile(filepath.Join(share, "run.log")); err == nil && len(log) > 0 && (res.Status != 0 || bootErr != nil) {
		fmt.Printf("--- guest run.log ---\n%s", log)
	}
	fmt.Printf("nsrun-vm: image %s, boot %s, whole VM run %s\n",
		ifBuilt(built, imageTime), res.Boot.Round(100*time.Millisecond), res.Elapsed.Round(100*time.Millisecond))
	if bootErr != nil {
		tail := lastLines(strings.ReplaceAll(serialBuf.String(), "\r\n", "\n"), 40)
		return 0, fmt.Errorf("%w\n--- last lines of the guest console ---\n%s", bootErr, tail)
	}
	if convErr != nil {
		return 0, fmt.Errorf("no test results from the guest: %w", convErr)
	}
	if res.Status != 0 || failed {
		fmt.Printf("nsrun-vm: FAIL (guest status %d)\n", res.Status)
		return 1, nil
	}
	fmt.Println("nsrun-vm: ok")
	return 0, nil
}

func ifBuilt(built bool, d time.Duration) string {
	if built {
		return "built in " + d.Round(time.Second).String()
	}
	return "cached"
}

// runScript is what the guest runs from the shared folder as root: install
// the binaries on the guest's (snapshot) disk, run the tests, keep their
// -test.v=test2json output for the host to convert.
func runScript(run string, timeout time.Duration) string {
	testTimeout := timeout - 5*time.Minute
	if testTimeout < time.Minute {
		testTimeout = timeout
	}
	runArg := ""
	if run != "" {
		runArg = " -test.run " + shellQuote(run)
	}
	return `#!/bin/sh
set -u
share=$1
install -m 0755 "$share/nsrun" /usr/local/bin/nsrun
install -m 0755 "$share/nsrun-vm.test" /usr/local/bin/nsrun-vm.test
install -D -m 0644 "$share/delegate.conf" /usr/local/share/nsrun/delegate.conf
echo "guest: $(uname -r), systemd $(systemctl show -p Version --value), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
cd /var/tmp
NSRUN_BIN=/usr/local/bin/nsrun NSRUN_TEST_STRICT=1 /usr/local/bin/nsrun-vm.test -test.v=test2json -test.count=1 -test.timeout ` + testTimeout.String() + runArg + ` > "$share/results.txt" 2>&1
`
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// toJSON converts -test.v=test2json output into go test -json with the Go
// toolchain's test2json (the guest has no Go).
func toJSON(raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return nil, errors.New("the guest wrote no results")
	}
	cmd := exec.Command("go", "tool", "test2json", "-t", "-p", "github.com/nsrun/nsrun/internal/vm/guest")
	cmd.Stdin = bytes.NewReader(raw)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go tool test2json: %w", err)
	}
	return out.Bytes(), nil
}

// summarize prints each test's result and its output when it failed, and
// reports whether any test failed.
func summarize(data []byte) bool {
	type event struct {
		Action  string
		Test    string
		Output  string
		Elapsed float64
	}
	output := map[string]*strings.Builder{}
	failed := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		switch e.Action {
		case "output":
			b := output[e.Test]
			if b == nil {
				b = &strings.Builder{}
				output[e.Test] = b
			}
			b.WriteString(e.Output)
			// Measured figures are shown for passing tests too.
			if i := strings.Index(e.Output, "figure: "); i >= 0 {
				fmt.Printf("     %s (%s)\n", strings.TrimSpace(e.Output[i+len("figure: "):]), e.Test)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				if e.Action == "fail" {
					failed = true
					if b := output[""]; b != nil {
						fmt.Print(b.String())
					}
				}
				continue
			}
			fmt.Printf("%-4s %s (%.1fs)\n", strings.ToUpper(e.Action), e.Test, e.Elapsed)
			if e.Action != "pass" {
				failed = true
				if b := output[e.Test]; b != nil {
					fmt.Print(indent(b.String()))
				}
			}
		}
	}
	return failed
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
