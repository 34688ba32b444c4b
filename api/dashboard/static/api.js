// REST and event-stream access. Paths are relative, so the page also works behind a prefix.

const TOKEN_KEY = "nas-api-token";
export const API = "api/v1";

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detail(body, fallback) {
  if (!body || body.detail === undefined) return fallback;
  if (typeof body.detail === "string") return body.detail;
  // FastAPI field errors: name the field.
  return body.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ");
}

async function request(method, path, params, body) {
  const url = new URL(`${API}/${path}`, document.baseURI);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    const message = detail(body, response.statusText);
    // A 403 about the token wants another token; one about the job (another owner's) says why.
    const tokenProblem =
      response.status === 401 || (response.status === 403 && /token/i.test(message));
    const hint = tokenProblem ? " (set an API token, top right)" : "";
    throw new ApiError(response.status, message + hint);
  }
  return response;
}

export async function get(path, params) {
  return (await request("GET", path, params)).json();
}

// `body`: sent as JSON when given (e.g. POST jobs/<id>/confirm takes its options).
export async function post(path, body) {
  return (await request("POST", path, null, body)).json();
}

export async function put(path, body) {
  return (await request("PUT", path, null, body)).json();
}

export async function download(path, params) {
  const response = await request("GET", path, params);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  return { blob: await response.blob(), filename: match ? match[1] : null };
}

// A job's live events. `tail` starts after the job's latest event: `onOpen` runs once the
// stream is connected, so state loaded then misses nothing that follows.
export async function openEvents(jobId, { onOpen, onEvent, onError }) {
  const url = new URL(`${API}/jobs/${jobId}/events`, document.baseURI);
  url.searchParams.set("tail", "true");
  if (token()) {
    const { stream_token } = await get(`jobs/${jobId}/stream-token`);
    url.searchParams.set("stream_token", stream_token);
  }
  const source = new EventSource(url);
  source.onopen = onOpen;
  source.onerror = onError;
  // run: a run of the fidelity ladder or of the confirmation was queued.
  for (const kind of ["job", "trial", "front", "run"]) {
    source.addEventListener(kind, (message) => onEvent(kind, JSON.parse(message.data)));
  }
  return source;
}
