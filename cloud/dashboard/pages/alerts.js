// Drift alerts: the list, and one alert with its evidence and an acknowledge button.
import { get, post } from "../api.js";
import { h, card, table, kv, num, time, ago, badge, link, fmtValue } from "../util.js";
import { histogram } from "../charts.js";

const cohortLink = (c) => link(`#/cohort/${encodeURIComponent(c)}`, c);

export async function alertsPage({ query }) {
  const status = query.get("status") || "open";
  const alerts = await get("/api/alerts", { status: status === "all" ? null : status });
  return h("div", {}, h("h1", {}, "Alerts"),
    h("div", { class: "toolbar" }, ["open", "acked", "resolved", "all"].map((st) =>
      h("a", { href: `#/alerts?status=${st}`, class: st === status ? "on" : "" }, st))),
    card(null, table([
      { label: "alert", render: (a) => link(`#/alert/${encodeURIComponent(a.id)}`, a.id) },
      { label: "status", render: (a) => badge(a.status) },
      { label: "cohort", render: (a) => cohortLink(a.cohort) },
      { label: "signal", key: "signal" },
      { label: "pattern", key: "pattern" },
      { label: "score", render: (a) => num(a.score, 3), class: "num" },
      { label: "top features", render: (a) => (a.top || []).map((f) => f.feature).join(", ") || "–" },
      { label: "opened", render: (a) => ago(a.opened_t, alerts.now) },
    ], alerts.alerts, `no ${status === "all" ? "" : status + " "}alerts`)));
}

// Evidence is free-form: histograms become bar charts, lists of records tables, the rest a key list.
function evidenceView(evidence) {
  const parts = [];
  const rest = {};
  for (const [k, v] of Object.entries(evidence || {})) {
    if (v && typeof v === "object" && Array.isArray(v.counts) && (v.reference || v.edges)) {
      parts.push(histogram({ title: k, edges: v.edges || [], counts: v.counts, reference: v.reference || null }));
    } else if (Array.isArray(v) && v.length && typeof v[0] === "object") {
      const keys = [...new Set(v.flatMap((r) => Object.keys(r)))].filter((c) => !Array.isArray(v[0][c]));
      const hists = v.filter((r) => Array.isArray(r.counts) && Array.isArray(r.reference)).slice(0, 4);
      parts.push(card(k, table(keys.map((c) => ({ label: c, render: (r) => fmtValue(r[c]) })), v)));
      for (const r of hists) parts.push(histogram({ title: `${k}: ${r.feature || r.name || ""}`, edges: r.edges || [], counts: r.counts, reference: r.reference }));
    } else rest[k] = v;
  }
  return { details: Object.keys(rest).length ? card("Evidence", kv(rest)) : null, parts: h("div", { class: "grid" }, parts) };
}

export async function alertPage({ params, rerender }) {
  const a = await get(`/api/alerts/${params[0]}`);
  const ack = h("button", { onclick: async () => { ack.disabled = true; await post(`/api/alerts/${params[0]}/ack`, { by: "dashboard" }); rerender(); } }, "Acknowledge");
  const ev = evidenceView(a.evidence);
  return h("div", {}, h("h1", {}, `Alert ${a.id} `, badge(a.status)),
    h("div", { class: "toolbar" }, a.status === "open" ? ack : null, h("span", {}, cohortLink(a.cohort), " over time →")),
    h("div", { class: "grid kv" },
      card("Summary", kv({
        cohort: a.cohort, signal: a.signal, pattern: a.pattern, score: a.score, threshold: a.threshold,
        opened: time(a.opened_t), updated: time(a.updated_t), resolved: a.resolved_t ? time(a.resolved_t) : "not yet",
        acknowledged: a.acked_t ? `${time(a.acked_t)} by ${a.acked_by || "?"}` : "no",
      })), ev.details),
    ev.parts);
}
