package main

// report processing: the record of processing activities (GDPR Art. 30) as
// the decision log shows it.

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

const reportUsage = `Usage: egress-authz report processing [--audit DSN] [--since 90d] [--until T] [--rules PATH]
                                    [--format json|md|html|csv|fides]

The processor register as the decision log shows it: per processor (as the
rule-set version that decided declares it, from the log's rule-set
archive), the rules that reached it and the workloads that sent to it,
with requests, denies, first and last seen; and the findings:
unregistered-recipient, unused-processor, transfer-without-safeguard,
expired-rule-used, unarchived-ruleset. --format md or html is what a DPO
attaches to the record of processing activities; csv is a row per
processor and workload; fides is Fides system declarations (YAML).

Exit status: 0, also with findings (they are the report's content); 1 on
an error.

Flags:
`

func reportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "processing" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, reportUsage)
			return exitOK
		}
		fmt.Fprint(stderr, reportUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("report processing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("audit", defaultAuditDSN, "decision log `DSN`")
	since := fs.String("since", "90d", "the period's start: `TIME` (15m, 24h, 90d, a day or RFC 3339)")
	until := fs.String("until", "", "the period's end (default now)")
	current := fs.String("rules", "", "the rule set served now (`PATH`): its processors are the register; default the newest version that decided")
	format := fs.String("format", "md", "output `FORMAT`: json, md, html, csv or fides")
	fs.Usage = func() { fmt.Fprint(stderr, reportUsage); fs.PrintDefaults() }
	if code, ok := parseArgs(fs, args[1:]); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	switch *format {
	case "json", "md", "html", "csv", "fides":
	default:
		fmt.Fprintf(stderr, "egress-authz report processing: --format %q: want json, md, html, csv or fides\n", *format)
		return exitUsage
	}
	now := time.Now().UTC()
	opts := compliance.ProcessingOptions{Until: now}
	var err error
	if opts.Since, err = when.ParseSince(*since, now); err != nil {
		fmt.Fprintln(stderr, "egress-authz report processing: --since", err)
		return exitUsage
	}
	if *until != "" {
		if opts.Until, err = when.ParseSince(*until, now); err != nil {
			fmt.Fprintln(stderr, "egress-authz report processing: --until", err)
			return exitUsage
		}
	}
	if !opts.Since.Before(opts.Until) {
		fmt.Fprintln(stderr, "egress-authz report processing: --since must be before --until")
		return exitUsage
	}
	if *current != "" {
		if opts.Current, err = rules.Load(*current); err != nil {
			printInvalid(stderr, "text", err)
			fmt.Fprintf(stderr, "egress-authz report processing: the rule set %s is invalid (errors above)\n", *current)
			return exitFail
		}
	}
	st, err := stores.OpenExisting(ctx, *dsn)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz report processing:", err)
		return exitFail
	}
	defer st.Close()
	if a, ok := st.(audit.RuleSetArchive); ok {
		opts.RuleSet = func(ctx context.Context, v string) (*rules.Set, error) { return compliance.ArchivedSet(ctx, a, v) }
	}
	rep, err := compliance.Processing(ctx, st, opts)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz report processing:", err)
		return exitFail
	}
	switch *format {
	case "json":
		printJSON(stdout, rep)
	case "md":
		printProcessingMarkdown(stdout, rep)
	case "html":
		if err := processingHTML.Execute(stdout, rep); err != nil {
			fmt.Fprintln(stderr, "egress-authz report processing:", err)
			return exitFail
		}
	case "csv":
		printProcessingCSV(stdout, rep)
	case "fides":
		enc := yaml.NewEncoder(stdout)
		enc.SetIndent(2)
		_ = enc.Encode(compliance.Fides(rep))
		_ = enc.Close()
	}
	return exitOK
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// mdCell makes s safe in a Markdown table cell.
func mdCell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;").Replace(s)
}

func printProcessingMarkdown(w io.Writer, rep *compliance.ProcessingReport) {
	fmt.Fprintf(w, "# Record of processing: recipients of personal data, as observed\n\n")
	fmt.Fprintf(w, "Period: %s to %s (UTC). %d decisions, by rule-set versions %s. Source: the egress gateway's decision log.\n\n",
		stamp(rep.Since), stamp(rep.Until), rep.Decisions, mdCell(strings.Join(rep.RuleSets, ", ")))
	fmt.Fprintf(w, "## Processors\n\n")
	fmt.Fprintf(w, "| processor | legal name | role | country | transfer | DPA | purposes | data categories | data subjects | requests | denied |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---:|---:|\n")
	for _, p := range rep.Processors {
		transfer := p.Transfer
		if p.TransferReference != "" {
			transfer += " (" + p.TransferReference + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n", mdCell(p.ID), mdCell(p.LegalName), mdCell(p.Role), mdCell(p.Country),
			mdCell(transfer), mdCell(p.DPA), mdCell(strings.Join(p.Purposes, ", ")), mdCell(strings.Join(p.DataCategories, ", ")),
			mdCell(strings.Join(p.DataSubjects, ", ")), p.Requests, p.Denied)
	}
	for _, p := range rep.Processors {
		fmt.Fprintf(w, "\n### %s\n\n", mdCell(p.ID))
		if len(p.Workloads) == 0 {
			fmt.Fprintf(w, "No traffic in the period.\n")
			continue
		}
		fmt.Fprintf(w, "| workload | namespace | requests | denied | first seen | last seen |\n|---|---|---:|---:|---|---|\n")
		for _, wl := range p.Workloads {
			fmt.Fprintf(w, "| %s | %s | %d | %d | %s | %s |\n", mdCell(wl.Principal), mdCell(wl.Namespace), wl.Requests, wl.Denied, stamp(wl.FirstSeen), stamp(wl.LastSeen))
		}
		fmt.Fprintf(w, "\n| rule | version | owner | ticket | hosts | purposes | data categories | requests |\n|---|---|---|---|---|---|---|---:|\n")
		for _, u := range p.Rules {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %d |\n", mdCell(u.ID), mdCell(u.RuleSet), mdCell(u.Owner), mdCell(u.Ticket),
				mdCell(strings.Join(u.Hosts, ", ")), mdCell(strings.Join(u.Purposes, ", ")), mdCell(strings.Join(u.DataCategories, ", ")), u.Requests)
		}
	}
	fmt.Fprintf(w, "\n## Findings\n\n")
	if len(rep.Findings) == 0 {
		fmt.Fprintf(w, "None.\n")
		return
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "- **%s**: %s\n", f.Kind, mdCell(f.Detail))
	}
}

func printProcessingCSV(w io.Writer, rep *compliance.ProcessingReport) {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"processor", "legal_name", "role", "country", "transfer", "dpa", "purposes", "data_categories", "data_subjects",
		"principal", "namespace", "requests", "denied", "first_seen", "last_seen"})
	for _, p := range rep.Processors {
		head := []string{p.ID, p.LegalName, p.Role, p.Country, p.Transfer, p.DPA, strings.Join(p.Purposes, " "),
			strings.Join(p.DataCategories, " "), strings.Join(p.DataSubjects, " ")}
		if len(p.Workloads) == 0 {
			_ = cw.Write(csvSafeRow(append(head, "", "", "0", "0", "", "")))
		}
		for _, wl := range p.Workloads {
			_ = cw.Write(csvSafeRow(append(head[:9:9], wl.Principal, wl.Namespace, strconv.Itoa(wl.Requests), strconv.Itoa(wl.Denied),
				wl.FirstSeen.UTC().Format(time.RFC3339), wl.LastSeen.UTC().Format(time.RFC3339))))
		}
	}
	cw.Flush()
}

// csvSafeRow keeps a spreadsheet from reading a cell as a formula, as
// audit query's CSV does.
func csvSafeRow(row []string) []string {
	for i, v := range row {
		row[i] = admin.CSVSafe(v)
	}
	return row
}

var processingHTML = template.Must(template.New("processing").Funcs(template.FuncMap{
	"join": strings.Join, "stamp": stamp,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Record of processing: recipients, as observed</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.n{text-align:right}
.finding{margin:.25em 0}.kind{font-weight:600}
</style></head><body>
<h1>Record of processing: recipients of personal data, as observed</h1>
<p>Period {{stamp .Since}} to {{stamp .Until}} (UTC): {{.Decisions}} decisions, by rule-set versions {{join .RuleSets ", "}}. Source: the egress gateway's decision log.</p>
<h2>Processors</h2>
<table><tr><th>processor</th><th>legal name</th><th>role</th><th>country</th><th>transfer</th><th>DPA</th><th>purposes</th><th>data categories</th><th>data subjects</th><th>requests</th><th>denied</th></tr>
{{range .Processors}}<tr><td><a href="#p-{{.ID}}">{{.ID}}</a></td><td>{{.LegalName}}</td><td>{{.Role}}</td><td>{{.Country}}</td><td>{{.Transfer}}{{if .TransferReference}} ({{.TransferReference}}){{end}}</td><td>{{.DPA}}</td><td>{{join .Purposes ", "}}</td><td>{{join .DataCategories ", "}}</td><td>{{join .DataSubjects ", "}}</td><td class="n">{{.Requests}}</td><td class="n">{{.Denied}}</td></tr>
{{end}}</table>
{{range .Processors}}<h3 id="p-{{.ID}}">{{.ID}}</h3>
{{if .Workloads}}<table><tr><th>workload</th><th>namespace</th><th>requests</th><th>denied</th><th>first seen</th><th>last seen</th></tr>
{{range .Workloads}}<tr><td>{{.Principal}}</td><td>{{.Namespace}}</td><td class="n">{{.Requests}}</td><td class="n">{{.Denied}}</td><td>{{stamp .FirstSeen}}</td><td>{{stamp .LastSeen}}</td></tr>
{{end}}</table>
<table><tr><th>rule</th><th>version</th><th>owner</th><th>ticket</th><th>hosts</th><th>purposes</th><th>data categories</th><th>requests</th></tr>
{{range .Rules}}<tr><td>{{.ID}}</td><td>{{.RuleSet}}</td><td>{{.Owner}}</td><td>{{.Ticket}}</td><td>{{join .Hosts ", "}}</td><td>{{join .Purposes ", "}}</td><td>{{join .DataCategories ", "}}</td><td class="n">{{.Requests}}</td></tr>
{{end}}</table>{{else}}<p>No traffic in the period.</p>{{end}}
{{end}}<h2>Findings</h2>
{{range .Findings}}<p class="finding"><span class="kind">{{.Kind}}</span>: {{.Detail}}</p>
{{else}}<p>None.</p>{{end}}
</body></html>
`))
