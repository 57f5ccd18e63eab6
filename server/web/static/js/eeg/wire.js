// EEG binary stream frames (protocol/eeg.py, SPEC section 15.5), little-endian.
//
//   eeg (0x45), recorder -> hub, 20-byte header:
//     0 u8 0xC1 | 1 u8 0x45 | 2 u32 stream | 6 u16 seq | 8 u48 first | 14 u16 count | 16 u32 device
//   eeg.view (0x46), hub -> viewer, 24-byte header:
//     0 u8 0xC1 | 1 u8 0x46 | 2 u32 stream | 6 u8 mode | 7 u8 format | 8 u16 factor
//     10 u16 flags | 12 u48 first | 18 u16 count | 20 u32 device | 24 ... data
//
// Samples are sample-major (all channels of sample 0, then of sample 1, ...),
// digital values of the stream's format. tests/browser/test_eeg.py checks these
// functions against protocol/vectors/eeg/frames.json.

export const STREAM_MAGIC = 0xc1;
export const SAMPLES_KIND = 0x45;
export const VIEW_KIND = 0x46;
export const SAMPLES_HEADER_BYTES = 20;
export const VIEW_HEADER_BYTES = 24;
export const FLAG_BACKFILL = 1;
export const MODES = ["raw", "decimate", "envelope"];
export const FORMATS = { 1: "int16", 2: "int32", 3: "float32" };
const BYTES = { int16: 2, int32: 4, float32: 4 };

export class WireError extends Error {}

function readValues(dv, offset, n, format) {
  const out = format === "float32" ? new Float32Array(n) : format === "int32" ? new Int32Array(n) : new Int16Array(n);
  const size = BYTES[format];
  for (let i = 0, at = offset; i < n; i++, at += size) {
    out[i] = format === "int16" ? dv.getInt16(at, true) : format === "int32" ? dv.getInt32(at, true) : dv.getFloat32(at, true);
  }
  return out;
}

const u48 = (dv, at) => dv.getUint32(at, true) + dv.getUint16(at + 4, true) * 2 ** 32;

/**
 * Read a whole eeg.view frame (Uint8Array, magic and kind included) of a stream
 * of `channels` channels. Returns {stream, mode, format, factor, flags, backfill,
 * first, count, device, values} where values holds count x channels (envelope:
 * count x channels x 2, min then max) digital values. Throws WireError.
 */
export function decodeView(bytes, channels) {
  if (bytes.length < VIEW_HEADER_BYTES || bytes[0] !== STREAM_MAGIC || bytes[1] !== VIEW_KIND) {
    throw new WireError("not an eeg.view frame");
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mode = MODES[dv.getUint8(6)];
  const format = FORMATS[dv.getUint8(7)];
  if (!mode || !format) throw new WireError("unknown view mode or format");
  const count = dv.getUint16(18, true);
  const width = channels * (mode === "envelope" ? 2 : 1);
  const n = count * width;
  if (bytes.length - VIEW_HEADER_BYTES !== n * BYTES[format]) throw new WireError("eeg.view payload of the wrong size");
  const flags = dv.getUint16(10, true);
  return {
    stream: dv.getUint32(2, true),
    mode,
    format,
    factor: dv.getUint16(8, true),
    flags,
    backfill: Boolean(flags & FLAG_BACKFILL),
    first: u48(dv, 12),
    count,
    device: dv.getUint32(20, true),
    values: readValues(dv, VIEW_HEADER_BYTES, n, format),
  };
}

/** Read an eeg frame (recorder -> hub) of `channels` channels in `format`; throws WireError. */
export function decodeSamples(bytes, channels, format) {
  if (bytes.length < SAMPLES_HEADER_BYTES || bytes[0] !== STREAM_MAGIC || bytes[1] !== SAMPLES_KIND) {
    throw new WireError("not an eeg frame");
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = dv.getUint16(14, true);
  const n = count * channels;
  if (count === 0 || bytes.length - SAMPLES_HEADER_BYTES !== n * BYTES[format]) throw new WireError("eeg payload of the wrong size");
  return {
    stream: dv.getUint32(2, true),
    seq: dv.getUint16(6, true),
    first: u48(dv, 8),
    count,
    device: dv.getUint32(16, true),
    values: readValues(dv, SAMPLES_HEADER_BYTES, n, format),
  };
}

/**
 * The eeg frame of `count` samples from `first`: `values` holds count x channels
 * digital values (sample-major) written in `format`; seq wraps at 2^16, device
 * (µs) at 2^32. Throws RangeError for a field out of range.
 */
export function encodeSamples({ stream, seq, first, count, device }, values, format) {
  if (!(stream > 0 && stream < 2 ** 32) || !(count > 0 && count < 2 ** 16) || !(first >= 0 && first < 2 ** 48)) {
    throw new RangeError("eeg frame header out of range");
  }
  const size = BYTES[format];
  const out = new Uint8Array(SAMPLES_HEADER_BYTES + values.length * size);
  const dv = new DataView(out.buffer);
  out[0] = STREAM_MAGIC;
  out[1] = SAMPLES_KIND;
  dv.setUint32(2, stream, true);
  dv.setUint16(6, seq & 0xffff, true);
  dv.setUint32(8, first % 2 ** 32, true);
  dv.setUint16(12, Math.floor(first / 2 ** 32), true);
  dv.setUint16(14, count, true);
  dv.setUint32(16, ((device % 2 ** 32) + 2 ** 32) % 2 ** 32, true);
  for (let i = 0, at = SAMPLES_HEADER_BYTES; i < values.length; i++, at += size) {
    if (format === "int16") dv.setInt16(at, values[i], true);
    else if (format === "int32") dv.setInt32(at, values[i], true);
    else dv.setFloat32(at, values[i], true);
  }
  return out;
}

/** The stream number of id "t-0000abcd". */
export function streamNumber(sid) {
  return parseInt(sid.slice(2), 16);
}

/** The full recorder time (µs) of a frame's 32-bit device field, nearest `expectedUs`. */
export function unwrapDevice(device, expectedUs) {
  let delta = (device - expectedUs) % 2 ** 32;
  if (delta < 0) delta += 2 ** 32;
  if (delta >= 2 ** 31) delta -= 2 ** 32;
  return expectedUs + delta;
}

/** Per channel [scale, offset]: physical = digital * scale + offset (EDF's rule). */
export function calibration(meta) {
  return meta.channels.map((c) => {
    const scale = (c.physical_max - c.physical_min) / (c.digital_max - c.digital_min);
    return [scale, c.physical_min - c.digital_min * scale];
  });
}
