package audit

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// storable's word-at-a-time check agrees with its definition for a NUL,
// a non-ASCII byte or an invalid sequence at every place in strings of
// every length around the 8-byte steps.
func TestStorableAgreesWithItsDefinition(t *testing.T) {
	for n := range 20 {
		base := strings.Repeat("a", n)
		check := func(s string) {
			if want := utf8.ValidString(s) && strings.IndexByte(s, 0) < 0; storable(s) != want {
				t.Errorf("storable(%q) = %v, want %v", s, !want, want)
			}
		}
		check(base)
		for i := range n {
			for _, bad := range []string{"\x00", "\x01", "\x7f", "\x80", "\xff", "é", "\xc3", "€"} {
				check(base[:i] + bad + base[i+1:])
				check(base[:i] + bad)
			}
		}
	}
}
