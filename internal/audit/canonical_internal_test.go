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

// A reused arena fills the same blocks batch after batch, each batch
// reading back what it copied; an arena without reuse never overwrites
// what it handed out.
func TestArenaReusesOnlyWhenAsked(t *testing.T) {
	frame := func(batch, i int) []byte { return []byte(strings.Repeat(string(rune('a'+(batch+i)%26)), 300+i%200)) }
	for _, reuse := range []bool{true, false} {
		a := arena{reuse: reuse}
		var kept [][]byte // the first batch's copies
		for batch := range 3 {
			a.reset()
			for i := range 8000 { // about 3 MB: several blocks
				c := a.copy(frame(batch, i))
				if string(c) != string(frame(batch, i)) {
					t.Fatalf("reuse %v, batch %d: copy %d reads back wrong", reuse, batch, i)
				}
				if batch == 0 {
					kept = append(kept, c)
				}
			}
		}
		overwritten := 0
		for i, c := range kept {
			if string(c) != string(frame(0, i)) {
				overwritten++
			}
		}
		switch {
		case reuse && (overwritten == 0 || len(a.blocks) > 4):
			t.Errorf("reused arena: %d of the first batch's copies overwritten, %d blocks; want its blocks filled again", overwritten, len(a.blocks))
		case !reuse && overwritten != 0:
			t.Errorf("arena without reuse overwrote %d copies it had handed out", overwritten)
		}
	}
}
