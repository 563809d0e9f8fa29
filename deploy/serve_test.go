package deploy_test

// The Deployment's arguments, run for real: the binary is built, the pod's
// mounts are recreated in a temporary directory, and the server must start,
// answer the kubelet's probes without the admin token, and refuse everything
// else without it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/egress-authz/egress-authz/internal/pgtest"
)

// buildBinary builds egress-authz the way cmd/egress-authz's end-to-end
// tests do, so that the two share the build cache.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "egress-authz")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "cmd", "egress-authz")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestDeploymentArgsServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := newStack(t, overlayA)
	p := &problems{}
	ctr := s.container(p)
	dep := s.deployment(p)
	root := t.TempDir()
	const token = "0123456789abcdef0123456789abcdef"

	// The pod's volumes, under root.
	for _, m := range ctr.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var vol *corev1.Volume
		for i := range dep.Spec.Template.Spec.Volumes {
			if v := &dep.Spec.Template.Spec.Volumes[i]; v.Name == m.Name {
				vol = v
			}
		}
		switch {
		case vol == nil:
			t.Fatalf("mount %s has no volume", m.Name)
		case vol.ConfigMap != nil:
			cm := s.find("ConfigMap", dep.Namespace, vol.ConfigMap.Name).Value.(*corev1.ConfigMap)
			for k, v := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		case vol.Secret != nil:
			for _, it := range vol.Secret.Items {
				if err := os.WriteFile(filepath.Join(dir, it.Path), []byte(token+"\n"), 0o400); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// The Secrets, and $(VAR) expanded from the env as the kubelet does. The
	// decision log goes to a real PostgreSQL where one can be started (make
	// test installs it), else to SQLite.
	dsn := "sqlite:" + filepath.Join(root, "decisions.db")
	if pg, err := pgtest.Start(); err != nil {
		t.Logf("decision log in SQLite: %v", err)
	} else {
		defer pg.Stop()
		if dsn, err = pg.NewDatabase(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{}
	for _, e := range ctr.Env {
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Name == "egress-authz-audit" {
			env[e.Name] = dsn
		}
	}
	grpcAddr, adminAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	var args []string
	for _, a := range ctr.Args {
		a = envRef.ReplaceAllStringFunc(a, func(ref string) string {
			v, ok := env[ref[2:len(ref)-1]]
			if !ok {
				t.Fatalf("argument %q: no value for %s", a, ref)
			}
			return v
		})
		name, value, _ := strings.Cut(a, "=")
		switch name {
		case "--grpc-addr":
			a = name + "=" + grpcAddr
		case "--http-addr":
			a = name + "=" + httpAddr
		case "--admin-addr":
			// Loopback here; the admin token guards it all the same, since
			// --admin-token-file is set.
			a = name + "=" + adminAddr
		case "--rules", "--data-dir", "--admin-token-file":
			a = name + "=" + filepath.Join(root, value)
		}
		args = append(args, a)
	}

	bin := buildBinary(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("egress-authz %s\nstderr:\n%s", strings.Join(args, " "), stderr.String())
		}
	}()

	get := func(path string, auth bool) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if code, _ := get(ctr.ReadinessProbe.HTTPGet.Path, false); code == http.StatusOK {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("egress-authz exited before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("not ready within 30 s")
		case <-time.After(50 * time.Millisecond):
		}
	}

	for _, tc := range []struct {
		path string
		auth bool
		want int
	}{
		{ctr.ReadinessProbe.HTTPGet.Path, false, http.StatusOK},
		{ctr.LivenessProbe.HTTPGet.Path, false, http.StatusOK},
		{"/metrics", false, http.StatusUnauthorized},
		{"/metrics", true, http.StatusOK},
		{"/v1/rules", false, http.StatusUnauthorized},
		{"/v1/decisions", false, http.StatusUnauthorized},
		{"/v1/decisions", true, http.StatusOK},
		{"/v1/rules", true, http.StatusOK},
	} {
		t.Run(fmt.Sprintf("GET %s token=%v", tc.path, tc.auth), func(t *testing.T) {
			if code, body := get(tc.path, tc.auth); code != tc.want {
				t.Errorf("status %d, want %d: %s", code, tc.want, body)
			}
		})
	}
	// The HTTP authorization listener answers as the egress-authz-http
	// provider's Envoy would see it: without an identity source
	// configured, a deny with reason no-identity.
	t.Run("HTTP ext_authz without an identity", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/ext-authz/v1/charges", nil)
		req.Host = "api.stripe.com"
		req.Header.Set("X-Forwarded-Client-Cert", "URI=spiffe://cluster.local/ns/payments/sa/checkout")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"reason":"no-identity"`) {
			t.Errorf("HTTP %d %s, want 403 no-identity", resp.StatusCode, body)
		}
	})
	// The rule set served is the ConfigMap's.
	if code, body := get("/v1/rules", true); code == http.StatusOK {
		var st struct {
			Rules int      `json:"rules"`
			Files []string `json:"files"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil || st.Rules == 0 || len(st.Files) != 1 {
			t.Errorf("/v1/rules: %s", body)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM: %v", err)
		}
	case <-time.After(time.Duration(*dep.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second):
		t.Error("still running after the pod's terminationGracePeriodSeconds")
	}
}
