//go:build nsrun_monitor

package monitor

import _ "embed"

// program is monitor.c as the Makefile built it (make monitor).
//
//go:embed nsrun-monitor
var program []byte
