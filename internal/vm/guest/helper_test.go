//go:build vmguest

package guest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// helper is the workload side: this binary started by nsrun with
// NSRUN_VM_HELPER=mode. It prints what it saw on stdout and exits 0 unless
// the kernel stops it.
//
//	alloc MIB        allocate and touch MIB MiB, one MiB at a time
//	forkloop N HOLD  start up to N sleeping children, report how many
//	                 started, keep them HOLD seconds
//	spin SECONDS     burn CPU for SECONDS of wall time, report the share of
//	                 one CPU it got
func helper(mode string) int {
	arg := func(i int) int {
		if len(os.Args) <= i {
			fmt.Fprintf(os.Stderr, "helper %s: missing argument %d\n", mode, i)
			os.Exit(2)
		}
		n, err := strconv.Atoi(os.Args[i])
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
			os.Exit(2)
		}
		return n
	}
	switch mode {
	case "alloc":
		mib := arg(1)
		var keep [][]byte
		for i := 0; i < mib; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
		return 0
	case "forkloop":
		n, hold := arg(1), arg(2)
		var kids []*exec.Cmd
		failed := 0
		for i := 0; i < n; i++ {
			c := exec.Command("/bin/sleep", "600")
			if err := c.Start(); err != nil {
				failed++
				continue
			}
			kids = append(kids, c)
		}
		fmt.Printf("started %d failed %d\n", len(kids), failed)
		time.Sleep(time.Duration(hold) * time.Second)
		for _, c := range kids {
			c.Process.Kill()
			c.Wait()
		}
		return 0
	case "spin":
		secs := arg(1)
		start := time.Now()
		before := cpuTime()
		x := 0
		for time.Since(start) < time.Duration(secs)*time.Second {
			for i := 0; i < 100000; i++ {
				x += i
			}
		}
		used := cpuTime() - before
		fmt.Printf("cpu %.4f (%d)\n", used.Seconds()/time.Since(start).Seconds(), x%2)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
