// meme-dashboard's page script: draws the snapshot embedded in the page (#initial), then polls
// /api/data every data-refresh-ms; Plotly (/static/plotly.min.js) loads after the first render.
"use strict";
const REFRESH_MS = Number(document.body.dataset.refreshMs) || 5000;
const $ = (id) => document.getElementById(id);
const fmt = (v, d) => (v === null || v === undefined) ? "" : (typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(d ?? 3)) : String(v));
const time = (iso) => iso ? new Date(iso).toLocaleString() : "";
function el(tag, attrs, text) { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs || {})) { if (v !== null && v !== undefined) e.setAttribute(k, v); } if (text !== undefined) e.textContent = text; return e; }
function empty(id, rows, text) { const box = $(id + "-empty"); box.hidden = rows.length > 0; box.textContent = text; return rows.length === 0; }
function fillTable(id, rows, cells, emptyText) {
  const body = $(id).tBodies[0]; body.replaceChildren();
  $(id).hidden = empty(id, rows, emptyText);
  for (const r of rows) { const tr = el("tr"); for (const [v, cls, key] of cells(r)) { const td = el("td", {class: cls}, fmt(v)); if (key) tr.dataset[key] = v ?? ""; tr.appendChild(td); } body.appendChild(tr); }
}
// Every refresh redraws the galleries; a thumbnail already drawn is moved into the new figure, not
// fetched again, so a refresh neither flickers nor leaves the gallery half loaded.
let thumbs = new Map(), nextThumbs = new Map();  // src -> its <img>, or its "no image" box after an error
function thumb(src, alt) {
  if (!src) return el("div", {class: "noimg"}, "no image");
  let node = nextThumbs.has(src) ? null : thumbs.get(src);  // one node per src and render
  if (!node) {
    const img = el("img", {src: src, alt: alt, loading: "eager", class: "thumb"});
    img.onload = () => { img.dataset.loaded = img.naturalWidth > 0 ? "1" : "0"; };
    img.onerror = () => { const box = el("div", {class: "noimg", "data-missing": "1"}, "no image"); img.replaceWith(box); if (thumbs.get(src) === img) thumbs.set(src, box); };
    node = img;
  }
  nextThumbs.set(src, node);
  return node;
}
function chartCounts(rows) {
  const byLabel = new Map();
  for (const r of rows) { if (!byLabel.has(r.label)) byLabel.set(r.label, {x: [], y: []}); const s = byLabel.get(r.label); s.x.push(r.window_end); s.y.push(r.n); }
  const traces = [...byLabel.entries()].map(([label, s]) => ({name: label, x: s.x, y: s.y, type: "scatter", mode: "lines+markers", marker: {size: 5}}));
  const box = $("counts-chart"); box.dataset.points = String(rows.length); box.dataset.series = String(traces.length);
  box.hidden = empty("counts", rows, "No class counts yet: they appear once meme-stream has classified images.");
  if (!box.hidden) Plotly.react(box, traces, {margin: {t: 10, r: 10, b: 40, l: 50}, xaxis: {title: {text: "window end"}}, yaxis: {title: {text: "images in window"}, rangemode: "tozero"}, legend: {orientation: "h"}}, {displaylogo: false, responsive: true});
}
function chartBatches(rows) {
  const box = $("batches-chart"); box.hidden = rows.length === 0;
  if (box.hidden) return;
  const x = rows.map(r => r.processed);
  Plotly.react(box, [
    {name: "images/s", x: x, y: rows.map(r => r.images_per_s), type: "bar", yaxis: "y"},
    {name: "latency s (mean)", x: x, y: rows.map(r => r.latency_s), type: "scatter", mode: "lines+markers", yaxis: "y2"}],
    {margin: {t: 10, r: 50, b: 40, l: 50}, yaxis: {title: {text: "images/s"}}, yaxis2: {title: {text: "latency s"}, overlaying: "y", side: "right", rangemode: "tozero"}, legend: {orientation: "h"}},
    {displaylogo: false, responsive: true});
}
let last = null;
function charts(d) {
  if (typeof Plotly === "undefined") return;  // still loading: drawn by its onload
  chartCounts(d.counts || []); chartBatches(d.batches || []);
}
function render(d) {
  last = d; nextThumbs = new Map();
  $("output").textContent = d.output || ""; $("updated").textContent = time(d.generated_at); $("query-ms").textContent = fmt(d.query_ms, 0);
  const msg = $("message"); msg.hidden = !d.message; msg.textContent = d.message || "";
  $("model").textContent = d.model_version || "none yet";
  const s = d.summary || {};
  $("cards").replaceChildren(...[["predictions", s.predictions], ["quarantined", s.errors], ["classes", (d.totals || []).length], ["last batch", time(s.last_processed)]]
    .map(([k, v]) => { const c = el("div", {class: "card", "data-card": k}); c.appendChild(el("b", {}, fmt(v ?? 0))); c.appendChild(document.createTextNode(k)); return c; }));
  charts(d);
  fillTable("totals", d.totals || [], r => [[r.label, "", "label"], [r.n, "n", "count"]], "No predictions yet.");
  fillTable("reasons", d.reasons || [], r => [[r.error_code, "err", "reason"], [r.n, "n", "count"]], "Nothing quarantined.");
  const batches = d.batches || [];
  fillTable("batches", batches.slice().reverse(), r => [[r.source], [r.batch_id, "n"], [r.rows, "n"], [time(r.processed)], [r.images_per_s, "n"], [r.latency_s, "n"], [r.latency_p95_s, "n"]], "No batches yet.");
  fillTable("models", d.models || [], r => [[r.model_version, "", "version"], [r.n, "n"], [time(r.last_used)]], "No model has been used yet.");
  const latest = d.latest || []; $("latest").replaceChildren(); empty("latest", latest, "No predictions yet.");
  for (const r of latest) {
    const f = el("figure", {"data-image-id": r.image_id});
    f.appendChild(thumb(r.archive_name ? "/thumb/archive/" + encodeURIComponent(r.archive_name) : null, r.origin || ""));
    const cap = el("figcaption"); cap.appendChild(el("b", {class: r.label ? "" : "err"}, r.label || r.error_code || "?"));
    cap.appendChild(document.createTextNode(r.label ? " " + fmt(r.confidence, 2) : "")); cap.appendChild(el("br"));
    cap.appendChild(document.createTextNode(r.origin || r.image_id.slice(0, 12))); f.appendChild(cap); $("latest").appendChild(f);
  }
  const q = d.quarantined || []; $("quarantined").replaceChildren(); empty("quarantined", q, "Nothing quarantined.");
  for (const r of q) {
    const src = r.quarantine_name ? "/thumb/quarantine/" + encodeURIComponent(r.quarantine_name) : (r.has_payload ? "/thumb/payload/" + r.image_id : null);
    const f = el("figure", {"data-image-id": r.image_id}); f.appendChild(thumb(src, r.origin || ""));
    const cap = el("figcaption"); cap.appendChild(el("b", {class: "err"}, r.error_code || "error")); cap.appendChild(el("br"));
    cap.appendChild(document.createTextNode(r.origin || "")); cap.title = r.error || ""; f.appendChild(cap); $("quarantined").appendChild(f);
  }  thumbs = nextThumbs;
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}
function plotlyLoaded() {
  if (last) charts(last);
  document.body.dataset.chartMs = performance.now().toFixed(0);
  document.body.dataset.state = "ready";
}
function first() {
  render(JSON.parse($("initial").textContent));
  document.body.dataset.renderMs = performance.now().toFixed(0);
  requestAnimationFrame(() => { document.body.dataset.paintMs = performance.now().toFixed(0); });
  // the charting library (4.6 MB) loads after the tables and cards are on screen
  const js = document.createElement("script"); js.src = "/static/plotly.min.js"; js.onload = plotlyLoaded;
  js.onerror = () => { const m = $("message"); m.hidden = false; m.textContent = "plotly.min.js did not load: charts unavailable"; };
  document.head.appendChild(js);
  setInterval(async () => {
    try { const r = await fetch("/api/data", {cache: "no-store"}); if (r.ok) render(await r.json()); }
    catch (e) { const msg = $("message"); msg.hidden = false; msg.textContent = "meme-dashboard is not answering (" + e + "); retrying"; }
  }, REFRESH_MS);
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", first); else first();
