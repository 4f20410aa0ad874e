package bpfdev

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ListNodes lists the device nodes below devDir (a sandbox's /dev seen from
// outside, e.g. /proc/PID/root/dev), as paths below /dev. Under the
// unprivileged mechanism these nodes are exactly what the sandbox can open.
// Symlinks are not followed; the devpts and mqueue mounts are listed like
// any directory.
func ListNodes(devDir string) ([]Node, error) {
	var out []Node
	err := filepath.WalkDir(devDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == devDir {
				return err
			}
			return nil // a directory the caller may not read
		}
		// The directory entry's type is the file's below any mount:
		// a node bind-mounted over an empty file reads as a file. Only
		// lstat sees the node.
		if d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil
		}
		ft := st.Mode & unix.S_IFMT
		if ft != unix.S_IFCHR && ft != unix.S_IFBLK {
			return nil
		}
		rel, _ := filepath.Rel(devDir, p)
		n := Node{Path: "/dev/" + rel, Type: Block, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}
		if ft == unix.S_IFCHR {
			n.Type = Char
		}
		out = append(out, n)
		return nil
	})
	if err != nil {
		return nil, &os.PathError{Op: "list device nodes", Path: devDir, Err: err}
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// MarshalText gives the entry as Entry.String does, for JSON.
func (e Entry) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// MarshalJSON gives {"path","type","major","minor","access"}.
func (n Node) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Path   string `json:"path"`
		Type   string `json:"type"`
		Major  uint32 `json:"major"`
		Minor  uint32 `json:"minor"`
		Access string `json:"access,omitempty"`
	}{n.Path, n.Type.Letter(), n.Major, n.Minor, strings.Trim(n.Access.String(), "-")})
}
