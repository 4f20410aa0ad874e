package units

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Profiles: nsrun settings in unit-file syntax, found and merged the way
// systemd finds and merges a unit file and its drop-ins.
//
//   - NAME.conf is looked up in the search path (ProfileDirs); the first
//     directory that has it wins and masks the others, as for unit files.
//     A main file that is empty or a symlink to /dev/null masks the profile.
//   - Drop-ins NAME.conf.d/*.conf are collected from every directory of the
//     search path. A drop-in masks one of the same file name in a directory
//     of lower priority; the survivors are applied in the order of their
//     file names, whatever directory they are in (systemd's
//     conf_files_list). Hidden files and names not ending in ".conf" are
//     ignored, as systemd ignores them.
//   - Assignments are applied in order: the main file, then each drop-in. A
//     later assignment of a single-valued key wins; a list key accumulates
//     and an empty assignment resets it (Merge).

// ProfileSuffix is the suffix of a profile's main file; drop-ins live in
// NAME + ProfileSuffix + ".d".
const ProfileSuffix = ".conf"

// ErrProfileNotFound: no directory of the search path has the profile.
var ErrProfileNotFound = errors.New("profile not found")

// ErrProfileMasked: the profile's main file is empty or links to /dev/null.
var ErrProfileMasked = errors.New("profile is masked")

// ProfileDirs returns the profile search path for a manager, highest
// priority first, in the order systemd uses for unit files
// (systemd-analyze unit-paths): for the system manager /etc, /run,
// /usr/local/lib, /usr/lib; for a user manager the user's own configuration
// directory (configHome, i.e. $XDG_CONFIG_HOME or ~/.config) comes first.
// An empty configHome leaves it out.
func ProfileDirs(m Manager, configHome string) []string {
	dirs := []string{"/etc/nsrun/profiles", "/run/nsrun/profiles", "/usr/local/lib/nsrun/profiles", "/usr/lib/nsrun/profiles"}
	if m == User && configHome != "" {
		dirs = append([]string{filepath.Join(configHome, "nsrun", "profiles")}, dirs...)
	}
	return dirs
}

// Profile is a profile's files and assignments before merging.
type Profile struct {
	Name string
	// Files are the main file, then the drop-ins in the order applied
	// (masking ones, empty or /dev/null, included, as systemctl cat lists
	// them).
	Files []string
	// Assignments are every file's assignments in the order applied.
	Assignments []Assignment
}

// ValidProfileName checks a profile name given to --profile=NAME: unit-name
// characters only, so that a name can never reach outside the search path
// and can be a template instance (nsrun@NAME.service).
func ValidProfileName(name string) error {
	if name == "" {
		return errors.New("empty profile name")
	}
	if len(name) > 200 {
		return fmt.Errorf("profile name %.20q... too long", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("invalid profile name %q: starts with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isNameChar(c) && c != '@' {
			return fmt.Errorf("invalid profile name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// LoadProfile finds the profile NAME (with or without ProfileSuffix) in dirs
// and reads it with its drop-ins.
func LoadProfile(name string, dirs []string) (*Profile, error) {
	name = strings.TrimSuffix(name, ProfileSuffix)
	if err := ValidProfileName(name); err != nil {
		return nil, err
	}
	main := ""
	for _, d := range dirs {
		p := filepath.Join(d, name+ProfileSuffix)
		if _, err := os.Lstat(p); err == nil {
			main = p
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("look up profile %s: %w", name, err)
		}
	}
	if main == "" {
		return nil, fmt.Errorf("%w: %s (searched %s)", ErrProfileNotFound, name, strings.Join(dirs, ", "))
	}
	dropDirs := make([]string, len(dirs))
	for i, d := range dirs {
		dropDirs[i] = filepath.Join(d, name+ProfileSuffix+".d")
	}
	return readProfile(name, main, dropDirs)
}

// LoadProfileFile reads the profile in file path and the drop-ins in
// path + ".d" beside it.
func LoadProfileFile(path string) (*Profile, error) {
	name := strings.TrimSuffix(filepath.Base(path), ProfileSuffix)
	return readProfile(name, path, []string{path + ".d"})
}

func readProfile(name, main string, dropDirs []string) (*Profile, error) {
	data, masked, err := readProfileFile(main)
	if err != nil {
		return nil, err
	}
	if masked {
		return nil, fmt.Errorf("%w: %s (%s)", ErrProfileMasked, name, main)
	}
	p := &Profile{Name: name, Files: []string{main}}
	if p.Assignments, err = ParseProfile(main, data); err != nil {
		return nil, err
	}
	dropins, err := DropIns(dropDirs)
	if err != nil {
		return nil, err
	}
	for _, f := range dropins {
		data, masked, err := readProfileFile(f)
		if err != nil {
			return nil, err
		}
		p.Files = append(p.Files, f)
		if masked {
			continue // masks the same name below; adds nothing
		}
		as, err := ParseProfile(f, data)
		if err != nil {
			return nil, err
		}
		p.Assignments = append(p.Assignments, as...)
	}
	return p, nil
}

// readProfileFile reads a profile file; masked is true for an empty file or
// /dev/null (a symlink to it), as systemd's null_or_empty() decides.
func readProfileFile(path string) (data []byte, masked bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("read profile: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("read profile: %w", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && st.Mode()&fs.ModeCharDevice != 0 && sys.Rdev == unix.Mkdev(1, 3) {
		return nil, true, nil
	}
	if !st.Mode().IsRegular() {
		return nil, false, &ProfileError{Source: Source{File: path}, Err: errors.New("not a regular file")}
	}
	if st.Size() > maxProfileSize {
		return nil, false, &ProfileError{Source: Source{File: path}, Err: fmt.Errorf("file larger than %d bytes", maxProfileSize)}
	}
	data = make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, false, fmt.Errorf("read profile: %w", err)
	}
	return data, len(data) == 0, nil
}

// DropIns lists the drop-in files of dirs (highest priority first) in the
// order systemd applies them: one file per file name, the one from the
// directory of highest priority, sorted by file name.
func DropIns(dirs []string) ([]string, error) {
	chosen := map[string]string{}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read drop-in directory: %w", err)
		}
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".conf") || e.IsDir() {
				continue
			}
			if _, ok := chosen[n]; !ok {
				chosen[n] = filepath.Join(d, n)
			}
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	slices.Sort(names)
	files := make([]string, len(names))
	for i, n := range names {
		files[i] = chosen[n]
	}
	return files, nil
}

// ProfileEntry is one profile found by ListProfiles.
type ProfileEntry struct {
	Name    string
	Path    string // the main file that wins
	Masked  bool
	Masks   []string // main files of the same name it hides
	DropIns []string
}

// ListProfiles lists the profiles in dirs, sorted by name.
func ListProfiles(dirs []string) ([]ProfileEntry, error) {
	byName := map[string]*ProfileEntry{}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list profiles: %w", err)
		}
		for _, e := range ents {
			n, ok := strings.CutSuffix(e.Name(), ProfileSuffix)
			if !ok || e.IsDir() || ValidProfileName(n) != nil {
				continue
			}
			p := filepath.Join(d, e.Name())
			if pe, ok := byName[n]; ok {
				pe.Masks = append(pe.Masks, p)
				continue
			}
			_, masked, err := readProfileFile(p)
			if err != nil && !errors.As(err, new(*ProfileError)) {
				return nil, err
			}
			byName[n] = &ProfileEntry{Name: n, Path: p, Masked: masked}
		}
	}
	out := make([]ProfileEntry, 0, len(byName))
	for n, pe := range byName {
		dd := make([]string, len(dirs))
		for i, d := range dirs {
			dd[i] = filepath.Join(d, n+ProfileSuffix+".d")
		}
		var err error
		if pe.DropIns, err = DropIns(dd); err != nil {
			return nil, err
		}
		out = append(out, *pe)
	}
	slices.SortFunc(out, func(a, b ProfileEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// KeyKind says how assignments of one key merge.
type KeyKind int

const (
	// Single: the last assignment wins; an empty one resets to the default.
	Single KeyKind = iota + 1
	// List: assignments accumulate; an empty one drops what came before.
	List
)

// Schema says which keys a profile may have: section -> key -> kind.
type Schema map[string]map[string]KeyKind

// Setting is a key's merged value: for a Single key one assignment (the
// last), for a List key the assignments since the last reset. A key whose
// value was reset last has no Setting.
type Setting struct {
	Section, Key string
	Kind         KeyKind
	Values       []Assignment
}

// Merge checks every assignment against schema (an unknown section or key
// is an error naming its file and line) and merges them, in the order of
// each key's first appearance.
func (p *Profile) Merge(schema Schema) ([]Setting, error) {
	var order []string
	merged := map[string]*Setting{}
	for _, a := range p.Assignments {
		keys, ok := schema[a.Section]
		if !ok {
			return nil, &ProfileError{Source: a.Source, Err: fmt.Errorf("unknown section [%s]", a.Section)}
		}
		kind, ok := keys[a.Key]
		if !ok {
			return nil, &ProfileError{Source: a.Source, Err: fmt.Errorf("unknown key %s= in section [%s]", a.Key, a.Section)}
		}
		id := a.Section + "\x00" + a.Key
		s, ok := merged[id]
		if !ok {
			s = &Setting{Section: a.Section, Key: a.Key, Kind: kind}
			merged[id] = s
			order = append(order, id)
		}
		switch {
		case a.Value == "":
			s.Values = nil
		case kind == List:
			s.Values = append(s.Values, a)
		default:
			s.Values = []Assignment{a}
		}
	}
	out := make([]Setting, 0, len(order))
	for _, id := range order {
		if s := merged[id]; len(s.Values) > 0 {
			out = append(out, *s)
		}
	}
	return out, nil
}

// PropertySchema gives the [Unit] and [Scope] sections of a profile: every
// property ParseProperty knows, in the section a unit file has it in
// ([Unit] for Description=, CollectMode=, DefaultDependencies= and the
// dependencies; [Scope] for the rest), with list properties as List.
func PropertySchema() Schema {
	s := Schema{"Unit": {}, "Scope": {}}
	for name := range propertyParsers {
		kind := Single
		if appendable(name) {
			kind = List
		}
		s[PropertySection(name)][name] = kind
	}
	return s
}

// PropertySection is the unit-file section of a property ("Unit" or
// "Scope").
func PropertySection(name string) string {
	switch name {
	case "Description", "CollectMode", "DefaultDependencies", "After", "Before", "Wants",
		"Requires", "Requisite", "BindsTo", "PartOf", "Conflicts":
		return "Unit"
	}
	return "Scope"
}

// CheckProperties validates every [Unit] and [Scope] assignment with
// ParseProperty, naming the file and line of a bad one. Empty assignments
// (resets) are skipped.
func (p *Profile) CheckProperties() error {
	for _, a := range p.Assignments {
		if (a.Section != "Unit" && a.Section != "Scope") || a.Value == "" {
			continue
		}
		if PropertySection(a.Key) != a.Section {
			continue // Merge reports it as unknown in this section
		}
		if _, err := ParseProperty(a.Key + "=" + a.Value); err != nil {
			return &ProfileError{Source: a.Source, Err: err}
		}
	}
	return nil
}
