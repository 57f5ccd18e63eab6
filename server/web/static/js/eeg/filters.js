// Display filters: second-order IIR sections (the RBJ "audio EQ cookbook"
// biquads), run causally in transposed direct form II, one state per trace.
//
// A chain starts (and restarts after a hole, NaN) in its steady state for the
// first value it sees, so a trace with a DC offset does not ring on entry.
// Filters only change what is drawn: the samples kept are as received.

export const HIGH_PASS_HZ = [0, 0.1, 0.3, 0.5, 1, 1.6, 5];
export const LOW_PASS_HZ = [0, 15, 30, 35, 45, 70];
export const NOTCH_HZ = [0, 50, 60];

/** Biquad coefficients [b0, b1, b2, a1, a2] (a0 = 1) of `kind` at `f0` Hz for sample rate `fs`. */
export function design(kind, f0, fs, q = Math.SQRT1_2) {
  const w = (2 * Math.PI * f0) / fs;
  const cos = Math.cos(w);
  const alpha = Math.sin(w) / (2 * q);
  let b;
  if (kind === "highpass") b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2];
  else if (kind === "lowpass") b = [(1 - cos) / 2, 1 - cos, (1 - cos) / 2];
  else if (kind === "notch") b = [1, -2 * cos, 1];
  else throw new RangeError(`unknown filter ${kind}`);
  const a0 = 1 + alpha;
  return [b[0] / a0, b[1] / a0, b[2] / a0, (-2 * cos) / a0, (1 - alpha) / a0];
}

/**
 * The sections of a setting {hp, lp, notch} (Hz; 0: off) at output rate `fs`;
 * a cut-off at or above Nyquist is left out (the hub's decimation already
 * removed what is above it).
 */
export function sections({ hp = 0, lp = 0, notch = 0 }, fs) {
  const out = [];
  const nyquist = fs / 2;
  if (hp > 0 && hp < nyquist) out.push(design("highpass", hp, fs));
  if (lp > 0 && lp < nyquist * 0.95) out.push(design("lowpass", lp, fs));
  if (notch > 0 && notch < nyquist * 0.95) out.push(design("notch", notch, fs, 8));
  return out;
}

/** One trace's chain of sections and their state. */
export class FilterChain {
  constructor(secs) {
    this.secs = secs;
    this.z = new Float64Array(secs.length * 2);
    this.primed = false;
  }

  /** Forget the state (a hole in the data): the next value primes the chain again. */
  reset() {
    this.primed = false;
  }

  _prime(x) {
    for (let s = 0; s < this.secs.length; s++) {
      const [b0, b1, b2, a1, a2] = this.secs[s];
      const gain = (b0 + b1 + b2) / (1 + a1 + a2);
      const y = gain * x;
      this.z[2 * s] = y - b0 * x;
      this.z[2 * s + 1] = b2 * x - a2 * y;
      x = y;
    }
    this.primed = true;
  }

  /** The filtered value of the next input `x` (NaN in, NaN out, and a reset). */
  step(x) {
    if (Number.isNaN(x)) {
      this.primed = false;
      return NaN;
    }
    if (!this.primed) this._prime(x);
    const z = this.z;
    for (let s = 0; s < this.secs.length; s++) {
      const [b0, b1, b2, a1, a2] = this.secs[s];
      const y = b0 * x + z[2 * s];
      z[2 * s] = b1 * x - a1 * y + z[2 * s + 1];
      z[2 * s + 1] = b2 * x - a2 * y;
      x = y;
    }
    return x;
  }
}
