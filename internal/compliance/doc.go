// Package compliance holds the compliance team's offline tools, built on
// the rule engine and never on the request path: running a rule set's
// test cases (RunCases), comparing two rule sets (Diff), deciding recorded
// requests again with other rules (Replay), and proposing an allow-list
// from recorded traffic (Suggest, checked by CheckSuggestion).
//
// Every request here is decided by rules.Table.Decide, or judged by
// rules.Prepare, Decide's own first step, so a tool cannot disagree with
// the server about a request. Decision records are read through an
// audit.Store the caller opened: the package opens no store and knows no
// database.
package compliance
