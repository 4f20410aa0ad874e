// Package units talks to systemd over D-Bus for nsrun: it opens the
// connections, starts transient scope units, waits for their jobs, checks
// unit and slice names, and parses "Name=Value" properties into what
// StartTransientUnit expects. It leaves all cgroup work to systemd: it never
// touches cgroupfs, BPF programs or namespaces itself.
package units
