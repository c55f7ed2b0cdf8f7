// Field samples: listen to what devices sent and label it with one key.
//
// Keys 1-9, then a-z, give the label shown next to them (the sample's model's labels); the
// page then moves to the next sample. Space plays or pauses, ← and → step through the list.
import { get, getBlob, post } from "../api.js";
import { h, card, table, num, pct, short, time, badge, link } from "../util.js";

const FILTERS = { unlabelled: { unlabelled: true }, all: {}, conflicts: { conflicts: true } };
const KEYS = "123456789abcdefghijklmnopqrstuvwxyz";
let keyHandler = null; // the listener of the page on screen (a new render replaces it)
let blobUrl = null; // the audio of the page on screen (revoked when the next one loads)

const route = (filter, id, extra = "") => `#/samples?filter=${filter}${id ? `&id=${id}` : ""}${extra}`;
const tile = (label, value) => h("div", { class: "tile" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));

function labelsFor(current, list) {
  if (current && current.model_labels && current.model_labels.length) return current.model_labels;
  const seen = new Set([...Object.keys(list.summary.by_label || {}), ...list.samples.map((s) => s.predicted).filter(Boolean)]);
  return [...seen].sort();
}

function go(hash, rerender) {
  if (location.hash === hash) rerender();
  else location.hash = hash;
}

function player(current, autoplay) {
  const audio = h("audio", { controls: true, preload: "auto", "data-sample": current.id });
  getBlob(`/api/samples/${current.id}/audio`).then((blob) => {
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = URL.createObjectURL(blob);
    audio.src = blobUrl;
    audio.dataset.loaded = "true";
    if (autoplay) audio.play().catch(() => {}); // a browser may refuse to play before a gesture
  }).catch((err) => { audio.replaceWith(h("p", { class: "error" }, err.message)); });
  return audio;
}

function history(labels) {
  return table([
    { label: "when", render: (l) => time(l.t) },
    { label: "by", key: "by" },
    { label: "label", key: "label" },
  ], labels, "not labelled yet");
}

function labeller(current, labels, onLabel) {
  const status = h("p", { class: "muted", "data-role": "status" }, "Press a key to label; space plays, ← → move.");
  const buttons = labels.slice(0, KEYS.length).map((label, i) => h("button", {
    type: "button", class: current.label === label ? "" : "quiet key", "data-label": label,
    onclick: () => onLabel(label, status),
  }, h("kbd", {}, KEYS[i]), ` ${label}`));
  return h("div", { class: "labeller" }, h("div", { class: "keys" }, buttons), status);
}

function listenKeys(panel, labels, audio, actions) {
  if (keyHandler) document.removeEventListener("keydown", keyHandler);
  keyHandler = (e) => {
    if (!document.body.contains(panel)) { document.removeEventListener("keydown", keyHandler); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName || "")) return;
    const i = KEYS.indexOf(e.key.toLowerCase());
    if (e.key === " ") { e.preventDefault(); if (audio.paused) audio.play().catch(() => {}); else audio.pause(); }
    else if (e.key === "ArrowRight") actions.step(1);
    else if (e.key === "ArrowLeft") actions.step(-1);
    else if (i >= 0 && i < labels.length) { e.preventDefault(); actions.label(labels[i]); }
  };
  document.addEventListener("keydown", keyHandler);
}

function samplesTable(rows, filter, currentId) {
  return table([
    { label: "sample", render: (s) => link(route(filter, s.id), s.id === currentId ? `▶ ${s.id}` : s.id) },
    { label: "device", key: "device" },
    { label: "reason", render: (s) => badge(s.reason, "event") },
    { label: "model said", key: "predicted" },
    { label: "confidence", render: (s) => pct(s.confidence), class: "num" },
    { label: "ms", render: (s) => num(s.duration_ms, 0), class: "num" },
    { label: "label", render: (s) => (s.conflict ? [s.label, " ", badge("conflict", "fail")] : s.label || "–") },
    { label: "received", render: (s) => time(s.received_t) },
  ], rows, filter === "unlabelled" ? "nothing left to label" : "no samples");
}

export async function samplesPage({ query, rerender }) {
  const filter = FILTERS[query.get("filter")] ? query.get("filter") : "unlabelled";
  const list = await get("/api/samples", { ...FILTERS[filter], limit: 200 });
  const rows = list.samples;
  const id = query.get("id") || (rows[0] && rows[0].id);
  const current = id ? await get(`/api/samples/${id}`) : null;
  const at = rows.findIndex((s) => current && s.id === current.id);
  const sum = list.summary;
  const page = h("div", {}, h("h1", {}, "Samples"),
    h("div", { class: "toolbar" }, Object.keys(FILTERS).map((f) => h("a", { href: route(f), class: f === filter ? "on" : "" }, f))),
    h("div", { class: "tiles" }, tile("samples", String(sum.total)), tile("labelled", String(sum.labelled)),
      tile("to label", String(sum.unlabelled)), tile("conflicts", link(route("conflicts"), String(sum.conflicts)))));
  if (current) {
    const labels = labelsFor(current, list);
    const audio = player(current, query.get("play") === "1");
    const next = rows[at + 1] || rows.find((s) => s.id !== current.id);
    const actions = {
      step: (d) => { const s = rows[at + d]; if (s) go(route(filter, s.id), rerender); },
      label: async (label, status) => {
        if (actions.busy) return;
        actions.busy = true;
        try {
          await post(`/api/samples/${current.id}/label`, { label });
          go(next ? route(filter, next.id, "&play=1") : route(filter), rerender);
        } catch (err) {
          (status || panel.querySelector("[data-role=status]")).textContent = err.message;
          actions.busy = false;
        }
      },
    };
    const panel = card(`Sample ${current.id}`,
      h("div", { class: "grid kv" },
        h("div", {}, audio, labeller(current, labels, actions.label)),
        h("dl", { class: "kv" },
          h("dt", {}, "device"), h("dd", {}, link(`#/device/${encodeURIComponent(current.device)}`, current.device)),
          h("dt", {}, "model"), h("dd", {}, current.model ? link(`#/model/${current.model}`, short(current.model)) : "–"),
          h("dt", {}, "captured"), h("dd", {}, `${time(current.captured_t)} (device clock)`),
          h("dt", {}, "why"), h("dd", {}, current.reason, current.alert ? [" for alert ", link(`#/alert/${encodeURIComponent(current.alert)}`, current.alert)] : ""),
          h("dt", {}, "model said"), h("dd", {}, `${current.predicted || "–"} (${pct(current.confidence)})`),
          h("dt", {}, "label"), h("dd", {}, current.label || "–", current.conflict ? [" ", badge("labellers disagree", "fail")] : ""))),
      h("h3", {}, "Label history"), history(current.labels));
    panel.dataset.sample = current.id;
    listenKeys(panel, labels, audio, actions);
    page.append(panel);
  }
  page.append(card(`${filter} (${rows.length})`, samplesTable(rows, filter, current && current.id)));
  return page;
}
