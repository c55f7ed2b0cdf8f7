// DOM helpers and formatters. Data always goes in as text nodes, never as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const PALETTE = ["#2f6fdf", "#e07b39", "#2a9d6f", "#c8465a", "#8a5cc7", "#b39b2e", "#3aa6b9", "#7d7d7d"];
export const color = (i) => PALETTE[i % PALETTE.length];

export function num(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en");
  const text = Number(v).toFixed(digits);
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

export const pct = (v, digits = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)} %`);
export const short = (sha) => (sha ? String(sha).slice(0, 10) : "–");

export function time(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  return d.toISOString().slice(0, 19).replace("T", " ");
}

export function ago(t, now = Date.now() / 1000) {
  if (!t) return "never";
  const dt = Math.max(0, now - t);
  if (dt < 90) return `${Math.round(dt)} s ago`;
  if (dt < 5400) return `${Math.round(dt / 60)} min ago`;
  if (dt < 172800) return `${Math.round(dt / 3600)} h ago`;
  return `${Math.round(dt / 86400)} d ago`;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text ?? "–");
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h3", {}, title) : null, ...children);
}

// columns: [{label, key} | {label, render: row => node|text, class}]
export function table(columns, rows, empty = "nothing yet") {
  if (!rows || rows.length === 0) return h("p", { class: "empty" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) =>
      h("td", { class: c.class }, c.render ? c.render(r) : fmtValue(r[c.key])))))));
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return num(v, 3);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// A definition list of an object's keys (nested objects become nested lists).
export function kv(obj, depth = 0) {
  if (!obj || typeof obj !== "object" || Object.keys(obj).length === 0) return h("p", { class: "empty" }, "–");
  return h("dl", { class: "kv" }, Object.entries(obj).map(([k, v]) => [
    h("dt", {}, k),
    h("dd", {}, v && typeof v === "object" && !Array.isArray(v) && depth < 2 ? kv(v, depth + 1)
      : Array.isArray(v) ? v.map(fmtValue).join(", ") : fmtValue(v)),
  ]));
}

export const link = (href, text) => h("a", { href }, text);
