// One device: its reported state, key charts and its recent lifecycle events.
import { get } from "../api.js";
import { h, card, table, kv, num, short, time, ago, badge, link } from "../util.js";
import { cohortCharts, fetchSeries } from "./cohort.js";

export async function devicePage({ params }) {
  const id = decodeURIComponent(params[0]);
  const [dev, series, alerts] = await Promise.all([get(`/api/devices/${encodeURIComponent(id)}`),
    fetchSeries(`device:${id}`, "1h"), get("/api/alerts", { cohort: `device:${id}` })]);
  const live = alerts.alerts.filter((a) => a.status !== "resolved");
  const models = dev.models || {};
  return h("div", {},
    h("h1", {}, `Device ${dev.device} `, badge(dev.status), " ", badge(dev.health || "unknown")),
    h("div", { class: "grid kv" },
      card("State", kv({
        "agent version": dev.agent_version, automation: dev.automation, boot: dev.boot,
        "last seen": `${time(dev.last_seen_t)} (${ago(dev.last_seen_t, dev.now)})`,
        "clock offset": clockOffset(dev.clock_offset_s),
        "last error": dev.last_error || "none", tags: (dev.tags || []).join(", ") || "none",
      })),
      card("Models", table([
        { label: "slot", key: "slot" },
        { label: "model", render: (r) => (r.sha ? link(`#/model/${r.sha}`, short(r.sha)) : "–") },
      ], ["active", "previous", "shadow"].map((slot) => ({ slot, sha: models[slot] }))))),
    live.length ? card("Drift alerts", table([
      { label: "alert", render: (a) => link(`#/alert/${encodeURIComponent(a.id)}`, a.id) },
      { label: "status", render: (a) => badge(a.status) },
      { label: "drift", key: "kind" },
      { label: "severity", render: (a) => num(a.severity, 2), class: "num" },
      { label: "top signal", render: (a) => (a.top[0] || {}).signal || "–" },
      { label: "opened", render: (a) => ago(a.opened_t, alerts.now) },
    ], live)) : null,
    h("p", {}, link(`#/cohort/${encodeURIComponent(`device:${id}`)}`, "All charts for this device →")),
    h("div", { class: "grid" }, cohortCharts(series, ["load", "latency", "level", "noanswer"])
      .map((sec) => sec && [...sec.querySelectorAll("figure")])),
    card("Recent events", table([
      { label: "time", render: (e) => time(e.t) },
      { label: "event", render: (e) => badge(e.event, "event") },
      { label: "model", render: (e) => short(e.model) },
      { label: "reason", key: "reason" },
    ], dev.events || [], "no events")));
}

// The device's clock minus the collector's: a device with a wrong clock is shown, not trusted.
function clockOffset(s) {
  if (s === null || s === undefined) return "not measured yet";
  if (Math.abs(s) < 1) return "in step (under 1 s)";
  const units = [["years", 365 * 86400], ["days", 86400], ["hours", 3600], ["minutes", 60], ["s", 1]];
  const [unit, size] = units.find(([, size]) => Math.abs(s) >= size);
  return `${s > 0 ? "ahead" : "behind"} by ${num(Math.abs(s) / size, 1)} ${unit}`;
}
