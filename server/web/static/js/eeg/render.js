// Drawing EEG traces on a <canvas>, page by page, with requestAnimationFrame.
//
// A page shows `pageS` seconds from output `start`. Live, pages sweep: new
// samples are drawn to the right of what is already there (only what
// changed: the filters' state and each trace's last point are kept), and a
// full page starts again at the left once it is full. A full redraw happens
// only when something else changed (page, montage, filters, sensitivity, a
// backfill landing inside the page, an annotation, the size). Each page is
// filtered from up to 2 s before it, so the high-pass has settled at its left
// edge. Negative is drawn up (the clinical convention).

import { derivations, derive, eegChannels } from "./montage.js";
import { FilterChain, sections } from "./filters.js";

const WARM_S = 2;
const PX_PER_MM = 96 / 25.4; // CSS pixels per millimetre

export class TraceRenderer {
  /** canvas: the <canvas>; session: an open EegSession; onLayout(derivs): the labels changed. */
  constructor(canvas, session, { onLayout = () => {}, onDrawn = () => {} } = {}) {
    this.canvas = canvas;
    this.session = session;
    this.onLayout = onLayout;
    this.onDrawn = onDrawn;
    this.settings = { montage: "referential", sensitivity: 7, pageS: 10, hp: 0.5, lp: 70, notch: 0 };
    this.live = true;
    this.start = 0; // first output of the page
    this.dirty = true;
    this.drawnSamples = 0; // one past the newest output drawn so far (grows as traces advance)
    this.derivs = [];
    this.eeg = [];
    this.cursor = null; // output index of the last click (annotation position)
    this._raf = 0;
    this._state = null; // {chains, next, last: Float64Array(2 * n)}
    session.addEventListener("data", (e) => this._onData(e.detail));
    session.addEventListener("annotations", () => { this.dirty = true; });
  }

  /** Change settings ({montage, sensitivity, pageS, hp, lp, notch}); redraws. */
  set(changes) {
    Object.assign(this.settings, changes);
    if ("montage" in changes || !this.derivs.length) this._layout();
    if ("pageS" in changes && this.live) this.start = this._livePageStart();
    this._want();
    this.dirty = true;
  }

  _layout() {
    this.derivs = derivations(this.session.meta, this.settings.montage);
    this.eeg = eegChannels(this.session.meta);
    this.onLayout(this.derivs);
  }

  get pageOutputs() {
    return Math.max(1, Math.round(this.settings.pageS * this.session.rate));
  }

  _livePageStart() {
    const n = this.pageOutputs;
    return Math.max(0, Math.floor(Math.max(0, this.session.end - 1) / n) * n);
  }

  /** Follow the live edge again. */
  goLive() {
    this.live = this.session.state === "live";
    this.start = this.live ? this._livePageStart() : this.start;
    this._want();
    this.dirty = true;
  }

  /** Move by `pages` pages (negative: back in time); leaves live mode. */
  move(pages) {
    const n = this.pageOutputs;
    const last = Math.max(0, this.session.end - n);
    this.start = Math.min(Math.max(0, this.start + pages * n), Math.max(last, 0));
    this.live = false;
    if (this.session.state === "live" && this.start >= this._livePageStart()) this.live = true;
    this._want();
    this.dirty = true;
  }

  /** Show the page starting at output `start` (not live). */
  showAt(start) {
    this.start = Math.max(0, Math.floor(start));
    this.live = false;
    this._want();
    this.dirty = true;
  }

  _want() {
    const warm = Math.round(WARM_S * this.session.rate);
    this.session.want(this.start - warm, this.start + this.pageOutputs);
  }

  _onData({ first, count }) {
    const st = this._state;
    const pageEnd = this.start + this.pageOutputs;
    if (count === 0 || first < this.start - WARM_S * this.session.rate || first >= pageEnd) {
      if (count === 0 && first < pageEnd) this.dirty = true; // gaps declared
      return;
    }
    // a backfill inside what is drawn: draw the page again; live data after it: incremental
    if (!st || first < st.next) this.dirty = true;
  }

  run() {
    const frame = () => {
      if (!this.canvas.isConnected) return;
      this._raf = requestAnimationFrame(frame);
      this.draw();
    };
    this._raf = requestAnimationFrame(frame);
  }

  stop() {
    cancelAnimationFrame(this._raf);
  }

  // -- geometry --------------------------------------------------------------------
  _size() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const hgt = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== hgt) {
      c.width = w;
      c.height = hgt;
      this.dirty = true;
    }
    return { w, h: hgt, dpr };
  }

  /** Output index under canvas x (CSS pixels). */
  outputAt(x) {
    return this.start + (x / Math.max(1, this.canvas.clientWidth)) * this.pageOutputs;
  }

  // -- drawing ---------------------------------------------------------------------
  draw() {
    if (!this.session.meta || !this.derivs.length) return;
    const { w, h, dpr } = this._size();
    if (this.live && this.session.end > this.start + this.pageOutputs) {
      this.start = this._livePageStart(); // the page is full: sweep to the next
      this._want();
      this.dirty = true;
    }
    const ctx = this.canvas.getContext("2d");
    const geo = { w, h, dpr, rowH: h / this.derivs.length, xPer: w / this.pageOutputs };
    if (this.dirty) {
      this.dirty = false;
      this._background(ctx, geo);
      this._traces(ctx, geo, true);
    } else {
      this._traces(ctx, geo, false);
    }
  }

  _background(ctx, { w, h, dpr, rowH, xPer }) {
    const store = this.session.store;
    const n = this.pageOutputs;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    // one line a second, stronger every 5 s
    const rate = this.session.rate;
    const firstS = Math.ceil(this.start / rate);
    for (let s = firstS; s * rate < this.start + n; s++) {
      const x = Math.round((s * rate - this.start) * xPer) + 0.5;
      ctx.strokeStyle = s % 5 === 0 ? "#c9ced6" : "#e6e9ee";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.stroke();
    }
    for (let k = 1; k < this.derivs.length; k++) {
      ctx.fillStyle = "#f3f4f6";
      ctx.fillRect(0, Math.round(k * rowH), w, 1);
    }
    // gaps of the recording: hatched, labelled
    ctx.font = `${11 * dpr}px sans-serif`;
    for (const [a, b] of store.gaps.within(this.start, this.start + n)) {
      const x0 = (a - this.start) * xPer;
      const x1 = Math.max(x0 + 2, (b - this.start) * xPer);
      ctx.fillStyle = "rgba(180, 35, 24, 0.12)";
      ctx.fillRect(x0, 0, x1 - x0, h);
      ctx.strokeStyle = "#b42318";
      ctx.beginPath();
      ctx.moveTo(x0 + 0.5, 0);
      ctx.lineTo(x0 + 0.5, h);
      ctx.stroke();
      ctx.fillStyle = "#b42318";
      ctx.fillText(this.gapLabel || "gap", x0 + 3 * dpr, h - 6 * dpr);
    }
    // annotations: a line at the onset, a band for the duration, the text on top
    const f = this.session.factor;
    for (const a of this.session.annotations.values()) {
      const j0 = a.onset / f;
      const j1 = (a.onset + (a.duration || 0)) / f;
      if (j1 < this.start || j0 >= this.start + n) continue;
      const x0 = (j0 - this.start) * xPer;
      if (j1 > j0) {
        ctx.fillStyle = "rgba(37, 99, 235, 0.08)";
        ctx.fillRect(x0, 0, (j1 - j0) * xPer, h);
      }
      ctx.strokeStyle = "#2563eb";
      ctx.beginPath();
      ctx.moveTo(Math.round(x0) + 0.5, 0);
      ctx.lineTo(Math.round(x0) + 0.5, h);
      ctx.stroke();
      ctx.fillStyle = "#1d4ed8";
      ctx.fillText(`${a.kind === "note" ? "" : `${a.kind}: `}${a.text}`.slice(0, 40), x0 + 3 * dpr, 12 * dpr);
    }
    if (this.cursor !== null && this.cursor >= this.start && this.cursor < this.start + n) {
      const x = Math.round((this.cursor - this.start) * xPer) + 0.5;
      ctx.strokeStyle = "#f59e0b";
      ctx.setLineDash([4 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  /** Draw the traces from the page start (full) or from where the last call stopped. */
  _traces(ctx, { dpr, rowH, xPer }, full) {
    const store = this.session.store;
    const n = this.derivs.length;
    const pageEnd = this.start + this.pageOutputs;
    let st = this._state;
    if (full || !st) {
      const secs = sections(this.settings, this.session.rate);
      const from = Math.max(0, this.start - Math.round(WARM_S * this.session.rate));
      st = { chains: this.derivs.map(() => new FilterChain(secs)), next: from, last: new Float64Array(2 * n).fill(NaN) };
      this._state = st;
    }
    // what can be drawn now: the held run that starts at `next`; a hole before later
    // data is stepped over (filters reset) when it is a gap of the recording, in
    // the warm-up before the page, or not being read (else the page waits for it)
    let run = null;
    for (;;) {
      const runs = store.held.within(st.next, pageEnd);
      if (!runs.length) return;
      if (runs[0][0] === st.next) {
        run = runs[0];
        break;
      }
      const hole = st.next;
      if (!(hole < this.start || store.gaps.has(hole) || !this.session.asked.has(hole))) return;
      st.chains.forEach((c) => c.reset());
      st.last.fill(NaN);
      st.next = runs[0][0];
    }
    const [a, b] = run;
    const scale = (PX_PER_MM * dpr) / this.settings.sensitivity; // px per µV
    const vals = new Float64Array(n);
    const out = new Float64Array(n);
    ctx.lineWidth = Math.max(1, dpr);
    ctx.strokeStyle = "#111827";
    ctx.beginPath();
    for (let j = a; j < b; j++) {
      const cell = store.at(j);
      if (!cell) break;
      derive(this.derivs, cell[0], cell[1], this.eeg, vals);
      const x = (j - this.start) * xPer;
      for (let k = 0; k < n; k++) {
        out[k] = st.chains[k].step(vals[k]);
        if (j < this.start || Number.isNaN(out[k])) {
          st.last[2 * k] = NaN; // warm-up, or a hole: the line starts again after it
          continue;
        }
        const y = (k + 0.5) * rowH + out[k] * scale;
        const lx = st.last[2 * k];
        if (!Number.isNaN(lx)) {
          ctx.moveTo(lx, st.last[2 * k + 1]);
          ctx.lineTo(x, y);
        }
        st.last[2 * k] = x;
        st.last[2 * k + 1] = y;
      }
      st.next = j + 1;
    }
    ctx.stroke();
    if (st.next > this.drawnSamples) {
      this.drawnSamples = st.next;
      this.onDrawn(this.drawnSamples);
    }
  }
}
