// Sluice operator console. Polls /ui/state.json once a second (the /status
// document, the gateway's "now" and new history points) and renders it. The
// admin token is kept in this page's memory only and sent as the
// Authorization: Bearer header of POST /backends/NAME/drain|undrain.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
let token = "";
let seq = 0;
let capacity = 900;
let points = [];
const cards = new Map();

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits);
}

function secs(v) {
  if (v === null || v === undefined) return "–";
  if (v > 0 && v < 0.001) return (v * 1e6).toFixed(0) + " µs";
  if (v < 1) return (v * 1000).toFixed(0) + " ms";
  if (v < 60) return v.toFixed(v < 10 ? 2 : 1) + " s";
  return (v / 60).toFixed(1) + " min";
}

function set(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function spark(svg, values) {
  if (!svg) return;
  const n = values.length;
  const max = Math.max(1e-9, ...values.map((v) => v || 0));
  // Until the ring holds 15 minutes, the x axis spans what it holds (at
  // least two minutes), so a young gateway's lines are readable.
  const w = Math.min(capacity, Math.max(n, 120));
  const h = 100;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  let line = svg.firstChild;
  if (!line) {
    line = document.createElementNS(SVG, "polyline");
    svg.appendChild(line);
  }
  const x0 = w - n;
  if (n === 0) {
    line.setAttribute("points", "");
    return;
  }
  const pts = values.map((v, i) => `${x0 + i},${(h - ((v || 0) / max) * (h - 4) - 2).toFixed(1)}`);
  line.setAttribute("points", pts.join(" "));
  svg.setAttribute("aria-label", `max ${num(max, 2)}`);
}

function badge(el, text, kind) {
  set(el, text);
  el.className = "badge " + kind;
}

function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const node = $("#card").content.firstElementChild.cloneNode(true);
  node.dataset.backend = name;
  set($('[data-field="name"]', node), name);
  for (const b of $$("button[data-act]", node)) {
    b.addEventListener("click", () => act(name, b.dataset.act));
  }
  $("#backends").appendChild(node);
  c = { node, fields: {} };
  for (const f of $$("[data-field]", node)) c.fields[f.dataset.field] = f;
  cards.set(name, c);
  readOnly();
  return c;
}

function renderBackend(b, latest) {
  const c = card(b.name);
  const f = c.fields;
  badge(f.health, b.health, b.health === "ok" ? "good" : b.health === "loading" ? "warn" : "bad");
  badge(f.breaker, "breaker " + b.breaker.replace("_", "-"),
        b.breaker === "closed" ? "good" : b.breaker === "open" ? "bad" : "warn");
  const why = b.draining ? "draining" : b.ineligible_reason;
  // "full" is a busy backend, not a broken one: shown, not flagged.
  const busy = !b.eligible && why === "full";
  set(f.verdict, b.eligible ? "eligible" : "not eligible: " + (why || "unknown"));
  f.verdict.className = "verdict " + (b.eligible ? "good" : busy ? "busy" : "bad");
  c.node.classList.toggle("draining", b.draining);
  c.node.classList.toggle("ineligible", !b.eligible && !busy);
  c.node.dataset.draining = String(b.draining);
  set(f.requests_processing, num(b.requests_processing));
  set(f.slots, num(b.slots));
  set(f.requests_deferred, num(b.requests_deferred));
  set(f.in_flight, num(b.in_flight));
  set(f.limit, num(b.limit));
  set(f.adaptive_limit, num(b.adaptive_limit));
  set(f.scrape_age_seconds, secs(b.scrape_age_seconds));
  set(f.models, (b.models || []).join(", ") || "–");
  set(f.tokens_per_s, latest ? num(latest.tokens_per_s, 0) : "–");
  const series = (key) => points.map((p) => {
    const pb = p.backends.find((x) => x.name === b.name);
    return pb ? pb[key] : 0;
  });
  spark($('[data-bspark="in_flight"]', c.node), series("in_flight"));
  spark($('[data-bspark="tokens_per_s"]', c.node), series("tokens_per_s"));
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function table(id, rows, cols) {
  const body = $(`#${id} tbody`);
  const fresh = rows.length ? rows.map(row) : [row([["none", "empty"], ...Array(cols - 1).fill(["", ""])])];
  body.replaceChildren(...fresh);
}

function render(d) {
  const s = d.status;
  const now = d.now;
  badge($("#ready"), s.ready ? "ready" : "not ready", s.ready ? "good" : "bad");
  set($("#updated"), `v${s.version} · point ${d.seq}`);
  $("#updated").dataset.seq = String(d.seq);
  set($('[data-g="admitted_per_s"]'), num(now.admitted_per_s, 1));
  set($('[data-g="shed_per_s"]'), num(now.shed_per_s, 1));
  set($('[data-g="queue_depth"]'), num(s.queue_depth));
  set($('[data-g="oldest_wait_s"]'), secs(now.oldest_wait_s));
  set($('[data-g="latency"]'), `${secs(now.latency_p50)} · ${secs(now.latency_p95)} · ${secs(now.latency_p99)}`);
  set($('[data-g="reject"]'), `${secs(now.reject_p50)} · ${secs(now.reject_p99)}`);
  set($('[data-g="window"]'), `(last ${num(now.window_s, 0)} s)`);
  set($('[data-g="sampler"]'), secs(d.sampler_tick_seconds));
  for (const key of ["admitted_per_s", "shed_per_s", "queue_depth", "oldest_wait_s", "latency_p95", "reject_p99"]) {
    spark($(`[data-spark="${key}"]`), points.map((p) => p[key]));
  }
  table("reasons", now.shed_reasons.map(([r, v]) => [[r, ""], [num(v, 1), "num"]]), 2);
  table("keys", now.top_keys.map((k) => [[k.key, ""], [num(k.requests_per_s, 1), "num"],
    [num(k.rejected_per_s, 1), "num"], [String(k.requests), "num"], [String(k.tokens), "num"]]), 5);
  const last = points.length ? points[points.length - 1] : null;
  const names = new Set();
  for (const b of s.backends) {
    names.add(b.name);
    renderBackend(b, last && last.backends.find((x) => x.name === b.name));
  }
  for (const [name, c] of cards) {
    if (!names.has(name)) {
      c.node.remove();
      cards.delete(name);
    }
  }
}

async function poll() {
  try {
    const r = await fetch(`/ui/state.json?since=${seq}`, { cache: "no-store" });
    if (r.ok) {
      const d = await r.json();
      capacity = d.capacity;
      if (d.seq < seq) {
        // A restarted gateway numbers its points afresh: fetch them all.
        points = [];
        seq = 0;
      } else {
        points = points.concat(d.points).slice(-capacity);
        seq = d.seq;
      }
      render(d);
      document.body.dataset.live = "true";
    }
  } catch (e) {
    say("cannot reach the gateway: " + e.message, "bad");
    document.body.dataset.live = "false";
  }
  setTimeout(poll, POLL_MS);
}

function say(text, kind) {
  const o = $("#action");
  o.textContent = text;
  o.className = kind || "muted";
}

function readOnly() {
  for (const b of $$("button[data-act]")) b.disabled = token === "";
  document.body.dataset.readonly = String(token === "");
}

async function act(name, action) {
  if (!token) {
    say("read-only: enter the admin token to " + action, "bad");
    return;
  }
  try {
    const r = await fetch(`/backends/${encodeURIComponent(name)}/${action}`, {
      method: "POST",
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      say(`${name}: ${action} done (draining: ${body.draining})`, "good");
    } else {
      const msg = body.error ? body.error.message : r.statusText;
      say(`${name}: ${action} refused (${r.status}): ${msg}`, "bad");
    }
  } catch (e) {
    say(`${name}: ${action} failed: ${e.message}`, "bad");
  }
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("#token").value.trim();
  $("#token").value = "";
  say(token ? "token held in this page's memory only; drain and undrain are on" :
      "read-only: enter the admin token to drain or undrain", token ? "good" : "muted");
  readOnly();
});
$("#token-forget").addEventListener("click", () => {
  token = "";
  say("token forgotten: read-only", "muted");
  readOnly();
});
readOnly();
poll();
