package when

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "0", want: 0},
		{in: "0d", want: 0},
		{in: "14d", want: 14 * Day},
		{in: "72h", want: 72 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "36500d", want: MaxDays * Day},
		{in: "36501d", err: "a century"},
		// 213504 days overflow a time.Duration (it became 25 minutes);
		// 200000 days turned negative.
		{in: "213504d", err: "a century"},
		{in: "200000d", err: "a century"},
		{in: "9223372036854775807d", err: "a century"},
		{in: "900000h", err: "a century"},
		{in: "-1d", err: "not a duration"},
		{in: "+1d", err: "not a duration"},
		{in: "-5m", err: "not a duration"},
		{in: "d", err: "not a duration"},
		{in: "1w", err: "not a duration"},
		{in: "", err: "not a duration"},
	} {
		got, err := ParseDuration(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseDuration(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatDurationRoundTrips(t *testing.T) {
	for _, d := range []time.Duration{0, Day, 400 * Day, 72 * time.Hour, 90 * time.Minute, 36*time.Hour + time.Second} {
		s := FormatDuration(d)
		back, err := ParseDuration(s)
		if err != nil || back != d {
			t.Errorf("FormatDuration(%v) = %q, read back as %v, %v", d, s, back, err)
		}
	}
	if s := FormatDuration(400 * Day); s != "400d" {
		t.Errorf("FormatDuration(400 days) = %q, want 400d", s)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "", want: time.Time{}},
		{in: "15m", want: now.Add(-15 * time.Minute)},
		{in: "7d", want: now.Add(-7 * Day)},
		{in: "2026-11-01", want: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)},
		{in: "2026-11-01T08:30:00+01:00", want: time.Date(2026, 11, 1, 7, 30, 0, 0, time.UTC)},
		{in: "2026-11-01T08:30:00.123456789Z", want: time.Date(2026, 11, 1, 8, 30, 0, 123456789, time.UTC)},
		// Beyond what UnixNano holds, a filter would wrap round.
		{in: "2262-04-12T00:00:00Z", err: "outside"},
		{in: "1600-01-01", err: "outside"},
		{in: "9999-12-31", err: "outside"},
		{in: "2026-13-01", err: "want a day"},
		{in: "yesterday", err: "want a duration"},
		{in: "36501d", err: "want a duration"},
		{in: "-1h", err: "want a duration"},
	} {
		got, err := ParseSince(tc.in, now)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSince(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestBoundsAreExactInNanoseconds(t *testing.T) {
	for _, b := range []time.Time{Earliest, Latest} {
		if !time.Unix(0, b.UnixNano()).Equal(b) {
			t.Errorf("%v does not survive UnixNano", b)
		}
	}
	if Earliest.Year() != 1677 || Latest.Year() != 2262 {
		t.Errorf("bounds %v .. %v", Earliest, Latest)
	}
}
