package nsexec

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"
)

// IDMap is one line of a uid_map or gid_map: Count ids from Inside map to
// the host ids from Outside.
type IDMap struct {
	Inside  uint32
	Outside uint32
	Count   uint32
}

// maxMapLines is the kernel's limit on lines in a uid_map (user_namespaces(7)).
const maxMapLines = 340

// ParseIDMap parses --uid-map/--gid-map values INSIDE:OUTSIDE:COUNT, one or
// more separated by commas.
func ParseIDMap(v string) ([]IDMap, error) {
	var maps []IDMap
	for _, part := range strings.Split(v, ",") {
		f := strings.Split(part, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("id map %q: want INSIDE:OUTSIDE:COUNT", part)
		}
		var n [3]uint32
		for i, s := range f {
			x, err := strconv.ParseUint(s, 10, 32)
			if err != nil || s == "" || s[0] == '+' {
				return nil, fmt.Errorf("id map %q: %q is not a number from 0 to 4294967295", part, s)
			}
			n[i] = uint32(x)
		}
		maps = append(maps, IDMap{Inside: n[0], Outside: n[1], Count: n[2]})
	}
	return maps, nil
}

// MapUser is the --map-user=ID map: ID inside is the caller's id outside.
func MapUser(inside, callerID uint32) []IDMap {
	return []IDMap{{Inside: inside, Outside: callerID, Count: 1}}
}

// checkMaps refuses a map the kernel would refuse, and for an unprivileged
// caller one that names host ids the caller does not own.
func checkMaps(what string, maps []IDMap, owned []IDMap, privileged bool) error {
	if len(maps) > maxMapLines {
		return fmt.Errorf("%s: %d ranges, the kernel takes at most %d", what, len(maps), maxMapLines)
	}
	for i, m := range maps {
		if m.Count == 0 {
			return fmt.Errorf("%s %d:%d:%d: count is 0", what, m.Inside, m.Outside, m.Count)
		}
		if uint64(m.Inside)+uint64(m.Count) > 1<<32-1 || uint64(m.Outside)+uint64(m.Count) > 1<<32-1 {
			return fmt.Errorf("%s %d:%d:%d: range runs past 4294967294", what, m.Inside, m.Outside, m.Count)
		}
		for _, o := range maps[:i] {
			if overlap(m.Inside, m.Count, o.Inside, o.Count) {
				return fmt.Errorf("%s: inside ranges %d:%d and %d:%d overlap", what, o.Inside, o.Count, m.Inside, m.Count)
			}
			if overlap(m.Outside, m.Count, o.Outside, o.Count) {
				return fmt.Errorf("%s: outside ranges %d:%d and %d:%d overlap", what, o.Outside, o.Count, m.Outside, m.Count)
			}
		}
		if privileged {
			continue
		}
		if !covered(m, owned) {
			return fmt.Errorf("%s %d:%d:%d: host ids %d..%d are not yours (your own id or a range in /etc/sub%cid)",
				what, m.Inside, m.Outside, m.Count, m.Outside, uint64(m.Outside)+uint64(m.Count)-1, what[0])
		}
	}
	return nil
}

func overlap(a, an, b, bn uint32) bool {
	return uint64(a) < uint64(b)+uint64(bn) && uint64(b) < uint64(a)+uint64(an)
}

// covered reports whether m's outside range lies in one owned range.
func covered(m IDMap, owned []IDMap) bool {
	for _, o := range owned {
		if m.Outside >= o.Outside && uint64(m.Outside)+uint64(m.Count) <= uint64(o.Outside)+uint64(o.Count) {
			return true
		}
	}
	return false
}

// ownedIDs are the host ids a caller may map: its own id and its ranges in
// file (/etc/subuid or /etc/subgid), found by name or by number.
func ownedIDs(file string, id int, names ...string) []IDMap {
	owned := []IDMap{{Outside: uint32(id), Count: 1}}
	data, err := os.ReadFile(file)
	if err != nil {
		return owned
	}
	return append(owned, parseSubIDs(data, strconv.Itoa(id), names)...)
}

// parseSubIDs reads subid(5) lines NAME_OR_ID:START:COUNT for owner.
func parseSubIDs(data []byte, id string, names []string) []IDMap {
	var out []IDMap
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 || (f[0] != id && !slices.Contains(names, f[0])) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 || start+count > 1<<32-1 {
			continue
		}
		out = append(out, IDMap{Outside: uint32(start), Count: uint32(count)})
	}
	return out
}

func userNames(uid int) []string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return []string{u.Username}
	}
	return nil
}

func groupNames(gid int) []string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return []string{g.Name}
	}
	if u, err := user.LookupId(strconv.Itoa(gid)); err == nil {
		return []string{u.Username} // /etc/subgid is keyed by user name
	}
	return nil
}

// maps returns the uid and gid maps to write. With no map given the
// defaults are: an unprivileged caller becomes root inside (--map-root); root
// is mapped to its first /etc/subuid range when it has one, else inside root
// is the host's nobody (65534): host root is never mapped unless asked
// (--map-root or an explicit map).
func (s *Spec) maps() (uids, gids []IDMap) {
	uids, gids = s.UIDMap, s.GIDMap
	if len(uids) == 0 {
		uids = s.defaultMap("/etc/subuid", s.CallerUID, userNames(s.CallerUID))
	}
	if len(gids) == 0 {
		gids = s.defaultMap("/etc/subgid", s.CallerGID, groupNames(s.CallerGID))
	}
	return uids, gids
}

func (s *Spec) defaultMap(file string, id int, names []string) []IDMap {
	if s.CallerUID != 0 {
		return MapUser(0, uint32(id))
	}
	if sub := parseSubIDsFile(file, id, names); len(sub) > 0 {
		return []IDMap{{Inside: 0, Outside: sub[0].Outside, Count: sub[0].Count}}
	}
	return []IDMap{{Inside: 0, Outside: 65534, Count: 1}}
}

func parseSubIDsFile(file string, id int, names []string) []IDMap {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return parseSubIDs(data, strconv.Itoa(id), names)
}

func (s *Spec) validateMaps() error {
	if !s.Namespaces.Has(NSUser) {
		if len(s.UIDMap) > 0 || len(s.GIDMap) > 0 {
			return fmt.Errorf("id maps need a user namespace")
		}
		return nil
	}
	uids, gids := s.maps()
	priv := s.CallerUID == 0
	if err := checkMaps("uid map", uids, ownedIDs("/etc/subuid", s.CallerUID, userNames(s.CallerUID)...), priv); err != nil {
		return err
	}
	if err := checkMaps("gid map", gids, ownedIDs("/etc/subgid", s.CallerGID, groupNames(s.CallerGID)...), priv); err != nil {
		return err
	}
	if !priv && (needsHelper(uids, s.CallerUID) || needsHelper(gids, s.CallerGID)) {
		for _, h := range []string{"newuidmap", "newgidmap"} {
			if _, err := exec.LookPath(h); err != nil {
				return fmt.Errorf("these id maps need %s (install the uidmap package)", h)
			}
		}
	}
	for _, id := range []struct {
		what string
		v    *uint32
		m    []IDMap
	}{{"--uid", s.UID, uids}, {"--gid", s.GID, gids}} {
		if id.v != nil && !insideMapped(*id.v, id.m) {
			return fmt.Errorf("%s %d: not mapped in the user namespace", id.what, *id.v)
		}
	}
	return nil
}

func insideMapped(id uint32, maps []IDMap) bool {
	for _, m := range maps {
		if id >= m.Inside && uint64(id) < uint64(m.Inside)+uint64(m.Count) {
			return true
		}
	}
	return false
}

// needsHelper says whether an unprivileged caller needs newuidmap or
// newgidmap for maps: anything beyond mapping its own id once.
func needsHelper(maps []IDMap, own int) bool {
	return !(len(maps) == 1 && maps[0].Count == 1 && maps[0].Outside == uint32(own))
}

// formatMap is the uid_map text of maps.
func formatMap(maps []IDMap) string {
	var b strings.Builder
	for _, m := range maps {
		fmt.Fprintf(&b, "%d %d %d\n", m.Inside, m.Outside, m.Count)
	}
	return b.String()
}

// helperArgs are the newuidmap/newgidmap arguments after the pid.
func helperArgs(maps []IDMap) []string {
	var a []string
	for _, m := range maps {
		a = append(a, strconv.FormatUint(uint64(m.Inside), 10), strconv.FormatUint(uint64(m.Outside), 10), strconv.FormatUint(uint64(m.Count), 10))
	}
	return a
}

// writeMaps writes the child's id maps: directly as root, or for an
// unprivileged caller directly when it maps only its own id (setgroups
// denied first, as the kernel demands since 3.19) and through newuidmap and
// newgidmap otherwise, which are killed at deadline.
func (s *Spec) writeMaps(pid int, deadline time.Time) error {
	uids, gids := s.maps()
	proc := "/proc/" + strconv.Itoa(pid)
	priv := s.CallerUID == 0
	if !priv && needsHelper(gids, s.CallerGID) {
		if err := runHelper("newgidmap", pid, gids, deadline); err != nil {
			return err
		}
	} else {
		if !priv {
			if err := os.WriteFile(proc+"/setgroups", []byte("deny"), 0); err != nil {
				return fmt.Errorf("deny setgroups in the user namespace: %w", err)
			}
		}
		if err := os.WriteFile(proc+"/gid_map", []byte(formatMap(gids)), 0); err != nil {
			return fmt.Errorf("write gid map: %w", err)
		}
	}
	if !priv && needsHelper(uids, s.CallerUID) {
		return runHelper("newuidmap", pid, uids, deadline)
	}
	if err := os.WriteFile(proc+"/uid_map", []byte(formatMap(uids)), 0); err != nil {
		return fmt.Errorf("write uid map: %w", err)
	}
	return nil
}

func runHelper(name string, pid int, maps []IDMap, deadline time.Time) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s not found (install the uidmap package): %w", name, err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{strconv.Itoa(pid)}, helperArgs(maps)...)...)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w within the start timeout", name, strings.Join(cmd.Args[1:], " "), ErrStartTimeout)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
