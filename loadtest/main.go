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
	_ = fs.Parse(args)
	send, closeConn, err := dial(*addr, l.conns)
	if err != nil {
		return err
	}
	defer closeConn()
	m := newMix(newWorld(l.rules), l.pool, l.repeat, l.deny, 1)
	r := round(context.Background(), send, m, &l, *addr, *mode, *rate, 1)
	writeTable(os.Stdout, []Scenario{{Name: "run", Server: r}})
	return nil
}

// round warms up, then measures one run.
func round(ctx context.Context, send sender, m *mix, l *load, target, mode string, rate float64, seed uint64) Result {
	if l.warmup > 0 {
		closedLoop(ctx, send, m, l.concurrency, l.warmup, seed+1000)
	}
	var c *counts
	var d time.Duration
	if mode == "open" {
		c, d = openLoop(ctx, send, m, rate, l.duration, seed)
	} else {
		c, d = closedLoop(ctx, send, m, l.concurrency, l.duration, seed)
	}
	return summarize(target, mode, c.hist, d, c.requests.Load(), c.errors.Load(), c.allowed.Load())
}

// proc is a server started as a subprocess.
type proc struct {
	cmd  *exec.Cmd
	addr string
}

func (p *proc) stop() {
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
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if sent {
				continue // keep draining so the child never blocks on a full pipe
			}
			if a, ok := strings.CutPrefix(line, "listening "); ok {
				found <- a
				sent = true
				continue
			}
			var m struct {
				Msg  string `json:"msg"`
				Addr string `json:"grpc_addr"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "serving" {
				found <- m.Addr
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
			return nil, fmt.Errorf("%s exited before serving", cmd.Path)
		}
		return &proc{cmd: cmd, addr: a}, nil
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

func compareCmd(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	var l load
	l.flags(fs)
	bin := fs.String("bin", "bin/egress-authz", "egress-authz binary to measure (make build)")
	rounds := fs.Int("rounds", 2, "A/B rounds per scenario (baseline, server, baseline, server, ...)")
	auditFlag := fs.String("audit", "sqlite", "decision log: sqlite, stdout (the write-ahead log and chain without a store; the output is discarded) or none")
	scenarios := fs.String("scenarios", "cache,nocache,open", "which scenarios: cache, nocache, open")
	openShare := fs.Float64("open-share", 0.7, "open loop rate as a share of the baseline's closed-loop throughput")
	out := fs.String("out", "loadtest/results", "directory for report.json, report.md and latency.svg")
	envFlag := fs.String("server-env", "", "extra environment for egress-authz only, comma-separated (e.g. GOGC=200)")
	_ = fs.Parse(args)
	var env []string
	if *envFlag != "" {
		env = strings.Split(*envFlag, ",")
	}

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
	m := newMix(w, l.pool, l.repeat, l.deny, 1)
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

	var results []Scenario
	var baseMax float64
	want := map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		want[strings.TrimSpace(s)] = true
	}
	runScenario := func(name string, cacheSize int, mode string, rate float64, goal string, met func(Ratio) bool) error {
		auditDSN := *auditFlag
		if auditDSN == "sqlite" {
			auditDSN = "sqlite:" + filepath.Join(dir, name, "decisions.db")
		}
		srv, err := startServer(*bin, rulesFile, filepath.Join(dir, name), cacheSize, auditDSN, env)
		if err != nil {
			return fmt.Errorf("%s: egress-authz: %w", name, err)
		}
		defer srv.stop()
		sendSrv, closeSrv, err := dial(srv.addr, l.conns)
		if err != nil {
			return err
		}
		defer closeSrv()
		var base, test []Result
		for i := 0; i < *rounds; i++ {
			seed := uint64(i + 1)
			base = append(base, round(context.Background(), sendNoop, m, &l, "noop", mode, rate, seed))
			test = append(test, round(context.Background(), sendSrv, m, &l, "egress-authz", mode, rate, seed))
			fmt.Fprintf(os.Stderr, "%s round %d: noop %.0f req/s p99 %s | egress-authz %.0f req/s p99 %s\n", name, i+1,
				base[i].Throughput, base[i].P99, test[i].Throughput, test[i].P99)
		}
		s := Scenario{Name: name, Baseline: merge(base), Server: merge(test), Goal: goal}
		s.Ratio = ratio(s.Server, s.Baseline)
		s.Met = met(s.Ratio) && s.Server.Errors == 0
		if mode == "closed" && s.Baseline.Throughput > baseMax {
			baseMax = s.Baseline.Throughput
		}
		results = append(results, s)
		return nil
	}
	desc := fmt.Sprintf("%d rules, %d concurrent, closed loop, decision log %s", l.rules, l.concurrency, *auditFlag)
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
	return report(*out, desc, &l, results)
}

func report(out, desc string, l *load, ss []Scenario) error {
	host, _ := os.Hostname()
	meta := map[string]any{
		"when": time.Now().UTC().Format(time.RFC3339), "machine": fmt.Sprintf("%s, %d CPUs, %s/%s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH),
		"load": desc, "duration_per_round": l.duration.String(), "repeat_share": l.repeat, "deny_share": l.deny, "conns": l.conns,
		"command": "go run ./loadtest " + strings.Join(os.Args[1:], " "),
	}
	writeTable(os.Stdout, ss)
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(map[string]any{"meta": meta, "scenarios": ss}, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "report.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# egress-authz vs a no-op ext_authz server\n\n%s; %s per round, %s; command: `%s`\n\n",
		desc, l.duration, meta["machine"], meta["command"])
	writeTable(&md, ss)
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
