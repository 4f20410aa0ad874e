package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Accel is how qemu runs the guest: "kvm" or "tcg" (software emulation),
// and why.
type Accel struct {
	Name string
	Why  string
}

// DetectAccel picks KVM only when it really works: /dev/kvm can be opened,
// the CPU has hardware virtualisation (vmx or svm), and /dev/kvm is not
// kvm_pvm's (a software hypervisor under which a stock Debian kernel does
// not boot: qemu aborts on MSR 0x10a with -cpu host, and the guest hangs
// with other CPU models). NSRUN_VM_ACCEL=kvm|tcg overrides it.
func DetectAccel() Accel {
	if a := os.Getenv("NSRUN_VM_ACCEL"); a != "" {
		return Accel{Name: a, Why: "NSRUN_VM_ACCEL"}
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	_, pvmErr := os.Stat("/sys/module/kvm_pvm")
	kvmOK := false
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		kvmOK = true
		f.Close()
	}
	return decideAccel(string(cpuinfo), pvmErr == nil, kvmOK)
}

func decideAccel(cpuinfo string, pvm, kvmOpens bool) Accel {
	switch {
	case !kvmOpens:
		return Accel{"tcg", "/dev/kvm cannot be opened"}
	case pvm:
		return Accel{"tcg", "/dev/kvm is kvm_pvm's, under which a Debian kernel does not boot"}
	case !hasVirtFlag(cpuinfo):
		return Accel{"tcg", "the CPU has no vmx or svm flag"}
	}
	return Accel{"kvm", "/dev/kvm works and the CPU has hardware virtualisation"}
}

func hasVirtFlag(cpuinfo string) bool {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
	}
	return false
}

// BootOptions configures one boot.
type BootOptions struct {
	// Share is the host directory the guest mounts (9p tag "nsrun") and
	// whose run.sh it runs; the guest writes run.log and status there.
	Share string
	// Timeout bounds the whole boot, run and poweroff; qemu is killed when
	// it passes.
	Timeout time.Duration
	// Memory in MiB and CPUs of the guest.
	Memory, CPUs int
	// Serial receives the guest's console (CRLF line endings).
	Serial io.Writer
	Accel  Accel
}

// Result is what came back from a boot.
type Result struct {
	// Status is run.sh's exit status, -1 if the guest never reported one.
	Status  int
	Elapsed time.Duration
	// Boot is how long the guest took from qemu's start to run.sh's
	// start (from the "started" file the guest run writes), 0 if unknown.
	Boot time.Duration
}

// Boot starts the image with qemu, waits until the guest has powered off
// or the timeout passes, and reads the status the guest wrote. No qemu
// process outlives it: qemu dies with the caller (Pdeathsig) and is killed
// by pid on timeout.
func Boot(ctx context.Context, img Image, o BootOptions) (Result, error) {
	res := Result{Status: -1}
	if o.Memory == 0 {
		o.Memory = 2048
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Accel.Name == "" {
		o.Accel = DetectAccel()
	}
	if o.Serial == nil {
		o.Serial = io.Discard
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return res, errors.New("qemu-system-x86_64 not found (Debian: qemu-system-x86)")
	}
	os.Remove(filepath.Join(o.Share, "status"))
	args := qemuArgs(img, o)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = o.Serial, o.Serial
	// snapshot=on keeps its overlay in TMPDIR (unlinked at once); never /tmp.
	cmd.Env = append(os.Environ(), "TMPDIR="+filepath.Dir(o.Share))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	res.Elapsed = time.Since(start)
	if ctx.Err() != nil {
		return res, fmt.Errorf("the VM did not power off within %s (qemu killed)", o.Timeout)
	}
	if err != nil {
		return res, fmt.Errorf("qemu: %w", err)
	}
	if st, err := os.Stat(filepath.Join(o.Share, "started")); err == nil {
		if d := st.ModTime().Sub(start); d > 0 {
			res.Boot = d
		}
	}
	data, err := os.ReadFile(filepath.Join(o.Share, "status"))
	if err != nil {
		return res, errors.New("the guest powered off without writing a status (see the serial log)")
	}
	res.Status, err = strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return res, fmt.Errorf("the guest wrote a malformed status %q", data)
	}
	return res, nil
}

func qemuArgs(img Image, o BootOptions) []string {
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-m", strconv.Itoa(o.Memory), "-smp", strconv.Itoa(o.CPUs),
		"-serial", "stdio",
		"-kernel", img.Kernel, "-initrd", img.Initrd,
		"-append", "console=ttyS0 root=/dev/vda rw rootfstype=ext4 quiet loglevel=4 " +
			"systemd.show_status=0 systemd.unified_cgroup_hierarchy=1 panic=-1",
		"-drive", "file=" + img.Disk + ",format=raw,if=virtio,snapshot=on",
		"-virtfs", "local,path=" + o.Share + ",mount_tag=nsrun,security_model=none,id=nsrun",
		"-nic", "none",
	}
	if o.Accel.Name == "kvm" {
		return append(args, "-accel", "kvm", "-cpu", "host")
	}
	return append(args, "-accel", "tcg,thread=multi", "-cpu", "max")
}
