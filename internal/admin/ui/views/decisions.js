// The Decisions view: the decision log searched on the server, counted by
// GET /v1/stats (chart and top lists), listed by GET /v1/decisions, and
// checked by GET /v1/verify. Every filter is in the URL.
"use strict";

(() => {
  const { el, api, time, navigate } = Console;

  // The filters of GET /v1/decisions the form offers, in its order.
  const fields = [
    ["since", "since", "24h, 7d, a day or RFC 3339"],
    ["until", "until", "same forms"],
    ["principal", "principal", "spiffe://…"],
    ["namespace", "namespace", ""],
    ["host", "host", "api.stripe.com, *.googleapis.com, …:443"],
    ["port", "port", ""],
    ["method", "method", "GET"],
    ["decision", "decision", ["", "allow", "deny"]],
    // rules.Reasons and dry-run (TestUIKnowsEveryReason keeps them equal).
    ["reason", "reason", ["", "allowed-by-rule", "denied-by-rule", "no-matching-rule", "dry-run", "audit-unavailable",
      "no-identity", "invalid-identity", "untrusted-trust-domain", "no-host", "invalid-host", "invalid-request", "unsafe-path"]],
    ["enforced", "enforced", ["", "true", "false"]],
    ["rule", "rule", ""],
    ["processor", "processor", "GDPR processor"],
    ["request_id", "request id", ""],
    ["cluster", "cluster", ""],
    ["limit", "per page", "100"],
  ];
  const filterNames = fields.map(f => f[0]).concat(["dry_run"]);
  const defaultSince = "24h";

  let ui = null;          // the view's elements, built once
  let loaded = "";        // the query the table shows
  let gen = 0;            // the latest load; older answers are dropped
  let abort = null;
  let records = new Map(); // "writer:seq" -> record shown
  let broken = new Map();  // "writer:seq" -> break
  let verifiedFor = null;  // the since|until the banner is of
  let chart = null;
  let cursor = "";         // the next page of the shown query

  function filters(params) {
    const p = new URLSearchParams();
    for (const n of filterNames) if (params.get(n)) p.set(n, params.get(n));
    if (!params.has("since")) p.set("since", defaultSince);
    return p;
  }

  function build(root) {
    const form = el("form", { id: "filters", onsubmit: e => {
      e.preventDefault();
      const p = new URLSearchParams();
      for (const [name] of fields) {
        const v = form.elements[name].value.trim();
        if (v) p.set(name, v);
      }
      if (!p.has("since")) p.set("since", "");
      navigate(p);
    } });
    for (const [name, label, hint] of fields) {
      let input;
      if (Array.isArray(hint)) {
        input = el("select", { name }, ...hint.map(o => el("option", { value: o }, o || "any")));
      } else {
        input = el("input", { name, placeholder: hint, autocomplete: "off" });
      }
      form.append(el("label", {}, label, input));
    }
    form.append(el("div", { class: "buttons" },
      el("button", { type: "submit" }, "Search"),
      el("button", { type: "button", class: "secondary", id: "csv", title: "the newest 100,000 matching records", onclick: csv }, "CSV"),
      el("button", { type: "button", class: "secondary", id: "verify-chains", onclick: () => verify(true) }, "Verify chains")));
    ui = {
      form,
      chips: el("div", { id: "chips" }),
      verify: el("div", { id: "verify", "aria-live": "polite" }),
      status: el("div", { id: "status", "aria-live": "polite" }),
      chart: el("div", { id: "chart" }),
      tops: el("div", { id: "tops" }),
      rows: el("tbody", { id: "rows" }),
      more: el("button", { id: "more", class: "secondary", hidden: true }, "Next page"),
      detail: el("aside", { id: "detail", hidden: true }),
    };
    ui.table = el("table", { id: "records" },
      el("thead", {}, el("tr", {}, ...["time (UTC)", "decision", "reason", "rule", "principal", "host", "method", "path", "request"].map(h => el("th", { class: "c-" + h.split(" ")[0] }, h)))),
      ui.rows);
    root.append(form, ui.chips, ui.verify, ui.status,
      el("section", { class: "overview" }, el("h2", {}, "Decisions over time"), ui.chart), ui.tops,
      el("div", { class: "scroll" }, ui.table), el("p", {}, ui.more), ui.detail);
    Console.onToken(() => { loaded = ""; verifiedFor = null; Console.navigate(Console.current().params, null, true); });
    window.addEventListener("resize", () => chart && chart.setSize({ width: ui.chart.clientWidth, height: 180 }));
  }

  function render(root, params) {
    if (!ui || !root.contains(ui.form)) { root.textContent = ""; build(root); }
    const f = filters(params);
    for (const [name] of fields) ui.form.elements[name].value = f.get(name) || "";
    drawChips(f, params);
    const key = f.toString();
    if (key !== loaded) load(f);
    else { showDetail(params.get("rec")); ui.status.dataset.for = location.search; }
    const vkey = (f.get("since") || "") + "|" + (f.get("until") || "");
    if (verifiedFor !== vkey) verify(false);
  }

  // with returns the current filters with name set to value ("" removes).
  function withFilter(name, value, more) {
    const p = filters(Console.current().params);
    p.delete("rec");
    if (value === "") p.delete(name); else p.set(name, value);
    for (const [k, v] of Object.entries(more || {})) p.set(k, v);
    if (!p.has("since")) p.set("since", "");
    return p;
  }

  function drawChips(f, params) {
    ui.chips.textContent = "";
    for (const [k, v] of f) {
      if (k === "limit" || (k === "since" && !params.has("since"))) continue;
      if (!v) continue;
      ui.chips.append(el("button", { class: "chip", "data-name": k, title: "remove this filter", onclick: () => navigate(withFilter(k, "")) }, k + " = " + v + " ×"));
    }
  }

  function setStatus(text, cls) {
    ui.status.textContent = text;
    ui.status.dataset.state = cls || "ready"; // loading, ready or error
    ui.status.dataset.for = cls === "loading" ? "" : location.search; // the URL it answers
    ui.status.className = cls || "";
    ui.status.setAttribute("role", cls === "error" ? "alert" : "status");
  }

  async function load(f) {
    const my = ++gen;
    if (abort) abort.abort();
    abort = new AbortController();
    loaded = f.toString();
    ui.table.classList.add("stale");
    ui.tops.classList.add("stale");
    ui.more.hidden = true;
    setStatus("Loading…", "loading");
    const statsQ = new URLSearchParams(f);
    statsQ.delete("limit");
    const listQ = new URLSearchParams(f);
    if (!listQ.has("limit")) listQ.set("limit", "100");
    try {
      const [statsResp, listResp] = await Promise.all([
        api("/v1/stats", statsQ, abort.signal), api("/v1/decisions", listQ, abort.signal)]);
      const stats = await statsResp.json();
      const page = await listResp.json();
      if (my !== gen) return;
      records = new Map();
      ui.rows.textContent = "";
      drawChart(stats);
      drawTops(stats);
      addRows(page.records);
      cursor = page.next_cursor || "";
      ui.more.hidden = !cursor;
      ui.table.classList.remove("stale");
      ui.tops.classList.remove("stale");
      setStatus(page.records.length + " of " + stats.counts.total + " matching decisions shown, newest first" +
        (cursor ? " (next page below)" : "") + ". Window " + time(stats.since) + " to " + time(stats.until) + ", " + stats.bucket + " buckets.");
      showDetail(Console.current().params.get("rec"));
    } catch (e) {
      if (e.name === "AbortError" || my !== gen) return;
      // Never leave rows that answer another query.
      records = new Map();
      ui.rows.textContent = "";
      ui.tops.textContent = "";
      if (chart) { chart.destroy(); chart = null; }
      ui.chart.textContent = "";
      ui.table.classList.remove("stale");
      ui.tops.classList.remove("stale");
      loaded = "";
      setStatus("Error " + e.message, "error");
    }
  }

  async function nextPage() {
    const f = filters(Console.current().params);
    if (!f.has("limit")) f.set("limit", "100");
    f.set("cursor", cursor);
    const my = gen;
    try {
      const page = await (await api("/v1/decisions", f)).json();
      if (my !== gen) return;
      addRows(page.records);
      cursor = page.next_cursor || "";
      ui.more.hidden = !cursor;
    } catch (e) {
      setStatus("Error " + e.message, "error");
    }
  }

  function addRows(recs) {
    for (const r of recs) {
      const key = r.writer + ":" + r.seq;
      records.set(key, r);
      const tr = el("tr", { "data-key": key, tabindex: "0", onclick: () => open(key),
        onkeydown: e => { if (e.key === "Enter") open(key); } },
        el("td", { class: "time" }, time(r.time)),
        el("td", { class: r.enforced ? r.decision : "dry", title: r.enforced ? "" : "a dry-run rule's would-be outcome" }, r.decision),
        el("td", {}, filterLink("reason", r.reason)),
        el("td", {}, r.rule ? filterLink("rule", r.rule) : "–"),
        token("principal", short(r.principal), r.principal, r.principal),
        token("host", r.host + (r.port ? ":" + r.port : ""), r.host),
        el("td", {}, r.method || "–"),
        el("td", { class: "tok c-path", title: r.path || "" }, r.path || "–"),
        token("request_id", r.request_id, null, null, "c-request"));
      ui.rows.append(tr);
    }
    markBroken();
  }

  // short is a SPIFFE id without its scheme and trust domain, as shown
  // (the whole id is the title, and what a click filters on).
  function short(id) { return (id || "").replace(/^spiffe:\/\/[^/]+\//, ""); }

  // token is a cell that does not wrap: an ellipsis, the whole in its title.
  function token(filter, text, value, title, cls) {
    const td = el("td", { class: "tok" + (cls ? " " + cls : ""), title: title || text });
    td.append(filter ? filterLink(filter, value || text, text) : text);
    return td;
  }

  function filterLink(name, value, text) {
    return el("a", { href: "?" + withFilter(name, value).toString(), class: "filter", title: "filter on " + name + " = " + value,
      onclick: e => { e.preventDefault(); e.stopPropagation(); navigate(withFilter(name, value)); } }, text || value);
  }

  function open(key) {
    const p = new URLSearchParams(Console.current().params);
    p.set("rec", key);
    navigate(p);
  }

  function showDetail(key) {
    for (const tr of ui.rows.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    if (!key) { ui.detail.hidden = true; return; }
    const r = records.get(key);
    ui.detail.hidden = false;
    ui.detail.textContent = "";
    const close = el("button", { class: "secondary close", onclick: () => {
      const p = new URLSearchParams(Console.current().params); p.delete("rec"); navigate(p);
    } }, "Close");
    if (!r) {
      ui.detail.append(close, el("h2", {}, "Record " + key), el("p", {}, "This record is not among the rows shown: search for it (its request id or its time)."));
      return;
    }
    const tr = ui.rows.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
    if (tr) { tr.classList.add("selected"); tr.scrollIntoView({ block: "nearest" }); }
    const dl = el("table", { class: "fields" });
    for (const [k, v] of Object.entries(r)) {
      let shown = v === "" || v === null ? "–" : String(v);
      if (k === "time") shown = time(v) + "  (" + v + ")";
      dl.append(el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, shown)));
    }
    const b = broken.get(key);
    ui.detail.append(...[close, el("h2", {}, "Record " + r.writer + " · " + r.seq),
      b ? el("p", { class: "broken-note" }, "Chain break (" + b.kind + "): " + b.problem) : null,
      dl,
      r.ruleset ? el("p", {}, Console.ruleSetLink(r.ruleset, "The rule set as it was (version " + r.ruleset + ")")) : null].filter(Boolean));
  }

  function drawChart(stats) {
    if (chart) { chart.destroy(); chart = null; }
    ui.chart.textContent = "";
    const xs = [], allow = [], deny = [], dry = [];
    for (const b of stats.series) {
      xs.push(Date.parse(b.start) / 1000);
      allow.push(b.allow); deny.push(b.deny); dry.push(b.dry_run);
    }
    // Stacked: each series is drawn over the one before.
    const total = xs.map((_, i) => allow[i] + deny[i] + dry[i]);
    const denyUp = xs.map((_, i) => deny[i] + dry[i]);
    const raw = [null, allow, deny, dry];
    const bars = uPlot.paths.bars({ size: [0.9, 40] });
    const shown = (u, v, si, i) => (i === null || i === undefined ? "–" : raw[si][i]);
    const opts = {
      width: Math.max(ui.chart.clientWidth, 300), height: 180,
      tzDate: ts => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      series: [{ value: (u, v) => (v === null ? "–" : time(new Date(v * 1000).toISOString())) },
        { label: "allow", stroke: "#0a6", fill: "#0a6c", paths: bars, value: shown, points: { show: false } },
        { label: "deny", stroke: "#c00", fill: "#c00c", paths: bars, value: shown, points: { show: false } },
        { label: "dry-run", stroke: "#888", fill: "#888c", paths: bars, value: shown, points: { show: false } }],
      axes: [{ values: (u, splits) => splits.map(v => axisTime(v, stats.bucket_ms)) }, { size: 40 }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      legend: { live: true },
    };
    chart = new uPlot(opts, [xs, total, denyUp, dry], ui.chart);
    chart.over.title = "click a bar for its " + stats.bucket;
    chart.over.addEventListener("click", e => {
      const i = chart.posToIdx(e.offsetX);
      if (i === null || i === undefined || i < 0 || i >= xs.length) return;
      const start = new Date(xs[i] * 1000), end = new Date(xs[i] * 1000 + stats.bucket_ms);
      navigate(withFilter("since", start.toISOString(), { until: end.toISOString() }));
    });
  }

  // axisTime labels the time axis in UTC: hours and minutes, with the day
  // when buckets are hours or longer.
  function axisTime(v, bucketMS) {
    const s = new Date(v * 1000).toISOString();
    if (bucketMS >= 86400000) return s.slice(0, 10);
    if (bucketMS >= 3600000) return s.slice(5, 10) + " " + s.slice(11, 16);
    return s.slice(11, 16);
  }

  function drawTops(stats) {
    ui.tops.textContent = "";
    const list = (id, title, filter, items, extra, show) => {
      const ol = el("ol", {});
      const most = items.reduce((m, t) => Math.max(m, t.total), 1);
      for (const t of items) {
        const bar = el("span", { class: "bar" });
        bar.style.width = (100 * t.total / most).toFixed(1) + "%";
        ol.append(el("li", {}, el("span", { class: "key", title: t.key }, filterLink(filter, t.key, show ? show(t.key) : t.key)),
          el("span", { class: "n", title: t.allow + " allowed, " + t.deny + " denied, " + t.dry_run + " dry-run" }, String(t.total)), bar));
      }
      if (!items.length) ol.append(el("li", { class: "none" }, "none in the window"));
      ui.tops.append(el("section", { id, class: "top" }, el("h2", {}, title), extra || null, ol));
    };
    list("top-workloads", "Top workloads", "principal", stats.workloads, null, short);
    list("top-hosts", "Top hosts", "host", stats.hosts);
    list("top-rules", "Top rules", "rule", stats.rules);
    list("deny-reasons", "Denies by reason", "reason", stats.deny_reasons);
    const ol = el("ol", { class: "unused" });
    for (const id of stats.unused_rules) ol.append(el("li", {}, el("span", { class: "key", title: id }, filterLink("rule", id))));
    if (!stats.unused_rules.length) ol.append(el("li", { class: "none" }, "every rule decided something"));
    ui.tops.append(el("section", { id: "unused-rules", class: "top" }, el("h2", {}, "Rules that decided nothing"),
      el("p", { class: "hint" }, "clean-up candidates" + (stats.rule_set ? " (rule set " + stats.rule_set + ")" : "")), ol));
  }

  // verify checks every hash chain: it reads the whole log, so it runs when
  // the page loads, when the window or the token changes, and when asked.
  async function verify(asked) {
    const f = filters(Console.current().params);
    const q = new URLSearchParams();
    for (const k of ["since", "until"]) if (f.get(k)) q.set(k, f.get(k));
    verifiedFor = (f.get("since") || "") + "|" + (f.get("until") || "");
    ui.verify.className = "loading";
    ui.verify.textContent = asked ? "Verifying chains…" : "Verifying chains of the window…";
    try {
      const rep = await (await api("/v1/verify", q)).json();
      broken = new Map();
      for (const b of rep.breaks) broken.set(b.writer + ":" + b.seq, b);
      ui.verify.textContent = "";
      const n = Object.keys(rep.writers || {}).length;
      if (rep.ok) {
        ui.verify.className = "ok";
        ui.verify.append("Chains intact: " + plural(rep.records, "record") + " in " + plural(n, "chain") + ".");
      } else {
        ui.verify.className = "broken";
        const ul = el("ul", {});
        for (const b of rep.breaks) {
          const key = b.writer + ":" + b.seq;
          let p;
          if (b.request_id) p = withFilter("request_id", b.request_id, { rec: key });
          else if (b.time) p = withFilter("since", b.time, { until: new Date(Date.parse(b.time) + 1).toISOString() });
          const text = b.kind + ": writer " + b.writer + ", record " + b.seq + (b.time ? " at " + time(b.time) : "") + ": " + b.problem;
          ul.append(el("li", {}, p ? el("a", { href: "?" + p.toString(), class: "break", onclick: e => { e.preventDefault(); navigate(p); } }, text) : text));
        }
        ui.verify.append(el("strong", {}, "Chain BROKEN: " + plural(rep.count, "break") + " in " + plural(rep.records, "record")), ul);
      }
      if (rep.unchecked.length) ui.verify.append(el("details", {}, el("summary", {}, "Not checked"), ...rep.unchecked.map(u => el("p", {}, u))));
      markBroken();
    } catch (e) {
      broken = new Map();
      ui.verify.className = "error";
      ui.verify.textContent = "Chains not verified: " + e.message;
      verifiedFor = null;
      markBroken();
    }
  }

  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function markBroken() {
    for (const tr of ui.rows.children) {
      const b = broken.get(tr.dataset.key);
      tr.classList.toggle("broken", !!b);
      tr.title = b ? "chain break (" + b.kind + "): " + b.problem : "";
    }
  }

  async function csv() {
    // Bounded, as every query the page sends; larger exports: audit query.
    const p = filters(Console.current().params);
    p.set("limit", "100000");
    p.set("format", "csv");
    try {
      const blob = await (await api("/v1/decisions", p)).blob();
      const a = el("a", { href: URL.createObjectURL(blob), download: "decisions.csv" });
      a.click();
    } catch (e) {
      setStatus("Error " + e.message, "error");
    }
  }

  Console.register({ id: "decisions", title: "Decisions", render: (root, params) => {
    render(root, params);
    ui.more.onclick = nextPage;
  } });
})();
