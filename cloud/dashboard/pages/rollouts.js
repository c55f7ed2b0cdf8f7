// Rollouts: the list with progress and a start form, and one rollout's stages, gates and log.
import { get, post } from "../api.js";
import { h, card, table, short, time, ago, badge, link, fmtValue } from "../util.js";
import { progressBar } from "../charts.js";

const ACTIONS = ["pause", "resume", "approve", "abort", "rollback"];

const progress = (r) => {
  const n = (r.stages || []).length;
  const done = (r.stages || []).filter((st) => st.status === "passed").length;
  return progressBar(n ? done / n : 0, `${done} / ${n} stages passed`);
};

function startForm(models, rerender) {
  const model = h("select", { name: "model" }, models.map((m) => h("option", { value: m.sha256 }, `${m.name} ${m.version} (${short(m.sha256)})`)));
  const cohort = h("input", { name: "cohort", value: "fleet" });
  const strategy = h("select", { name: "strategy" }, ["canary", "shadow", "blue-green", "shadow,canary"].map((st) => h("option", { value: st }, st)));
  const msg = h("span", { class: "muted" });
  const submit = async (e) => {
    e.preventDefault();
    try {
      const r = await post("/api/rollouts", { model: model.value, cohort: cohort.value, strategy: strategy.value });
      location.hash = `#/rollout/${encodeURIComponent(r.id)}`;
    } catch (err) { msg.textContent = err.message; }
  };
  return card("Start a rollout", h("form", { class: "toolbar", onsubmit: submit },
    h("label", {}, "Model ", model), h("label", {}, "Cohort ", cohort), h("label", {}, "Strategy ", strategy),
    h("button", { type: "submit", disabled: models.length === 0 }, "Start"), msg));
}

export async function rolloutsPage({ rerender }) {
  const [data, models] = await Promise.all([get("/api/rollouts"), get("/api/models")]);
  return h("div", {}, h("h1", {}, "Rollouts"),
    card(null, table([
      { label: "rollout", render: (r) => link(`#/rollout/${encodeURIComponent(r.id)}`, r.id) },
      { label: "model", render: (r) => link(`#/model/${r.model}`, r.model_name || short(r.model)) },
      { label: "cohort", key: "cohort" },
      { label: "devices", render: (r) => `${r.devices.converged} / ${r.devices.total}${r.devices.failed ? `, ${r.devices.failed} failed` : ""}` },
      { label: "strategy", key: "strategy" },
      { label: "state", render: (r) => badge(r.state) },
      { label: "progress", render: progress },
      { label: "updated", render: (r) => ago(r.updated_t, data.now) },
    ], data.rollouts, "no rollouts yet")),
    startForm(models.models, rerender));
}

function stages(r) {
  return h("ol", { class: "stages" }, (r.stages || []).map((st, i) =>
    h("li", { class: `stage ${st.status}${i === r.stage_index ? " current" : ""}` },
      h("div", { class: "name" }, `${i + 1}. ${st.name}`),
      h("div", { class: "muted" }, `bake ${Math.round(st.bake_s / 60)} min${st.automation ? `, ${st.automation}` : ""}`),
      badge(st.status))));
}

const scalars = (f) => Object.entries(f || {}).filter(([, v]) => v === null || typeof v !== "object")
  .map(([k, v]) => `${k} ${fmtValue(v)}`).join(" · ");
// per-label tables (label mix: shares and the interval of their change; shadow: answers of each model)
const byLabel = (t) => Object.entries(t).map(([label, row]) => `${label}: ${scalars(row)}`).join(" | ");
const figures = (f) => (f && f.by_label
  ? h("div", {}, scalars(f), h("div", { class: "muted by-label" }, `by label — ${byLabel(f.by_label)}`))
  : scalars(f));

export async function rolloutPage({ params, rerender }) {
  const r = await get(`/api/rollouts/${params[0]}`);
  const msg = h("span", { class: "muted" });
  const act = async (action) => {
    try { await post(`/api/rollouts/${params[0]}/${action}`, { reason: "from the dashboard" }); rerender(); } catch (err) { msg.textContent = err.message; }
  };
  const allowed = new Set(r.actions);
  const queued = r.pending_commands || [];
  const dev = r.devices || {};
  return h("div", {}, h("h1", {}, `Rollout ${r.id} `, badge(r.state)),
    h("p", {}, `${r.strategy} of `, link(`#/model/${r.model}`, r.model_name || short(r.model)), " to ",
      link(`#/cohort/${encodeURIComponent(r.cohort)}`, r.cohort), ` (${dev.total} devices: ${dev.converged} converged, ${dev.pending} pending, ${dev.failed} failed), created ${time(r.created_t)}, approval ${r.approval}`),
    r.reason ? h("p", { class: "muted" }, r.reason) : null,
    h("div", { class: "toolbar" }, ACTIONS.map((a) => h("button", { disabled: !allowed.has(a), onclick: () => act(a), class: a === "abort" || a === "rollback" ? "danger" : "" }, a)),
      queued.length ? h("span", { class: "muted" }, `queued for the controller: ${queued.map((c) => c.action).join(", ")}`) : null, msg),
    card("Stages", progress(r), stages(r)),
    card("Gates", table([
      { label: "stage", key: "stage" },
      { label: "gate", key: "gate" },
      { label: "verdict", render: (g) => badge(g.verdict) },
      { label: "reason", key: "reason", class: "wrap" },
      { label: "figures", render: (g) => figures(g.figures), class: "wrap small" },
    ], r.gates, "no gate has been evaluated yet")),
    card("Transition log", table([
      { label: "time", render: (e) => time(e.t) },
      { label: "event", render: (e) => badge(e.event, "event") },
      { label: "status", render: (e) => (e.from === e.to ? e.to : `${e.from || "–"} → ${e.to}`) },
      { label: "stage", render: (e) => (e.stage === null || e.stage === undefined ? "–" : e.stage + 1), class: "num" },
      { label: "reason", key: "reason", class: "wrap" },
    ], r.log, "no transitions yet")));
}
