package units

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// This file holds the parsers for systemd's value syntax (numbers, sizes,
// durations, percentages, booleans, CPU lists, signals, paths). Each mirrors
// the systemd function named in its comment, as called by systemd-run's
// bus_append_* helpers in src/shared/bus-unit-util.c.

// whitespace mirrors WHITESPACE in systemd's src/basic/string-util.h.
const whitespace = " \t\n\r"

// usecInfinity is USEC_INFINITY; it is also CGROUP_LIMIT_MAX and the
// "unset" value of the cgroup weights.
const usecInfinity = math.MaxUint64

const (
	usecPerSec   = 1000000
	usecPerMin   = 60 * usecPerSec
	usecPerHour  = 60 * usecPerMin
	usecPerDay   = 24 * usecPerHour
	usecPerWeek  = 7 * usecPerDay
	usecPerMonth = 2629800 * usecPerSec
	usecPerYear  = 31557600 * usecPerSec
)

func errInvalid(what string) error { return errors.New("invalid " + what) }
func errRange(what string) error   { return errors.New(what + " out of range") }

// isCSpace is isspace(3) in the C locale, which strtoull(3) skips.
func isCSpace(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }

func digitValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 99
}

// cStrtoull mirrors strtoull(3): it skips leading C whitespace, takes an
// optional sign and, for base 0, a "0x" (hex) or "0" (octal) prefix. end is
// the length of the parsed text, 0 when no digit was found. On overflow v is
// MaxUint64.
func cStrtoull(s string, base int) (v uint64, end int, neg, overflow bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	hex := i+2 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') && digitValue(s[i+2]) < 16
	switch {
	case (base == 0 || base == 16) && hex:
		base = 16
		i += 2
	case base == 0 && i < len(s) && s[i] == '0':
		base = 8
	case base == 0:
		base = 10
	}
	start := i
	for ; i < len(s); i++ {
		d := digitValue(s[i])
		if d >= base {
			break
		}
		hi, lo := bits.Mul64(v, uint64(base))
		sum, carry := bits.Add64(lo, uint64(d), 0)
		if hi != 0 || carry != 0 {
			overflow = true
		}
		v = sum
	}
	if i == start {
		return 0, 0, false, false
	}
	if overflow {
		v = math.MaxUint64
	}
	return v, i, neg, overflow
}

// mangleBase mirrors mangle_base in systemd's src/basic/parse-util.c, which
// adds Python-style "0b" and "0o" prefixes to strtoull's base 0 syntax.
func mangleBase(s string) (string, int) {
	if len(s) >= 2 && s[0] == '0' {
		switch s[1] {
		case 'b', 'B':
			return s[2:], 2
		case 'o', 'O':
			return s[2:], 8
		}
	}
	return s, 0
}

// safeAtou64 mirrors safe_atou64 in systemd's src/basic/parse-util.c:
// decimal, "0x" hex, "0" or "0o" octal and "0b" binary, optionally preceded
// by whitespace, with nothing after the number. A minus sign is refused.
func safeAtou64(s string, what string) (uint64, error) {
	s, base := mangleBase(strings.TrimLeft(s, whitespace))
	v, end, neg, overflow := cStrtoull(s, base)
	switch {
	case overflow:
		return 0, errRange(what)
	case end == 0 || end != len(s):
		return 0, errInvalid(what)
	case neg && v != 0:
		return 0, errRange(what)
	case neg:
		return 0, nil
	}
	return v, nil
}

// safeAtou32 mirrors safe_atou: safeAtou64 limited to 32 bits.
func safeAtou32(s string, what string) (uint32, error) {
	v, err := safeAtou64(s, what)
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint32 {
		return 0, errRange(what)
	}
	return uint32(v), nil
}

// safeAtoi32 mirrors safe_atoi: like safeAtou64 but signed and limited to
// the range of a C int.
func safeAtoi32(s string, what string) (int32, error) {
	s, base := mangleBase(strings.TrimLeft(s, whitespace))
	v, end, neg, overflow := cStrtoull(s, base)
	// strtol(3) reports overflow of a long before the end pointer is looked at.
	if overflow || (!neg && v > math.MaxInt64) || (neg && v > 1<<63) {
		return 0, errRange(what)
	}
	if end == 0 || end != len(s) {
		return 0, errInvalid(what)
	}
	if (!neg && v > math.MaxInt32) || (neg && v > -math.MinInt32) {
		return 0, errRange(what)
	}
	if neg {
		return int32(-int64(v)), nil
	}
	return int32(v), nil
}

// parseSize mirrors parse_size in systemd's src/basic/parse-util.c: one or
// more "<number>[.<fraction>][suffix]" parts that are added up ("1G 512M"),
// with suffixes B, K, M, G, T, P, E in decreasing order, each a power of
// base (1024 or 1000).
func parseSize(t string, base uint64) (uint64, error) {
	suffixes := [...]string{"E", "P", "T", "G", "M", "K", "B", ""}
	b := base
	factors := [...]uint64{b * b * b * b * b * b, b * b * b * b * b, b * b * b * b, b * b * b, b * b, b, 1, 1}
	var r uint64
	start := 0
	p := t
	for {
		p = strings.TrimLeft(p, whitespace)
		l, end, neg, overflow := cStrtoull(p, 10)
		switch {
		case end == 0:
			return 0, errInvalid("size")
		case overflow, neg:
			return 0, errRange("size")
		}
		e := p[end:]
		frac := 0.0
		if strings.HasPrefix(e, ".") {
			e = e[1:]
			if e != "" && e[0] >= '0' && e[0] <= '9' {
				l2, end2, _, overflow2 := cStrtoull(e, 10)
				if overflow2 {
					return 0, errRange("size")
				}
				frac = float64(l2)
				for range end2 {
					frac /= 10
				}
				e = e[end2:]
			}
		}
		e = strings.TrimLeft(e, whitespace)
		i := start
		for i < len(suffixes) && !strings.HasPrefix(e, suffixes[i]) {
			i++
		}
		if i >= len(suffixes) {
			return 0, errInvalid("size")
		}
		// systemd checks l + (frac > 0) > UINT64_MAX / factor, where the
		// sum wraps for l == UINT64_MAX: that accepts "18446744073709551615.5"
		// (factor 1) but would overflow silently with a larger factor.
		limit := math.MaxUint64 / factors[i]
		if l > limit || (frac > 0 && l == limit && factors[i] != 1) {
			return 0, errRange("size")
		}
		tmp := l*factors[i] + uint64(frac*float64(factors[i]))
		if tmp > math.MaxUint64-r {
			return 0, errRange("size")
		}
		r += tmp
		p = e[len(suffixes[i]):]
		start = i + 1
		if p == "" {
			return r, nil
		}
	}
}

// timeUnits mirrors the table of extract_multiplier in systemd's
// src/basic/time-util.c; order matters, the first prefix match wins.
func timeUnits() []struct {
	suffix string
	usec   uint64
} {
	return []struct {
		suffix string
		usec   uint64
	}{
		{"seconds", usecPerSec}, {"second", usecPerSec}, {"sec", usecPerSec}, {"s", usecPerSec},
		{"minutes", usecPerMin}, {"minute", usecPerMin}, {"min", usecPerMin},
		{"months", usecPerMonth}, {"month", usecPerMonth}, {"M", usecPerMonth},
		{"msec", 1000}, {"ms", 1000}, {"m", usecPerMin},
		{"hours", usecPerHour}, {"hour", usecPerHour}, {"hr", usecPerHour}, {"h", usecPerHour},
		{"days", usecPerDay}, {"day", usecPerDay}, {"d", usecPerDay},
		{"weeks", usecPerWeek}, {"week", usecPerWeek}, {"w", usecPerWeek},
		{"years", usecPerYear}, {"year", usecPerYear}, {"y", usecPerYear},
		{"usec", 1}, {"us", 1}, {"\u03bcs", 1}, {"\u00b5s", 1},
	}
}

// parseSec mirrors parse_sec (parse_time with seconds as default unit) in
// systemd's src/basic/time-util.c: "infinity", or parts like "1min 30s",
// "2.5h", "500ms" that are added up; a bare number is in seconds. The
// result is in microseconds.
func parseSec(t string) (uint64, error) {
	p := strings.TrimLeft(t, whitespace)
	if rest, ok := strings.CutPrefix(p, "infinity"); ok {
		if strings.Trim(rest, whitespace) != "" {
			return 0, errInvalid("duration")
		}
		return usecInfinity, nil
	}
	var usec uint64
	for something := false; ; something = true {
		p = strings.TrimLeft(p, whitespace)
		if p == "" {
			if !something {
				return 0, errInvalid("duration")
			}
			return usec, nil
		}
		if p[0] == '-' {
			return 0, errRange("duration")
		}
		l, end, neg, overflow := cStrtoull(p, 10)
		if overflow || l > math.MaxInt64 || (neg && l != 0) {
			return 0, errRange("duration")
		}
		// end is strtoll's end pointer: 0 when there were no digits.
		dot := end < len(p) && p[end] == '.'
		var fraction string
		rest := p[end:]
		switch {
		case dot:
			rest = p[end+1:]
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			fraction, rest = rest[:n], rest[n:]
		case end == 0:
			return 0, errInvalid("duration")
		}
		multiplier := uint64(usecPerSec)
		after := strings.TrimLeft(rest, whitespace)
		matched := false
		for _, u := range timeUnits() {
			if strings.HasPrefix(after, u.suffix) {
				multiplier, after, matched = u.usec, after[len(u.suffix):], true
				break
			}
		}
		if !matched && len(after) == len(rest) && after != "" {
			// "12.34.56" or "5x": no unit and no space before the rest.
			return 0, errInvalid("duration")
		}
		p = after
		if l >= usecInfinity/multiplier {
			return 0, errRange("duration")
		}
		k := l * multiplier
		if k >= usecInfinity-usec {
			return 0, errRange("duration")
		}
		usec += k
		if dot {
			if fraction == "" {
				return 0, errInvalid("duration")
			}
			m := multiplier / 10
			for i := 0; i < len(fraction); i++ {
				k = uint64(fraction[i]-'0') * m
				if k >= usecInfinity-usec {
					return 0, errRange("duration")
				}
				usec += k
				m /= 10
			}
		}
	}
}

// hasPercentSuffix reports whether s ends in one of the symbols
// parse_permyriad understands.
func hasPercentSuffix(s string) bool {
	return strings.HasSuffix(s, "%") || strings.HasSuffix(s, "\u2030") || strings.HasSuffix(s, "\u2031")
}

// parsePermyriad mirrors parse_permyriad_unbounded in systemd's
// src/basic/percent-util.c: "N‱", "N[.N]‰" or "N[.NN]%", returned in
// units of 0.01%. A max >= 0 is an upper bound (parse_permyriad uses
// 10000, i.e. 100%).
func parsePermyriad(s string, max int) (int, error) {
	var v int
	var err error
	if n, ok := strings.CutSuffix(s, "\u2031"); ok {
		v, err = parseDecimalParts(n, 0)
	} else if n, ok := strings.CutSuffix(s, "\u2030"); ok {
		v, err = parseDecimalParts(n, 1)
	} else if n, ok := strings.CutSuffix(s, "%"); ok {
		v, err = parseDecimalParts(n, 2)
	} else {
		return 0, errInvalid("percentage")
	}
	if err != nil {
		return 0, err
	}
	if max >= 0 && v > max {
		return 0, errRange("percentage")
	}
	return v, nil
}

// parseDecimalParts mirrors parse_parts_value_whole and
// parse_parts_value_with_{tenths,hundredths}_place: an integer with up to
// places digits after a '.', scaled by 10^places.
func parseDecimalParts(n string, places int) (int, error) {
	q, scale := 0, 1
	for range places {
		scale *= 10
	}
	if dot := strings.IndexByte(n, '.'); dot >= 0 && places > 0 {
		digits := n[dot+1:]
		if len(digits) == 0 || len(digits) > places {
			return 0, errInvalid("percentage")
		}
		m := scale
		for i := 0; i < len(digits); i++ {
			if digits[i] < '0' || digits[i] > '9' {
				return 0, errInvalid("percentage")
			}
			m /= 10
			q += int(digits[i]-'0') * m
		}
		n = n[:dot]
	}
	v, err := safeAtoi32(n, "percentage")
	if err != nil {
		return 0, err
	}
	if v < 0 || int(v) > (math.MaxInt32-q)/scale {
		return 0, errRange("percentage")
	}
	return int(v)*scale + q, nil
}

// scaleFromPermyriad mirrors UINT32_SCALE_FROM_PERMYRIAD in systemd's
// src/basic/percent-util.h: 100% is UINT32_MAX, rounded to the closest.
func scaleFromPermyriad(p int) uint32 {
	p = min(max(p, 0), 10000)
	return uint32((uint64(p)*math.MaxUint32 + 5000) / 10000)
}

// parseBoolean mirrors parse_boolean in systemd's src/basic/parse-util.c
// (ASCII case-insensitive).
func parseBoolean(s string) (bool, error) {
	switch asciiLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, errInvalid("boolean")
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// cpuSetMax mirrors the limit of cpu_set_add in systemd's
// src/shared/cpu-set-util.c.
const cpuSetMax = 8192

// parseCPUSet mirrors parse_cpu_set followed by cpu_set_to_dbus in systemd's
// src/shared/cpu-set-util.c: numbers and ranges ("0-3") separated by
// whitespace or commas, returned as a little-endian bit mask whose length is
// a multiple of 8 bytes (CPU_ALLOC_SIZE). An empty list gives an empty mask.
// Unlike systemd, which warns and ignores it, a reversed range is refused.
func parseCPUSet(s string) ([]byte, error) {
	words := strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || strings.ContainsRune(whitespace, r)
	})
	var set []byte
	for _, w := range words {
		lo, hi, err := parseRange(w)
		if err != nil {
			return nil, err
		}
		if lo > hi {
			return nil, fmt.Errorf("invalid range %q: %d > %d", w, lo, hi)
		}
		if hi >= cpuSetMax {
			return nil, fmt.Errorf("cpu %d out of range, the limit is %d", hi, cpuSetMax-1)
		}
		if need := (int(hi)/64 + 1) * 8; need > len(set) {
			set = append(set, make([]byte, need-len(set))...)
		}
		for c := lo; c <= hi; c++ {
			set[c/8] |= 1 << (c % 8)
		}
	}
	if set == nil {
		set = []byte{}
	}
	return set, nil
}

// parseRange mirrors parse_range in systemd's src/basic/parse-util.c:
// "N" or "N-M".
func parseRange(w string) (uint32, uint32, error) {
	lower, upper, isRange := strings.Cut(w, "-")
	lo, err := safeAtou32(lower, fmt.Sprintf("cpu number %q", lower))
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if upper == "" {
		return 0, 0, fmt.Errorf("invalid range %q", w)
	}
	hi, err := safeAtou32(upper, fmt.Sprintf("cpu number %q", upper))
	if err != nil {
		return 0, 0, err
	}
	return lo, hi, nil
}

// signalNumber maps the names of static_signal_table in systemd's
// src/basic/signal-util.c to their numbers in the generic Linux ABI (x86,
// arm, arm64, riscv64, ppc64, s390x, loong64; MIPS and SPARC differ).
func signalNumber(name string) int32 {
	names := [...]string{"", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS",
		"FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT",
		"CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
		"VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS"}
	for i, n := range names {
		if i > 0 && n == name {
			return int32(i)
		}
	}
	return 0
}

const (
	sigRTMin = 34 // SIGRTMIN as seen by glibc programs such as systemd
	sigRTMax = 64
	nsig     = 65 // _NSIG
)

// parseSignal mirrors signal_from_string in systemd's
// src/basic/signal-util.c: a number (1-64), a name with or without "SIG"
// ("TERM", "SIGTERM"), "RTMIN+n" or "RTMAX-n".
func parseSignal(s string) (int32, error) {
	if n, err := safeAtoi32(s, "signal"); err == nil {
		if n <= 0 || n >= nsig {
			return 0, errRange("signal")
		}
		return n, nil
	}
	s = strings.TrimPrefix(s, "SIG")
	if n := signalNumber(s); n > 0 {
		return n, nil
	}
	if rest, ok := strings.CutPrefix(s, "RTMIN"); ok {
		if rest == "" {
			return sigRTMin, nil
		}
		if rest[0] != '+' {
			return 0, errInvalid("signal")
		}
		n, err := safeAtoi32(rest, "signal")
		if err != nil {
			return 0, err
		}
		if n < 0 || n > sigRTMax-sigRTMin {
			return 0, errRange("signal")
		}
		return sigRTMin + n, nil
	}
	if rest, ok := strings.CutPrefix(s, "RTMAX"); ok {
		if rest == "" {
			return sigRTMax, nil
		}
		if rest[0] != '-' {
			return 0, errInvalid("signal")
		}
		n, err := safeAtoi32(rest, "signal")
		if err != nil {
			return 0, err
		}
		if n > 0 || n < sigRTMin-sigRTMax {
			return 0, errRange("signal")
		}
		return sigRTMax + n, nil
	}
	return 0, errInvalid("signal")
}

// pathIsNormalized mirrors path_is_normalized in systemd's
// src/basic/path-util.c: a non-empty path shorter than PATH_MAX with no
// "//", no "." or ".." component and no component longer than NAME_MAX.
func pathIsNormalized(p string) bool {
	if p == "" || len(p) >= 4096 || strings.Contains(p, "//") || strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for c := range strings.SplitSeq(p, "/") {
		if c == "." || c == ".." || len(c) > nameMax {
			return false
		}
	}
	return true
}

// checkDBusString refuses what cannot be sent as a D-Bus string: invalid
// UTF-8 and NUL bytes.
func checkDBusString(s, what string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s contains a NUL byte", what)
	}
	return nil
}
