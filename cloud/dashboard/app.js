// The one-page app: hash routes → page functions that fetch and return a DOM tree.
import { AuthError, clearToken, hasToken, setToken, takeTokenFromHash } from "./api.js";
import { h } from "./util.js";
import { fleetPage } from "./pages/fleet.js";
import { devicePage } from "./pages/device.js";
import { cohortPage } from "./pages/cohort.js";
import { alertPage, alertsPage } from "./pages/alerts.js";
import { modelPage, modelsPage } from "./pages/models.js";
import { rolloutPage, rolloutsPage } from "./pages/rollouts.js";
import { samplesPage } from "./pages/samples.js";

const ROUTES = [
  [/^\/?$/, "fleet", fleetPage],
  [/^\/device\/([^/]+)$/, "device", devicePage],
  [/^\/cohort(?:\/([^/]+))?$/, "cohort", cohortPage],
  [/^\/alerts$/, "alerts", alertsPage],
  [/^\/alert\/([^/]+)$/, "alert", alertPage],
  [/^\/models$/, "models", modelsPage],
  [/^\/model\/([0-9a-f]+)$/, "model", modelPage],
  [/^\/rollouts$/, "rollouts", rolloutsPage],
  [/^\/rollout\/([^/]+)$/, "rollout", rolloutPage],
  [/^\/samples$/, "samples", samplesPage],
];
const REFRESH_MS = 30000;

const main = () => document.getElementById("main");

function tokenForm(message) {
  const input = h("input", { type: "password", name: "token", autocomplete: "current-password", "aria-label": "API token" });
  return h("form", { class: "login card", onsubmit: (e) => { e.preventDefault(); setToken(input.value.trim()); render(); } },
    h("h2", {}, "API token"),
    h("p", {}, message || "Paste the collector's http.token. It is kept in this tab only (sessionStorage)."),
    input, h("button", { type: "submit" }, "Open the dashboard"));
}

function markNav(name) {
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.page === name ||
    (a.dataset.page === "alerts" && name === "alert") || (a.dataset.page === "models" && name === "model") ||
    (a.dataset.page === "rollouts" && name === "rollout") || (a.dataset.page === "fleet" && name === "device"));
}

let timer = null;
let generation = 0; // a newer render wins over a slower, older one

export async function render() {
  clearTimeout(timer);
  const gen = ++generation;
  const [path, qs] = (location.hash.replace(/^#/, "") || "/").split("?");
  const query = new URLSearchParams(qs || "");
  const route = ROUTES.find(([re]) => re.test(path));
  const root = main();
  const done = (state) => { root.dataset.state = state; root.dataset.route = location.hash; };
  root.dataset.state = "loading";
  if (!hasToken()) {
    root.replaceChildren(tokenForm());
    done("login");
    return;
  }
  if (!route) {
    root.replaceChildren(h("p", { class: "error" }, `No page at ${path}. `, h("a", { href: "#/" }, "Go to the fleet.")));
    done("error");
    return;
  }
  const [re, name, page] = route;
  markNav(name);
  const scroll = root.dataset.route === location.hash ? window.scrollY : 0; // keep the place on refresh
  try {
    const node = await page({ params: path.match(re).slice(1).filter((p) => p !== undefined), query, rerender: render });
    if (gen !== generation) return;
    root.replaceChildren(node);
    root.dataset.page = name;
    done("ready");
    window.scrollTo(0, scroll);
    document.getElementById("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
  } catch (err) {
    if (gen !== generation) return;
    if (err instanceof AuthError) {
      clearToken();
      root.replaceChildren(tokenForm(err.message));
      done("login");
      return;
    }
    console.warn(err);
    root.replaceChildren(h("p", { class: "error" }, err.message));
    done("error");
  }
  if (document.getElementById("auto").checked) timer = setTimeout(render, REFRESH_MS);
}

takeTokenFromHash();
window.addEventListener("hashchange", render);
document.getElementById("refresh").addEventListener("click", render);
document.getElementById("logout").addEventListener("click", () => { clearToken(); render(); });
render();
