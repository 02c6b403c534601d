// meme-dashboard's review queue (streaming/static/review.html): one image at a time, keyboard first.
// Reads /api/review (ordered by learning value), writes /api/label with the page's token.
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN = document.querySelector('meta[name="memestream-token"]').content;
const state = {queue: [], classes: [], current: null, decisions: [], skipped: new Set(), busy: false};

function requestId() {  // crypto.randomUUID needs a secure context; getRandomValues does not
  const b = new Uint8Array(16); crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
function message(text) { const m = $("message"); m.hidden = !text; m.textContent = text || ""; }
function el(tag, attrs, text) { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; }
function filters() {
  const p = new URLSearchParams();
  for (const [id, name] of [["f-class", "class"], ["f-model", "model"], ["f-from", "from"], ["f-to", "to"]]) { const v = $(id).value.trim(); if (v) p.set(name, v); }
  if ($("f-ood").checked) p.set("ood", "1");
  p.set("limit", "30");
  return p;
}
async function load() {
  const r = await fetch("/api/review?" + filters(), {cache: "no-store"});
  const data = await r.json();
  if (!r.ok) { message(data.error || "could not read the queue"); return; }
  message(data.message || "");
  state.classes = data.classes;
  const sel = $("f-class"), chosen = sel.value;
  sel.replaceChildren(el("option", {value: ""}, "any"), ...data.classes.map((c) => el("option", {value: c}, c)));
  sel.value = chosen;
  state.queue = data.items.filter((it) => !state.skipped.has(it.image_id));
  show();
}
function show() {
  const item = state.current = state.queue[0] || null;
  $("remaining").textContent = String(state.queue.length);
  $("item").hidden = !item; $("item-empty").hidden = !!item;
  document.body.dataset.state = item ? "item" : "empty";
  if (!item) return;
  document.body.dataset.imageId = item.image_id;
  const img = $("item-img");
  const src = item.archive_name ? "/thumb/archive/" + encodeURIComponent(item.archive_name)
    : item.kafka_origin ? "/thumb/kafka/" + item.kafka_origin.split("/").map(encodeURIComponent).join("/") : null;
  img.hidden = !src; $("item-noimg").hidden = !!src;
  if (src) img.src = src + "?size=large";
  $("item-label").textContent = item.label;
  $("item-conf").textContent = item.confidence == null ? "" : `(${(100 * item.confidence).toFixed(1)}%)`;
  $("item-ood").hidden = !item.ood; $("item-nearest").textContent = item.nearest_class || "-";
  $("item-model").textContent = item.model_version || "-";
  $("item-margin").textContent = item.margin == null ? "-" : item.margin.toFixed(3);
  $("item-reposts").textContent = item.reposts ? `${item.reposts} near-duplicate(s) in the queue` : "no near-duplicates queued";
  $("item-origin").textContent = item.origin || "";
  $("item-ocr").textContent = item.ocr_text || "(no text read)";
  const probs = Object.entries(item.probabilities || {}).sort((a, b) => b[1] - a[1]);
  $("item-probs").tBodies[0].replaceChildren(...probs.map(([c, p]) => { const tr = el("tr"); tr.append(el("td", {}, c), el("td", {class: "n"}, p.toFixed(3))); return tr; }));
  explain(item);
  $("choices").replaceChildren(...state.classes.slice(0, 9).map((c, i) => { const li = el("li"); li.append(el("kbd", {}, String(i + 1)), " " + c); return li; }));
}
async function explain(item) {
  const box = $("item-neighbours"); box.replaceChildren(); box.dataset.count = "0";
  if (!(item.archive_name || item.kafka_origin) || !item.model_version) { box.textContent = "(no stored image to compare)"; return; }
  const p = new URLSearchParams(item.archive_name ? {archive: item.archive_name, version: item.model_version}
                                                  : {kafka: item.kafka_origin, version: item.model_version});
  const r = await fetch("/api/explain?" + p, {cache: "no-store"}).catch(() => null);
  if (!r || !r.ok || state.current !== item) return;
  const data = await r.json();
  box.replaceChildren(...data.nearest.map((n) => {
    const fig = el("figure", {"data-label": n.label});
    const img = el("img", {src: n.thumb, alt: n.file, class: "thumb"});
    img.onload = () => { img.dataset.loaded = img.naturalWidth > 0 ? "1" : "0"; };
    fig.append(img, el("figcaption", {}, `${n.label} (${n.similarity.toFixed(2)})`));
    return fig;
  }));
  box.dataset.count = String(data.nearest.length);
  if (!data.nearest.length) box.textContent = data.message || "(this model version keeps no training files)";
}
async function post(imageId, label) {
  const r = await fetch("/api/label", {method: "POST", cache: "no-store",
    headers: {"Content-Type": "application/json", "X-Memestream-Token": TOKEN},
    body: JSON.stringify({image_id: imageId, label: label, request_id: requestId(), labeller: $("labeller").value.trim() || "reviewer"})});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}
async function decide(label) {
  const item = state.current;
  if (!item || state.busy) return;
  state.busy = true;
  try {
    const res = await post(item.image_id, label);
    state.decisions.push({kind: "label", item});
    state.queue.shift();
    $("done").prepend(el("li", {"data-image-id": item.image_id}, `${item.image_id.slice(0, 12)}: ${res.previous_label || "-"} -> ${label}`));
    message(res.kept ? "" : "labelled; no stored copy of this image, so training cannot use it");
    show();
    if (state.queue.length < 3) await load();
  } catch (e) { message("not labelled: " + e.message); }
  finally { state.busy = false; }
}
function skip() {
  const item = state.current; if (!item) return;
  state.skipped.add(item.image_id); state.decisions.push({kind: "skip", item}); state.queue.shift(); show();
}
async function undo() {
  const last = state.decisions.pop(); if (!last || state.busy) return;
  state.busy = true;
  try {
    if (last.kind === "label") { await post(last.item.image_id, null); $("done").prepend(el("li", {}, `${last.item.image_id.slice(0, 12)}: label withdrawn`)); }
    else state.skipped.delete(last.item.image_id);
    state.queue.unshift(last.item); show();
  } catch (e) { state.decisions.push(last); message("undo failed: " + e.message); }
  finally { state.busy = false; }
}
document.addEventListener("keydown", (ev) => {
  if (ev.target.closest && ev.target.closest("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (/^[1-9]$/.test(ev.key)) { const c = state.classes[Number(ev.key) - 1]; if (c) decide(c); }
  else if (ev.key === "Enter" || ev.key === "c") { if (state.current) decide(state.current.label); }
  else if (ev.key === "s") skip();
  else if (ev.key === "u") undo();
  else if (ev.key === "n") { $("new-class").hidden = false; $("new-class-name").focus(); }
  else return;
  ev.preventDefault();
});
$("new-class").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("new-class-name").value.trim();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) { message("class names are 1-64 letters, digits, '_' or '-'"); return; }
  $("new-class").hidden = true; $("new-class-name").value = ""; $("new-class-name").blur(); decide(name);
});
$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.skipped.clear(); load(); });
$("labeller").value = localStorage.getItem("memestream-labeller") || "";
$("labeller").addEventListener("change", () => localStorage.setItem("memestream-labeller", $("labeller").value.trim()));
load().catch((e) => message("could not read the queue: " + e.message));
