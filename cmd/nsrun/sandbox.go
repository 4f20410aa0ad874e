package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/nsrun/nsrun/nsexec"
	"github.com/spf13/pflag"
)

// sandboxOptions are the flags of "namespaces and ids", "filesystem" and
// "security" (cli.md). They become an nsexec.Spec.
type sandboxOptions struct {
	unshare    []string
	unshareAll bool
	mapRoot    bool
	mapUser    string
	uidMap     []string
	gidMap     []string
	hostname   string
	net        string
	timeOffset string

	root         string
	overlayRoot  string
	overlayUpper string
	overlayWork  string
	binds        []string
	roBinds      []string
	tmpfs        []string

	sandbox bool
	capAdd  []string
	capDrop []string
	seccomp string
	noInit  bool
}

func (o *sandboxOptions) addFlags(f *pflag.FlagSet) {
	f.StringSliceVar(&o.unshare, "unshare", nil, "namespaces to unshare: user,mount,pid,net,ipc,uts,cgroup,time or all")
	f.BoolVar(&o.unshareAll, "unshare-all", false, "unshare every namespace")
	f.BoolVar(&o.mapRoot, "map-root", false, "map your uid and gid to root inside (the unprivileged default)")
	f.StringVar(&o.mapUser, "map-user", "", "map your uid and gid to UID inside")
	f.StringArrayVar(&o.uidMap, "uid-map", nil, "uid map INSIDE:OUTSIDE:COUNT (repeatable; unprivileged: ranges from /etc/subuid)")
	f.StringArrayVar(&o.gidMap, "gid-map", nil, "gid map INSIDE:OUTSIDE:COUNT (repeatable; unprivileged: ranges from /etc/subgid)")
	f.StringVar(&o.hostname, "hostname", "", "hostname in a private uts namespace")
	f.StringVar(&o.net, "net", "", "network: none (private, only lo) or host")
	f.StringVar(&o.timeOffset, "time-offset", "", "clock offsets of a time namespace: monotonic:SECS,boottime:SECS")
	f.StringVar(&o.root, "root", "", "use DIR as / (read-only)")
	f.StringVar(&o.overlayRoot, "overlay-root", "", "overlay root LOWER[:LOWER...] (upper on a tmpfs discarded at exit)")
	f.StringVar(&o.overlayUpper, "overlay-upper", "", "keep the overlay's changes in DIR (with --overlay-work)")
	f.StringVar(&o.overlayWork, "overlay-work", "", "overlay work directory (same filesystem as --overlay-upper)")
	f.StringArrayVar(&o.binds, "bind", nil, "bind SRC[:DST] read-write (repeatable)")
	f.StringArrayVar(&o.roBinds, "ro-bind", nil, "bind SRC[:DST] read-only (repeatable)")
	f.StringArrayVar(&o.tmpfs, "tmpfs", nil, "mount a tmpfs on DST (repeatable)")
	f.BoolVar(&o.sandbox, "sandbox", false, "the recommended set: all namespaces, overlay root of /, minimal /dev, default seccomp, no capabilities, no network")
	f.StringArrayVar(&o.capAdd, "cap-add", nil, "keep capability CAP (all: every one) (repeatable)")
	f.StringArrayVar(&o.capDrop, "cap-drop", nil, "drop capability CAP again (repeatable)")
	f.StringVar(&o.seccomp, "seccomp", "", "seccomp filter: default, none, or FILE (compiled BPF)")
	f.BoolVar(&o.noInit, "no-init", false, "with a pid namespace, run COMMAND itself as PID 1 (no init reaping orphans)")
}

// enabled reports whether any option asks for the sandbox child.
func (o *sandboxOptions) enabled() bool {
	return len(o.unshare) > 0 || o.unshareAll || o.mapRoot || o.mapUser != "" || len(o.uidMap) > 0 ||
		len(o.gidMap) > 0 || o.hostname != "" || o.net == "none" || o.timeOffset != "" || o.root != "" ||
		o.overlayRoot != "" || len(o.binds) > 0 || len(o.roBinds) > 0 || len(o.tmpfs) > 0 || o.sandbox ||
		len(o.capAdd) > 0 || len(o.capDrop) > 0 || o.seccomp != "" || o.noInit
}

// spec turns the options into a sandbox spec on top of base (argv, env,
// ids, pty, preserved fds and devices, set by run). Errors name the flag.
func (o *sandboxOptions) spec(base nsexec.Spec) (*nsexec.Spec, error) {
	s := base
	var err error
	if o.sandbox {
		s.Namespaces = nsexec.NSAll
		s.Net = nsexec.NetNone
		if o.root == "" && o.overlayRoot == "" {
			s.Overlay = &nsexec.Overlay{Lowers: []string{"/"}}
		}
	}
	if o.unshareAll {
		s.Namespaces = nsexec.NSAll
	}
	if len(o.unshare) > 0 {
		ns, err := nsexec.ParseNamespaces(strings.Join(o.unshare, ","))
		if err != nil {
			return nil, fmt.Errorf("--unshare: %v", err)
		}
		s.Namespaces |= ns
	}
	if err := o.idMaps(&s); err != nil {
		return nil, err
	}
	s.Hostname = o.hostname
	switch o.net {
	case "":
	case "none":
		s.Net = nsexec.NetNone
	case "host":
		if o.sandbox {
			s.Namespaces &^= nsexec.NSNet
		}
		s.Net = nsexec.NetHost
	default:
		return nil, fmt.Errorf("--net=%s: want none or host", o.net)
	}
	if o.timeOffset != "" {
		if s.Time, err = nsexec.ParseTimeOffsets(o.timeOffset); err != nil {
			return nil, fmt.Errorf("--time-offset: %v", err)
		}
	}
	if err := o.filesystem(&s); err != nil {
		return nil, err
	}
	if err := o.security(&s); err != nil {
		return nil, err
	}
	s.NoInit = o.noInit
	s.Normalize(os.Geteuid(), os.Getegid())
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (o *sandboxOptions) idMaps(s *nsexec.Spec) error {
	n := 0
	for _, set := range []bool{o.mapRoot, o.mapUser != "", len(o.uidMap) > 0 || len(o.gidMap) > 0} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("--map-root, --map-user and --uid-map/--gid-map exclude each other")
	}
	switch {
	case o.mapRoot:
		s.UIDMap = nsexec.MapUser(0, uint32(os.Geteuid()))
		s.GIDMap = nsexec.MapUser(0, uint32(os.Getegid()))
	case o.mapUser != "":
		id, err := strconv.ParseUint(o.mapUser, 10, 32)
		if err != nil || id == 1<<32-1 {
			return fmt.Errorf("--map-user=%s: want a number from 0 to 4294967294", o.mapUser)
		}
		s.UIDMap = nsexec.MapUser(uint32(id), uint32(os.Geteuid()))
		s.GIDMap = nsexec.MapUser(uint32(id), uint32(os.Getegid()))
	}
	for _, v := range o.uidMap {
		m, err := nsexec.ParseIDMap(v)
		if err != nil {
			return fmt.Errorf("--uid-map: %v", err)
		}
		s.UIDMap = append(s.UIDMap, m...)
	}
	for _, v := range o.gidMap {
		m, err := nsexec.ParseIDMap(v)
		if err != nil {
			return fmt.Errorf("--gid-map: %v", err)
		}
		s.GIDMap = append(s.GIDMap, m...)
	}
	if len(s.UIDMap) > 0 || len(s.GIDMap) > 0 {
		s.Namespaces |= nsexec.NSUser
	}
	return nil
}

func (o *sandboxOptions) filesystem(s *nsexec.Spec) error {
	if o.root != "" && o.overlayRoot != "" {
		return fmt.Errorf("--root and --overlay-root exclude each other")
	}
	s.Root = o.root
	if o.overlayRoot != "" {
		s.Overlay = &nsexec.Overlay{Lowers: strings.Split(o.overlayRoot, ":")}
	}
	if o.overlayUpper != "" || o.overlayWork != "" {
		if s.Overlay == nil {
			return fmt.Errorf("--overlay-upper and --overlay-work need --overlay-root")
		}
		s.Overlay.Upper, s.Overlay.Work = o.overlayUpper, o.overlayWork
	}
	for _, set := range []struct {
		kind nsexec.MountKind
		vals []string
	}{{nsexec.Bind, o.binds}, {nsexec.ROBind, o.roBinds}, {nsexec.Tmpfs, o.tmpfs}} {
		for _, v := range set.vals {
			m, err := nsexec.ParseMount(set.kind, v)
			if err != nil {
				return err
			}
			s.Mounts = append(s.Mounts, m)
		}
	}
	return nil
}

func (o *sandboxOptions) security(s *nsexec.Spec) error {
	caps := map[string]bool{}
	for _, c := range o.capAdd {
		c = strings.TrimPrefix(strings.ToLower(c), "cap_")
		if c == "all" {
			for _, n := range nsexec.CapNames() {
				caps[n] = true
			}
			continue
		}
		caps[c] = true
	}
	for _, c := range o.capDrop {
		delete(caps, strings.TrimPrefix(strings.ToLower(c), "cap_"))
	}
	for c := range caps {
		s.Caps = append(s.Caps, c)
	}
	sort.Strings(s.Caps)
	switch o.seccomp {
	case "", "default":
		s.Seccomp = nsexec.SeccompDefault
	case "none":
		s.Seccomp = nsexec.SeccompNone
	default:
		prog, err := nsexec.LoadSeccompFile(o.seccomp)
		if err != nil {
			return fmt.Errorf("--seccomp: %v", err)
		}
		s.Seccomp, s.SeccompProgram = nsexec.SeccompFile, prog
	}
	return nil
}
