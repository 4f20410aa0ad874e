package units

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
)

// Reading one profile file.
//
// The values come from go-systemd's unit-file parser (unit.DeserializeOptions).
// It reports neither line numbers nor every deviation from systemd, so a
// line scanner walks the same text beside it and
//
//   - refuses, with the line, what systemd would warn about and skip (an
//     assignment outside a section, a line without '=', a broken section
//     header) and lines longer than systemd's LINE_MAX;
//   - drops comment lines before the parser sees them: systemd (since v240)
//     ignores a comment line inside a continued value, and a comment line
//     ending in a backslash does not continue, while go-systemd would glue
//     either into the value or swallow the next assignment;
//   - records the line each assignment starts on.
//
// The scanner's (section, key, value) list must then equal the parser's,
// entry by entry, or the file is refused at the first difference. So every
// value nsrun uses is the parser's, and the line attached to it is proven to
// belong to it. Continuations are joined as systemd joins them: the
// backslash at the end of a line becomes a space.

// maxProfileSize bounds a profile file; profiles are a few lines.
const maxProfileSize = 1 << 20

// Source is where a value came from.
type Source struct {
	File string
	Line int
}

func (s Source) String() string { return fmt.Sprintf("%s:%d", s.File, s.Line) }

// Assignment is one "Key=Value" line of a profile file.
type Assignment struct {
	Section string
	Key     string
	Value   string
	Source  Source
}

// ProfileError is a problem with a profile file, at a line when known.
type ProfileError struct {
	Source Source // Line 0: the whole file
	Err    error
}

func (e *ProfileError) Error() string {
	if e.Source.Line == 0 {
		return fmt.Sprintf("%s: %v", e.Source.File, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Source, e.Err)
}

func (e *ProfileError) Unwrap() error { return e.Err }

func lineError(file string, line int, format string, args ...any) error {
	return &ProfileError{Source: Source{File: file, Line: line}, Err: fmt.Errorf(format, args...)}
}

// ParseProfile parses the text of one profile file (named file in errors
// and sources) into its assignments, in file order.
func ParseProfile(file string, data []byte) ([]Assignment, error) {
	if len(data) > maxProfileSize {
		return nil, lineError(file, 0, "file larger than %d bytes", maxProfileSize)
	}
	scanned, text, err := scanProfile(file, data)
	if err != nil {
		return nil, err
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(text))
	if err != nil {
		return nil, lineError(file, 0, "parse: %v", err)
	}
	for i, a := range scanned {
		if i >= len(opts) {
			return nil, lineError(file, a.Source.Line, "unit-file parser lost this assignment")
		}
		o := opts[i]
		v := systemdValue(o.Value)
		if o.Section != a.Section || o.Name != a.Key || v != a.Value {
			return nil, lineError(file, a.Source.Line,
				"ambiguous assignment: the unit-file parser reads [%s] %s=%q, systemd reads [%s] %s=%q",
				o.Section, o.Name, v, a.Section, a.Key, a.Value)
		}
	}
	if len(opts) > len(scanned) {
		return nil, lineError(file, 0, "unit-file parser found %d assignments, expected %d", len(opts), len(scanned))
	}
	return scanned, nil
}

// systemdValue turns go-systemd's value (continued lines joined with
// "\\\n") into systemd's (the backslash becomes a space; then stripped).
func systemdValue(v string) string {
	v = strings.ReplaceAll(v, "\\\n", " ")
	v = strings.TrimSuffix(v, "\n")
	v = strings.TrimSuffix(v, "\\") // a continuation at the end of the file
	return strings.TrimSpace(v)
}

// systemd's whitespace for strstrip (WHITESPACE " \t\n\r").
func trimWS(s string) string { return strings.Trim(s, " \t\n\r") }

func isCommentLine(t string) bool { return t != "" && (t[0] == '#' || t[0] == ';') }

// scanProfile checks the file line by line, returns the assignments it finds
// (with their lines) and the text to hand to the parser (comment lines
// removed).
func scanProfile(file string, data []byte) ([]Assignment, []byte, error) {
	if !utf8.Valid(data) {
		// Say where: the first line holding invalid UTF-8.
		n := 1 + bytes.Count(data[:firstInvalidUTF8(data)], []byte{'\n'})
		return nil, nil, lineError(file, n, "invalid UTF-8")
	}
	if i := bytes.IndexFunc(data, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' }); i >= 0 {
		n := 1 + bytes.Count(data[:i], []byte{'\n'})
		return nil, nil, lineError(file, n, "control character %#02x", data[i])
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var (
		out     []Assignment
		text    strings.Builder
		section string
		cont    *Assignment // the assignment a trailing backslash continues
		parts   []string
	)
	finish := func() {
		cont.Value = trimWS(strings.Join(parts, ""))
		out = append(out, *cont)
		cont, parts = nil, nil
	}
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimSuffix(raw, "\r")
		if len(line) >= unit.SYSTEMD_LINE_MAX {
			return nil, nil, lineError(file, n, "line too long (max %d bytes)", unit.SYSTEMD_LINE_MAX-1)
		}
		if strings.ContainsRune(line, '\r') {
			return nil, nil, lineError(file, n, "carriage return inside a line")
		}
		t := strings.TrimLeft(line, " \t")
		if isCommentLine(t) {
			continue // not shown to the parser (see above)
		}
		text.WriteString(line)
		text.WriteByte('\n')
		if cont != nil {
			if trimWS(line) == "" {
				finish()
				continue
			}
			if continues(line) {
				parts = append(parts, line[:len(line)-1]+" ")
				continue
			}
			parts = append(parts, line)
			finish()
			continue
		}
		t = trimWS(t)
		switch {
		case t == "":
			continue
		case t[0] == '[':
			if !strings.HasSuffix(t, "]") || strings.Count(t, "]") != 1 || strings.Count(t, "[") != 1 || len(t) < 3 {
				return nil, nil, lineError(file, n, "invalid section header %q", t)
			}
			section = t[1 : len(t)-1]
			continue
		}
		key, _, ok := strings.Cut(t, "=")
		if !ok {
			return nil, nil, lineError(file, n, "missing '=' in %q", t)
		}
		if section == "" {
			return nil, nil, lineError(file, n, "assignment outside of a section")
		}
		key = trimWS(key)
		if key == "" {
			return nil, nil, lineError(file, n, "missing key name before '='")
		}
		a := Assignment{Section: section, Key: key, Source: Source{File: file, Line: n}}
		// go-systemd continues only when the value's first line is not
		// blank; so does systemd (an empty value ends the assignment).
		rest := line[strings.IndexByte(line, '=')+1:]
		if trimWS(rest) != "" && continues(rest) {
			cont = &a
			parts = []string{rest[:len(rest)-1] + " "}
			continue
		}
		a.Value = trimWS(rest)
		out = append(out, a)
	}
	if cont != nil {
		finish()
	}
	return out, []byte(text.String()), nil
}

// continues reports whether systemd continues a line on the next: it ends
// in a backslash that is not itself escaped (an odd run of backslashes).
// go-systemd continues on any trailing backslash; where the two differ the
// comparison in ParseProfile refuses the file.
func continues(line string) bool {
	n := len(line) - len(strings.TrimRight(line, "\\"))
	return n%2 == 1
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// SplitWords splits a value into words the way systemd splits list settings
// such as Environment= or BindPaths= (extract_first_word with
// EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE): words are separated by whitespace,
// single or double quotes group (and are removed), and a backslash escapes
// the next character or starts a C escape (\n, \t, \xNN, ...). An
// unterminated quote or a trailing lone backslash is an error.
func SplitWords(s string) ([]string, error) {
	var (
		words   []string
		cur     strings.Builder
		inWord  bool
		quote   byte
		escapes = map[byte]byte{'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v',
			'\\': '\\', '"': '"', '\'': '\'', 's': ' '}
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("trailing backslash in %q", s)
			}
			i++
			e := s[i]
			if r, ok := escapes[e]; ok {
				cur.WriteByte(r)
			} else if e == 'x' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				cur.WriteByte(hexVal(s[i+1])<<4 | hexVal(s[i+2]))
				i += 2
			} else {
				return nil, fmt.Errorf("invalid escape \\%c in %q", e, s)
			}
			inWord = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if !utf8.ValidString(strings.Join(words, "")) {
		return nil, fmt.Errorf("escape gives invalid UTF-8 in %q", s)
	}
	return slices.Clip(words), nil
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
