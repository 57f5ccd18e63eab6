// callsession.js: one call on this device (see call.js for the whole picture).

import { TransportError } from "./medhub.js";
import { newParty, openMedia, readStats, relayOnly, SIGNAL, signalFrame, store, stored } from "./rtc.js";

const STATS_EVERY_MS = 1000;
const QUALITY_FIRST_MS = 2000;
const QUALITY_EVERY_MS = 5000;
const CHANNEL = "medhub"; // the data channel's label (media/peer.py uses it too)

export class CallSession extends EventTarget {
  /** Built by CallManager.session() / the ring; `conv` (null for a test call), `peer`: the other user. */
  constructor(manager, { conv = null, peer = null, to = null, echo = false } = {}) {
    super();
    this.manager = manager;
    this.hub = manager.hub;
    this.conv = conv;
    this.peer = peer;
    this.to = to;
    this.echo = echo;
    this.id = null;
    this.party = null;
    this.role = null; // caller | callee
    this.joined = false; // the hub knows this device as the call's party: frames may go
    this.phase = "idle"; // idle | calling | connecting | connected | ended
    this.everConnected = false;
    this.connectedAt = null;
    this.iceState = "new";
    this.peerAway = false; // the other party's socket dropped (reconnecting/resumed)
    this.local = null;
    this.remote = new MediaStream();
    this.remoteVersion = 0; // +1 whenever the remote tracks change (views set srcObject again)
    this.audioOn = true;
    this.videoOn = true;
    this.remoteAudioOn = true;
    this.remoteVideoOn = true;
    this.endReason = null;
    this.endedBy = null;
    this.stats = null;
    this.pc = null;
    this.channel = null;
    this._outbox = []; // [kind, payload] waiting for an id or a connection
    this._early = []; // remote candidates before the remote description
    this._makingOffer = false;
    this._restarted = false;
    this._pings = new Map();
    this._pingSeq = 0;
    this._echoStats = null;
    this._timers = [];
    this._opening = null;
    this._gen = 0; // +1 on release(): a camera opened after it is closed again
  }

  get state() {
    if (this.phase === "ended") return "ended";
    if (this.everConnected && (this.peerAway || !this.hub.online || this.iceState === "disconnected" || this.iceState === "failed")) {
      return "reconnecting";
    }
    return this.phase;
  }

  get active() {
    return this.phase !== "ended";
  }

  /** In a call (placing, answering or talking), not idle nor ended. */
  get calling() {
    return this.phase !== "idle" && this.phase !== "ended";
  }

  _changed() {
    this.dispatchEvent(new Event("change"));
  }

  /**
   * Open the camera and microphone (kept across calls of this session; callers at the
   * same time share one request). Throws with .code "denied" | "no_device", or
   * "released" when release() came first (the devices are closed again).
   */
  async prepare() {
    if (!this.local) {
      const gen = this._gen;
      const opening = this._opening || (this._opening = openMedia());
      let stream;
      try {
        stream = await opening;
      } finally {
        if (this._opening === opening) this._opening = null;
      }
      if (gen !== this._gen) {
        stream.getTracks().forEach((t) => t.stop());
        throw Object.assign(new Error("released"), { code: "released" });
      }
      this.local = stream;
    }
    this._applyMedia();
    return this.local;
  }

  // -- placing and answering ---------------------------------------------------------
  /** Back to idle after an ended call (the same room calls again). */
  _reset() {
    Object.assign(this, {
      id: null, party: null, role: null, joined: false, phase: "idle", everConnected: false, connectedAt: null,
      iceState: "new", peerAway: false, remoteAudioOn: true, remoteVideoOn: true, endReason: null, endedBy: null,
      stats: null, _outbox: [], _early: [], _restarted: false, _makingOffer: false,
    });
  }

  /** Call (caller): invite with the offer; resolves once the hub rang. Throws HubError / TransportError. */
  async start() {
    if (this.phase === "ended") this._reset();
    await this.prepare();
    this.role = "caller";
    this.party = newParty();
    this.phase = "calling";
    this.endReason = null;
    this.manager.current = this;
    this._changed();
    try {
      await this._connection();
      this._openChannel(this.pc.createDataChannel(CHANNEL));
      await this.pc.setLocalDescription(await this.pc.createOffer());
      const fields = { party: this.party, offer: this.pc.localDescription.sdp, media: this._media() };
      if (this.echo) fields.echo = true;
      else fields.conv = this.conv;
      if (this.to) fields.to = this.to;
      const data = await this.hub.request("call.invite", fields);
      if (data.state === "glare") {
        // they called me at the same moment and their call won: answer theirs
        this._close();
        this.manager._glare(this, data);
        return;
      }
      this.id = data.call;
      this.manager._own(this);
      if (data.state === "ended") {
        this._end(data.reason || "busy", null);
        return;
      }
      this.joined = true;
      if (data.callee) this.peer = data.callee;
      this._remember();
      this._flush();
    } catch (err) {
      this._end(err.code || "error", this.manager.me, false);
      throw err;
    }
  }

  /** Answer ringing call `ring` (callee). Throws HubError (`conflict`: answered elsewhere or ended). */
  async answer(ring) {
    if (this.phase === "ended") this._reset();
    this.role = "callee";
    this.id = ring.call;
    this.peer = ring.caller;
    this.conv = ring.conv || null;
    this.party = newParty();
    this.phase = "connecting";
    this.manager._own(this);
    this._changed();
    try {
      await this.prepare();
      await this._connection();
      await this.pc.setRemoteDescription({ type: "offer", sdp: ring.offer });
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      await this.hub.request("call.accept", { call: this.id, party: this.party, answer: this.pc.localDescription.sdp });
    } catch (err) {
      this._end(err.code === "conflict" ? "answered_elsewhere" : err.code || "error", null, false);
      throw err;
    }
    this.joined = true;
    this._remember();
    this._flush();
    this._negotiating();
  }

  /** End the call (before an answer: cancels it). */
  async hangup(reason = "user_hangup") {
    if (!this.active) return;
    const id = this.id;
    await this._reportQuality().catch(() => {});
    this._end(reason, this.manager.me);
    if (id) await this.hub.request("call.hangup", { call: id, reason }).catch(() => {});
  }

  // -- media -------------------------------------------------------------------------
  setAudio(on) {
    this.audioOn = on;
    this._applyMedia();
    this._sendState();
    this._changed();
  }

  setVideo(on) {
    this.videoOn = on;
    this._applyMedia();
    this._sendState();
    this._changed();
  }

  _applyMedia() {
    if (!this.local) return;
    this.local.getAudioTracks().forEach((t) => { t.enabled = this.audioOn; });
    this.local.getVideoTracks().forEach((t) => { t.enabled = this.videoOn; });
  }

  _media() {
    return this.local && this.local.getVideoTracks().length ? "video" : "audio";
  }

  /** One data-channel round trip (ms); the other side answers or echoes it. */
  ping(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      if (!this.channel || this.channel.readyState !== "open") { reject(new Error("no channel")); return; }
      const seq = ++this._pingSeq;
      const timer = setTimeout(() => { this._pings.delete(seq); reject(new Error("no answer")); }, timeoutMs);
      this._pings.set(seq, { at: performance.now(), resolve, timer });
      this.channel.send(`ping ${seq}`);
    });
  }

  /** The echo service's own view ({tracks, rtcp_rtt_ms}), in a test call. */
  echoStats(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      if (!this.channel || this.channel.readyState !== "open") { reject(new Error("no channel")); return; }
      const timer = setTimeout(() => { this._echoStats = null; reject(new Error("no answer")); }, timeoutMs);
      this._echoStats = (data) => { clearTimeout(timer); resolve(data); };
      this.channel.send("stats");
    });
  }

  // -- the peer connection -------------------------------------------------------------
  async _connection() {
    const servers = await this.manager.iceServers();
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: relayOnly() ? "relay" : "all" });
    this.pc = pc;
    this.remote.getTracks().forEach((t) => this.remote.removeTrack(t));
    this.remoteVersion += 1;
    this.local.getTracks().forEach((t) => pc.addTrack(t, this.local));
    pc.onicecandidate = (e) => {
      if (pc !== this.pc) return;
      if (e.candidate) this._signal(SIGNAL.CANDIDATE, JSON.stringify(e.candidate.toJSON()));
      else this._signal(SIGNAL.END, "");
    };
    pc.ontrack = (e) => {
      if (pc !== this.pc) return;
      this.remote.addTrack(e.track);
      this.remoteVersion += 1;
      this._changed();
    };
    pc.ondatachannel = (e) => { if (pc === this.pc) this._openChannel(e.channel); };
    pc.oniceconnectionstatechange = () => { if (pc === this.pc) this._iceChanged(pc.iceConnectionState); };
    this._startTimers();
    return pc;
  }

  _negotiating() {
    // renegotiation (ICE restart) once the first exchange is done
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      if (pc !== this.pc || !this.active) return;
      try {
        this._makingOffer = true;
        await pc.setLocalDescription();
        this._signal(SIGNAL.OFFER, pc.localDescription.sdp);
      } catch {
        // a collision: the other side's offer wins (below)
      } finally {
        this._makingOffer = false;
      }
    };
  }

  _iceChanged(state) {
    this.iceState = state;
    if (state === "connected" || state === "completed") {
      if (!this.everConnected) {
        this.everConnected = true;
        this.connectedAt = Date.now();
        this.manager._inCall(true);
      }
      this.phase = "connected";
    } else if (state === "failed") {
      if (this.everConnected && this.role === "caller" && !this._restarted) {
        this._restarted = true;
        this.pc.restartIce();
      } else if (!this.everConnected || this.role === "caller") {
        this.hangup("ice_failed");
      }
    }
    this._changed();
  }

  _openChannel(channel) {
    this.channel = channel;
    channel.onopen = () => this._sendState();
    channel.onmessage = (e) => this._message(e.data);
  }

  _sendState() {
    if (this.channel && this.channel.readyState === "open" && !this.echo) {
      this.channel.send(JSON.stringify({ media: { audio: this.audioOn, video: this.videoOn } }));
    }
  }

  _message(data) {
    if (typeof data !== "string") return;
    if (data.startsWith("{")) {
      try {
        const msg = JSON.parse(data);
        if (msg.media) {
          this.remoteAudioOn = msg.media.audio !== false;
          this.remoteVideoOn = msg.media.video !== false;
          this._changed();
        }
      } catch { /* not ours */ }
      return;
    }
    if (data.startsWith("stats ")) {
      const done = this._echoStats;
      this._echoStats = null;
      if (done) { try { done(JSON.parse(data.slice(6))); } catch { done(null); } }
      return;
    }
    const [word, rest] = data.split(" ");
    const seq = Number(rest);
    // my ping answered (pong), or echoed back by the echo service
    const held = word === "pong" || (word === "ping" && this.echo) ? this._pings.get(seq) : undefined;
    if (held) {
      this._pings.delete(seq);
      clearTimeout(held.timer);
      held.resolve(performance.now() - held.at);
    } else if (word === "ping") {
      this.channel.send(`pong ${rest}`);
    } else if (word === "done") {
      this.channel.send("done"); // an aiortc peer (medhub-call) waits for it before closing
    }
  }

  // -- signals -------------------------------------------------------------------------
  _signal(kind, payload) {
    this._outbox.push([kind, payload]);
    this._flush();
  }

  _flush() {
    if (!this.joined || this.manager._resuming.has(this.id)) return;
    while (this._outbox.length) {
      const [kind, payload] = this._outbox[0];
      try {
        this.hub.sendStream(signalFrame(kind, this.id, payload));
      } catch (err) {
        if (err instanceof TransportError) return; // sent after call.resume
        throw err;
      }
      this._outbox.shift();
    }
  }

  async _signalled({ kind, payload }) {
    const pc = this.pc;
    if (!pc || !this.active) return;
    try {
      if (kind === SIGNAL.CANDIDATE || kind === SIGNAL.END) {
        const init = kind === SIGNAL.CANDIDATE ? JSON.parse(payload) : null;
        if (!pc.remoteDescription) this._early.push(init);
        else await this._addCandidate(init);
      } else if (kind === SIGNAL.OFFER) {
        await this._takeOffer(payload);
      } else if (kind === SIGNAL.ANSWER) {
        await pc.setRemoteDescription({ type: "answer", sdp: payload });
        await this._applyEarly();
      }
    } catch {
      // a signal that does not apply must not end the call
    }
  }

  async _addCandidate(init) {
    if (init === null) await this.pc.addIceCandidate();
    else await this.pc.addIceCandidate(init).catch(() => {}); // an old generation's
  }

  async _applyEarly() {
    const early = this._early.splice(0);
    for (const init of early) await this._addCandidate(init);
  }

  async _takeOffer(sdp) {
    // perfect negotiation: the callee yields on a collision
    const collision = this._makingOffer || this.pc.signalingState !== "stable";
    if (collision && this.role === "caller") return;
    try {
      await this.pc.setRemoteDescription({ type: "offer", sdp });
    } catch {
      // the other page was reloaded: a new connection, with the same camera
      this._close(false);
      await this._connection();
      await this.pc.setRemoteDescription({ type: "offer", sdp });
    }
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    this._signal(SIGNAL.ANSWER, this.pc.localDescription.sdp);
    await this._applyEarly();
    this._negotiating();
  }

  // -- from the hub -------------------------------------------------------------------
  async _event(kind, data) {
    if (kind === "accepted") {
      if (this.role === "caller" && data.answer && this.pc && !this.pc.remoteDescription) {
        this.phase = "connecting";
        this._changed();
        try {
          await this.pc.setRemoteDescription({ type: "answer", sdp: data.answer });
          await this._applyEarly();
          this._negotiating();
        } catch {
          this.hangup("error");
        }
      }
    } else if (kind === "reconnecting") {
      if (data.role !== this.role) { this.peerAway = true; this._changed(); }
    } else if (kind === "resumed") {
      if (data.role !== this.role) { this.peerAway = false; this._changed(); }
    } else if (kind === "ended") {
      this._end(data.reason || "error", data.by || null);
    }
  }

  /** After a page reload: a connection again, offered to the other party. */
  async _rejoin() {
    await this.prepare();
    this.phase = "connecting";
    this.everConnected = true; // it was; say "reconnecting" until ICE is back
    this.iceState = "checking";
    this._changed();
    await this._connection();
    this._openChannel(this.pc.createDataChannel(CHANNEL));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    this._signal(SIGNAL.OFFER, this.pc.localDescription.sdp);
    this._negotiating();
  }

  // -- figures and quality reports --------------------------------------------------------
  _startTimers() {
    if (this._timers.length) return;
    this._timers.push(setInterval(() => this._sample(), STATS_EVERY_MS));
    this._timers.push(setTimeout(() => {
      this._reportQuality().catch(() => {});
      this._timers.push(setInterval(() => this._reportQuality().catch(() => {}), QUALITY_EVERY_MS));
    }, QUALITY_FIRST_MS));
  }

  async _sample() {
    if (!this.pc || !this.active) return;
    try {
      this.stats = await readStats(this.pc, this.stats);
      this._changed();
    } catch { /* closed meanwhile */ }
  }

  async _reportQuality() {
    const s = this.stats;
    if (!this.id || !this.everConnected || !s || !this.hub.online) return;
    const fields = { call: this.id };
    const put = (key, v, max) => { if (typeof v === "number" && Number.isFinite(v)) fields[key] = Math.min(max, Math.max(0, v)); };
    put("rtt_ms", s.rttMs, 600000);
    put("loss", s.loss, 1);
    put("bitrate_kbps", s.bitrateKbps, 1000000);
    put("jitter_ms", s.jitterMs, 600000);
    put("frames_per_s", s.fps, 1000);
    this.hub.notify("call.quality", fields);
  }

  // -- the end ---------------------------------------------------------------------------
  _close(stopMedia = true) {
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.onicecandidate = pc.ontrack = pc.ondatachannel = pc.oniceconnectionstatechange = pc.onnegotiationneeded = null;
      try { pc.close(); } catch { /* closed */ }
    }
    this.channel = null;
    this._early = [];
    if (stopMedia) {
      this._timers.forEach((t) => { clearInterval(t); clearTimeout(t); });
      this._timers = [];
    }
  }

  _end(reason, by, tell = true) {
    if (this.phase === "ended") return;
    this.phase = "ended";
    this.endReason = reason;
    this.endedBy = by;
    this._close();
    this._outbox = [];
    this._pings.forEach((p) => clearTimeout(p.timer));
    this._pings.clear();
    const s = stored();
    if (s && s.call === this.id) store(null);
    if (this.everConnected) this.manager._inCall(false);
    this._changed();
    if (tell) this.manager._ended(this);
  }

  /** Stop the camera and microphone (leaving the room). */
  release() {
    this._gen += 1;
    if (this.calling) this.hangup();
    if (this.local) this.local.getTracks().forEach((t) => t.stop());
    this.local = null;
  }

  _remember() {
    if (!this.echo) store({ call: this.id, party: this.party, conv: this.conv, role: this.role, peer: this.peer });
  }
}

