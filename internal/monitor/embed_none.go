//go:build !nsrun_monitor

package monitor

// program is empty without the build tag nsrun_monitor: nsrun then uses its
// Go and shell fallbacks.
var program []byte
