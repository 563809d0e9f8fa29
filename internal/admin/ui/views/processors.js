// The Processors view: the GDPR processor register as observed, from
// GET /v1/processing (per processor: who sent, how much, when; the rules
// that reached it, per rule-set version; the findings). A workload or a
// rule opens the Decisions view filtered on it; a rule-set version links
// to the rule set as it was (GET /v1/rulesets/VERSION).
"use strict";

(() => {
  const { el, api, time, navigate } = Console;
  const defaultSince = "90d";

  let ui = null;
  let gen = 0;
  let abort = null;
  let loaded = "";

  function build(root) {
    const form = el("form", { id: "processing-filters", onsubmit: e => {
      e.preventDefault();
      const p = new URLSearchParams();
      for (const n of ["since", "until"]) {
        const v = form.elements[n].value.trim();
        if (v) p.set(n, v);
      }
      navigate(p);
    } },
      el("label", {}, "since ", el("input", { name: "since", placeholder: "90d, a day or RFC 3339" })),
      el("label", {}, "until ", el("input", { name: "until", placeholder: "same forms" })),
      el("div", { class: "buttons" }, el("button", { type: "submit" }, "Report")));
    ui = {
      form,
      status: el("div", { id: "processing-status", "aria-live": "polite" }),
      body: el("div", { id: "processing" }),
    };
    root.append(form, ui.status, ui.body);
  }

  function status(text, cls) {
    ui.status.textContent = text;
    ui.status.className = cls || "";
    ui.status.dataset.state = cls || "ready";
    ui.status.setAttribute("role", cls === "error" ? "alert" : "status");
  }

  // decisions links to the Decisions view filtered on name = value over
  // the report's period.
  function decisions(name, value, since, until, text) {
    const p = new URLSearchParams({ [name]: value, since });
    if (until) p.set("until", until);
    return el("a", { href: "?" + p.toString(), class: "filter", title: "the decisions with " + name + " = " + value,
      onclick: e => { e.preventDefault(); navigate(p, "decisions"); } }, text || value);
  }

  function cell(text, cls) {
    return el("td", { class: cls || "tok", title: text }, text || "–");
  }

  function draw(rep, since, until) {
    const b = ui.body;
    b.textContent = "";
    b.append(el("p", { class: "hint" }, rep.decisions + " decisions from " + time(rep.since) + " to " + time(rep.until) +
      ", by rule-set versions " + (rep.ruleSets.join(", ") || "none")));

    const findings = el("section", { id: "findings" }, el("h2", {}, "Findings"));
    const ul = el("ul", {});
    for (const f of rep.findings) ul.append(el("li", { class: "finding", "data-kind": f.kind }, el("strong", {}, f.kind), ": " + f.detail));
    if (!rep.findings.length) ul.append(el("li", { class: "none" }, "none"));
    findings.append(ul);

    const head = ["processor", "legal name", "role", "country", "transfer", "DPA", "purposes", "requests", "denied", "workloads"];
    const table = el("table", { id: "processors" }, el("thead", {}, el("tr", {}, ...head.map(h => el("th", {}, h)))));
    const tbody = el("tbody", {});
    for (const p of rep.processors) {
      const transfer = p.transfer + (p.transferReference ? " (" + p.transferReference + ")" : "");
      const row = el("tr", { "data-id": p.id, class: p.requests - p.denied === 0 ? "unused" : null },
        cell(p.id), cell(p.legalName), cell(p.role), cell(p.country), cell(transfer), cell(p.dpa),
        cell(p.purposes.join(", ")), el("td", { class: "n" }, String(p.requests)), el("td", { class: "n" }, String(p.denied)),
        el("td", { class: "n" }, String(p.workloads.length)));
      tbody.append(row);
      const detail = el("tr", { class: "processor-detail", hidden: true });
      const inner = el("td", { colspan: String(head.length) });
      const wl = el("table", { class: "workloads" }, el("thead", {}, el("tr", {},
        ...["workload", "namespace", "requests", "denied", "first seen", "last seen"].map(h => el("th", {}, h)))));
      const wb = el("tbody", {});
      for (const w of p.workloads) {
        wb.append(el("tr", {}, el("td", { class: "tok", title: w.principal }, decisions("principal", w.principal, since, until)),
          cell(w.namespace), el("td", { class: "n" }, String(w.requests)), el("td", { class: "n" }, String(w.denied)),
          el("td", { class: "time" }, time(w.firstSeen)), el("td", { class: "time" }, time(w.lastSeen))));
      }
      if (!p.workloads.length) wb.append(el("tr", {}, el("td", { colspan: "6", class: "none" }, "no traffic in the period")));
      wl.append(wb);
      const rl = el("table", { class: "rules" }, el("thead", {}, el("tr", {},
        ...["rule", "rule-set version", "owner", "ticket", "hosts", "purposes", "data categories", "requests"].map(h => el("th", {}, h)))));
      const rb = el("tbody", {});
      for (const u of p.rules) {
        rb.append(el("tr", {}, el("td", { class: "tok", title: u.id }, decisions("rule", u.id, since, until)),
          el("td", { class: "mono" }, Console.ruleSetLink(u.ruleSet)),
          cell(u.owner), cell(u.ticket), cell(u.hosts.join(", ")), cell(u.purposes.join(", ")), cell(u.dataCategories.join(", ")),
          el("td", { class: "n" }, String(u.requests))));
      }
      rl.append(rb);
      inner.append(el("h3", {}, p.id + ": who sent"), wl, el("h3", {}, p.id + ": the rules that reached it"), rl);
      detail.append(inner);
      tbody.append(detail);
      row.addEventListener("click", e => {
        if (e.target.closest("a")) return;
        detail.hidden = !detail.hidden;
        row.classList.toggle("selected", !detail.hidden);
      });
    }
    table.append(tbody);
    b.append(findings, el("h2", {}, "Processors"), el("div", { class: "scroll" }, table));
  }

  async function load(params) {
    const p = new URLSearchParams();
    p.set("since", params.get("since") || defaultSince);
    if (params.get("until")) p.set("until", params.get("until"));
    const key = p.toString();
    ui.form.elements.since.value = p.get("since");
    ui.form.elements.until.value = p.get("until") || "";
    if (key === loaded && ui.status.dataset.state === "ready") return;
    const mine = ++gen;
    if (abort) abort.abort();
    abort = new AbortController();
    status("loading…", "loading");
    ui.body.classList.add("stale");
    try {
      const rep = await (await api("/v1/processing", p, abort.signal)).json();
      if (mine !== gen) return;
      draw(rep, p.get("since"), p.get("until"));
      loaded = key;
      status(rep.processors.length + " processors, " + rep.findings.length + " findings");
    } catch (e) {
      if (e.name === "AbortError" || mine !== gen) return;
      ui.body.textContent = ""; // never leave another period's rows
      loaded = "";
      status(e.message, "error");
    } finally {
      if (mine === gen) ui.body.classList.remove("stale");
    }
  }

  Console.register({
    id: "processors",
    title: "Processors",
    render(root, params) {
      if (!ui || !root.contains(ui.form)) { root.textContent = ""; build(root); loaded = ""; }
      load(params);
    },
  });
  Console.onToken(() => { loaded = ""; if (Console.current().view.id === "processors") load(Console.current().params); });
})();
