// What the records pages share: the REST calls of docs/records.md, what the
// caller may do (to offer only those actions), labels, sizes, errors in words.
//
// The server decides (rule 9, server/policy.py); the page only hides what it
// knows the caller cannot do, and shows the server's refusal if one comes anyway.

import * as api from "../api.js";
import { h, T } from "../dom.js";
import { describeApiError } from "./errors.js";

/** An id as the API's paths take them (`^[a-z]-[0-9a-f]{1,38}$`). */
export const ID = "[a-z]-[0-9a-f]{1,38}";
const enc = encodeURIComponent;

// -- the API ------------------------------------------------------------------------------
export const rec = {
  index: (patientId) => api.api("GET", `/records/patients/${enc(patientId)}`),
  createDocument: (body) => api.api("POST", "/records/documents", body),
  document: (id) => api.api("GET", `/records/documents/${enc(id)}`),
  deleteDocument: (id) => api.api("DELETE", `/records/documents/${enc(id)}`),
  documentVersions: (id) => api.api("GET", `/records/documents/${enc(id)}/versions`),
  upload: (id, file) => api.putRaw(`/records/documents/${enc(id)}/content`, file),
  contentUrl: (id, version = null) =>
    api.apiUrl(`/records/documents/${enc(id)}/content${version ? `?version=${version}` : ""}`),
  createReport: (body) => api.api("POST", "/records/reports", body),
  report: (id) => api.api("GET", `/records/reports/${enc(id)}`),
  editReport: (id, body) => api.api("PATCH", `/records/reports/${enc(id)}`, body),
  signReport: (id, version) => api.api("POST", `/records/reports/${enc(id)}/sign`, { version }),
  amendReport: (id, body) => api.api("POST", `/records/reports/${enc(id)}/amend`, body),
  deleteReport: (id) => api.api("DELETE", `/records/reports/${enc(id)}`),
  reportVersions: (id) => api.api("GET", `/records/reports/${enc(id)}/versions`),
  exportUrl: () => api.apiUrl("/records/me/export"),
  erase: (userId) => api.api("POST", `/records/accounts/${enc(userId)}/erase`, {}),
};

export const recordHref = (patientId) => `#/records/${patientId}`;
export const documentHref = (patientId, id) => `#/records/${patientId}/d/${id}`;
export const reportHref = (patientId, id) => `#/records/${patientId}/r/${id}`;

/** True when the server serves the records API (older servers do not). */
export const recordsServed = () => api.supports("GET", "/records/patients/{patient_id}");

// -- what the caller may do ---------------------------------------------------------------
/**
 * What `ctx`'s user may do with `patientId`'s record, as far as the page can tell:
 * {self, write}. Practitioners write the records of the patients they follow or
 * consult: exactly the patients whose name the directory gives them (policy
 * name_visible). Patients and secretaries never write; interpreters and
 * technicians write only within their EEG exams (not offered here). Names learnt
 * go to ctx.names.
 */
export async function rightsOn(ctx, patientId) {
  const self = ctx.role === "patient" && ctx.me === patientId;
  if (ctx.role !== "practitioner") return { self, write: false };
  let people = {};
  try {
    people = await api.directory([patientId]);
  } catch {
    people = {};
  }
  if (Object.keys(people).length) ctx.names.learn(people);
  const p = people[patientId];
  return { self, write: Boolean(p && p.role === "patient") };
}

// -- words ----------------------------------------------------------------------------------
const MEDIA = {
  "application/pdf": "PDF",
  "image/png": "PNG",
  "image/jpeg": "JPEG",
  "image/webp": "WebP",
  "application/edf": "EDF",
  "application/bdf": "BDF",
};

/** The kind of a file in words ("PDF"), or "no content yet". */
export function mediaLabel(type) {
  if (!type) return T("records.no_content");
  return MEDIA[type] || type;
}

/** A size in words (no decimals, so no separator to localise). */
export function sizeLabel(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return T("size.b", { n: bytes });
  if (bytes < 10 * 1024 * 1024) return T("size.kb", { n: Math.max(1, Math.round(bytes / 1024)) });
  return T("size.mb", { n: Math.round(bytes / (1024 * 1024)) });
}

/** A report's state in words, as a badge. */
export function statusBadge(status) {
  return h("span", { class: `rec-status ${status}`, dataset: { status } }, T(`records.status_${status}`));
}

/** Epoch microseconds as milliseconds. */
export const ms = (us) => Math.floor(us / 1000);

/** Content for an alert box: a records refusal in words (413 and 415 said as such). */
export function describeRecordsError(err) {
  const code = err && err.code;
  if (code === "unsupported_media_type") return [T("records.error_type")];
  if (code === "payload_too_large") return [T("records.error_too_large")];
  if (code === "conflict") return [T("records.error_conflict")];
  return describeApiError(err);
}

/** A link to a record, shown once the server is known to serve the records API. */
export function recordLink(patientId, key, attrs = {}) {
  const a = h("a", { ...attrs, href: recordHref(patientId), hidden: true, dataset: { record: patientId } }, T(key));
  recordsServed().then((served) => { a.hidden = !served; });
  return a;
}
