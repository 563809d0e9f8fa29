// The console's shell: views, the URL as state, the admin API with the
// token, and formatting. No build step: plain scripts, loaded in order.
//
// Adding a view (the hook): write views/NAME.js that calls
//
//   Console.register({
//     id: "processors",          // ?view=processors selects it
//     title: "Processors",       // its tab
//     render(root, params) {},   // draw into root; params is the URL's
//                                // URLSearchParams (minus view); called
//                                // again on every navigation to the view
//   });
//
// and add its <script> to index.html after views/decisions.js. A view
// changes the URL with Console.navigate(params), so back and forward and
// bookmarks work; it reads the API with Console.api(path, params).
"use strict";

const Console = (() => {
  const views = [];
  const tokenKey = "egress-authz-token";
  const listeners = [];

  function register(view) { views.push(view); }

  function current() {
    const p = new URLSearchParams(location.search);
    const id = p.get("view");
    p.delete("view");
    return { view: views.find(v => v.id === id) || views[0], params: p };
  }

  function drawTabs(active) {
    const nav = document.getElementById("views");
    nav.textContent = "";
    for (const v of views) {
      const a = document.createElement("a");
      a.href = "?view=" + encodeURIComponent(v.id);
      a.textContent = v.title;
      if (v === active) a.setAttribute("aria-current", "page");
      a.addEventListener("click", e => { e.preventDefault(); navigate(new URLSearchParams(), v.id); });
      nav.appendChild(a);
    }
  }

  function render() {
    const { view, params } = current();
    if (!view) return;
    drawTabs(view);
    const root = document.getElementById("view");
    if (root.dataset.view !== view.id) { root.textContent = ""; root.dataset.view = view.id; }
    view.render(root, params);
  }

  // navigate makes params (without view) the page's state: a new history
  // entry, unless replace.
  function navigate(params, viewId, replace) {
    const p = new URLSearchParams(params);
    p.sort();
    const id = viewId || current().view.id;
    if (id !== views[0].id) p.set("view", id);
    const qs = p.toString();
    const url = location.pathname + (qs ? "?" + qs : "");
    if (url !== location.pathname + location.search) {
      if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
    }
    render();
  }

  function token() { return sessionStorage.getItem(tokenKey) || ""; }

  // api GETs path?params as JSON; a non-2xx answer throws an Error whose
  // message is the server's. signal aborts it.
  async function api(path, params, signal) {
    const qs = params && params.toString();
    const t = token();
    let resp;
    try {
      resp = await fetch(path + (qs ? "?" + qs : ""), { headers: t ? { Authorization: "Bearer " + t } : {}, signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new Error("the server did not answer (" + e.message + ")");
    }
    if (!resp.ok) {
      let text = (await resp.text()).trim();
      if (resp.status === 401) text = "enter the admin token above (" + (text || "401") + ")";
      const err = new Error(resp.status + ": " + text);
      err.status = resp.status;
      throw err;
    }
    return resp;
  }

  // time writes an RFC 3339 time to the millisecond, in UTC.
  function time(s) {
    if (!s) return "–";
    const d = new Date(s);
    if (isNaN(d)) return s;
    return d.toISOString().replace("T", " ").replace("Z", "");
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function onToken(fn) { listeners.push(fn); }

  // ruleSetLink links to an archived rule set. A click reads it through
  // api (with the token, which a plain link would not send) and shows
  // its files in a dialog.
  function ruleSetLink(version, text) {
    return el("a", { href: "/v1/rulesets/" + encodeURIComponent(version), class: "ruleset", title: "the rule set as it was",
      onclick: async e => {
        e.preventDefault();
        let dlg = document.getElementById("ruleset-dialog");
        if (!dlg) {
          dlg = el("dialog", { id: "ruleset-dialog" });
          document.body.append(dlg);
        }
        dlg.textContent = "";
        const body = el("div", { class: "files" }, "loading…");
        dlg.append(el("form", { method: "dialog" }, el("button", { class: "secondary close" }, "Close")),
          el("h2", {}, "Rule set " + version), body);
        if (!dlg.open) dlg.showModal();
        try {
          const rs = await (await api("/v1/rulesets/" + encodeURIComponent(version))).json();
          body.textContent = "";
          for (const f of rs.files) body.append(el("h3", {}, f.name), el("pre", {}, f.content));
        } catch (err) {
          body.textContent = "";
          body.append(el("p", { class: "error", role: "alert" }, err.message));
        }
      } }, text || version);
  }

  function start() {
    const input = document.getElementById("token");
    input.value = token();
    const apply = () => {
      if (input.value === token()) return;
      sessionStorage.setItem(tokenKey, input.value);
      for (const fn of listeners) fn();
    };
    input.addEventListener("keydown", e => { if (e.key === "Enter") apply(); });
    input.addEventListener("change", apply);
    window.addEventListener("popstate", render);
    render();
  }

  return { register, navigate, api, time, el, onToken, start, current, ruleSetLink };
})();
