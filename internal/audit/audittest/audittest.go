// Package audittest helps test what stores, encodes or carries decision
// records: sample records, a record with every field set and its
// variants with one field changed (by reflection over audit.Record, so
// that a field added to Record is covered without editing a test), and a
// fake clock for the Writer's Options.
package audittest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// T0 is the time of Sample(0).
var T0 = time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)

// Sample is record i of a stream of few keys: 5 principals in 3
// namespaces, 4 hosts, 2 rules, allow and deny in turn, one a second from
// T0. The chain fields are left for the writer.
func Sample(i int) audit.Record {
	return audit.Record{
		Time:           T0.Add(time.Duration(i) * time.Second),
		RequestID:      fmt.Sprintf("req-%d", i),
		TraceID:        "4bf92f3577b34da6a3ce929d0e0e4736",
		Principal:      fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", i%3, i%5),
		TrustDomain:    "cluster.local",
		Namespace:      fmt.Sprintf("ns%d", i%3),
		ServiceAccount: fmt.Sprintf("sa%d", i%5),
		Host:           fmt.Sprintf("api%d.example.com", i%4),
		Port:           443,
		Method:         "POST",
		Path:           "/v1/charges",
		Decision:       []string{audit.Allow, audit.Deny}[i%2],
		Enforced:       true,
		Rule:           fmt.Sprintf("rule-%d", i%2),
		Owner:          "team-payments",
		Ticket:         "SEC-1",
		RuleSet:        "abcdef0123456789",
		Reason:         []string{"allowed-by-rule", "denied-by-rule"}[i%2],
		CacheHit:       i%3 == 0,
		Latency:        time.Duration(1000 + i),
	}
}

// Full returns a record whose every field is set, each to a value of its
// own (a string field holds its Go name), so that a store or output that
// drops or swaps a field shows it. Seq is 1 and the values fit every store.
func Full() audit.Record {
	var r audit.Record
	v := reflect.ValueOf(&r).Elem()
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		switch {
		case f.Type() == reflect.TypeOf(time.Time{}):
			f.Set(reflect.ValueOf(T0))
		case f.Kind() == reflect.String:
			f.SetString(sf.Name + "-value")
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.CanInt():
			f.SetInt(int64(1000 + i))
		case f.CanUint():
			f.SetUint(1)
		default:
			panic(fmt.Sprintf("audittest: Record field %s of kind %s: teach Full and Vary about it", sf.Name, f.Kind()))
		}
	}
	return r
}

// A Variant is a record with one field changed.
type Variant struct {
	Field  string // the Record field's Go name
	Record audit.Record
}

// Vary returns, for each field of audit.Record, base with that field
// changed to another value of its kind: a string gets a suffix, a number
// grows by one (a time by a second), a bool flips.
func Vary(base audit.Record) []Variant {
	var out []Variant
	t := reflect.TypeOf(base)
	for i := 0; i < t.NumField(); i++ {
		r := base
		f := reflect.ValueOf(&r).Elem().Field(i)
		switch {
		case f.Type() == reflect.TypeOf(time.Time{}):
			f.Set(reflect.ValueOf(f.Interface().(time.Time).Add(time.Second)))
		case f.Kind() == reflect.String:
			f.SetString(f.String() + "-changed")
		case f.Kind() == reflect.Bool:
			f.SetBool(!f.Bool())
		case f.CanInt():
			f.SetInt(f.Int() + 1)
		case f.CanUint():
			f.SetUint(f.Uint() + 1)
		default:
			panic(fmt.Sprintf("audittest: Record field %s of kind %s: teach Full and Vary about it", t.Field(i).Name, f.Kind()))
		}
		out = append(out, Variant{Field: t.Field(i).Name, Record: r})
	}
	return out
}

// Diff names the fields in which got and want differ, or returns "" when
// they are equal.
func Diff(got, want audit.Record) string {
	var out string
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < g.NumField(); i++ {
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			out += fmt.Sprintf("\n  %s: got %v, want %v", g.Type().Field(i).Name, g.Field(i).Interface(), w.Field(i).Interface())
		}
	}
	return out
}

// WaitUntil fails the test unless cond holds within 10 seconds. It polls:
// for a state that has no event to wait for.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
