// The accounts REST API (/api/v1, docs/accounts.md) from the browser.
//
// The session is the __Host-medhub-session cookie (HttpOnly, Secure,
// SameSite=Strict: the page never sees the token); state-changing requests
// carry the CSRF token (X-CSRF-Token) from the login answer or GET /session,
// kept in memory only. Errors are ApiError with the API's stable code, the
// HTTP status and Retry-After (seconds) when the server sent one; a network
// failure is code "network".

const BASE = "/api/v1";
let csrfToken = null;
let openapiPaths = null;

export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}

/** Listeners for answers that concern the whole app (session gone, password expired). */
export const apiEvents = new EventTarget();

export async function api(method, path, body = undefined) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["x-csrf-token"] = csrfToken;
  let res;
  try {
    res = await fetch(BASE + path, {
      method,
      headers,
      credentials: "same-origin",
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (res.ok) return data;
  const retry = res.headers.get("retry-after");
  const err = (data && data.error) || {};
  const code = err.code || (res.status === 404 ? "not_found" : res.status >= 500 ? "unavailable" : "http_error");
  const error = new ApiError(res.status, code, err.message, retry === null ? null : Number(retry));
  if (code === "unauthenticated" || code === "password_expired") {
    apiEvents.dispatchEvent(new CustomEvent(code, { detail: { path } }));
  }
  throw error;
}

/** True when the server's OpenAPI document lists `method path` (features that may not exist yet). */
export async function supports(method, path) {
  if (openapiPaths === null) {
    try {
      const doc = await api("GET", "/openapi.json");
      openapiPaths = doc && doc.paths ? doc.paths : {};
    } catch {
      openapiPaths = {};
    }
  }
  const ops = openapiPaths[BASE + path] || openapiPaths[path];
  return Boolean(ops && ops[method.toLowerCase()]);
}

// -- sign-in and enrolment ------------------------------------------------------
export const login = (email, password) => api("POST", "/login", { email, password });

export async function loginMfa(challenge, { code = null, recoveryCode = null }) {
  const body = { challenge, session: "cookie" };
  if (code) body.code = code;
  else body.recovery_code = recoveryCode;
  const s = await api("POST", "/login/mfa", body);
  setCsrf(s.csrf_token);
  return s;
}

export const acceptInvitation = (token, password) => api("POST", "/invitations/accept", { token, password });

export async function confirmEnrolment(challenge, code) {
  const s = await api("POST", "/mfa/enrol", { challenge, code, session: "cookie" });
  setCsrf(s.csrf_token);
  return s;
}

/** The current session (null when signed out). */
export async function currentSession() {
  try {
    const s = await api("GET", "/session");
    setCsrf(s.csrf_token);
    return s;
  } catch (err) {
    if (err.code === "unauthenticated") return null;
    throw err;
  }
}

export async function logout() {
  try {
    await api("POST", "/logout", {});
  } finally {
    setCsrf(null);
  }
}

export const reauth = (password, code) => api("POST", "/reauth", { password, code });
export const changePassword = (newPassword) => api("POST", "/me/password", { new_password: newPassword });
export const mySessions = () => api("GET", "/me/sessions");
export const revokeSession = (id) => api("DELETE", `/me/sessions/${encodeURIComponent(id)}`);
export const revokeOthers = () => api("POST", "/me/sessions/revoke-others", {});
export const myDelegations = () => api("GET", "/me/delegations");

// -- names ------------------------------------------------------------------------
/** {id: {name, role, org}} of the ids this user may see (an empty map when the endpoint is missing). */
export async function directory(ids) {
  if (!ids.length || !(await supports("POST", "/directory"))) return {};
  const data = await api("POST", "/directory", { ids });
  return (data && data.people) || {};
}

// -- administration -----------------------------------------------------------------
export const orgs = () => api("GET", "/orgs");
export const users = (orgId) => api("GET", `/orgs/${orgId}/users`);
export const invite = (orgId, body) => api("POST", `/orgs/${orgId}/users`, body);
export const userAction = (userId, action, body = {}) => api("POST", `/users/${userId}/${action}`, body);
export const grantDelegation = (body) => api("POST", "/delegations", body);
export const revokeDelegation = (id) => api("DELETE", `/delegations/${id}`);
export const addCare = (body) => api("POST", "/care-relationships", body);
export const endCare = (id) => api("DELETE", `/care-relationships/${id}`);

// -- raw contents (records: upload, download, export; docs/records.md) ----------------
/** The URL of API `path`, for links (downloads: the cookie session goes with them). */
export const apiUrl = (path) => BASE + path;

/** PUT `body` (a File or Blob) as the raw request body, with the CSRF header; the JSON answer.
 *  Errors as api(): 413 payload_too_large and 415 unsupported_media_type keep their codes. */
export async function putRaw(path, body) {
  const headers = { accept: "application/json", "content-type": "application/octet-stream" };
  if (csrfToken) headers["x-csrf-token"] = csrfToken;
  let res;
  try {
    res = await fetch(BASE + path, { method: "PUT", headers, credentials: "same-origin", cache: "no-store", body });
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (res.ok) return data;
  const err = (data && data.error) || {};
  const byStatus = { 404: "not_found", 413: "payload_too_large", 415: "unsupported_media_type" };
  const code = err.code || byStatus[res.status] || (res.status >= 500 ? "unavailable" : "http_error");
  if (code === "unauthenticated" || code === "password_expired") {
    apiEvents.dispatchEvent(new CustomEvent(code, { detail: { path } }));
  }
  const retry = res.headers.get("retry-after");
  throw new ApiError(res.status, code, err.message, retry === null ? null : Number(retry));
}
