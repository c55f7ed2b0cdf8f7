// Fleet overview: headline numbers, the last hour of the whole fleet, models and devices.
import { get } from "../api.js";
import { h, card, table, num, short, ago, badge, link } from "../util.js";
import { cohortCharts, fetchSeries } from "./cohort.js";

const tile = (label, value, sub) => h("div", { class: "tile" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label),
  sub ? h("div", { class: "sub" }, sub) : null);

export function deviceTable(devices, now) {
  return table([
    { label: "device", render: (d) => link(`#/device/${encodeURIComponent(d.device)}`, d.device) },
    { label: "status", render: (d) => badge(d.status) },
    { label: "health", render: (d) => badge(d.health || "unknown") },
    { label: "active model", render: (d) => (d.models?.active ? link(`#/model/${d.models.active}`, short(d.models.active)) : "–") },
    { label: "shadow", render: (d) => short(d.models?.shadow) },
    { label: "automation", key: "automation" },
    { label: "agent", key: "agent_version" },
    { label: "tags", render: (d) => (d.tags || []).map((t) => link(`#/cohort/tag:${encodeURIComponent(t)}`, t)).flatMap((a, i) => (i ? [" ", a] : [a])) },
    { label: "last seen", render: (d) => ago(d.last_seen_t, now) },
  ], devices, "no device has reported yet");
}

export async function fleetPage() {
  const [fleet, devices, series] = await Promise.all([get("/api/fleet"), get("/api/devices"), fetchSeries("fleet", "1h")]);
  const ing = fleet.ingest || {};
  const last = series.buckets[series.buckets.length - 1];
  return h("div", {},
    h("h1", {}, "Fleet"),
    h("div", { class: "tiles" },
      tile("devices online", `${fleet.online} / ${fleet.devices}`),
      tile("open alerts", link("#/alerts", String(fleet.open_alerts))),
      tile("active rollouts", link("#/rollouts", String(fleet.rollouts_active))),
      tile("utterances / s", num(last ? last.utterances_per_s : 0), "last bucket"),
      tile("windows, last hour", num(series.buckets.reduce((a, r) => a + r.n_windows, 0), 0),
        link("#/cohort/fleet", `${num(ing.rejected_total ?? 0, 0)} messages rejected`)),
      tile("ingest lag", ing.lag_s === null || ing.lag_s === undefined ? "–" : `${num(ing.lag_s, 1)} s`)),
    h("section", { class: "charts" }, h("h2", {}, "Last hour ", link("#/cohort/fleet", "(all charts)")),
      h("div", { class: "grid three" }, cohortCharts(series, ["load", "latency", "noanswer"]).map((sec) => sec && [...sec.querySelectorAll("figure")]))),
    card("Models in the fleet", table([
      { label: "model", render: (m) => link(`#/model/${m.model}`, m.name ? `${m.name} ${m.version || ""}` : short(m.model)) },
      { label: "sha256", render: (m) => short(m.model) },
      { label: "devices", key: "devices", class: "num" },
      { label: "charts", render: (m) => link(`#/cohort/model:${m.model}`, "cohort") },
    ], fleet.by_model || [], "no device runs a model yet")),
    card("Devices", deviceTable(devices, fleet.now)));
}
