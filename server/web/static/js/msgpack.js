// Strict msgpack for medhub.v1.msgpack (protocol/SPEC.md, section 2 and 13).
//
// decode() refuses what the hub refuses: ext types (timestamps included),
// map keys that are not strings, invalid UTF-8, truncated input, trailing
// bytes, and values past the decoding bounds. encode() writes the canonical
// (smallest) form, maps in key order, as the hub's encoder does.

export const LIMITS = Object.freeze({ str: 65536, bin: 65536, array: 4096, map: 1024, depth: 1024 });

export class DecodeError extends Error {}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// A bin map key: the hub decodes it as bytes, then refuses the field (bad_request).
export const BIN_KEY_PREFIX = "\u0000bin:";

function setKey(obj, key, value) {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Decode one msgpack value filling all of `bytes`; throws DecodeError. */
export function decode(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (buf.length === 0) throw new DecodeError("empty frame");
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;

  const need = (n) => {
    if (pos + n > buf.length) throw new DecodeError("truncated");
  };
  const u8 = () => { need(1); return buf[pos++]; };
  const u16 = () => { need(2); const v = view.getUint16(pos); pos += 2; return v; };
  const u32 = () => { need(4); const v = view.getUint32(pos); pos += 4; return v; };
  const num64 = (signed) => {
    need(8);
    const v = signed ? view.getBigInt64(pos) : view.getBigUint64(pos);
    pos += 8;
    const n = Number(v);
    return Number.isSafeInteger(n) ? n : v;
  };
  const str = (n) => {
    if (n > LIMITS.str) throw new DecodeError("string too long");
    need(n);
    const part = buf.subarray(pos, pos + n);
    pos += n;
    try {
      return strictUtf8.decode(part);
    } catch {
      throw new DecodeError("invalid UTF-8");
    }
  };
  const bin = (n) => {
    if (n > LIMITS.bin) throw new DecodeError("bin too long");
    need(n);
    const part = buf.slice(pos, pos + n);
    pos += n;
    return part;
  };

  function array(n, depth) {
    if (n > LIMITS.array) throw new DecodeError("array too long");
    const out = [];
    for (let i = 0; i < n; i++) out.push(value(depth + 1));
    return out;
  }

  function map(n, depth) {
    if (n > LIMITS.map) throw new DecodeError("map too long");
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value(depth + 1);
      let name;
      if (typeof key === "string") name = key;
      else if (key instanceof Uint8Array) name = BIN_KEY_PREFIX + Array.from(key, (b) => b.toString(16)).join("");
      else throw new DecodeError("map keys must be strings");
      setKey(out, name, value(depth + 1));
    }
    return out;
  }

  function value(depth) {
    if (depth > LIMITS.depth) throw new DecodeError("nested too deep");
    const b = u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f, depth);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f, depth);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xca: { need(4); const v = view.getFloat32(pos); pos += 4; return v; }
      case 0xcb: { need(8); const v = view.getFloat64(pos); pos += 8; return v; }
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return num64(false);
      case 0xd0: { need(1); const v = view.getInt8(pos); pos += 1; return v; }
      case 0xd1: { need(2); const v = view.getInt16(pos); pos += 2; return v; }
      case 0xd2: { need(4); const v = view.getInt32(pos); pos += 4; return v; }
      case 0xd3: return num64(true);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return array(u16(), depth);
      case 0xdd: return array(u32(), depth);
      case 0xde: return map(u16(), depth);
      case 0xdf: return map(u32(), depth);
      default:
        // 0xc1 is never used; 0xc7-0xc9 and 0xd4-0xd8 are ext types.
        throw new DecodeError(b === 0xc1 ? "reserved byte 0xc1" : "ext types are not allowed");
    }
  }

  const out = value(0);
  if (pos !== buf.length) throw new DecodeError("trailing bytes");
  return out;
}

/** A number to encode as a float even when it is whole (a float field of the protocol: 5.0). */
export class Float64 {
  constructor(value) {
    this.value = value;
  }
}

/** Encode plain data (null, booleans, numbers, Float64, strings, Uint8Array, arrays, objects). */
export function encode(data) {
  const parts = [];
  let size = 0;
  const push = (arr) => { parts.push(arr); size += arr.length; };
  const bytes = (...list) => push(Uint8Array.from(list));
  const withLen = (n, fix, fixMax, c8, c16, c32) => {
    if (fix !== null && n <= fixMax) bytes(fix | n);
    else if (c8 !== null && n <= 0xff) bytes(c8, n);
    else if (n <= 0xffff) bytes(c16, n >> 8, n & 0xff);
    else bytes(c32, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  };
  const big = (code, v, signed) => {
    const out = new Uint8Array(9);
    out[0] = code;
    const dv = new DataView(out.buffer);
    if (signed) dv.setBigInt64(1, BigInt(v));
    else dv.setBigUint64(1, BigInt(v));
    push(out);
  };

  function int(n) {
    if (n >= 0) {
      if (n <= 0x7f) bytes(n);
      else if (n <= 0xff) bytes(0xcc, n);
      else if (n <= 0xffff) bytes(0xcd, n >> 8, n & 0xff);
      else if (n <= 0xffffffff) bytes(0xce, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
      else big(0xcf, n, false);
    } else {
      if (n >= -32) bytes(n & 0xff);
      else if (n >= -0x80) bytes(0xd0, n & 0xff);
      else if (n >= -0x8000) bytes(0xd1, (n >> 8) & 0xff, n & 0xff);
      else if (n >= -0x80000000) bytes(0xd2, (n >> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
      else big(0xd3, n, true);
    }
  }

  function value(v) {
    if (v === null || v === undefined) bytes(0xc0);
    else if (v === false) bytes(0xc2);
    else if (v === true) bytes(0xc3);
    else if (typeof v === "bigint") big(v >= 0n ? 0xcf : 0xd3, v, v < 0n);
    else if (typeof v === "number" || v instanceof Float64) {
      const isFloat = v instanceof Float64;
      if (isFloat) v = v.value;
      if (!isFloat && Number.isInteger(v) && Number.isSafeInteger(v) && !Object.is(v, -0)) int(v);
      else {
        const out = new Uint8Array(9);
        out[0] = 0xcb;
        new DataView(out.buffer).setFloat64(1, v);
        push(out);
      }
    } else if (typeof v === "string") {
      const b = utf8.encode(v);
      withLen(b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
      push(b);
    } else if (v instanceof Uint8Array) {
      withLen(v.length, null, 0, 0xc4, 0xc5, 0xc6);
      push(v);
    } else if (Array.isArray(v)) {
      withLen(v.length, 0x90, 15, null, 0xdc, 0xdd);
      v.forEach(value);
    } else if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      withLen(keys.length, 0x80, 15, null, 0xde, 0xdf);
      for (const k of keys) {
        value(k);
        value(v[k]);
      }
    } else {
      throw new TypeError(`cannot encode ${typeof v}`);
    }
  }

  value(data);
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Lower-case hex of bytes, and back (used by the vector checks). */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}
