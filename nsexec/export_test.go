package nsexec

// SetStartHook makes Start call f with the child's pid right after starting
// it (tests stop the child there).
func SetStartHook(l *Launch, f func(pid int)) { l.startHook = f }
