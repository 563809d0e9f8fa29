package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz/authztest"
)

// TestConsoleTokenFlow drives Debian's chromium (scripts/ensure-chromium)
// against a server with --admin-token-file: the console loads without
// the token, says the data needs it, and once it is entered lists the
// decisions and verifies the chains without a click.
func TestConsoleTokenFlow(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no %s (scripts/ensure-chromium installs Debian's chromium): the console's browser tests need it", chromium)
	}
	const token = "s3cret-admin-token-0123456789"
	cfg := inprocConfig(t)
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.AdminTokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := inprocStart(t, cfg)
	base := "http://" + s.adminAddr()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(authztest.Dial(t, s.grpcAddr())).Check(ctx, httpCheck(t, paymentsCaller, "https://api.example.com/", nil)); err != nil {
		t.Fatal(err)
	}
	good := map[string]string{"Authorization": "Bearer " + token}
	eventually(t, 5*time.Second, 20*time.Millisecond, "the decision in the log", func() (bool, string) {
		_, _, body := adminGet(t, nil, base+"/v1/decisions", good)
		return strings.Contains(body, paymentsCaller), body
	})

	bctx, bcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer bcancel()
	actx, acancel := chromedp.NewExecAllocator(bctx, chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800))
	defer acancel()
	tab, tcancel := chromedp.NewContext(actx)
	defer tcancel()
	if err := chromedp.Do(tab); err != nil {
		t.Skipf("chromium at %s does not start: %v", chromium, err)
	}
	state := func(sel, js string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](`(() => { const e = document.querySelector("`+sel+`"); return e && `+js+`; })()`, chromedp.WithPollingTimeout(20*time.Second))
	}
	if err := chromedp.Do(tab, chromedp.Navigate(base+"/ui/"),
		state("#status", `e.dataset.state === "error"`), state("#verify", `e.className === "error"`)); err != nil {
		t.Fatal(err)
	}
	status, _ := chromedp.Run(tab, chromedp.Text(chromedp.ID("status")))
	banner, _ := chromedp.Run(tab, chromedp.Text(chromedp.ID("verify")))
	if !strings.Contains(status, "401") || !strings.Contains(status, "token") || !strings.Contains(banner, "Chains not verified") {
		t.Errorf("without the token: status %q, banner %q; want a 401 asking for the token", status, banner)
	}

	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("token"), token+kb.Enter),
		state("#status", `e.dataset.state === "ready"`), state("#verify", `e.className === "ok"`)); err != nil {
		t.Fatal(err)
	}
	banner, _ = chromedp.Run(tab, chromedp.Text(chromedp.ID("verify")))
	principals, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#rows tr")].map(tr => tr.children[4].title)`))
	if err != nil || len(principals) != 1 || principals[0] != paymentsCaller || !strings.HasPrefix(banner, "Chains intact: 1 record in 1 chain") {
		t.Errorf("with the token: rows %v (%v), banner %q; want the one decision and the chain verified", principals, err, banner)
	}
}
