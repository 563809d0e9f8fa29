// Package when reads the times and durations people write on command
// lines, in configuration files, in query parameters and in test cases:
// "14d", "72h", "2027-06-30", "2026-12-04T10:00:00Z".
//
// It is the one place that knows these forms and their bounds. Every value
// it returns can be represented without overflow: a duration fits a
// time.Duration, and a time lies where time.Time.UnixNano is exact
// (1678 to 2262), so no filter or retention built from it can wrap round
// and mean the opposite of what was written.
package when

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxDays is the largest number of days a duration may be written with:
// a century. Anything longer is a typo.
const MaxDays = 36500

// Day is 24 hours, the unit of "Nd".
const Day = 24 * time.Hour

// Earliest and Latest bound the times this package returns: the instants
// whose Unix nanoseconds fit an int64, to the second.
var (
	Earliest = time.Unix(0, -1<<63).UTC().Truncate(time.Second).Add(time.Second)
	Latest   = time.Unix(0, 1<<63-1).UTC().Truncate(time.Second)
)

// ParseDuration reads a non-negative duration written in days ("14d", at
// most MaxDays) or in Go's units ("72h", "90m").
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		switch {
		case err != nil || days < 0 || strings.HasPrefix(n, "+"):
			return 0, fmt.Errorf("%q is not a duration (like 14d or 72h)", s)
		case days > MaxDays:
			return 0, fmt.Errorf("%q is more than %dd (a century)", s, MaxDays)
		}
		return time.Duration(days) * Day, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (like 14d or 72h)", s)
	}
	if d > MaxDays*Day {
		return 0, fmt.Errorf("%q is more than %dd (a century)", s, MaxDays)
	}
	return d, nil
}

// FormatDuration writes d the way ParseDuration reads it back: in days when
// it is a whole number of them, else in Go's units; "0" for zero.
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%Day == 0:
		return strconv.FormatInt(int64(d/Day), 10) + "d"
	}
	return d.String()
}

// ParseTime reads an absolute time: a day ("2027-06-30", 00:00 UTC) or an
// RFC 3339 time.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t, err = time.Parse(time.DateOnly, s)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a day YYYY-MM-DD or an RFC 3339 time", s)
	}
	return inRange(s, t)
}

// ParseSince reads a point in time the way --since and --until take it: a
// duration back from now ("15m", "24h", "7d") or a time ParseTime reads.
// "" is the zero time (no bound).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := ParseTime(s); err == nil {
		return t, nil
	} else if looksAbsolute(s) {
		return time.Time{}, err
	}
	d, err := ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a duration back from now (15m, 24h, 7d), a day YYYY-MM-DD or an RFC 3339 time", s)
	}
	return inRange(s, now.Add(-d))
}

// looksAbsolute reports whether s was meant as a date or time rather than
// a duration, so that its own error is the one reported.
func looksAbsolute(s string) bool {
	return len(s) >= 10 && s[4] == '-' && s[7] == '-'
}

func inRange(s string, t time.Time) (time.Time, error) {
	if t.Before(Earliest) || t.After(Latest) {
		return time.Time{}, fmt.Errorf("%q is outside the times the decision log can hold (%d to %d)",
			s, Earliest.Year(), Latest.Year())
	}
	return t, nil
}
