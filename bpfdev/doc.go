// Package bpfdev turns device rules into a BPF_PROG_TYPE_CGROUP_DEVICE
// program: it parses and normalises rules, expands device sets, compiles
// them to instructions, and attaches, replaces, queries and decodes the
// program on a cgroup.
//
// It never talks D-Bus and never enters namespaces.
//
// Status: not implemented yet (issue "devices"); nsrun has no --device flag
// until then.
package bpfdev
