// Package delegate owns the delegated cgroup v2 subtree below an nsrun scope:
// it verifies delegation, creates the supervisor/ and payload/ leaves,
// enables controllers for them, reads back the limits in force and usage,
// and kills or freezes the subtree.
//
// It never talks D-Bus or BPF, and never writes to the scope's own cgroup
// files: those belong to systemd.
//
// Status: the controller availability check (Controllers, Check), the
// leaves (Setup, Tree), in-place delegation (DelegatedTo), the read-back of
// limits (ReadLimits) and of usage (ReadUsage, Procs) and the sandbox
// layout check (IsSandbox) exist. Freezing is done by the manager
// (FreezeUnit), not here.
package delegate
