// call.js: video calls in the browser (protocol/SPEC.md section 15.4, docs/calls.md).
//
// The hub never carries media: it makes two RTCPeerConnections meet. One
// CallManager per signed-in page follows the hub's call events and `call`
// stream frames; a CallSession is one call on this device:
//
//   caller: prepare() (camera, microphone) -> start(): call.invite with the
//           offer, not waiting for ICE gathering; candidates trickled as
//           stream frames (kept until the call has an id) -> `accepted`:
//           setRemoteDescription(answer), then the candidates that came early
//   callee: a `ring` reaches every open page of the callee (and call.pending
//           after each welcome) -> answer(): call.accept with the answer (the
//           first device wins; the others get answered_elsewhere) -> trickle
//
// Own socket dropped: frames wait in the session; after the next welcome it
// sends call.resume with its party id. The party id is kept in sessionStorage,
// so a reloaded page resumes too, with a new peer connection and an offer frame
// (the other side renegotiates, or rebuilds its connection if it must). The
// other party's socket dropped: `reconnecting`, then `resumed`. ICE failing
// after it was connected: the caller restarts ICE once, then hangs up with
// `ice_failed`. A data channel "medhub" carries each party's microphone and
// camera state, pings (round trips) and, in a test call, the echo's view.
//
// Events: CallManager "ring" {ring}, "ringend" {call, reason}, "session"
// {session}; CallSession "change" (state, media or figures changed).

import { CallSession } from "./callsession.js";
import { HubError } from "./medhub.js";
import { CALL_KIND, parseSignal, stored } from "./rtc.js";

export { CallSession } from "./callsession.js";
export { readStats, relayOnly, setRelayOnly } from "./rtc.js";

// -- every call of this page ------------------------------------------------------------
export class CallManager extends EventTarget {
  /** hub: the signed-in Hub; me: my user id. Build it before hub.start(): no ring is missed. */
  constructor(hub, me) {
    super();
    this.hub = hub;
    this.me = me;
    this.current = null; // the session this device takes part in
    this._idle = null; // the room's session before (and between) calls
    this.rings = new Map(); // call id -> ring data, ringing here
    this._resuming = new Set();
    this._servers = null;
    this._serversUntil = 0;
    this._ringTimers = new Map();
    hub.addEventListener("event", (e) => this._hubEvent(e.detail));
    hub.addEventListener("stream", (e) => this._frame(e.detail));
    hub.addEventListener("welcome", () => this._welcomed());
  }

  /** A session for a call in conversation `conv` (or the echo service), reusing the live one. */
  session(opts) {
    const echo = Boolean(opts.echo);
    const fits = (s) => s && s.echo === echo && (echo || s.conv === opts.conv);
    const cur = this.current;
    if (cur && cur.active && fits(cur)) return cur;
    if (fits(this._idle) && !this._idle.calling) return this._idle;
    this._idle = new CallSession(this, opts);
    return this._idle;
  }

  /** The STUN/TURN servers with my TURN credential (asked again before it expires). */
  async iceServers() {
    if (!this._servers || Date.now() > this._serversUntil) {
      const data = await this.hub.request("call.ice_servers");
      this._servers = data.ice_servers || [];
      this._serversUntil = Date.now() + (data.ttl_s || 3600) * 800; // refreshed at 80 % of its life
    }
    return this._servers;
  }

  /** Whether the hub hands out a TURN server (relaying is possible). */
  async hasRelay() {
    const servers = await this.iceServers();
    return servers.some((s) => [].concat(s.urls).some((u) => /^turns?:/.test(u)));
  }

  /** Answer ringing call `callId` on this device; returns the session. */
  async answer(callId) {
    const ring = this.rings.get(callId);
    if (!ring) throw new HubError("conflict", "not ringing");
    this._dropRing(callId);
    const idle = this._idle;
    const session = idle && !idle.echo && idle.conv === (ring.conv || null) && !idle.calling
      ? idle : new CallSession(this, { conv: ring.conv || null, peer: ring.caller });
    this.current = session;
    this.dispatchEvent(new CustomEvent("session", { detail: { session } }));
    await session.answer(ring);
    return session;
  }

  /** Decline ringing call `callId` (on every device of mine). */
  async decline(callId) {
    this._dropRing(callId, "declined");
    await this.hub.request("call.reject", { call: callId }).catch(() => {});
  }

  _own(session) {
    this.current = session;
    this.dispatchEvent(new CustomEvent("session", { detail: { session } }));
  }

  _ended(session) {
    this.dispatchEvent(new CustomEvent("session", { detail: { session } }));
  }

  _glare(session, data) {
    // Their invite won: their ring is here (now, or from call.pending): answer it.
    const ring = this.rings.get(data.call);
    const go = (r) => {
      this._dropRing(r.call);
      session.answer(r).catch(() => {});
    };
    if (ring) { go(ring); return; }
    this.hub.request("call.pending").then((d) => {
      const r = (d.calls || []).find((c) => c.call === data.call);
      if (r) go(r);
      else session._end("error", null);
    }, () => session._end("error", null));
  }

  _inCall(on) {
    if (this.hub.online) this.hub.request("presence.set", { state: on ? "in-call" : "online" }).catch(() => {});
  }

  _addRing(ring) {
    if (!ring || ring.echo || this.rings.has(ring.call)) return;
    if (this.current && this.current.id === ring.call) return;
    this.rings.set(ring.call, ring);
    const left = Math.max(1000, (ring.invited_ms || Date.now()) + (ring.lifetime_ms || 60000) - Date.now() + 2000);
    this._ringTimers.set(ring.call, setTimeout(() => this._dropRing(ring.call, "timeout"), left));
    this.dispatchEvent(new CustomEvent("ring", { detail: { ring } }));
  }

  _dropRing(callId, reason = null, by = null) {
    const ring = this.rings.get(callId);
    if (!ring) return;
    this.rings.delete(callId);
    clearTimeout(this._ringTimers.get(callId));
    this._ringTimers.delete(callId);
    if (reason) this.dispatchEvent(new CustomEvent("ringend", { detail: { call: callId, reason, by, ring } }));
  }

  _hubEvent(ev) {
    const ch = String(ev.ch || "");
    if (!ch.startsWith("call:")) return;
    const id = ch.slice(5);
    const data = ev.data || {};
    if (ev.kind === "ring") {
      this._addRing(data);
      return;
    }
    if (this.rings.has(id) && (ev.kind === "answered_elsewhere" || ev.kind === "ended")) {
      this._dropRing(id, ev.kind === "ended" ? data.reason || "ended" : ev.kind, data.by || null);
      return;
    }
    const cur = this.current;
    if (cur && cur.id === id) cur._event(ev.kind, data);
  }

  _frame({ kind, bytes }) {
    if (kind !== CALL_KIND) return;
    const sig = parseSignal(bytes);
    const cur = this.current;
    if (sig && cur && cur.id === sig.call) cur._signalled(sig);
  }

  async _welcomed() {
    const cur = this.current && this.current.calling ? this.current : null;
    const saved = stored();
    if (cur && cur.id && cur.party) {
      await this._resume(cur);
    } else if (!cur && saved && saved.call) {
      // a reloaded page: take my place again, with a new connection
      const session = new CallSession(this, { conv: saved.conv, peer: saved.peer });
      Object.assign(session, { id: saved.call, party: saved.party, role: saved.role, joined: true });
      this.current = session;
      const ok = await this._resume(session);
      if (ok) {
        this.dispatchEvent(new CustomEvent("session", { detail: { session } }));
        session._rejoin().catch(() => session.hangup("media_failed"));
      }
    }
    try {
      const data = await this.hub.request("call.pending");
      (data.calls || []).forEach((ring) => this._addRing(ring));
    } catch { /* the next welcome asks again */ }
  }

  async _resume(session) {
    this._resuming.add(session.id);
    try {
      const got = await this.hub.request("call.resume", { call: session.id, party: session.party });
      if (got.state === "ended") {
        session._end(got.reason || "timeout", null);
        return false;
      }
      if (got.state === "ringing" && !session.pc) {
        session.hangup(); // a reloaded caller: its offer is gone
        return false;
      }
      return true;
    } catch (err) {
      if (err instanceof HubError) {
        session._end(err.code === "forbidden" ? "forbidden" : "timeout", null);
        return false;
      }
      return false; // dropped again: the next welcome resumes
    } finally {
      this._resuming.delete(session.id);
      if (session.active) session._flush();
    }
  }
}
