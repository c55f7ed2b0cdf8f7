// Rollouts: the list with progress and a start form, and one rollout's stages, gates and log.
import { get, post } from "../api.js";
import { h, card, table, num, short, time, ago, badge, link, fmtValue } from "../util.js";
import { progressBar } from "../charts.js";

const ACTIONS = ["pause", "resume", "approve", "abort", "rollback"];

const progress = (r) => {
  const n = (r.stages || []).length;
  const done = (r.stages || []).filter((st) => st.status === "passed" || st.status === "done").length;
  return progressBar(n ? done / n : 0, `${done} / ${n} stages`);
};

function startForm(models, rerender) {
  const model = h("select", { name: "model" }, models.map((m) => h("option", { value: m.sha256 }, `${m.name} ${m.version} (${short(m.sha256)})`)));
  const cohort = h("input", { name: "cohort", value: "fleet" });
  const strategy = h("select", { name: "strategy" }, ["shadow", "canary", "blue_green"].map((st) => h("option", { value: st }, st)));
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
      h("div", { class: "name" }, st.name), h("div", {}, st.percent !== undefined && st.percent !== null ? `${st.percent} %` : ""),
      badge(st.status))));
}

export async function rolloutPage({ params, rerender }) {
  const r = await get(`/api/rollouts/${params[0]}`);
  const msg = h("span", { class: "muted" });
  const act = async (action) => {
    try { await post(`/api/rollouts/${params[0]}/${action}`, { reason: "from the dashboard" }); rerender(); } catch (err) { msg.textContent = err.message; }
  };
  const allowed = new Set(r.actions || ACTIONS);
  return h("div", {}, h("h1", {}, `Rollout ${r.id} `, badge(r.state)),
    h("p", {}, `${r.strategy} of `, link(`#/model/${r.model}`, r.model_name || short(r.model)), " to ",
      link(`#/cohort/${encodeURIComponent(r.cohort)}`, r.cohort), `, started ${time(r.created_t)}`),
    h("div", { class: "toolbar" }, ACTIONS.map((a) => h("button", { disabled: !allowed.has(a), onclick: () => act(a), class: a === "abort" || a === "rollback" ? "danger" : "" }, a)), msg),
    card("Stages", progress(r), stages(r)),
    card("Gates", table([
      { label: "stage", key: "stage" },
      { label: "gate", key: "gate" },
      { label: "verdict", render: (g) => badge(g.verdict) },
      { label: "value", render: (g) => num(g.value, 4), class: "num" },
      { label: "threshold", render: (g) => num(g.threshold, 4), class: "num" },
      { label: "samples", render: (g) => (g.n === undefined ? "–" : `${g.n}${g.min_n ? ` / ${g.min_n}` : ""}`), class: "num" },
      { label: "detail", render: (g) => fmtValue(g.detail) },
    ], r.gates, "no gate has been evaluated yet")),
    card("Transition log", table([
      { label: "time", render: (e) => time(e.t) },
      { label: "from", key: "from" }, { label: "to", key: "to" },
      { label: "by", key: "actor" }, { label: "reason", key: "reason" },
    ], r.log, "no transitions yet")));
}
