// The v1 codecs and the client-message rules of protocol/SPEC.md, in the browser.
//
// jsonCodec / msgpackCodec turn frames into plain data and back, refusing what
// the hub refuses (bad_frame). CLIENT_TYPES mirrors protocol/messages.py,
// protocol/presence.py, protocol/chat.py, protocol/calls.py and protocol/eeg.py
// (tests/browser/test_client.py compares them); checkClientFrame() applies the hub's checks 2-5 of
// SPEC section 3 to a frame, so the client never sends what the hub would
// refuse, and the vectors of protocol/vectors/ check both directions.

import * as msgpack from "./msgpack.js";
import { Float64 } from "./msgpack.js";

export const SUBPROTOCOL_JSON = "medhub.v1.json";
export const SUBPROTOCOL_MSGPACK = "medhub.v1.msgpack";
export const MAX_FRAME_BYTES = 65536;
export const JSON_MAX_DEPTH = 64;
export const MAX_SAFE_ID = 2 ** 53;

export class FrameError extends Error {
  /** code: a catalogued error code (bad_frame, bad_request, unknown_type, too_large); id: the request id or null. */
  constructor(code, message, id = null) {
    super(message);
    this.code = code;
    this.id = id;
  }
}

const utf8 = new TextEncoder();
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function depthAndStrings(value, depth, limit) {
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw new FrameError("bad_frame", "lone surrogate in a string");
    return;
  }
  if (value === null || typeof value !== "object") return;
  if (depth >= limit) throw new FrameError("bad_frame", `nested deeper than ${limit}`);
  if (Array.isArray(value)) {
    for (const v of value) depthAndStrings(v, depth + 1, limit);
  } else {
    for (const [k, v] of Object.entries(value)) {
      depthAndStrings(k, depth, limit);
      depthAndStrings(v, depth + 1, limit);
    }
  }
}

/** Size of a frame on the wire, in bytes (UTF-8 for text frames). */
export function frameSize(frame) {
  return typeof frame === "string" ? utf8.encode(frame).length : frame.byteLength;
}

export const jsonCodec = Object.freeze({
  name: SUBPROTOCOL_JSON,
  binary: false,
  /** Plain data of a text frame; throws FrameError("bad_frame"). */
  decode(frame) {
    if (typeof frame !== "string") throw new FrameError("bad_frame", "the JSON subprotocol expects text frames");
    let value;
    try {
      value = JSON.parse(frame);
    } catch {
      throw new FrameError("bad_frame", "undecodable JSON");
    }
    depthAndStrings(value, 0, JSON_MAX_DEPTH);
    return value;
  },
  /** The compact JSON text of plain data (fields in insertion order; float fields as 5.0). */
  encode(data) {
    const marked = markFloats(data);
    return marked === data ? JSON.stringify(data) : toJson(marked);
  },
});

export const msgpackCodec = Object.freeze({
  name: SUBPROTOCOL_MSGPACK,
  binary: true,
  decode(frame) {
    if (typeof frame === "string") throw new FrameError("bad_frame", "the msgpack subprotocol expects binary frames");
    try {
      return msgpack.decode(frame);
    } catch (err) {
      if (err instanceof msgpack.DecodeError || err instanceof RangeError) {
        throw new FrameError("bad_frame", `undecodable msgpack: ${err.message}`);
      }
      throw err;
    }
  },
  encode(data) {
    return msgpack.encode(markFloats(data));
  },
});

// -- client message rules -------------------------------------------------------
// A tiny schema language: each field is {t, ...bounds, nullable}; `req` lists
// the fields without a default. Lengths count code points, as msgspec does.
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const str = (min = 0, max = Infinity, pattern = null) => ({ t: "str", min, max, pattern });
const int = (min, max) => ({ t: "int", min, max });
const num = (min, max) => ({ t: "num", min, max });
const opt = (spec) => ({ ...spec, nullable: true });
const ID = str(1, 64, ID_PATTERN);
const SEQ = int(0, MAX_SAFE_ID - 1);
const POSITIVE_SEQ = int(1, MAX_SAFE_ID - 1);
const PAGE = int(1, 500);
const TEXT = str(1, 4000);
const CLIENT_MSG_ID = str(1, 64);
const USERS = { t: "list", of: ID, max: 256 };
const TEXT_FRAME = 4000 * 4 + 1024;
const request = (max, fields, req = []) => ({ max, request: true, fields, req });
// calls (protocol/calls.py)
const CALL_ID = str(16, 16, /^[0-9a-f]{16}$/);
const PARTY = str(8, 64, /^[A-Za-z0-9_-]{8,64}$/);
const SDP = str(3, 32768);
const FIGURE = (max) => opt(num(0, max));
// EEG (protocol/eeg.py); the binary sample frames are in eegwire.js
const above = (min, max) => ({ t: "num", min, max, gt: true }); // min < value <= max
const ascii = (max) => str(0, max, /^[ -~]*$/);
const STREAM_ID = str(0, Infinity, /^t-[0-9a-f]{8}$/);
const ANNOTATION_ID = str(0, Infinity, /^a-[0-9a-f]{16}$/);
const INDEX = int(0, 2 ** 48 - 1);
const MICROS = int(0, 2 ** 62);
const MODE = str(0, Infinity, /^(raw|decimate|envelope)$/);
const ANNOTATION_KIND = str(0, Infinity, /^[a-z][a-z0-9_]{0,31}$/);
const PHYSICAL = num(-1e12, 1e12);
const DIGITAL = int(-(2 ** 31), 2 ** 31 - 1);
const CHANNEL_META = {
  t: "obj",
  fields: {
    label: str(1, 16, /^[ -~]+$/),
    type: str(0, Infinity, /^(EEG|ECG|EOG|EMG|RESP|SAO2|MISC|TRIG)$/),
    unit: ascii(8),
    physical_min: PHYSICAL,
    physical_max: PHYSICAL,
    digital_min: DIGITAL,
    digital_max: DIGITAL,
    prefilter: ascii(80),
  },
  req: ["label", "physical_min", "physical_max", "digital_min", "digital_max"],
};
const STREAM_META = {
  t: "obj",
  fields: {
    rate: int(1, 65536),
    format: str(0, Infinity, /^(int16|int32|float32)$/),
    channels: { t: "list", of: CHANNEL_META, min: 1, max: 512 },
    reference: ascii(64),
    device: ascii(64),
  },
  req: ["rate", "format", "channels"],
};
const CLOCK_SAMPLE = { t: "obj", fields: { t0: MICROS, hub_us: MICROS, t1: MICROS }, req: ["t0", "hub_us", "t1"] };
const ANNOTATION_FIELDS = {
  onset: INDEX,
  text: str(0, 512),
  duration: INDEX,
  kind: ANNOTATION_KIND,
  frequency_hz: opt(above(0, 1000)),
};

export const CLIENT_TYPES = Object.freeze({
  hello: request(16384, {
    auth: {
      t: "obj",
      fields: { method: str(0, Infinity, /^(ticket|token|cookie)$/), token: opt(str(16, 512)) },
      req: ["method"],
    },
    client: opt(str(0, 64)),
    resume: opt({
      t: "obj",
      fields: {
        channels: { t: "map", key: str(1, 128), of: SEQ, max: 256 },
        epochs: { t: "map", key: str(1, 128), of: str(0, 64), max: 256 },
      },
      req: [],
    }),
  }, ["auth"]),
  ping: request(256, {}),
  heartbeat: { max: 64, request: false, fields: {}, req: [] },
  "presence.set": request(256, { state: str(0, Infinity, /^(online|away|busy|in-call)$/) }, ["state"]),
  "presence.subscribe": request(20480, { users: USERS, contacts: { t: "bool" } }),
  "presence.unsubscribe": request(20480, { users: USERS }),
  "presence.get": request(20480, { users: USERS, contacts: { t: "bool" } }),
  "chat.create": request(20480, {
    kind: str(0, Infinity, /^(direct|group|consultation)$/),
    members: { t: "list", of: ID, max: 256 },
    title: opt(str(0, 200)),
    consultation: opt(ID),
  }, ["kind"]),
  "chat.list": request(512, { after: opt(ID), limit: PAGE }),
  "chat.send": request(TEXT_FRAME, { conv: ID, client_msg_id: CLIENT_MSG_ID, text: TEXT, record: opt(str(1, 128)) }, ["conv", "client_msg_id", "text"]),
  "chat.edit": request(TEXT_FRAME, { conv: ID, seq: POSITIVE_SEQ, client_msg_id: CLIENT_MSG_ID, text: TEXT }, ["conv", "seq", "client_msg_id", "text"]),
  "chat.delete": request(512, { conv: ID, seq: POSITIVE_SEQ, client_msg_id: CLIENT_MSG_ID }, ["conv", "seq", "client_msg_id"]),
  "chat.history": request(512, { conv: ID, before: opt(SEQ), after: opt(SEQ), limit: PAGE }, ["conv"]),
  "chat.sync": request(512, { conv: ID, after_seq: SEQ, limit: PAGE }, ["conv"]),
  "chat.unfollow": request(256, { conv: ID }, ["conv"]),
  "chat.receipt": request(256, { conv: ID, seq: SEQ, kind: str(0, Infinity, /^(delivered|read)$/) }, ["conv", "seq"]),
  "chat.typing": request(256, { conv: ID }, ["conv"]),
  "chat.versions": request(256, { conv: ID, seq: POSITIVE_SEQ }, ["conv", "seq"]),
  "call.ice_servers": request(256, {}),
  "call.invite": request(33792, {
    party: PARTY,
    offer: SDP,
    conv: opt(ID),
    to: opt(ID),
    echo: { t: "bool" },
    media: str(0, Infinity, /^(audio|video)$/),
    lifetime_ms: opt(int(5000, 300000)),
  }, ["party", "offer"]),
  "call.accept": request(33280, { call: CALL_ID, party: PARTY, answer: SDP }, ["call", "party", "answer"]),
  "call.reject": request(256, { call: CALL_ID }, ["call"]),
  "call.cancel": request(256, { call: CALL_ID }, ["call"]),
  "call.hangup": request(256, { call: CALL_ID, reason: str(0, Infinity, /^(user_hangup|ice_failed|media_failed|error)$/) }, ["call"]),
  "call.resume": request(256, { call: CALL_ID, party: PARTY }, ["call", "party"]),
  "call.pending": request(128, {}),
  "call.quality": {
    max: 512,
    request: false,
    fields: {
      call: CALL_ID,
      rtt_ms: FIGURE(600000),
      loss: FIGURE(1),
      bitrate_kbps: FIGURE(1000000),
      jitter_ms: FIGURE(600000),
      frames_per_s: FIGURE(1000),
    },
    req: ["call"],
  },
  "eeg.open": request(65536, { exam: ID, meta: STREAM_META, stream: opt(STREAM_ID) }, ["exam", "meta"]),
  "eeg.close": request(256, { stream: STREAM_ID }, ["stream"]),
  "eeg.clock": request(512, { stream: STREAM_ID, t0: MICROS, last: opt(CLOCK_SAMPLE) }, ["stream", "t0"]),
  "eeg.watch": request(512, { stream: STREAM_ID, view: MODE, rate: opt(above(0, 65536)) }, ["stream"]),
  "eeg.unwatch": request(256, { stream: STREAM_ID }, ["stream"]),
  "eeg.backfill": request(512, {
    stream: STREAM_ID, first: INDEX, end: INDEX, view: MODE, factor: int(1, 0xffff),
  }, ["stream", "first", "end"]),
  "eeg.annotate": request(2048, { stream: STREAM_ID, client_id: str(1, 64), ...ANNOTATION_FIELDS },
    ["stream", "client_id", "onset", "text"]),
  "eeg.annotation_edit": request(2048, { stream: STREAM_ID, annotation: ANNOTATION_ID, ...ANNOTATION_FIELDS },
    ["stream", "annotation", "onset", "text"]),
  "eeg.annotation_delete": request(256, { stream: STREAM_ID, annotation: ANNOTATION_ID }, ["stream", "annotation"]),
  "eeg.annotations": request(256, { stream: STREAM_ID }, ["stream"]),
});

// -- float fields -----------------------------------------------------------------
// JavaScript has one number type; the hub's encoders write a float field as a
// float (5.0) even when whole. A client message's whole numbers in `num`
// fields are wrapped in msgpack.Float64 so both codecs write them as the hub does.
function markSpec(spec, value) {
  if (value === null || value === undefined || spec === undefined) return value;
  if (spec.t === "num" && typeof value === "number" && Number.isInteger(value)) return new Float64(value);
  if (spec.t === "list" && Array.isArray(value)) return value.map((v) => markSpec(spec.of, v));
  if (spec.t === "obj" && isMap(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = markSpec(spec.fields[k], v);
    return out;
  }
  return value;
}

/** `data` with whole numbers of float fields marked (the same object when there is none). */
function markFloats(data) {
  if (!isMap(data) || typeof data.type !== "string") return data;
  const spec = Object.prototype.hasOwnProperty.call(CLIENT_TYPES, data.type) ? CLIENT_TYPES[data.type] : null;
  if (spec === null || !Object.values(spec.fields).some(hasFloat)) return data;
  return markSpec({ t: "obj", fields: spec.fields }, data);
}

function hasFloat(spec) {
  if (spec.t === "num") return true;
  if (spec.t === "list") return hasFloat(spec.of);
  if (spec.t === "obj") return Object.values(spec.fields).some(hasFloat);
  return false;
}

/** JSON.stringify, with Float64 written as a float ("5.0"). */
function toJson(v) {
  if (v instanceof Float64) return Number.isInteger(v.value) && Math.abs(v.value) < 1e16 ? `${v.value}.0` : JSON.stringify(v.value);
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? "null" : toJson(x))).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const parts = Object.entries(v).filter(([, x]) => x !== undefined && typeof x !== "function");
    return `{${parts.map(([k, x]) => `${JSON.stringify(k)}:${toJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
const codePoints = (s) => [...s].length;

/** The request id of a decoded message when it is a valid one, else null. */
export function requestIdOf(raw) {
  const rid = raw.id;
  if (typeof rid === "string" && rid.length > 0 && codePoints(rid) <= 64) return rid;
  if (typeof rid === "number" && Number.isInteger(rid) && rid >= 0 && rid < MAX_SAFE_ID) return rid;
  return null;
}

function check(spec, value, path) {
  const fail = (why) => { throw new FrameError("bad_request", `${why} at ${path}`); };
  if (value === null) {
    if (!spec.nullable) fail("null not allowed");
    return;
  }
  switch (spec.t) {
    case "str": {
      if (typeof value !== "string") fail("expected a string");
      const n = codePoints(value);
      if (n < spec.min || n > spec.max) fail("length out of bounds");
      if (spec.pattern && !spec.pattern.test(value)) fail("does not match the pattern");
      return;
    }
    case "int":
      if (typeof value !== "number" || !Number.isInteger(value)) fail("expected an integer");
      if (value < spec.min || value > spec.max) fail("out of range");
      return;
    case "num":
      if (typeof value !== "number" || !Number.isFinite(value)) fail("expected a number");
      if (value < spec.min || value > spec.max || (spec.gt && value === spec.min)) fail("out of range");
      return;
    case "bool":
      if (typeof value !== "boolean") fail("expected a boolean");
      return;
    case "list":
      if (!Array.isArray(value)) fail("expected an array");
      if (value.length > spec.max) fail("too many items");
      if (value.length < (spec.min || 0)) fail("too few items");
      value.forEach((v, i) => check(spec.of, v, `${path}[${i}]`));
      return;
    case "map":
      if (!isMap(value)) fail("expected a map");
      if (Object.keys(value).length > spec.max) fail("too many entries");
      for (const [k, v] of Object.entries(value)) {
        check(spec.key, k, `${path} key`);
        check(spec.of, v, `${path}.${k}`);
      }
      return;
    case "obj":
      checkFields(spec, value, path);
      return;
    default:
      fail("unknown rule");
  }
}

function checkFields(spec, value, path, skip = []) {
  if (!isMap(value)) throw new FrameError("bad_request", `expected a map at ${path}`);
  for (const key of Object.keys(value)) {
    if (skip.includes(key)) continue;
    if (!(key in spec.fields)) throw new FrameError("bad_request", `unknown field ${path}.${key}`);
    check(spec.fields[key], value[key], `${path}.${key}`);
  }
  for (const key of spec.req) {
    if (!(key in value)) throw new FrameError("bad_request", `missing field ${path}.${key}`);
  }
}

/**
 * Apply the hub's checks to a client frame (text or bytes) on `codec`:
 * returns the message, or throws FrameError with the code and request id the
 * hub would answer (SPEC section 3, checks 2 to 5).
 */
export function checkClientFrame(frame, codec = jsonCodec) {
  const size = frameSize(frame);
  if (size > MAX_FRAME_BYTES) throw new FrameError("too_large", "frame too large");
  const raw = codec.decode(frame);
  checkClientMessage(raw, size);
  return raw;
}

/** Checks 4 and 5 on decoded data; `size` is the frame's size in bytes. */
export function checkClientMessage(raw, size) {
  if (!isMap(raw)) throw new FrameError("bad_request", "a message must be a map");
  const id = requestIdOf(raw);
  const fail = (code, message) => { throw new FrameError(code, message, id); };
  if (typeof raw.type !== "string") fail("bad_request", "missing string field 'type'");
  const spec = Object.prototype.hasOwnProperty.call(CLIENT_TYPES, raw.type) ? CLIENT_TYPES[raw.type] : null;
  if (spec === null) fail("unknown_type", "unknown message type");
  if (size > spec.max) fail("too_large", `${raw.type} frames are limited to ${spec.max} bytes`);
  try {
    if (spec.request) {
      if (!("id" in raw)) throw new FrameError("bad_request", "missing field id");
      if (requestIdOf(raw) === null) throw new FrameError("bad_request", "invalid id");
    } else if ("id" in raw) {
      throw new FrameError("bad_request", "unknown field id");
    }
    checkFields(spec, raw, "$", ["type", "id"]);
  } catch (err) {
    if (err instanceof FrameError) fail(err.code, err.message);
    throw err;
  }
}
