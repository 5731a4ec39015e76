// The console speaks only the public HTTP API, with the API key the operator
// typed. The key lives in sessionStorage: gone when the tab closes, never in
// a cookie (so no request is sent with it unless this code sends it).

const KEY = "tidings.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** A problem document (RFC 7807) as an error: `detail` says what went wrong, `errors` which field. */
export class ApiError extends Error {
  constructor(status, problem) {
    const fields = (problem?.errors ?? []).map((e) => `${e.path}: ${e.message}`).join("; ");
    super(`${problem?.detail ?? problem?.title ?? `HTTP ${status}`}${fields && !String(problem?.detail).includes(fields) ? ` (${fields})` : ""}`);
    this.status = status;
    this.problem = problem;
  }
}

let onSignedOut = () => {};
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

/** One API call; answers the parsed JSON, throws ApiError. A 401 signs the console out. */
export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${session.key() ?? ""}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { detail: text };
  }
  if (!res.ok) {
    const error = new ApiError(res.status, parsed);
    if (res.status === 401) {
      session.clear();
      onSignedOut(error.message);
    }
    throw error;
  }
  return parsed;
}

export const get = (path, query) => {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== "") params.set(k, v);
  const qs = params.toString();
  return api("GET", qs ? `${path}?${qs}` : path);
};

/**
 * The live feed: GET /v1/events/stream read with fetch (EventSource cannot
 * send the Authorization header). Starts with the events from now on; when
 * the stream ends or breaks it reconnects with Last-Event-ID, so no event is
 * missed or seen twice. `onEvent(event)` gets each feed event; `onState`
 * "live" or "reconnecting". Returns a function that stops it, whose
 * `ready` promise settles once the stream is open.
 */
export function followEvents(onEvent, onState = () => {}) {
  let stopped = false;
  let lastId = null;
  let controller = null;
  let retryMs = 2000;
  let timer = null;
  // Resolved once the stream is open (or failed once): a page loads its data after this, so that
  // nothing written between its load and the stream's start goes unseen.
  let opened;
  const ready = new Promise((resolve) => (opened = resolve));

  async function connect() {
    controller = new AbortController();
    const headers = { authorization: `Bearer ${session.key() ?? ""}`, accept: "text/event-stream" };
    if (lastId) headers["last-event-id"] = lastId;
    try {
      const res = await fetch(lastId ? "/v1/events/stream" : "/v1/events/stream?after=now", { headers, signal: controller.signal });
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      onState("live");
      opened();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handleBlock(block);
        }
      }
    } catch {
      // Aborted (stopped) or broken: reconnect below unless stopped.
    }
    opened();
    if (stopped) return;
    onState("reconnecting");
    timer = setTimeout(connect, retryMs);
  }

  function handleBlock(block) {
    let id = null;
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("data: ")) data += line.slice(6);
      else if (line.startsWith("retry: ")) retryMs = Number(line.slice(7)) || retryMs;
    }
    if (id) lastId = id;
    if (data) onEvent(JSON.parse(data));
  }

  void connect();
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    controller?.abort();
  };
  stop.ready = ready;
  return stop;
}
