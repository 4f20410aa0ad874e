package nsexec

// SetStartHook makes Start call f with the child's pid right after starting
// it (tests stop the child there).
func SetStartHook(l *Launch, f func(pid int)) { l.startHook = f }

// CloseSync closes the parent's end of the sync socket: a parent that goes
// away without releasing a held child (Hold), without dying itself.
func CloseSync(l *Launch) { l.sync.Close() }
