// Registered models: the list, and one model's lineage and evaluation.
import { get } from "../api.js";
import { h, card, table, kv, num, pct, short, time, link, badge } from "../util.js";
import { heatTable } from "../charts.js";

export async function modelsPage() {
  const models = await get("/api/models");
  return h("div", {}, h("h1", {}, "Models"), card(null, table([
    { label: "name", render: (m) => link(`#/model/${m.sha256}`, `${m.name} ${m.version}`) },
    { label: "aliases", render: (m) => (m.aliases || []).map((a) => badge(a, "event")) },
    { label: "sha256", render: (m) => h("span", { class: "mono" }, short(m.sha256)) },
    { label: "labels", render: (m) => (m.labels || []).join(", ") },
    { label: "accuracy", render: (m) => pct(m.metrics?.accuracy), class: "num" },
    { label: "devices", key: "devices", class: "num" },
    { label: "shadow", key: "shadow_devices", class: "num" },
    { label: "registered", render: (m) => time(m.created_t) },
  ], models.models, "no model registered yet")));
}

function sliceTable(slices) {
  if (!slices || !slices.length) return h("p", { class: "empty" }, "no slices in the manifest");
  const first = ["tag", "value", "slice", "count", "n", "errors", "error_rate", "error_share", "data_share", "priority"];
  const seen = [...new Set(slices.flatMap((r) => Object.keys(r)))];
  const keys = [...first.filter((k) => seen.includes(k)), ...seen.filter((k) => !first.includes(k))];
  return table(keys.map((k) => ({
    label: k, class: typeof slices[0][k] === "number" ? "num" : "",
    render: (r) => (typeof r[k] === "number" ? (/share|rate|acc|priority/.test(k) ? pct(r[k]) : num(r[k], 3)) : r[k] ?? "–"),
  })), slices);
}

export async function modelPage({ params }) {
  const m = await get(`/api/models/${params[0]}`);
  const conf = m.confusion;
  return h("div", {}, h("h1", {}, `${m.name} ${m.version} `, (m.aliases || []).map((a) => badge(a, "event"))),
    h("p", { class: "muted mono" }, m.sha256),
    h("p", {}, `Runs on ${m.devices} device(s), in shadow on ${m.shadow_devices}. `,
      link(`#/cohort/${encodeURIComponent(`model:${m.sha256}`)}`, "Its windows over time →")),
    h("div", { class: "grid kv" },
      card("Lineage", kv(m.lineage)),
      card("Evaluation (test split)", kv({ ...m.metrics, "confidence threshold": m.threshold }))),
    h("div", { class: "grid kv" },
      card("Confusion matrix", conf && conf.matrix ? heatTable({ rowLabels: conf.labels, colLabels: conf.labels, matrix: conf.matrix })
        : h("p", { class: "empty" }, "no confusion matrix in the manifest")),
      card("Per class", table([
        { label: "label", key: "label" },
        { label: "precision", render: (r) => pct(r.precision), class: "num" },
        { label: "recall", render: (r) => pct(r.recall), class: "num" },
        { label: "F1", render: (r) => pct(r.f1), class: "num" },
        { label: "support", key: "support", class: "num" },
      ], m.per_class, "no per-class figures"))),
    card("Slices (worst first)", sliceTable(m.slices)));
}
