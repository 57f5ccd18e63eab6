// One viewer of one EEG stream over the app's hub socket (docs/eeg.md "What the
// browser viewer needs", SPEC section 15.5 "Watching").
//
// open() sends eeg.watch (raw, or decimated when the stream is faster than the
// screen needs), then takes the view's eeg.view frames from `live_from` on; a
// frame that jumps ahead (the hub skipped frames for a slow socket, after a
// `gap` event) or a reconnect (watch again) leaves a hole that is read with
// eeg.backfill pages, at most 4 in flight. ensure(a, b) reads any range (a page
// scrolled back, a finished recording). Ranges the hub reports `missing` are
// gaps of the recording: drawn as such, never asked again.
//
// The hub keeps one view of a stream per socket, and eeg.unwatch ends it for
// the socket: sessions of one hub connection watching one stream (a page
// rendered again while its old viewer is still closing, two viewers of one
// stream) therefore share the view the first one chose, and only the last one
// to close unwatches.
//
// Events: "data" {first, count} (outputs held), "annotations", "state"
// ({state: live|closed|revoked|error}).

import { TransportError } from "../medhub.js";
import { calibration, decodeView, streamNumber, unwrapDevice, VIEW_KIND } from "./wire.js";
import { Ranges, SampleStore } from "./store.js";

const IN_FLIGHT = 4;

const watching = new WeakMap(); // hub -> Map(stream id -> Set of open EegSessions)

function peers(hub, sid) {
  let streams = watching.get(hub);
  if (!streams) {
    streams = new Map();
    watching.set(hub, streams);
  }
  let set = streams.get(sid);
  if (!set) {
    set = new Set();
    streams.set(sid, set);
  }
  return set;
}

/** The view to ask for: raw unless the stream is more than twice what `columnsPerS` needs. */
export function viewFor(rate, columnsPerS) {
  const wanted = Math.max(256, 2 * columnsPerS);
  return rate > 2 * wanted ? { view: "decimate", rate: wanted } : { view: "raw" };
}

export class EegSession extends EventTarget {
  constructor(hub, sid, { columnsPerS = 100 } = {}) {
    super();
    this.hub = hub;
    this.sid = sid;
    this.number = streamNumber(sid);
    this.columnsPerS = columnsPerS;
    this.meta = null;
    this.view = null; // {mode, factor, rate, format}
    this.store = null;
    this.state = "opening";
    this.annotations = new Map(); // id -> annotation
    this.annSeq = 0;
    this.expected = 0; // next live output
    this.firstHeld = 0; // the oldest output the hub still buffers
    this.closedEnd = null; // outputs, once closed
    this.clockOffsetUs = null;
    this.hubOffsetMs = 0; // hub time - browser time
    this.lastDevice = null; // full µs of the newest live frame's device time
    this.lastLiveAt = 0;
    this.inFlight = 0;
    this.asked = new Ranges(); // requested, not answered yet
    this.queue = []; // ranges waiting for a free slot
    this._onStream = (e) => this._frame(e.detail);
    this._onEvent = (e) => this._event(e.detail);
    this._onWelcome = () => { if (this.state === "live") this._watch().catch(() => {}); };
  }

  /** Watch the stream; rejects with HubError (forbidden, not_found ...) like the hub answers. */
  async open() {
    peers(this.hub, this.sid).add(this);
    this.hub.addEventListener("stream", this._onStream);
    this.hub.addEventListener("event", this._onEvent);
    this.hub.addEventListener("welcome", this._onWelcome);
    try {
      await this._watch();
    } catch (err) {
      this.close();
      throw err;
    }
    this._measureHubClock().catch(() => {});
  }

  /** Stop following (the view left the screen). */
  close() {
    this.hub.removeEventListener("stream", this._onStream);
    this.hub.removeEventListener("event", this._onEvent);
    this.hub.removeEventListener("welcome", this._onWelcome);
    const others = peers(this.hub, this.sid);
    others.delete(this);
    if (!others.size && (this.state === "live" || this.state === "closed")) {
      this.hub.request("eeg.unwatch", { stream: this.sid }, { waitS: 1 }).catch(() => {});
    }
    this.state = "gone";
  }

  async _watch() {
    // the view already watched on this socket (see the top of the file), else this one's
    let ask = this.meta ? this._ask : null;
    for (const other of peers(this.hub, this.sid)) {
      if (!ask && other !== this && other._ask) ask = this._ask = other._ask;
    }
    let reply;
    if (ask) {
      reply = await this.hub.request("eeg.watch", { stream: this.sid, ...ask });
    } else {
      reply = await this.hub.request("eeg.watch", { stream: this.sid });
      // the stream's rate is known now: a decimated view when raw is far more than the screen needs
      const want = viewFor(reply.meta.rate, this.columnsPerS);
      if (want.view !== "raw") {
        try {
          reply = await this.hub.request("eeg.watch", { stream: this.sid, ...want });
          this._ask = want;
        } catch {
          this._ask = { view: "raw" };
        }
      } else {
        this._ask = want;
      }
    }
    const fresh = this.store === null;
    this.meta = reply.meta;
    this.view = reply.view;
    this.clockOffsetUs = reply.clock_offset_us;
    if (fresh) {
      this.store = new SampleStore(this.meta.channels.length, Math.max(1, Math.round(this.view.rate)), calibration(this.meta));
    } else if (reply.live_from > this.expected) {
      this.want(this.expected, reply.live_from); // what passed while the socket was away
    }
    this.firstHeld = reply.first;
    this.expected = reply.live_from;
    this.store.end = Math.max(this.store.end, reply.live_from);
    this.annotations = new Map((reply.annotations || []).map((a) => [a.id, a]));
    this.annSeq = reply.ann_seq || 0;
    if (reply.state === "closed") this.closedEnd = reply.live_from;
    this._setState(reply.state);
    this.dispatchEvent(new CustomEvent("annotations"));
    return reply;
  }

  _setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  /** Output rate of the view (outputs per second) and source samples per output. */
  get rate() {
    return this.view ? this.view.rate : 1;
  }

  get factor() {
    return this.view ? this.view.factor : 1;
  }

  /** One past the newest output the stream has (live edge, or the end of a finished one). */
  get end() {
    return this.closedEnd ?? Math.max(this.expected, this.store ? this.store.end : 0);
  }

  // -- frames and events -----------------------------------------------------------
  _frame({ kind, bytes }) {
    if (kind !== VIEW_KIND || !this.store || bytes.length < 6) return;
    if (new DataView(bytes.buffer, bytes.byteOffset).getUint32(2, true) !== this.number) return;
    let f;
    try {
      f = decodeView(bytes, this.meta.channels.length);
    } catch {
      return;
    }
    if (f.mode === "envelope" || f.factor !== this.factor) return; // not the view drawn here
    const skipped = !f.backfill && f.first > this.expected ? [this.expected, f.first] : null;
    if (!f.backfill) {
      this.expected = Math.max(this.expected, f.first + f.count);
      if (f.device) this._device(f.device);
    }
    this.store.put(f.first, f.count, f.values);
    if (skipped) this.want(...skipped); // frames skipped (asked once `end` is past them)
    this.dispatchEvent(new CustomEvent("data", { detail: { first: f.first, count: f.count, live: !f.backfill } }));
  }

  _device(device) {
    const nowUs = (Date.now() + this.hubOffsetMs) * 1000;
    const expected = this.clockOffsetUs === null ? (this.lastDevice ?? device) : nowUs - this.clockOffsetUs;
    this.lastDevice = unwrapDevice(device, expected);
    this.lastLiveAt = Date.now();
  }

  _event(ev) {
    if (ev.ch === `eeg:${this.sid}`) {
      if (ev.kind === "annotation" && ev.seq > this.annSeq) {
        this.annSeq = ev.seq;
        const a = ev.data;
        if (a.action === "delete") this.annotations.delete(a.id);
        else this.annotations.set(a.id, a);
        this.dispatchEvent(new CustomEvent("annotations"));
      } else if (ev.kind === "stream" && ev.data) {
        if (ev.data.state === "closed") {
          this.closedEnd = Math.ceil(ev.data.end / this.factor);
          this._setState("closed");
        } else if (ev.data.state === "revoked") {
          this._setState("revoked");
        }
      }
    }
  }

  // -- backfill --------------------------------------------------------------------
  /** Hold outputs [a, b) (clipped to what the stream has): asks for what is not held. */
  want(a, b) {
    if (!this.store) return;
    a = Math.max(0, Math.floor(a));
    b = Math.min(Math.ceil(b), this.end);
    for (const [s, e] of this.store.held.missing(a, b)) {
      for (const [s2, e2] of this.store.gaps.missing(s, e)) {
        for (const [s3, e3] of this.asked.missing(s2, e2)) {
          this.asked.add(s3, e3);
          this.queue.push([s3, e3]);
        }
      }
    }
    this._pump();
  }

  _pump() {
    while (this.inFlight < IN_FLIGHT && this.queue.length && this.state !== "gone") {
      const [a, b] = this.queue.shift();
      this.inFlight += 1;
      this._page(a, b).finally(() => {
        this.inFlight -= 1;
        this._pump();
      });
    }
  }

  async _page(a, b) {
    try {
      const r = await this.hub.request("eeg.backfill", {
        stream: this.sid, first: a, end: b, view: this.view.mode, factor: this.factor,
      });
      for (const [s, e] of r.missing || []) this.store.markGap(s, e);
      this.asked.remove(a, b);
      if (r.more && r.end > a && r.end < b) {
        this.asked.add(r.end, b);
        this.queue.unshift([r.end, b]);
      }
      if ((r.missing || []).length) this.dispatchEvent(new CustomEvent("data", { detail: { first: a, count: 0 } }));
    } catch (err) {
      this.asked.remove(a, b); // asked again when still wanted
      if (!(err instanceof TransportError)) this.dispatchEvent(new CustomEvent("failed", { detail: { error: err } }));
    }
  }

  // -- live lag ----------------------------------------------------------------------
  async _measureHubClock() {
    let best = null;
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      const r = await this.hub.request("ping");
      const t1 = Date.now();
      if (best === null || t1 - t0 < best[0]) best = [t1 - t0, r.time * 1000 - (t0 + t1) / 2];
    }
    this.hubOffsetMs = best[1];
  }

  /** Seconds between the newest live sample's recording and now (null when unknown). */
  lagS() {
    if (this.state !== "live" || this.lastDevice === null || this.clockOffsetUs === null) return null;
    const nowUs = (Date.now() + this.hubOffsetMs) * 1000;
    return Math.max(0, (nowUs - (this.lastDevice + this.clockOffsetUs)) / 1e6);
  }

  // -- annotations ---------------------------------------------------------------------
  /** Add an annotation at source sample `onset`; resolves with the hub's {id, version, seq}. */
  annotate({ onset, duration = 0, text, kind = "note" }) {
    const clientId = `w-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    return this.hub.request("eeg.annotate", { stream: this.sid, client_id: clientId, onset, duration, text, kind });
  }

  editAnnotation(id, { onset, duration = 0, text, kind = "note" }) {
    return this.hub.request("eeg.annotation_edit", { stream: this.sid, annotation: id, onset, duration, text, kind });
  }

  deleteAnnotation(id) {
    return this.hub.request("eeg.annotation_delete", { stream: this.sid, annotation: id });
  }
}
