// Drift alerts: the list, and one alert with its evidence, the histograms behind it, and an ack.
import { get, post } from "../api.js";
import { h, card, table, kv, num, short, time, ago, badge, link } from "../util.js";
import { histogram } from "../charts.js";

const cohortLink = (c) => link(`#/cohort/${encodeURIComponent(c)}`, c);
const signals = (a) => [...new Set((a.top || []).map((t) => t.signal))].slice(0, 3).join(", ") || "–";

export async function alertsPage({ query }) {
  const status = query.get("status") || "open";
  const data = await get("/api/alerts", { status: status === "all" ? null : status });
  return h("div", {}, h("h1", {}, "Alerts"),
    h("div", { class: "toolbar" }, ["open", "acked", "resolved", "all"].map((st) =>
      h("a", { href: `#/alerts?status=${st}`, class: st === status ? "on" : "" }, st))),
    card(null, table([
      { label: "alert", render: (a) => link(`#/alert/${encodeURIComponent(a.id)}`, a.id) },
      { label: "status", render: (a) => badge(a.status) },
      { label: "cohort", render: (a) => cohortLink(a.cohort) },
      { label: "drift", key: "kind" },
      { label: "pattern", key: "pattern" },
      { label: "severity", render: (a) => num(a.severity, 2), class: "num" },
      { label: "top signals", render: signals },
      { label: "opened", render: (a) => ago(a.opened_t, data.now) },
      { label: "updated", render: (a) => ago(a.updated_t, data.now) },
    ], data.alerts, `no ${status === "all" ? "" : status + " "}alerts`)));
}

function ackForm(a, rerender) {
  const note = h("input", { name: "note", placeholder: "note (optional)", "aria-label": "note" });
  const button = h("button", { type: "submit" }, "Acknowledge");
  return h("form", { class: "toolbar", onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    await post(`/api/alerts/${encodeURIComponent(a.id)}/ack`, { note: note.value });
    rerender();
  } }, button, note);
}

const checks = (rows) => table([
  { label: "model", render: (t) => (t.model ? link(`#/model/${t.model}`, short(t.model)) : "–") },
  { label: "signal", key: "signal" },
  { label: "against", render: (t) => t.against || "–" },
  { label: "n", key: "n", class: "num" },
  { label: "now", render: (t) => num(t.mean, 4), class: "num" },
  { label: "expected", render: (t) => num(t.expected, 4), class: "num" },
  { label: "effect", render: (t) => num(t.effect, 4), class: "num" },
  { label: "severity", render: (t) => num(t.severity, 2), class: "num" },
  { label: "p", render: (t) => (t.p_value === null || t.p_value === undefined ? "–" : t.p_value.toExponential(1)), class: "num" },
], rows, "no signal checks");

const drivers = (rows) => table([
  { label: "device", render: (d) => link(`#/device/${encodeURIComponent(d.device)}`, d.device) },
  { label: "share of n", render: (d) => num(d.share, 3), class: "num" },
  { label: "own effect", render: (d) => num(d.effect, 4), class: "num" },
  { label: "contribution", render: (d) => num(d.contribution, 3), class: "num" },
  { label: "driving", render: (d) => (d.driving ? badge("driving", "drift") : "") },
], rows, "one device: nothing to attribute");

export async function alertPage({ params, rerender }) {
  const a = await get(`/api/alerts/${params[0]}`);
  return h("div", {}, h("h1", {}, `Alert ${a.id} `, badge(a.status), " ", badge(`${a.kind} drift`, "event")),
    h("div", { class: "toolbar" }, a.status === "open" ? ackForm(a, rerender) : null,
      h("span", {}, cohortLink(a.cohort), " over time →")),
    h("div", { class: "grid kv" },
      card("Summary", kv({
        cohort: a.cohort, drift: a.kind, pattern: a.pattern, "severity (effect over its floor)": a.severity,
        "peak severity": a.peak_severity, "level now": a.level, n: a.n, horizon: a.horizon, rule: a.rule,
        onset: a.onset_t ? time(a.onset_t) : "–", opened: time(a.opened_t), updated: time(a.updated_t),
        resolved: a.resolved_t ? time(a.resolved_t) : "not yet",
        acknowledged: a.acked_t ? `${time(a.acked_t)} by ${a.acked_by || "?"}${a.ack_note ? ` — ${a.ack_note}` : ""}` : "no",
      })),
      card("Top signals", checks(a.top))),
    h("h2", {}, "Now against the reference"),
    h("div", { class: "grid" }, (a.histograms || []).map((x) => histogram({
      title: `${x.score} (${short(x.model)}, against ${x.against || "?"}) — severity ${num(x.severity, 2)}`, edges: x.edges || [], labels: x.names,
      counts: x.counts, reference: x.reference }))),
    (a.histograms || []).length ? null : h("p", { class: "empty" }, "no histograms: the models' profiles are not in the registry"),
    h("div", { class: "grid kv" }, card("Devices driving it", drivers(a.devices)),
      card("Tags", table([{ label: "tag", key: "tag" }, { label: "contribution", render: (t) => num(t.contribution, 3), class: "num" },
        { label: "lift", render: (t) => num(t.lift, 2), class: "num" },
        { label: "driving", render: (t) => (t.driving ? badge("driving", "drift") : "") }], a.tags, "no tag stands out"))));
}
