//go:build !amd64

package nsexec

// The default filter is built for x86_64 only so far.
const (
	auditArch = 0
	x32Bit    = 0
	ioctlNr   = 0
)

var syscallNumbers = map[string]uint32{}
