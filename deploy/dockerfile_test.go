package deploy_test

// No Docker engine runs where the tests do, so the Dockerfile is checked as
// text: the promises it makes (static binary, distroless non-root runtime, no
// shell) must be visible in its instructions.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const dockerfile = "../Dockerfile"

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Line int
	Cmd  string // upper-case: FROM, RUN, ...
	Args string
}

// stage is one FROM and the instructions after it.
type stage struct {
	Base, Name string
	Body       []instruction
}

func parseDockerfile(data []byte) (global []instruction, stages []*stage, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	var cur strings.Builder
	start, n := 0, 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := &stage{Base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			} else if len(f) != 1 {
				return fmt.Errorf("line %d: FROM %s", in.Line, in.Args)
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			global = append(global, in)
		} else {
			stages[len(stages)-1].Body = append(stages[len(stages)-1].Body, in)
		}
		return nil
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments, and the syntax directive
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		if err := flush(); err != nil {
			return nil, nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	return global, stages, sc.Err()
}

func loadDockerfile() ([]instruction, []*stage, error) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		return nil, nil, err
	}
	return parseDockerfile(data)
}

func (st *stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range st.Body {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// dockerfileUID is the numeric user of the final stage.
func dockerfileUID(p *problems) int64 {
	_, stages, err := loadDockerfile()
	if err != nil {
		p.fatalf("%v", err)
	}
	users := stages[len(stages)-1].all("USER")
	if len(users) == 0 {
		p.fatalf("%s: the final stage sets no USER", dockerfile)
	}
	user, _, _ := strings.Cut(users[len(users)-1].Args, ":")
	uid, err := strconv.ParseInt(user, 10, 64)
	if err != nil {
		p.fatalf("%s: USER %s is not numeric", dockerfile, users[len(users)-1].Args)
	}
	return uid
}

func TestDockerfile(t *testing.T) {
	global, stages, err := loadDockerfile()
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, found %d stage(s)", len(stages))
	}
	final := stages[len(stages)-1]
	var build *stage
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st.all("RUN") {
			if strings.Contains(in.Args, "go build") {
				build = st
			}
		}
	}
	if build == nil {
		t.Fatal("no stage runs go build")
	}

	t.Run("static_build", func(t *testing.T) {
		var run string
		for _, in := range build.all("RUN") {
			if strings.Contains(in.Args, "go build") {
				run = in.Args
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/egress-authz", "-X main.version="} {
			if !strings.Contains(run, want) {
				t.Errorf("go build does not use %s: %s", want, run)
			}
		}
	})

	t.Run("go_version_matches_go_mod", func(t *testing.T) {
		mod, err := os.ReadFile("../go.mod")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
		if m == nil {
			t.Fatal("no go line in go.mod")
		}
		var version string
		for _, in := range global {
			if in.Cmd == "ARG" && strings.HasPrefix(in.Args, "GO_VERSION=") {
				version = strings.TrimPrefix(in.Args, "GO_VERSION=")
			}
		}
		if version != string(m[1]) {
			t.Errorf("ARG GO_VERSION=%s, but go.mod says go %s", version, m[1])
		}
		if !strings.HasPrefix(build.Base, "golang:${GO_VERSION}") {
			t.Errorf("build stage FROM %s: want golang:${GO_VERSION}", build.Base)
		}
	})

	t.Run("distroless_nonroot_runtime", func(t *testing.T) {
		distroless := regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot(@sha256:[0-9a-f]{64})?$`)
		if !distroless.MatchString(final.Base) && final.Base != "scratch" {
			t.Errorf("final stage FROM %s: want gcr.io/distroless/static-*:nonroot or scratch", final.Base)
		}
		users := final.all("USER")
		if len(users) == 0 {
			t.Fatal("the final stage sets no USER")
		}
		user := users[len(users)-1].Args
		uid, gid, _ := strings.Cut(user, ":")
		if uid != "65532" || (gid != "" && gid != "65532") {
			t.Errorf("USER %s: want the numeric non-root 65532 (Kubernetes' runAsNonRoot cannot check a name)", user)
		}
	})

	t.Run("no_shell_in_runtime", func(t *testing.T) {
		// distroless static and scratch have no shell: nothing may need one.
		for _, in := range final.Body {
			switch in.Cmd {
			case "RUN":
				t.Errorf("line %d: RUN in the final stage needs a shell", in.Line)
			case "ENTRYPOINT", "CMD":
				var argv []string
				if err := json.Unmarshal([]byte(in.Args), &argv); err != nil {
					t.Errorf("line %d: %s %s: use the exec (JSON) form; the shell form needs /bin/sh", in.Line, in.Cmd, in.Args)
				}
			case "SHELL", "HEALTHCHECK":
				t.Errorf("line %d: %s in the final stage (Kubernetes probes check health)", in.Line, in.Cmd)
			}
		}
		eps := final.all("ENTRYPOINT")
		if len(eps) != 1 {
			t.Fatalf("want one ENTRYPOINT, found %d", len(eps))
		}
		var argv []string
		_ = json.Unmarshal([]byte(eps[0].Args), &argv)
		copied := false
		for _, in := range final.all("COPY") {
			f := strings.Fields(in.Args)
			if len(argv) > 0 && strings.HasPrefix(in.Args, "--from="+build.Name) && f[len(f)-1] == argv[0] {
				copied = true
			}
		}
		if !copied {
			t.Errorf("ENTRYPOINT %v is not a binary copied from stage %s", argv, build.Name)
		}
	})

	t.Run("no_healthcheck", func(t *testing.T) {
		for _, st := range stages {
			if hc := st.all("HEALTHCHECK"); len(hc) > 0 {
				t.Errorf("line %d: HEALTHCHECK: Kubernetes' probes check health", hc[0].Line)
			}
		}
	})

	t.Run("labels", func(t *testing.T) {
		var labels string
		for _, in := range final.all("LABEL") {
			labels += " " + in.Args
		}
		for _, want := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision"} {
			if !strings.Contains(labels, want+"=") {
				t.Errorf("no LABEL %s", want)
			}
		}
	})

	t.Run("dockerignore", func(t *testing.T) {
		data, err := os.ReadFile("../.dockerignore")
		if err != nil {
			t.Fatal(err)
		}
		ignored := map[string]bool{}
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				ignored[strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/")] = true
			}
		}
		for _, want := range []string{".git", "egress-authz", "bin", "data"} {
			if !ignored[want] {
				t.Errorf(".dockerignore does not exclude %s", want)
			}
		}
		for _, need := range []string{"go.mod", "go.sum", "cmd", "internal", "rules", "authz"} {
			if ignored[need] {
				t.Errorf(".dockerignore excludes %s, which the build needs", need)
			}
		}
	})
}

func TestParseDockerfile(t *testing.T) {
	global, stages, err := parseDockerfile([]byte("# syntax=docker/dockerfile:1\nARG X=1\nFROM a AS b\nRUN one \\\n  two\n\nFROM c\nUSER 1:2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(global) != 1 || global[0].Args != "X=1" {
		t.Errorf("global %+v", global)
	}
	if len(stages) != 2 || stages[0].Name != "b" || stages[0].Body[0].Args != "one  two" || stages[1].Base != "c" || stages[1].Body[0].Line != 8 {
		t.Errorf("stages %+v %+v", stages[0], stages[1])
	}
}
