// What a viewer holds of a stream: outputs of one view (raw or decimated) by
// output index, as physical values, in blocks; which ranges it holds; which
// ranges the hub declared gaps of the recording.

/** Half-open integer ranges [a, b), sorted, merged. */
export class Ranges {
  constructor() {
    this.list = [];
  }

  add(a, b) {
    if (b <= a) return;
    const out = [];
    let placed = false;
    for (const [s, e] of this.list) {
      if (e < a) out.push([s, e]);
      else if (s > b) {
        if (!placed) out.push([a, b]);
        placed = true;
        out.push([s, e]);
      } else {
        a = Math.min(a, s);
        b = Math.max(b, e);
      }
    }
    if (!placed) out.push([a, b]);
    this.list = out;
  }

  remove(a, b) {
    const out = [];
    for (const [s, e] of this.list) {
      if (e <= a || s >= b) out.push([s, e]);
      else {
        if (s < a) out.push([s, a]);
        if (e > b) out.push([b, e]);
      }
    }
    this.list = out;
  }

  /** The parts of [a, b) not in the set. */
  missing(a, b) {
    const out = [];
    let cur = a;
    for (const [s, e] of this.list) {
      if (e <= cur) continue;
      if (s >= b) break;
      if (s > cur) out.push([cur, s]);
      cur = Math.max(cur, e);
      if (cur >= b) break;
    }
    if (cur < b) out.push([cur, b]);
    return out;
  }

  /** The parts of [a, b) in the set. */
  within(a, b) {
    return this.list.filter(([s, e]) => e > a && s < b).map(([s, e]) => [Math.max(s, a), Math.min(e, b)]);
  }

  has(j) {
    return this.list.some(([s, e]) => s <= j && j < e);
  }
}

export class SampleStore {
  /**
   * channels: per sample; blockLen: outputs per block (1 s of the view);
   * maxBlocks: blocks kept (the farthest from the focus go first).
   */
  constructor(channels, blockLen, calibration, maxBlocks = 1800) {
    this.channels = channels;
    this.blockLen = blockLen;
    this.cal = calibration;
    this.maxBlocks = maxBlocks;
    this.blocks = new Map(); // block number -> Float32Array(blockLen * channels), NaN = nothing
    this.held = new Ranges(); // outputs held
    this.gaps = new Ranges(); // outputs the recording does not have (declared by the hub)
    this.end = 0; // one past the newest output held
    this.focus = 0;
  }

  _block(n) {
    let b = this.blocks.get(n);
    if (!b) {
      b = new Float32Array(this.blockLen * this.channels).fill(NaN);
      this.blocks.set(n, b);
      if (this.blocks.size > this.maxBlocks) this._evict();
    }
    return b;
  }

  _evict() {
    const focus = Math.floor(this.focus / this.blockLen);
    let worst = null;
    for (const n of this.blocks.keys()) {
      if (worst === null || Math.abs(n - focus) > Math.abs(worst - focus)) worst = n;
    }
    this.blocks.delete(worst);
    this.held.remove(worst * this.blockLen, (worst + 1) * this.blockLen);
  }

  /** Hold `count` outputs from `first`: digital values, sample-major; returns how many were new. */
  put(first, count, values) {
    const nch = this.channels;
    let fresh = 0;
    for (const [a, b] of this.held.missing(first, first + count)) fresh += b - a;
    for (let i = 0; i < count; i++) {
      const j = first + i;
      const blk = this._block(Math.floor(j / this.blockLen));
      const at = (j % this.blockLen) * nch;
      for (let c = 0; c < nch; c++) {
        const [scale, offset] = this.cal[c];
        blk[at + c] = values[i * nch + c] * scale + offset;
      }
    }
    this.held.add(first, first + count);
    this.end = Math.max(this.end, first + count);
    return fresh;
  }

  /** Outputs [a, b) the recording does not have (a gap of the recording). */
  markGap(a, b) {
    this.gaps.add(a, b);
    this.end = Math.max(this.end, b);
  }

  /** [array, offset] of output j's values (offset of channel 0), or null when not held. */
  at(j) {
    const blk = this.blocks.get(Math.floor(j / this.blockLen));
    if (!blk) return null;
    return [blk, (j % this.blockLen) * this.channels];
  }
}
