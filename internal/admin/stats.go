package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/when"
)

// Counts are decisions by outcome: enforced allows and denies, and dry-run
// rules' would-be outcomes (records with Enforced false).
type Counts struct {
	Total  int `json:"total"`
	Allow  int `json:"allow"`
	Deny   int `json:"deny"`
	DryRun int `json:"dry_run"`
}

func (c *Counts) add(r *audit.Record) {
	c.Total++
	switch {
	case !r.Enforced:
		c.DryRun++
	case r.Decision == audit.Allow:
		c.Allow++
	default:
		c.Deny++
	}
}

// Bucket is the decisions of [Start, Start+Stats.Bucket).
type Bucket struct {
	Start time.Time `json:"start"`
	Counts
}

// Top is one value of a field and the decisions that have it.
type Top struct {
	Key string `json:"key"`
	Counts
}

// Stats is the answer of GET /v1/stats: the decisions a filter selects,
// counted on the server.
type Stats struct {
	Since     time.Time `json:"since"` // the window; Since is the oldest record's time when not given
	Until     time.Time `json:"until"`
	Bucket    string    `json:"bucket"` // width of each bucket, as bucket= takes it
	BucketMS  int64     `json:"bucket_ms"`
	Counts    Counts    `json:"counts"`
	Series    []Bucket  `json:"series"`    // every bucket of the window, oldest first, empty ones too
	Top       int       `json:"top"`       // how many keys each list below holds at most
	Workloads []Top     `json:"workloads"` // by principal
	Hosts     []Top     `json:"hosts"`     // by host name, lower case
	Rules     []Top     `json:"rules"`     // by deciding rule; decisions no rule made are left out
	Reasons   []Top     `json:"deny_reasons"`
	// Unused are the rules of the served rule set that decided none of
	// the selected decisions: clean-up candidates when the window is long.
	Unused  []string `json:"unused_rules"`
	RuleSet string   `json:"rule_set,omitempty"` // the served rule set's version Unused is of
}

// bucketWidths are the widths GET /v1/stats chooses from when not given
// one: the narrowest that cuts the window into at most targetBuckets.
var bucketWidths = []time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, when.Day, 7 * when.Day,
}

const (
	targetBuckets = 60
	maxBuckets    = 10_000
	defaultTop    = 10
	maxTop        = 1000
)

// RuleSetIDs is the served rule set: its version and its rules' ids.
type RuleSetIDs func() (version string, ids []string)

// StatsHandler serves GET /v1/stats from s: the decisions the
// FilterParams select (but limit and cursor, which page), counted by
// outcome in time buckets (bucket=DURATION, else chosen from the window),
// and the top= (default 10) principals, hosts, rules and deny reasons,
// and the served rules (from ruleSet, if not nil) that decided none of
// them. An unknown or repeated parameter is a 400 naming the known ones.
func StatsHandler(s audit.Store, ruleSet RuleSetIDs, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := now()
		f, q, err := parseQuery(r, t, "bucket", "top")
		if err == nil {
			for _, k := range []string{"limit", "cursor"} {
				if q.Has(k) {
					err = &ParamError{k, errors.New("stats count the whole window; limit and cursor page GET /v1/decisions")}
				}
			}
		}
		var width time.Duration
		if err == nil && q.Has("bucket") {
			if width, err = when.ParseDuration(q.Get("bucket")); err == nil && width < time.Second {
				err = fmt.Errorf("%q: want at least 1s", q.Get("bucket"))
			}
			if err != nil {
				err = &ParamError{"bucket", err}
			}
		}
		top := defaultTop
		if err == nil && q.Has("top") {
			if top, err = strconv.Atoi(q.Get("top")); err != nil || top < 1 || top > maxTop {
				err = &ParamError{"top", fmt.Errorf("%q: want a number from 1 to %d", q.Get("top"), maxTop)}
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		st, err := computeStats(r.Context(), s, f, t, width, top, ruleSet)
		if err != nil {
			var pe *ParamError
			if errors.As(err, &pe) {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if errors.Is(err, r.Context().Err()) {
				return
			}
			http.Error(w, "stats: "+err.Error(), http.StatusInternalServerError)
			return
		}
		WriteJSON(w, http.StatusOK, st)
	})
}

type point struct {
	t    int64
	kind uint8 // 0 allow, 1 deny, 2 dry run
}

// computeStats reads the records f selects from s and counts them; see
// StatsHandler. width 0 chooses one from the window.
func computeStats(ctx context.Context, s audit.Store, f audit.Filter, now time.Time, width time.Duration, top int, ruleSet RuleSetIDs) (*Stats, error) {
	st := &Stats{Since: f.Since, Until: f.Until, Top: top}
	if st.Until.IsZero() {
		st.Until = now
	}
	principals, hosts, ruleCounts, reasons := map[string]*Counts{}, map[string]*Counts{}, map[string]*Counts{}, map[string]*Counts{}
	count := func(m map[string]*Counts, k string, r *audit.Record) {
		c := m[k]
		if c == nil {
			c = &Counts{}
			m[k] = c
		}
		c.add(r)
	}
	var points []point
	oldest := st.Until
	f.Limit, f.Cursor = 0, ""
	_, err := s.Query(ctx, f, func(rec *audit.Record) error {
		st.Counts.add(rec)
		count(principals, rec.Principal, rec)
		count(hosts, strings.ToLower(strings.TrimSuffix(rec.Host, ".")), rec)
		if rec.Rule != "" {
			count(ruleCounts, rec.Rule, rec)
		}
		p := point{t: rec.Time.UnixNano()}
		switch {
		case !rec.Enforced:
			p.kind = 2
		case rec.Decision != audit.Allow:
			p.kind = 1
			count(reasons, rec.Reason, rec)
		}
		points = append(points, p)
		if rec.Time.Before(oldest) {
			oldest = rec.Time
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.Since.IsZero() {
		st.Since = oldest
	}
	span := st.Until.Sub(st.Since)
	if width == 0 {
		width = bucketWidths[len(bucketWidths)-1]
		for _, b := range bucketWidths {
			if span <= b*targetBuckets {
				width = b
				break
			}
		}
	}
	start := st.Since.Truncate(width)
	n := int(st.Until.Sub(start)/width) + 1
	if !st.Until.After(start.Add(time.Duration(n-1) * width)) {
		n-- // Until is exclusive
	}
	n = max(n, 1)
	if n > maxBuckets {
		return nil, &ParamError{"bucket", fmt.Errorf("%s cuts the window into %d buckets; at most %d (give a wider bucket or a shorter window)", shortDuration(width), n, maxBuckets)}
	}
	st.Bucket, st.BucketMS = shortDuration(width), width.Milliseconds()
	st.Series = make([]Bucket, n)
	for i := range st.Series {
		st.Series[i].Start = start.Add(time.Duration(i) * width)
	}
	for _, p := range points {
		i := int((p.t - start.UnixNano()) / int64(width))
		if i < 0 || i >= n {
			continue
		}
		b := &st.Series[i].Counts
		b.Total++
		switch p.kind {
		case 0:
			b.Allow++
		case 1:
			b.Deny++
		default:
			b.DryRun++
		}
	}
	st.Workloads, st.Hosts, st.Rules, st.Reasons = topOf(principals, top), topOf(hosts, top), topOf(ruleCounts, top), topOf(reasons, top)
	st.Unused = []string{}
	if ruleSet != nil {
		var ids []string
		st.RuleSet, ids = ruleSet()
		for _, id := range ids {
			if ruleCounts[id] == nil {
				st.Unused = append(st.Unused, id)
			}
		}
		slices.Sort(st.Unused)
	}
	return st, nil
}

// topOf returns the n keys of m with the most decisions, most first, ties
// by key.
func topOf(m map[string]*Counts, n int) []Top {
	out := make([]Top, 0, len(m))
	for k, c := range m {
		out = append(out, Top{Key: k, Counts: *c})
	}
	slices.SortFunc(out, func(a, b Top) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Key, b.Key))
	})
	return out[:min(n, len(out))]
}

// shortDuration writes d as "7d", "30m" or "90s", as bucket= reads it.
func shortDuration(d time.Duration) string {
	if d%when.Day == 0 {
		return strconv.Itoa(int(d/when.Day)) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
