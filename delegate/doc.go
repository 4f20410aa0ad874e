// Package delegate owns the delegated cgroup v2 subtree below an nsrun scope:
// it verifies delegation, creates the supervisor/ and payload/ leaves,
// enables controllers for them, reads back the limits in force and usage,
// and kills or freezes the subtree.
//
// It never talks D-Bus or BPF, and never writes to the scope's own cgroup
// files: those belong to systemd.
//
// Status: the controller availability check (Controllers, Check) and the
// read-back of usage (ReadUsage, Procs) and of the sandbox layout
// (IsSandbox) exist; the leaves, read-back of limits and kill/freeze come
// with the issue "scopes". Until then nsrun runs its workload in the
// scope's cgroup.
package delegate
