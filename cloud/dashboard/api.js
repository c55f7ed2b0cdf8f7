// Talking to the collector's API with the operator's bearer token.
//
// The token is asked for once and kept in sessionStorage (gone when the tab closes). It can
// also be handed over in the URL fragment, `/#token=...`: the fragment never reaches the
// server or its access log, and it is removed from the address bar at once.

const KEY = "harken.token";

export class AuthError extends Error {}

export function takeTokenFromHash() {
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (!m) return;
  sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + "#/");
}

export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);
export const hasToken = () => Boolean(sessionStorage.getItem(KEY));

async function request(method, path, { params, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  const headers = { Accept: "application/json", Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) throw new AuthError(data.detail || "the API wants a token");
  if (!res.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
    throw new Error(`${method} ${url.pathname}: ${res.status} ${detail}`);
  }
  return data;
}

export const get = (path, params) => request("GET", path, { params });
export const post = (path, body = {}) => request("POST", path, { body });

// Bytes (a sample's WAV) fetched with the token; an <audio src> cannot send the header, so the
// page plays a blob: URL of what this returns.
export async function getBlob(path) {
  const res = await fetch(new URL(path, location.origin), { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` } });
  if (res.status === 401) throw new AuthError("the API wants a token");
  if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
  return res.blob();
}
