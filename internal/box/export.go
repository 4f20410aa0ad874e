package box

// InitScript returns the script the box's PID 1 runs before systemd, for
// tests of its guard.
func InitScript() string { return initScript }
