// A cohort over time: software, input, output, shadow and feedback figures, plus its drift report.
import { get } from "../api.js";
import { h, card, table, num, short, time, color, badge } from "../util.js";
import { lineChart, stackedShares } from "../charts.js";

export const RANGES = { "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

export const fetchSeries = (cohort, range) => get("/api/series", { cohort, range_s: RANGES[range] || 3600 });

const col = (rows, f) => rows.map((r) => [r.t, f(r)]);
const rate = (v) => `${+(v * 100).toFixed(1)}%`;

export function cohortCharts(series, only = null) {
  const rows = series.buckets;
  const base = { t0: series.from, t1: series.to, bucketS: series.bucket_s };
  const stages = series.stages;
  const models = [...new Set(rows.flatMap((r) => Object.keys(r.feature_drift || {})))];
  const charts = {
    load: () => lineChart({ ...base, title: "Load", unit: "per s", series: [
      { name: "utterances/s", values: col(rows, (r) => r.utterances_per_s) },
      { name: "inferences/s", dash: true, values: col(rows, (r) => r.inferences_per_s) }] }),
    latency: () => lineChart({ ...base, title: "Latency by stage", unit: "ms, log scale; solid p50, dashed p99", log: true,
      yFormat: (v) => num(v, 1), series: stages.flatMap((st, i) => [
        { name: `${st} p50`, color: color(i), values: col(rows, (r) => r.latency_ms[st]?.p50 ?? null) },
        { name: `${st} p99`, color: color(i), dash: true, values: col(rows, (r) => r.latency_ms[st]?.p99 ?? null) }]) }),
    cpu: () => lineChart({ ...base, title: "CPU seconds per audio second", series: [
      { name: "cpu s / audio s", values: col(rows, (r) => r.cpu_s_per_audio_s) }], yFormat: (v) => num(v, 3) }),
    memory: () => lineChart({ ...base, title: "Resident memory", unit: "MB", series: [
      { name: "largest device", values: col(rows, (r) => r.rss_mb_max) }] }),
    speech: () => lineChart({ ...base, title: "Speech ratio", yMax: 1, yFormat: rate, series: [
      { name: "voiced / all frames", values: col(rows, (r) => r.speech_ratio) }] }),
    level: () => lineChart({ ...base, title: "Level", unit: "dBFS, p10–p90 band, median line", yMin: -70, yMax: 0,
      series: [{ name: "median", values: col(rows, (r) => r.level_dbfs.p50) }],
      bands: [{ name: "p10–p90", values: rows.map((r) => [r.t, r.level_dbfs.p10, r.level_dbfs.p90]) }] }),
    snr: () => lineChart({ ...base, title: "Estimated SNR", unit: "dB, p10–p90 band, median line",
      series: [{ name: "median", values: col(rows, (r) => r.snr_db.p50) }],
      bands: [{ name: "p10–p90", values: rows.map((r) => [r.t, r.snr_db.p10, r.snr_db.p90]) }] }),
    drift: () => lineChart({ ...base, title: "Feature PSI", unit: "largest per model and bucket; raw, not sample-size calibrated",
      series: models.map((m) => (
      { name: short(m), values: col(rows, (r) => r.feature_drift?.[m]?.max ?? null) })) }),
    labels: () => stackedShares({ ...base, title: "Label mix", keys: series.labels, rows: rows.map((r) => ({ t: r.t, counts: r.labels })) }),
    confidence: () => lineChart({ ...base, title: "Confidence", unit: "median, p10–p90 band", yMax: 1,
      series: [{ name: "median", values: col(rows, (r) => r.confidence.p50) }],
      bands: [{ name: "p10–p90", values: rows.map((r) => [r.t, r.confidence.p10, r.confidence.p90]) }] }),
    noanswer: () => lineChart({ ...base, title: "No-answer and deferral rate", yFormat: rate, series: [
      { name: "no answer", values: col(rows, (r) => r.no_answer_rate) },
      { name: "deferred", values: col(rows, (r) => r.deferral_rate) }] }),
    shadow: () => lineChart({ ...base, title: "Shadow agreement", yMax: 1, yFormat: rate, series: [
      { name: "active = candidate", values: col(rows, (r) => (r.shadow_compared ? r.shadow_agreement : null)) }] }),
    feedback: () => lineChart({ ...base, title: "Feedback accuracy", yMax: 1, yFormat: rate, series: [
      { name: "confirmed / all feedback", values: col(rows, (r) => (r.feedback_n ? r.feedback_accuracy : null)) }] }),
  };
  const sections = [
    ["Software", ["load", "latency", "cpu", "memory"]],
    ["Input", ["speech", "level", "snr", "drift"]],
    ["Output", ["labels", "confidence", "noanswer"]],
    ["Shadow and feedback", ["shadow", "feedback"]],
  ];
  return sections.map(([title, names]) => {
    const picked = names.filter((n) => !only || only.includes(n));
    return picked.length ? h("section", { class: "charts" }, h("h2", {}, title), h("div", { class: "grid" }, picked.map((n) => charts[n]()))) : null;
  });
}

const KIND_COLORS = { input: color(0), output: color(1), concept: color(2) };

// The drift engine's score table: severity per kind over time (>= 1 alarms), and the last steps.
function driftReport(report) {
  if (report.error) return card("Drift", h("p", { class: "empty" }, report.error));
  const rows = report.rows || [];
  const t = (r) => r.t_start;
  const chart = lineChart({ t0: report.from, t1: report.to, bucketS: report.step_s, title: "Drift severity by kind",
    unit: `per ${Math.round(report.step_s / 60)} min step; ≥ 1 alarms`, series: [
      ...report.kinds.map((k) => ({ name: k, color: KIND_COLORS[k], values: rows.map((r) => [t(r), r[`${k}_severity`]]) })),
      { name: "alarm", color: "#c8465a", dash: true, values: rows.map((r) => [t(r), 1]) }] });
  const last = rows.filter((r) => report.kinds.some((k) => r[`${k}_severity`] !== null)).slice(-6).reverse();
  const cols = [{ label: "step", render: (r) => time(r.t_start).slice(11, 16) }];
  for (const k of report.kinds) {
    cols.push({ label: k, render: (r) => (r[`${k}_severity`] === null ? "–" : [
      h("b", {}, num(r[`${k}_severity`], 2)), ` ${r[`${k}_top`] || ""} (n ${r[`${k}_n`]})`,
      r[`${k}_flag`] ? [" ", badge(r[`${k}_flag`], "drift")] : null]) });
  }
  return h("section", { class: "charts" }, h("h2", {}, "Drift"),
    h("div", { class: "grid" }, chart, card("Latest steps", table(cols, last, "no scores yet: too little data"))));
}

export async function cohortPage({ params, query }) {
  const cohort = params[0] ? decodeURIComponent(params[0]) : "fleet";
  const range = RANGES[query.get("range")] ? query.get("range") : "1h";
  const [series, cohorts, report] = await Promise.all([
    fetchSeries(cohort, range), get("/api/cohorts"),
    get("/api/drift/report", { cohort, range_s: RANGES[range] }).catch((err) => ({ error: err.message }))]);
  const input = h("input", { name: "cohort", value: cohort, list: "cohort-list", "aria-label": "cohort" });
  const form = h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); location.hash = `#/cohort/${encodeURIComponent(input.value.trim() || "fleet")}?range=${range}`; } },
    h("label", {}, "Cohort ", input),
    h("datalist", { id: "cohort-list" }, cohorts.map((c) => h("option", { value: c.selector }, c.label))),
    h("button", { type: "submit" }, "Show"),
    h("span", { class: "ranges" }, Object.keys(RANGES).map((r) =>
      h("a", { href: `#/cohort/${encodeURIComponent(cohort)}?range=${r}`, class: r === range ? "on" : "" }, r))));
  const total = series.buckets.reduce((a, r) => a + r.n_windows, 0);
  return h("div", {}, h("h1", {}, `Cohort ${cohort}`), form,
    h("p", { class: "muted" }, `${total} windows in ${series.buckets.length} buckets of ${series.bucket_s} s`),
    cohortCharts(series), driftReport(report));
}
