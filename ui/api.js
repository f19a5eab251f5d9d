// The server's HTTP API: one place that adds the token, reads JSON errors and tracks
// requests in flight (for the loading indicator).
import { currentToken } from "./auth.js";

export class ApiError extends Error {
  // status 0: the server could not be reached.
  constructor(status, message, { parameter = null, position = null, path = "" } = {}) {
    super(message);
    this.status = status;
    this.parameter = parameter;
    this.position = position;
    this.path = path;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

function headers() {
  const token = currentToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export class Api {
  constructor(base = "api/v1/") {
    this.base = base;
    this.pending = 0;
    this.activityListeners = [];
    this.authListeners = [];
  }

  onActivity(listener) {
    this.activityListeners.push(listener);
  }

  // Called with the ApiError of every 401 and 403, so the page can ask for a token.
  onAuthError(listener) {
    this.authListeners.push(listener);
  }

  url(path, params = {}) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") search.set(key, value);
    }
    const query = search.toString();
    return `${this.base}${path}${query ? `?${query}` : ""}`;
  }

  async json(path, params, options) {
    const response = await this.request(path, params, options);
    return response.json();
  }

  async blob(path, params, options) {
    const response = await this.request(path, params, options);
    return { blob: await response.blob(), disposition: response.headers.get("content-disposition") };
  }

  async request(path, params = {}, { signal } = {}) {
    this.track(+1);
    try {
      let response;
      try {
        response = await fetch(this.url(path, params), { headers: headers(), signal });
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw new ApiError(0, `cannot reach the server (${error.message})`, { path });
      }
      if (!response.ok) throw await this.errorOf(response, path);
      return response;
    } finally {
      this.track(-1);
    }
  }

  async errorOf(response, path) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // not JSON: a proxy's page; the status text says enough
    }
    const message = body.error || body.detail || response.statusText || "request failed";
    const error = new ApiError(response.status, message, {
      parameter: body.parameter ?? null,
      position: body.position ?? null,
      path,
    });
    if (error.isAuth) for (const listener of this.authListeners) listener(error);
    return error;
  }

  track(delta) {
    this.pending += delta;
    for (const listener of this.activityListeners) listener(this.pending);
  }
}

export function isAbort(error) {
  return error?.name === "AbortError";
}
