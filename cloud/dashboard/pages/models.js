// Registered models: the list, and one model's lineage and evaluation.
import { get } from "../api.js";
import { h, card, table, kv, num, pct, short, time, link } from "../util.js";
import { heatTable } from "../charts.js";

export async function modelsPage() {
  const models = await get("/api/models");
  return h("div", {}, h("h1", {}, "Models"), card(null, table([
    { label: "name", render: (m) => link(`#/model/${m.sha256}`, `${m.name} ${m.version}`) },
    { label: "sha256", render: (m) => short(m.sha256) },
    { label: "labels", render: (m) => (m.labels || []).join(", ") },
    { label: "accuracy", render: (m) => pct(m.metrics?.accuracy), class: "num" },
    { label: "devices", key: "devices", class: "num" },
    { label: "registered", render: (m) => time(m.created_t) },
  ], models.models, "no model registered yet")));
}

function sliceTable(slices) {
  if (!slices || !slices.length) return h("p", { class: "empty" }, "no slices in the manifest");
  const keys = [...new Set(slices.flatMap((r) => Object.keys(r)))];
  return table(keys.map((k) => ({
    label: k, class: typeof slices[0][k] === "number" ? "num" : "",
    render: (r) => (typeof r[k] === "number" ? (k.includes("acc") || k.includes("rate") || k === "f1" ? pct(r[k]) : num(r[k], 3)) : r[k] ?? "–"),
  })), slices);
}

export async function modelPage({ params }) {
  const m = await get(`/api/models/${params[0]}`);
  const conf = m.confusion;
  return h("div", {}, h("h1", {}, `${m.name} ${m.version}`), h("p", { class: "muted mono" }, m.sha256),
    h("p", {}, link(`#/cohort/${encodeURIComponent(`model:${m.sha256}`)}`, "Devices running this model, over time →")),
    h("div", { class: "grid" },
      card("Lineage", kv(m.lineage)),
      card("Evaluation", kv(m.metrics))),
    h("div", { class: "grid" },
      card("Confusion matrix", conf && conf.matrix ? heatTable({ rowLabels: conf.labels, colLabels: conf.labels, matrix: conf.matrix })
        : h("p", { class: "empty" }, "no confusion matrix in the manifest")),
      card("Slices", sliceTable(m.slices))));
}
