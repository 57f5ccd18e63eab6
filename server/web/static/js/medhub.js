// medhub.js: the browser's client of the hub's wire protocol (protocol/SPEC.md).
//
// One Hub keeps one WebSocket (subprotocol medhub.v1.json) open from start()
// to stop(): hello with the session cookie (method "cookie"), requests with
// exactly one reply each, events, heartbeats both ways. It reconnects by
// itself with capped exponential backoff and full jitter (after a transport
// failure, 1011, 1013, 4008, 4009, 4029), after going_away's retry_after_s
// (1012, a restarting hub), or at once (4011, rights changed), and resumes:
// hello.resume carries the last seq of every followed conversation
// (conv:<id>), so missed events are replayed before live ones, and events
// already seen are dropped: each chat event is dispatched exactly once, in
// order. Presence subscriptions are made again after every welcome.
//
// It stops for good, with an "ended" event naming the reason, when the
// session is over (4010, or hello refused with 4003), when the user has too
// many sockets (4030), or when the hub refuses the client itself (1002,
// 1003, 1007, 1008, 1009): those need the person to act, not a retry.
//
// Events dispatched (EventTarget): "state" {state: connecting|online|
// reconnecting|ended, reason, retryInS}, "welcome" {welcome}, "event" {event}
// (every server event, deduplicated), "ended" {reason}, "stream" {kind, bytes}
// (a binary stream frame: SPEC section 15.4's call signalling), "refused" {error}
// (an `error` with no id: a one-way message or a stream frame the hub refused).

import { checkClientMessage, frameSize, jsonCodec, SUBPROTOCOL_JSON } from "./codec.js";

export const CLIENT_NAME = "médhub-web/1.0";
const RESUME_MAX_CHANNELS = 200; // hello.resume allows 256; the rest resume with chat.sync
const MAX_SEQ = 2 ** 53 - 1; // "from the end": the hub clamps it to the last seq

export class HubError extends Error {
  /** An `error` reply: code from SPEC section 11, retryAfterS when given. */
  constructor(code, message, retryAfterS = null) {
    super(message || code);
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

export class TransportError extends Error {
  /** The socket dropped or was not there in time: the request may or may not have run. */
  constructor(message) {
    super(message);
    this.code = "transport";
  }
}

// Close codes (SPEC section 12) and what the client does about them.
const ENDED = new Map([
  [4003, "auth_failed"],
  [4010, "session_ended"],
  [4030, "too_many_connections"],
  [1002, "client_refused"],
  [1003, "client_refused"],
  [1007, "client_refused"],
  [1008, "client_refused"],
  [1009, "client_refused"],
]);

export function closeReason(code) {
  if (ENDED.has(code)) return ENDED.get(code);
  if (code === 1012) return "restarting";
  if (code === 4011) return "rights_changed";
  if (code === 4029) return "abusive";
  if (code === 4009) return "slow";
  if (code === 1013) return "busy";
  return "network";
}

export class Hub extends EventTarget {
  /**
   * url: the ws(s):// URL of /ws (default: this page's origin).
   * backoff: {initialS, maxS}; requestTimeoutS bounds each request once sent.
   */
  constructor({ url = null, backoff = {}, requestTimeoutS = 15, socketFactory = null } = {}) {
    super();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = url || `${scheme}//${location.host}/ws`;
    this.initialS = backoff.initialS ?? 0.5;
    this.maxS = backoff.maxS ?? 15;
    this.requestTimeoutS = requestTimeoutS;
    this.socketFactory = socketFactory || ((u, p) => new WebSocket(u, p));
    this.state = "idle";
    this.welcome = null;
    this.lastSeq = new Map(); // conv channel -> last seq dispatched
    this.presenceUsers = new Set();
    this.presenceContacts = false;
    this.reconnects = 0;
    this._ids = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._openWaiters = [];
    this._ws = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._stopped = true;
    this._lastSent = 0;
    this._lastReceived = 0;
    this._tick = null;
    this._goingAwayS = null;
    this._restarting = false;
    this._onOnline = () => { if (this.state === "reconnecting") this._connectNow(); };
  }

  // -- lifecycle ---------------------------------------------------------------
  start() {
    if (!this._stopped) return;
    this._stopped = false;
    addEventListener("online", this._onOnline);
    this._connect();
  }

  /** Close for good (sign-out, page leaving). Pending requests fail with TransportError. */
  stop() {
    this._stopped = true;
    removeEventListener("online", this._onOnline);
    clearTimeout(this._retryTimer);
    clearInterval(this._tick);
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      try { ws.close(1000); } catch { /* already closed */ }
    }
    this._failPending(new TransportError("client stopped"));
    this._openWaiters.splice(0).forEach((w) => w.reject(new TransportError("client stopped")));
    this._setState("ended", "stopped");
  }

  get online() {
    return this.state === "online";
  }

  _setState(state, reason = null, retryInS = null) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, reason, retryInS } }));
  }

  _connectNow() {
    clearTimeout(this._retryTimer);
    this._attempt = 0;
    this._connect();
  }

  _connect() {
    if (this._stopped) return;
    this._setState(this.reconnects === 0 && !this.welcome ? "connecting" : "reconnecting", "connecting");
    let ws;
    try {
      ws = this.socketFactory(this.url, [SUBPROTOCOL_JSON]);
    } catch {
      this._retry("network");
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer"; // stream frames arrive in order with the text frames
    this._goingAwayS = null;
    let welcomed = false;
    ws.onopen = () => {
      this._lastReceived = Date.now();
      this._sendHello(ws).then(
        (welcome) => {
          welcomed = true;
          this._welcomed(ws, welcome);
        },
        (err) => {
          if (ws !== this._ws) return;
          if (err instanceof HubError && err.code === "auth_failed") return; // close 4003 follows
          if (err instanceof HubError && err.code === "unavailable") this._goingAwayS = err.retryAfterS;
          try { ws.close(4000); } catch { /* closed */ }
        },
      );
    };
    ws.onmessage = (e) => this._receive(ws, e.data);
    ws.onclose = (e) => {
      if (ws !== this._ws) return;
      this._ws = null;
      clearInterval(this._tick);
      this._failPending(new TransportError(`socket closed (${e.code})`));
      const reason = closeReason(e.code);
      if (ENDED.has(e.code)) {
        this._end(reason);
      } else if (e.code === 4011) {
        this._retry(reason, 0);
      } else if (welcomed && e.code !== 4029) {
        this._attempt = 0;
        this._retry(reason, this._goingAwayS);
      } else {
        this._retry(reason, this._goingAwayS);
      }
    };
  }

  _retry(reason, afterS = null) {
    if (this._stopped) return;
    if (reason === "restarting") this._restarting = true;
    else if (reason === "network" && this._restarting) reason = "restarting"; // still coming back
    const capped = Math.min(this.maxS, this.initialS * 2 ** this._attempt);
    this._attempt += 1;
    let delayS = Math.random() * capped; // full jitter
    if (reason === "abusive") delayS = this.maxS;
    if (afterS !== null && afterS !== undefined) delayS = afterS + Math.random() * this.initialS;
    this.reconnects += 1;
    this._setState("reconnecting", reason, delayS);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._connect(), delayS * 1000);
  }

  _end(reason) {
    this._stopped = true;
    removeEventListener("online", this._onOnline);
    this._openWaiters.splice(0).forEach((w) => w.reject(new TransportError(reason)));
    this._setState("ended", reason);
    this.dispatchEvent(new CustomEvent("ended", { detail: { reason } }));
  }

  _helloFrame() {
    const hello = { type: "hello", id: this._ids++, auth: { method: "cookie" }, client: CLIENT_NAME };
    const channels = {};
    let n = 0;
    for (const [ch, seq] of this.lastSeq) {
      if (n++ >= RESUME_MAX_CHANNELS) break;
      channels[ch] = seq;
    }
    if (n > 0) hello.resume = { channels };
    return hello;
  }

  _sendHello(ws) {
    const hello = this._helloFrame();
    return this._request(ws, hello, 30);
  }

  _welcomed(ws, welcome) {
    if (ws !== this._ws) return;
    this.welcome = welcome;
    this._attempt = 0;
    this._restarting = false;
    this._tick = setInterval(() => this._keepAlive(ws), 1000);
    this._setState("online", null);
    this.dispatchEvent(new CustomEvent("welcome", { detail: { welcome } }));
    // Conversations past the hello's resume limit resume with chat.sync.
    [...this.lastSeq.keys()].slice(RESUME_MAX_CHANNELS).forEach((ch) => {
      this._sync(ch.slice(5), this.lastSeq.get(ch)).catch(() => {});
    });
    if (this.presenceContacts || this.presenceUsers.size) {
      this.request("presence.subscribe", {
        users: [...this.presenceUsers].slice(0, 256),
        contacts: this.presenceContacts,
      }).then(
        (data) => this._presenceSnapshot(data),
        () => {},
      );
    }
    const waiters = this._openWaiters.splice(0);
    waiters.forEach((w) => w.resolve());
  }

  _keepAlive(ws) {
    if (ws !== this._ws || !this.welcome) return;
    const now = Date.now();
    const idleS = this.welcome.idle_timeout_s || 60;
    const heartbeatS = this.welcome.heartbeat_s || 25;
    if (now - this._lastSent > (idleS / 2) * 1000) this._write(ws, { type: "heartbeat" });
    // The hub sends something at least every heartbeat_s: silence means a dead link.
    if (now - this._lastReceived > (heartbeatS * 2 + 5) * 1000) {
      try { ws.close(4000); } catch { /* closed */ }
      this._ws = null;
      clearInterval(this._tick);
      this._failPending(new TransportError("no heartbeat from the hub"));
      this._retry("network");
    }
  }

  // -- sending -----------------------------------------------------------------
  _write(ws, msg) {
    const frame = jsonCodec.encode(msg);
    checkClientMessage(msg, frameSize(frame)); // never send what the hub would refuse
    ws.send(frame);
    this._lastSent = Date.now();
  }

  _request(ws, msg, timeoutS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(msg.id);
        reject(new TransportError("no answer in time"));
      }, timeoutS * 1000);
      this._pending.set(msg.id, { resolve, reject, timer });
      try {
        this._write(ws, msg);
      } catch (err) {
        clearTimeout(timer);
        this._pending.delete(msg.id);
        reject(err);
      }
    });
  }

  /**
   * Send a one-way message (no id, no reply; e.g. call.quality). Throws
   * TransportError when not connected, FrameError when the hub would refuse it.
   */
  notify(type, fields = {}) {
    if (!this.online || !this._ws) throw new TransportError("not connected");
    this._write(this._ws, { type, ...fields });
  }

  /**
   * Send a binary stream frame (Uint8Array starting 0xC1, kind, payload). Throws
   * TransportError when not connected: the caller keeps the frame and sends it later.
   */
  sendStream(bytes) {
    if (!this.online || !this._ws) throw new TransportError("not connected");
    if (bytes[0] !== 0xc1 || bytes.byteLength > 65536) throw new RangeError("not a stream frame");
    this._ws.send(bytes);
    this._lastSent = Date.now();
  }

  /** Resolves once the socket is welcomed (rejects after waitS, or when the client ends). */
  whenOnline(waitS = 30) {
    if (this.online) return Promise.resolve();
    if (this._stopped) return Promise.reject(new TransportError("not connected"));
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      this._openWaiters.push(w);
      if (Number.isFinite(waitS)) {
        setTimeout(() => {
          const i = this._openWaiters.indexOf(w);
          if (i >= 0) {
            this._openWaiters.splice(i, 1);
            reject(new TransportError("not connected"));
          }
        }, waitS * 1000);
      }
    });
  }

  /**
   * Send request `type` with `fields`; resolves with the result's data, rejects
   * with HubError (an error reply) or TransportError. Waits up to waitS for a
   * connection; a `rate_limited` answer is retried after its retry_after_s (the
   * hub did not run the request), at most three times.
   */
  async request(type, fields = {}, { waitS = 30, timeoutS = this.requestTimeoutS } = {}) {
    for (let tries = 0; ; tries++) {
      await this.whenOnline(waitS);
      const msg = { type, id: this._ids++, ...fields };
      try {
        return await this._request(this._ws, msg, timeoutS);
      } catch (err) {
        if (err instanceof HubError && err.code === "rate_limited" && tries < 3) {
          await new Promise((r) => setTimeout(r, (err.retryAfterS || 0.1) * 1000));
          continue;
        }
        throw err;
      }
    }
  }

  _failPending(err) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  // -- receiving ---------------------------------------------------------------
  _receive(ws, frame) {
    if (ws !== this._ws) return;
    this._lastReceived = Date.now();
    if (typeof frame !== "string") {
      // on the JSON subprotocol every binary frame is a stream frame (SPEC section 15.4)
      const bytes = new Uint8Array(frame);
      if (bytes.length >= 2 && bytes[0] === 0xc1) {
        this.dispatchEvent(new CustomEvent("stream", { detail: { kind: bytes[1], bytes } }));
      }
      return;
    }
    let msg;
    try {
      msg = jsonCodec.decode(frame);
    } catch {
      return; // never sent by the hub; nothing to answer
    }
    if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") return;
    switch (msg.type) {
      case "welcome":
      case "result":
        this._settle(msg.id, (p) => p.resolve(msg.type === "welcome" ? msg : msg.data ?? null));
        break;
      case "error":
        if (msg.id !== undefined && msg.id !== null) {
          this._settle(msg.id, (p) => p.reject(new HubError(msg.code, msg.message, msg.retry_after_s ?? null)));
        } else {
          this.dispatchEvent(new CustomEvent("refused", { detail: msg }));
        }
        break;
      case "heartbeat":
        this._write(ws, { type: "heartbeat" });
        break;
      case "going_away":
        this._goingAwayS = msg.retry_after_s ?? 2;
        this._setState("reconnecting", "restarting", this._goingAwayS);
        break;
      case "event":
        this._event(msg);
        break;
      default:
        break; // unknown server message types are ignored (SPEC section 2)
    }
  }

  _settle(id, fn) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    clearTimeout(p.timer);
    fn(p);
  }

  _event(ev) {
    const ch = String(ev.ch || "");
    if (ch.startsWith("conv:")) {
      if (ev.seq > 0) {
        const last = this.lastSeq.get(ch);
        if (last === undefined) return; // not followed (anymore)
        if (ev.seq <= last) return; // already dispatched
        if (ev.seq > last + 1) {
          // a gap: replay it from the store (the hub never skips, this is a safety net)
          this._sync(ch.slice(5), last).catch(() => {});
          return;
        }
        this.lastSeq.set(ch, ev.seq);
      } else if (ev.kind === "resumed" && ev.data && this.lastSeq.has(ch)) {
        if (ev.data.last_seq < this.lastSeq.get(ch)) this.lastSeq.set(ch, ev.data.last_seq); // clamped
        if (ev.data.caught_up === false) this._sync(ch.slice(5), null).catch(() => {});
      } else if (ev.kind === "resume_failed") {
        this.lastSeq.delete(ch);
      }
    }
    this.dispatchEvent(new CustomEvent("event", { detail: ev }));
  }

  // -- chat --------------------------------------------------------------------
  /**
   * Follow conversation `conv` from `afterSeq` (events after it are replayed,
   * then live ones follow; null: from its current end, nothing replayed).
   */
  async follow(conv, afterSeq = null) {
    const ch = `conv:${conv}`;
    if (this.lastSeq.has(ch)) return { last_seq: this.lastSeq.get(ch), caught_up: true };
    return this._sync(conv, afterSeq);
  }

  async _sync(conv, afterSeq) {
    const ch = `conv:${conv}`;
    // Never go back: what was dispatched stays dispatched (exactly once).
    const fresh = !this.lastSeq.has(ch);
    if (fresh) this.lastSeq.set(ch, afterSeq === null ? MAX_SEQ : afterSeq);
    for (;;) {
      let data;
      try {
        data = await this.request("chat.sync", { conv, after_seq: this.lastSeq.get(ch) });
      } catch (err) {
        // refused (forbidden, not_found): not followed; a transport error is resumed by hello
        if (fresh && err instanceof HubError) this.lastSeq.delete(ch);
        throw err;
      }
      if (this.lastSeq.get(ch) > data.last_seq) this.lastSeq.set(ch, data.last_seq); // clamped
      if (data.caught_up) return data;
    }
  }

  async unfollow(conv) {
    this.lastSeq.delete(`conv:${conv}`);
    if (this.online) await this.request("chat.unfollow", { conv }).catch(() => {});
  }

  // -- presence ----------------------------------------------------------------
  /** Follow the presence of `users` (and of every contact with contacts=true); returns the snapshot. */
  async subscribePresence(users = [], contacts = false) {
    users.forEach((u) => this.presenceUsers.add(u));
    this.presenceContacts = this.presenceContacts || contacts;
    const data = await this.request("presence.subscribe", { users: users.slice(0, 256), contacts });
    this._presenceSnapshot(data);
    return data;
  }

  _presenceSnapshot(data) {
    for (const p of (data && data.presence) || []) {
      this.dispatchEvent(new CustomEvent("event", {
        detail: { type: "event", ch: `presence:${p.user}`, seq: 0, kind: "presence", data: p },
      }));
    }
  }
}
