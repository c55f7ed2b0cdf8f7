// Small SVG charts: time lines with optional bands, stacked shares, histograms, heat tables.
import { h, s, num, color } from "./util.js";

const W = 560, H = 170, PAD = { l: 46, r: 10, t: 10, b: 22 };

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

const TIME_STEPS = [60, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400, 604800];

function timeTicks(t0, t1) {
  const step = TIME_STEPS.find((st) => (t1 - t0) / st <= 6) || 604800;
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
  const long = t1 - t0 > 2 * 86400;
  return out.map((t) => [t, new Date(t * 1000).toISOString().slice(long ? 5 : 11, long ? 10 : 16)]);
}

function linearTicks(lo, hi) {
  const step = niceStep(hi - lo, 4);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
  return out;
}

function logTicks(lo, hi) {
  const out = [];
  const mults = Math.log10(hi / lo) > 3 ? [1] : [1, 2, 5];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of mults) { const v = m * 10 ** e; if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v); }
  }
  return out;
}

// y: linear from yMin to yMax, or log10 when `log` (values <= 0 are not drawn).
function frame(t0, t1, yMin, yMax, yFormat, log = false) {
  const f = log ? Math.log10 : (v) => v;
  const x = (t) => PAD.l + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - ((f(v) - f(yMin)) / Math.max(1e-12, f(yMax) - f(yMin))) * (H - PAD.t - PAD.b);
  const axes = [];
  for (const v of (log ? logTicks(yMin, yMax) : linearTicks(yMin, yMax))) {
    axes.push(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: PAD.l - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, yFormat(v)));
  }
  for (const [t, label] of timeTicks(t0, t1)) {
    axes.push(s("text", { x: x(t), y: H - 6, class: "tick", "text-anchor": "middle" }, label));
  }
  return { x, y, axes };
}

// Split [t, v] points into runs without nulls or gaps wider than 1.5 buckets.
function runs(points, bucketS) {
  const out = [];
  let cur = [];
  let last = null;
  for (const p of points) {
    const gap = last !== null && p[0] - last > 1.5 * bucketS;
    if (p.slice(1).some((v) => v === null || v === undefined) || gap) {
      if (cur.length) out.push(cur);
      cur = [];
    }
    if (!p.slice(1).some((v) => v === null || v === undefined)) cur.push(p);
    last = p[0];
  }
  if (cur.length) out.push(cur);
  return out;
}

function legend(items) {
  return h("div", { class: "legend" }, items.map(({ name, color: c, dash, band }) =>
    h("span", {}, h("i", { class: `swatch${dash ? " dash" : ""}${band ? " band" : ""}`, "data-color": c }), name)));
}

function paintSwatches(root) {
  for (const el of root.querySelectorAll("i.swatch")) {
    if (el.classList.contains("dash")) el.style.borderColor = el.dataset.color;
    else el.style.background = el.dataset.color;
  }
  return root;
}

// series: [{name, color?, dash?, values: [[t, v]]}], bands: [{name, color?, values: [[t, lo, hi]]}]
export function lineChart({ title, t0, t1, bucketS = 60, series = [], bands = [], yFormat = (v) => num(v),
  yMin = 0, yMax = null, unit = "", log = false }) {
  const ok = (v) => v !== null && v !== undefined && (!log || v > 0);
  const clean = (vals) => vals.map((p) => p.map((v, i) => (i === 0 || ok(v) ? v : null)));
  series = series.map((d) => ({ ...d, values: clean(d.values) }));
  bands = bands.map((b) => ({ ...b, values: clean(b.values) }));
  const all = [...series.flatMap((d) => d.values.map((p) => p[1])), ...bands.flatMap((b) => b.values.flatMap((p) => [p[1], p[2]]))]
    .filter(ok);
  let lo, hi;
  if (log) {
    lo = all.length ? 10 ** Math.floor(Math.log10(Math.min(...all))) : 0.1;
    hi = all.length ? 10 ** Math.ceil(Math.log10(Math.max(...all) * 1.01)) : 10;
  } else {
    lo = Math.min(yMin, ...all);
    const top = yMax ?? (all.length ? Math.max(...all) * 1.08 : 1);
    hi = top > lo ? top : lo + 1;
  }
  const f = frame(t0, t1, lo, hi, yFormat, log);
  const paths = [];
  bands.forEach((b, i) => {
    const c = b.color || color(i);
    for (const run of runs(b.values, bucketS)) {
      const up = run.map(([t, , top]) => `${f.x(t)},${f.y(top)}`);
      const down = run.slice().reverse().map(([t, bottom]) => `${f.x(t)},${f.y(bottom)}`);
      paths.push(s("polygon", { points: [...up, ...down].join(" "), fill: c, "fill-opacity": 0.15, stroke: "none" }));
    }
  });
  series.forEach((d, i) => {
    const c = d.color || color(i);
    for (const run of runs(d.values, bucketS)) {
      if (run.length === 1) paths.push(s("circle", { cx: f.x(run[0][0]), cy: f.y(run[0][1]), r: 2.5, fill: c }));
      else paths.push(s("polyline", { points: run.map(([t, v]) => `${f.x(t)},${f.y(v)}`).join(" "),
        fill: "none", stroke: c, "stroke-width": 1.8, "stroke-dasharray": d.dash ? "5 3" : null }));
    }
  });
  const empty = all.length === 0 ? s("text", { x: W / 2, y: H / 2, class: "nodata", "text-anchor": "middle" }, "no data") : null;
  const svgEl = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title },
    f.axes, paths, empty);
  const named = [...series.map((d, i) => ({ name: d.name, color: d.color || color(i), dash: d.dash })),
    ...bands.map((b, i) => ({ name: b.name, color: b.color || color(i), band: true }))];
  return paintSwatches(h("figure", { class: "chart" }, h("figcaption", {}, title, unit ? h("small", {}, ` (${unit})`) : null),
    svgEl, named.length > 1 ? legend(named) : null));
}

// rows: [{t, counts: {key: n}}]; each bucket drawn as a column of shares.
export function stackedShares({ title, t0, t1, bucketS, keys, rows }) {
  const f = frame(t0, t1, 0, 1, (v) => `${Math.round(v * 100)}%`);
  const bw = Math.max(1, f.x(t0 + bucketS) - f.x(t0) - 1);
  const rects = [];
  for (const r of rows) {
    const total = keys.reduce((a, k) => a + (r.counts[k] || 0), 0);
    if (!total) continue;
    let acc = 0;
    keys.forEach((k, i) => {
      const share = (r.counts[k] || 0) / total;
      if (share > 0) {
        rects.push(s("rect", { x: f.x(r.t), y: f.y(acc + share), width: bw, height: f.y(acc) - f.y(acc + share), fill: color(i) },
          s("title", {}, `${k}: ${r.counts[k]} (${Math.round(share * 100)}%)`)));
      }
      acc += share;
    });
  }
  const empty = rects.length === 0 ? s("text", { x: W / 2, y: H / 2, class: "nodata", "text-anchor": "middle" }, "no data") : null;
  return paintSwatches(h("figure", { class: "chart" }, h("figcaption", {}, title),
    s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title }, f.axes, rects, empty),
    legend(keys.map((k, i) => ({ name: k, color: color(i) })))));
}

// Bars of one histogram (shares), optionally beside a reference histogram.
export function histogram({ title, edges, counts, reference = null, labels = null }) {
  const norm = (c) => { const t = c.reduce((a, b) => a + b, 0) || 1; return c.map((v) => v / t); };
  const cur = norm(counts);
  const ref = reference ? norm(reference) : null;
  const n = cur.length;
  const top = Math.max(...cur, ...(ref || [0]), 1e-9);
  const cw = (W - PAD.l - PAD.r) / n;
  const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);
  // bins over edges e0..ek: "<e0", "e0", ..., "≥ek" (each inner bin named by its lower edge)
  const names = labels || cur.map((_, i) => (i === 0 ? `<${num(edges[0])}` : i === n - 1 ? `≥${num(edges[n - 2])}` : num(edges[i - 1])));
  const bars = [];
  cur.forEach((v, i) => {
    const x = PAD.l + i * cw;
    if (ref) bars.push(s("rect", { x: x + 1, y: y(ref[i]), width: cw / 2 - 1, height: H - PAD.b - y(ref[i]), fill: "#9aa5b1" },
      s("title", {}, `reference ${names[i]}: ${(ref[i] * 100).toFixed(1)}%`)));
    bars.push(s("rect", { x: x + (ref ? cw / 2 : 1), y: y(v), width: (ref ? cw / 2 : cw - 2) - 1, height: H - PAD.b - y(v), fill: color(0) },
      s("title", {}, `${names[i]}: ${(v * 100).toFixed(1)}%`)));
    if (n <= 14 || i % 2 === 0) bars.push(s("text", { x: x + cw / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, names[i]));
  });
  const items = ref ? [{ name: "reference", color: "#9aa5b1" }, { name: "current", color: color(0) }] : [];
  return paintSwatches(h("figure", { class: "chart" }, h("figcaption", {}, title),
    s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title },
      s("line", { x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b, class: "grid" }), bars),
    items.length ? legend(items) : null));
}

// A matrix as a table whose cells are shaded by their share of the row (confusion matrices).
export function heatTable({ rowLabels, colLabels, matrix, corner = "true \\ predicted" }) {
  const cell = (v, rowTotal, diag) => {
    const td = h("td", { class: diag ? "diag num" : "num" }, String(v));
    const share = rowTotal ? v / rowTotal : 0;
    td.style.background = diag ? `rgba(42,157,111,${0.1 + 0.7 * share})` : `rgba(200,70,90,${share > 0 ? 0.1 + 0.8 * share : 0})`;
    return td;
  };
  return h("table", { class: "heat" },
    h("thead", {}, h("tr", {}, h("th", {}, corner), colLabels.map((c) => h("th", {}, c)))),
    h("tbody", {}, matrix.map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0);
      return h("tr", {}, h("th", {}, rowLabels[i]), row.map((v, j) => cell(v, total, i === j)));
    })));
}

export function progressBar(frac, label) {
  const bar = h("div", { class: "progress", title: label || "" }, h("div", { class: "fill" }), h("span", {}, label || ""));
  bar.firstChild.style.width = `${Math.round(Math.max(0, Math.min(1, frac || 0)) * 100)}%`;
  return bar;
}
