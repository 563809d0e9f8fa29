// Command loadtest measures egress-authz against a no-op ext_authz server on
// the same machine, in the same run, with real v3 CheckRequests over gRPC.
//
//	go run ./loadtest compare [flags]   A/B rounds against the no-op baseline; writes a report
//	go run ./loadtest run --addr A      one load run against any ext_authz server
//	go run ./loadtest gen-rules         print a generated allow-list
//	go run ./loadtest memory            resident memory with a big rule set and a full cache
//	go run ./loadtest noop --addr A     the baseline server itself
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadtest compare|run|gen-rules|memory|noop [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "compare":
		err = compareCmd(os.Args[2:])
	case "run":
		err = runCmd(os.Args[2:])
	case "gen-rules":
		err = genCmd(os.Args[2:])
	case "memory":
		err = memoryCmd(os.Args[2:])
	case "noop":
		fs := flag.NewFlagSet("noop", flag.ExitOnError)
		addr := fs.String("addr", "127.0.0.1:0", "listen address")
		_ = fs.Parse(os.Args[2:])
		err = serveNoop(*addr)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// load is the request mix and the shape of one run.
type load struct {
	rules       int
	concurrency int
	conns       int
	duration    time.Duration
	warmup      time.Duration
	repeat      float64
	deny        float64
	pool        int
	ids         string
}

func (l *load) flags(fs *flag.FlagSet) {
	fs.IntVar(&l.rules, "rules", 10000, "rules in the generated allow-list (and the world the requests come from)")
	fs.IntVar(&l.concurrency, "concurrency", 64, "closed loop: concurrent callers")
	fs.IntVar(&l.conns, "conns", 4, "gRPC connections, as an Envoy with 4 worker threads opens")
	fs.DurationVar(&l.duration, "duration", 5*time.Second, "measured time per round")
	fs.DurationVar(&l.warmup, "warmup", time.Second, "unmeasured load before each round")
	fs.Float64Var(&l.repeat, "repeat", 0.9, "share of requests drawn from a fixed pool (cache hits once warm)")
	fs.Float64Var(&l.deny, "deny", 0.1, "share of requests from a caller the rule does not name (denied)")
	fs.IntVar(&l.pool, "pool", 20000, "distinct requests in the repeated pool")
	fs.StringVar(&l.ids, "ids", idsNone, "identifiers in each request: none (the server makes a request id), or random "+
		"(a fresh UUIDv4 x-request-id and W3C traceparent in every request, as a mesh with tracing sends)")
}

// newMix returns the request mix of the load.
func (l *load) newMix(w *world) (*mix, error) {
	if err := checkIDs(l.ids); err != nil {
		return nil, err
	}
	m := newMix(w, l.pool, l.repeat, l.deny, 1)
	m.ids = l.ids == idsRandom
	return m, nil
}

func genCmd(args []string) error {
	fs := flag.NewFlagSet("gen-rules", flag.ExitOnError)
	n := fs.Int("rules", 10000, "number of rules (100, 1000, 10000, 100000, ...)")
	_ = fs.Parse(args)
	_, err := io.WriteString(os.Stdout, newWorld(*n).RulesYAML())
	return err
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var l load
	l.flags(fs)
	addr := fs.String("addr", "127.0.0.1:9191", "ext_authz server")
	mode := fs.String("mode", "closed", "closed or open")
	rate := fs.Float64("rate", 1000, "open loop: requests per second")
	pid := fs.Int("pid", 0, "the server's process id on this machine: report its CPU time per request (from /proc)")
	_ = fs.Parse(args)
	m, err := l.newMix(newWorld(l.rules))
	if err != nil {
		return err
	}
	send, closeConn, err := dial(*addr, l.conns)
	if err != nil {
		return err
	}
	defer closeConn()
	r := round(context.Background(), target{name: *addr, send: send, pid: *pid}, m, &l, *mode, *rate, 1)
	writeTable(os.Stdout, []Scenario{{Name: "run", Server: r}})
	return nil
}

// proc is a server started as a subprocess.
type proc struct {
	cmd     *exec.Cmd
	addr    string // gRPC
	admin   string // egress-authz's admin listener; "" for the no-op server
	stopped bool
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the server gracefully (it drains its decision log), or kills
// it after 20 s. Once stopped, cmd.ProcessState holds its CPU times.
func (p *proc) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
}

// start runs cmd and waits for the line that names its listen address:
// "listening ADDR" (the no-op server) or egress-authz's JSON "serving" log.
func start(cmd *exec.Cmd, fromStderr bool) (*proc, error) {
	var r io.Reader
	var err error
	if fromStderr {
		r, err = cmd.StderrPipe()
	} else {
		r, err = cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
	}
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	found := make(chan [2]string, 1) // gRPC and admin address
	var last string                  // the output's last line, which says why a server that exits did
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if sent {
				continue // keep draining so the child never blocks on a full pipe
			}
			last = line
			if a, ok := strings.CutPrefix(line, "listening "); ok {
				found <- [2]string{a, ""}
				sent = true
				continue
			}
			var m struct {
				Msg   string `json:"msg"`
				Addr  string `json:"grpc_addr"`
				Admin string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "serving" {
				found <- [2]string{m.Addr, m.Admin}
				sent = true
			}
		}
		if !sent {
			close(found)
		}
	}()
	select {
	case a, ok := <-found:
		if !ok {
			_ = cmd.Wait()
			return nil, fmt.Errorf("%s exited before serving: %s", cmd.Path, last)
		}
		return &proc{cmd: cmd, addr: a[0], admin: a[1]}, nil
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s did not start within 60 s", cmd.Path)
	}
}

func startNoop() (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return start(exec.Command(self, "noop", "--addr", "127.0.0.1:0"), false)
}

// startServer runs egress-authz; env is added to its environment only (e.g.
// GOGC=200), so a tuning can be measured without changing the baseline's
// or the load generator's.
func startServer(bin, rulesFile, dir string, cacheSize int, auditDSN string, env []string) (*proc, error) {
	args := []string{"serve", "--rules", rulesFile, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--plaintext", "--log-format", "json", "--cache-size", strconv.Itoa(cacheSize), "--data-dir", dir, "--audit", auditDSN}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = io.Discard
	return start(cmd, true)
}

// logServer is an egress-authz with one of the decision logs compare
// measures, for one scenario.
type logServer struct {
	log       logSpec
	dir       string // its data directory: write-ahead log, SQLite file, segments
	proc      *proc
	t         target
	closeConn func()
}

func startLogServer(bin, rulesFile, dir string, cacheSize int, log logSpec, env []string, conns int) (*logServer, error) {
	p, err := startServer(bin, rulesFile, dir, cacheSize, log.dsn(dir), env)
	if err != nil {
		return nil, err
	}
	send, closeConn, err := dial(p.addr, conns)
	if err != nil {
		p.stop()
		return nil, err
	}
	return &logServer{log: log, dir: dir, proc: p, closeConn: closeConn,
		t: target{name: "egress-authz", send: send, pid: p.pid(), admin: p.admin}}, nil
}

// finish stops the server and returns its totals over the scenario: its
// counters, read just before the stop, then the CPU the stop took and the
// size of its files after it.
func (s *logServer) finish(ctx context.Context, sent int64) (*Totals, error) {
	m, err := scrape(ctx, s.proc.admin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.log.label(), err)
	}
	t := &Totals{Sent: sent, Records: int64(m[metricWritten])}
	if n := m[metricCacheHit] + m[metricCacheMiss]; n > 0 {
		t.CacheHitShare = m[metricCacheHit] / n
	}
	before, err := procCPU(s.proc.pid())
	if err != nil {
		return nil, err
	}
	s.closeConn()
	s.proc.stop()
	if st := s.proc.cmd.ProcessState; st != nil {
		t.StopCPU = max(0, st.UserTime()+st.SystemTime()-before.run)
	}
	n, archive, ok, err := s.log.storeBytes(s.dir)
	if err != nil {
		return nil, err
	}
	if ok {
		t.StoreBytes, t.RuleSetBytes = &n, archive
		if sent > 0 {
			t.BytesPerDecision = float64(n) / float64(sent)
		}
		if t.Records > 0 {
			t.BytesPerRecord = float64(n) / float64(t.Records)
		}
	}
	if t.WALBytes, err = dirBytes(filepath.Join(s.dir, "wal")); err != nil {
		return nil, err
	}
	return t, nil
}

func compareCmd(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	var l load
	l.flags(fs)
	bin := fs.String("bin", "bin/egress-authz", "egress-authz binary to measure (make build)")
	rounds := fs.Int("rounds", 2, "A/B rounds per scenario (baseline, server, baseline, server, ...)")
	auditFlag := fs.String("audit", "sqlite", "decision logs to measure, comma-separated, each in its own egress-authz after the same baseline round: "+
		"none, stdout (the write-ahead log and chain without a store; the output is discarded), sqlite, parquet (segments in the server's data directory) "+
		"or a DSN. With none among them, the report gives each other log's server CPU per decision over none's (e.g. --audit none,parquet)")
	scenarios := fs.String("scenarios", "cache,nocache,open", "which scenarios: cache, nocache, open")
	openShare := fs.Float64("open-share", 0.7, "open loop rate as a share of the baseline's closed-loop throughput")
	out := fs.String("out", "loadtest/results", "directory for report.json, report.md and latency.svg")
	envFlag := fs.String("server-env", "", "extra environment for egress-authz only, comma-separated (e.g. GOGC=200)")
	_ = fs.Parse(args)
	var env []string
	if *envFlag != "" {
		env = strings.Split(*envFlag, ",")
	}
	logs, err := parseLogs(*auditFlag)
	if err != nil {
		return err
	}
	ctx := context.Background()

	dir, err := os.MkdirTemp("", "egress-authz-loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w := newWorld(l.rules)
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(w.RulesYAML()), 0o644); err != nil {
		return err
	}
	m, err := l.newMix(w)
	if err != nil {
		return err
	}
	noop, err := startNoop()
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	defer noop.stop()
	sendNoop, closeNoop, err := dial(noop.addr, l.conns)
	if err != nil {
		return err
	}
	defer closeNoop()
	baseline := target{name: "noop", send: sendNoop, pid: noop.pid()}

	var results []Scenario
	var baseMax float64
	want := map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		want[strings.TrimSpace(s)] = true
	}
	runScenario := func(name string, cacheSize int, mode string, rate float64, goal string, met func(Ratio) bool) error {
		srvs := make([]*logServer, len(logs))
		for i, lg := range logs {
			s, err := startLogServer(*bin, rulesFile, filepath.Join(dir, name, fmt.Sprintf("%d-%s", i, lg.label())), cacheSize, lg, env, l.conns)
			if err != nil {
				return fmt.Errorf("%s: egress-authz --audit %s: %w", name, lg.label(), err)
			}
			defer s.proc.stop()
			defer s.closeConn()
			srvs[i] = s
		}
		var base []Result
		test := make([][]Result, len(srvs))
		for i := 0; i < *rounds; i++ {
			seed := uint64(i + 1)
			b := round(ctx, baseline, m, &l, mode, rate, seed)
			base = append(base, b)
			line := fmt.Sprintf("%s round %d: noop %s", name, i+1, brief(b))
			for j, s := range srvs {
				r := round(ctx, s.t, m, &l, mode, rate, seed)
				test[j] = append(test[j], r)
				line += fmt.Sprintf(" | egress-authz, log %s %s", s.log.label(), brief(r))
			}
			fmt.Fprintln(os.Stderr, line)
		}
		b := merge(base)
		if mode == "closed" && b.Throughput > baseMax {
			baseMax = b.Throughput
		}
		noneCPU := 0.0
		var ss []Scenario
		for j, s := range srvs {
			r := merge(test[j])
			totals, err := s.finish(ctx, r.Requests+r.Warmup)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			sc := Scenario{Name: name, Audit: s.log.label(), Baseline: b, Server: r, Goal: goal, Totals: totals}
			sc.Ratio = ratio(sc.Server, sc.Baseline)
			sc.Met = met(sc.Ratio) && sc.Server.Errors == 0
			if s.log == "none" {
				noneCPU = r.CPUPerRequest
			}
			ss = append(ss, sc)
		}
		for k := range ss {
			if cpu := ss[k].Server.CPUPerRequest; noneCPU > 0 && cpu > 0 && logs[k] != "none" {
				d := cpu - noneCPU
				ss[k].Totals.LogCPUPerDecision = &d
			}
		}
		results = append(results, ss...)
		return nil
	}
	var labels []string
	for _, lg := range logs {
		labels = append(labels, lg.label())
	}
	desc := fmt.Sprintf("%d rules, %d concurrent, closed loop, decision log %s, request ids %s",
		l.rules, l.concurrency, strings.Join(labels, " and "), l.ids)
	if want["cache"] {
		if err := runScenario("closed-cache-on", 100000, "closed", 0, "req/s ≥ 0.90×, p99 ≤ 1.25×",
			func(r Ratio) bool { return r.Throughput >= 0.90 && r.P99 <= 1.25 }); err != nil {
			return err
		}
	}
	if want["nocache"] {
		if err := runScenario("closed-cache-off", 0, "closed", 0, "req/s ≥ 0.80×",
			func(r Ratio) bool { return r.Throughput >= 0.80 }); err != nil {
			return err
		}
	}
	if want["open"] {
		if baseMax == 0 {
			return errors.New("the open scenario needs a closed one first, to know the baseline's throughput")
		}
		rate := baseMax * *openShare
		if err := runScenario(fmt.Sprintf("open-%.0f%%", *openShare*100), 100000, "open", rate, "p99.9 ≤ 2×",
			func(r Ratio) bool { return r.P999 <= 2 }); err != nil {
			return err
		}
	}
	return report(os.Stdout, *out, desc, &l, results)
}

// brief is a round's result in a progress line.
func brief(r Result) string {
	s := fmt.Sprintf("%.0f req/s p99 %s", r.Throughput, r.P99)
	if r.CPUPerRequest > 0 {
		s += fmt.Sprintf(" CPU %.1f µs/req", r.CPUPerRequest/1e3)
	}
	return s
}

// reportMeta says how a report was made.
type reportMeta struct {
	When             string  `json:"when"`
	Machine          string  `json:"machine"`
	Load             string  `json:"load"`
	DurationPerRound string  `json:"duration_per_round"`
	RepeatShare      float64 `json:"repeat_share"`
	DenyShare        float64 `json:"deny_share"`
	Conns            int     `json:"conns"`
	IDs              string  `json:"ids"`
	Command          string  `json:"command"`
}

// report prints the tables to stdout and writes them, as Markdown, JSON
// and SVG, into the directory out (none when out is empty).
func report(stdout io.Writer, out, desc string, l *load, ss []Scenario) error {
	host, _ := os.Hostname()
	meta := reportMeta{
		When: time.Now().UTC().Format(time.RFC3339), Machine: fmt.Sprintf("%s, %d CPUs, %s/%s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH),
		Load: desc, DurationPerRound: l.duration.String(), RepeatShare: l.repeat, DenyShare: l.deny, Conns: l.conns, IDs: l.ids,
		Command: "go run ./loadtest " + strings.Join(os.Args[1:], " "),
	}
	writeTable(stdout, ss)
	fmt.Fprintln(stdout)
	writeLogTable(stdout, ss)
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(struct {
		Meta      reportMeta `json:"meta"`
		Scenarios []Scenario `json:"scenarios"`
	}{meta, ss}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "report.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# egress-authz vs a no-op ext_authz server\n\n%s; %s per round, %s; command: `%s`\n\n",
		desc, l.duration, meta.Machine, meta.Command)
	writeTable(&md, ss)
	md.WriteString("\n")
	writeLogTable(&md, ss)
	if err := os.WriteFile(filepath.Join(out, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(out, "latency.svg"))
	if err != nil {
		return err
	}
	plotSVG(f, ss)
	return f.Close()
}

func memoryCmd(args []string) error {
	fs := flag.NewFlagSet("memory", flag.ExitOnError)
	n := fs.Int("rules", 100000, "rules")
	cache := fs.Int("cache", 100000, "cache entries, all filled")
	bin := fs.String("bin", "bin/egress-authz", "egress-authz binary")
	_ = fs.Parse(args)
	dir, err := os.MkdirTemp("", "egress-authz-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w := newWorld(*n)
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(w.RulesYAML()), 0o644); err != nil {
		return err
	}
	srv, err := startServer(*bin, rulesFile, dir, *cache, "none", nil)
	if err != nil {
		return err
	}
	defer srv.stop()
	send, closeConn, err := dial(srv.addr, 4)
	if err != nil {
		return err
	}
	defer closeConn()
	rng := rand.New(rand.NewPCG(7, 7))
	// Fill the cache with distinct requests (each unique path is a key),
	// each sent twice: a decision is cached at its request's second miss.
	for i := 0; i < *cache+*cache/10; i++ {
		req := w.Request(rng, 0.1, uint64(i+1)).msg
		for range 2 {
			if _, err := send(context.Background(), req); err != nil {
				return err
			}
		}
	}
	rss, err := rssOf(srv.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("resident memory with %d rules and %d cached decisions: %.1f MiB\n", *n, *cache, float64(rss)/(1<<20))
	return nil
}

// rssOf reads VmRSS of a process from /proc.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}
