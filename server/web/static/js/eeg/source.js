// A recorder in the browser: a synthetic EEG (for demonstrations and training)
// streamed through the same protocol as a real recorder (SPEC section 15.5
// "Recording"): eeg.open, eeg.clock rounds, binary eeg frames of 1/8 s (int16,
// 0.1 µV per step), kept until the hub acknowledges them (ack events); after a
// reconnect it resumes the stream (eeg.open with `stream`) and resends from
// `acked`; stop() closes the stream once everything is stored.
//
// The signal: background noise through a one-pole low-pass, theta and beta,
// posterior alpha that grows when the eyes close (every 10 s), frontal blinks
// while they are open. Not media/eeg/synth.py's values: a different source.

import { HubError, TransportError } from "../medhub.js";
import { encodeSamples } from "./wire.js";

const LABELS = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4", "T5", "P3", "Pz", "P4", "T6", "O1", "O2", "A1", "A2"];
const POSTERIOR = new Set(["O1", "O2", "P3", "P4", "Pz", "T5", "T6"]);
const FRONTAL = new Set(["Fp1", "Fp2", "F7", "F8"]);
const RATE = 256;
const FRAME = RATE / 8;
const UV_PER_STEP = 0.1;

/** The metadata of the browser's synthetic stream (21 channels, 256 Hz, int16). */
export function syntheticMeta() {
  return {
    rate: RATE,
    format: "int16",
    channels: LABELS.map((label) => ({
      label, type: "EEG", unit: "uV",
      physical_min: -3276.8, physical_max: 3276.7, digital_min: -32768, digital_max: 32767,
      prefilter: "HP:0.1Hz LP:70Hz",
    })),
    reference: "A1+A2",
    device: "browser-synthetic",
  };
}

const deviceUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

export class BrowserRecorder extends EventTarget {
  constructor(hub, exam) {
    super();
    this.hub = hub;
    this.exam = exam;
    this.meta = syntheticMeta();
    this.sid = null;
    this.number = 0;
    this.index = 0; // next sample to generate
    this.acked = 0;
    this.seq = 0;
    this.pending = []; // [first, count, values] not acknowledged
    this.state = "idle";
    this._timer = null;
    this._phase = LABELS.map((_, i) => (i * 2.399) % (2 * Math.PI));
    this._pink = new Float64Array(LABELS.length);
    this.refusals = []; // errors the hub answered to frames (codes)
    this._onEvent = (e) => this._event(e.detail);
    this._onRefused = (e) => {
      if (e.detail && e.detail.ref === "stream:eeg") this.refusals.push(e.detail.code);
      this.dispatchEvent(new CustomEvent("refused", { detail: e.detail }));
    };
    this._onWelcome = () => { if (this.state === "streaming") this._resume().catch(() => {}); };
  }

  /** Open the stream; resolves with its id. Rejects with HubError (forbidden ...). */
  async start() {
    const r = await this.hub.request("eeg.open", { exam: this.exam, meta: this.meta });
    this.sid = r.stream;
    this.number = r.number;
    this.state = "streaming";
    this.hub.addEventListener("event", this._onEvent);
    this.hub.addEventListener("welcome", this._onWelcome);
    this.hub.addEventListener("refused", this._onRefused);
    await this._clock();
    this._t0 = performance.now();
    this._timer = setInterval(() => this._tick(), 125);
    this.dispatchEvent(new CustomEvent("state"));
    return this.sid;
  }

  async _clock() {
    let last = null;
    for (let i = 0; i < 3; i++) {
      const t0 = deviceUs();
      const r = await this.hub.request("eeg.clock", last ? { stream: this.sid, t0, last } : { stream: this.sid, t0 });
      last = { t0, hub_us: r.hub_us, t1: deviceUs() };
    }
  }

  async _resume() {
    const r = await this.hub.request("eeg.open", { exam: this.exam, meta: this.meta, stream: this.sid });
    this._ack(r.acked);
    await this._clock();
    for (const f of this.pending) this._send(f);
  }

  _event(ev) {
    if (ev.ch === `eeg:${this.sid}` && ev.kind === "ack" && ev.data) this._ack(ev.data.acked);
  }

  _ack(acked) {
    this.acked = Math.max(this.acked, acked);
    this.dispatchEvent(new CustomEvent("acked", { detail: { acked: this.acked } }));
    this.pending = this.pending.filter(([first, count]) => first + count > this.acked);
  }

  _tick() {
    const due = Math.floor(((performance.now() - this._t0) / 1000) * RATE);
    while (this.index + FRAME <= due) {
      const frame = [this.index, FRAME, this._generate(FRAME), deviceUs()];
      this.index += FRAME;
      this.pending.push(frame);
      this._send(frame);
    }
  }

  _send([first, count, values, device]) {
    if (!this.hub.online) return; // resent after the reconnect
    const bytes = encodeSamples({ stream: this.number, seq: this.seq++, first, count, device }, values, "int16");
    try {
      this.hub.sendStream(bytes);
    } catch (err) {
      if (!(err instanceof TransportError)) throw err;
    }
  }

  _generate(n) {
    const nch = LABELS.length;
    const out = new Int16Array(n * nch);
    for (let i = 0; i < n; i++) {
      const s = this.index + i;
      const t = s / RATE;
      const closed = Math.floor(t / 10) % 2 === 1; // eyes closed every other 10 s
      const blink = !closed && s % (RATE * 3) < RATE / 5 ? Math.sin((Math.PI * (s % (RATE * 3))) / (RATE / 5)) : 0;
      for (let c = 0; c < nch; c++) {
        const name = LABELS[c];
        this._pink[c] = 0.95 * this._pink[c] + (Math.random() - 0.5) * 6;
        let uv = this._pink[c];
        uv += 8 * Math.sin(2 * Math.PI * 6 * t + this._phase[c]);
        uv += 4 * Math.sin(2 * Math.PI * 20 * t + 2 * this._phase[c]);
        uv += (POSTERIOR.has(name) ? (closed ? 45 : 12) : closed ? 12 : 4) * Math.sin(2 * Math.PI * 10 * t + this._phase[c]);
        if (FRONTAL.has(name)) uv += 120 * blink;
        out[i * nch + c] = Math.max(-32768, Math.min(32767, Math.round(uv / UV_PER_STEP)));
      }
    }
    return out;
  }

  /** Stop sending and close the stream (once the hub stored everything); resolves with its end. */
  async stop() {
    clearInterval(this._timer);
    this.state = "closing";
    for (let tries = 0; ; tries++) {
      try {
        const r = await this.hub.request("eeg.close", { stream: this.sid });
        this.state = "closed";
        return r.end;
      } catch (err) {
        if (!(err instanceof HubError && err.code === "unavailable") || tries > 20) {
          this.state = "streaming";
          throw err;
        }
        await new Promise((res) => setTimeout(res, 500));
      } finally {
        if (this.state === "closed") {
          this.hub.removeEventListener("event", this._onEvent);
          this.hub.removeEventListener("welcome", this._onWelcome);
          this.hub.removeEventListener("refused", this._onRefused);
          this.dispatchEvent(new CustomEvent("state"));
        }
      }
    }
  }
}
