// rtc.js: the pieces of a browser call that need no hub: the `call` stream frame
// layout (protocol/calls.py), the party id, the saved call of this tab
// (sessionStorage), the "always relay" choice of this device (localStorage),
// opening the camera and microphone, and what getStats() says.

const MAGIC = 0xc1;
export const CALL_KIND = 0x02;
const HEADER = 19; // magic, kind, signal, 16 characters of call id
export const SIGNAL = Object.freeze({ CANDIDATE: 1, END: 2, OFFER: 3, ANSWER: 4 });
const STORE_KEY = "medhub.call"; // sessionStorage: {call, party, conv, role, peer}
const RELAY_KEY = "medhub.call.relay"; // localStorage: "1" = relay every call through TURN
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** The whole `call` stream frame carrying `payload` (text) of signal `kind`. */
export function signalFrame(kind, callId, payload = "") {
  const body = utf8.encode(payload);
  const out = new Uint8Array(HEADER + body.length);
  out.set([MAGIC, CALL_KIND, kind]);
  out.set(utf8.encode(callId), 3);
  out.set(body, HEADER);
  return out;
}

/** {kind, call, payload} of a `call` stream frame, or null when it is not one. */
export function parseSignal(bytes) {
  if (bytes.length < HEADER || bytes[0] !== MAGIC || bytes[1] !== CALL_KIND) return null;
  return { kind: bytes[2], call: text.decode(bytes.subarray(3, HEADER)), payload: text.decode(bytes.subarray(HEADER)) };
}

export function newParty() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "p-" + btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

/** Whether this device relays its calls through the TURN server (hides its address). */
export function relayOnly() {
  try { return localStorage.getItem(RELAY_KEY) === "1"; } catch { return false; }
}

export function setRelayOnly(on) {
  try {
    if (on) localStorage.setItem(RELAY_KEY, "1");
    else localStorage.removeItem(RELAY_KEY);
  } catch { /* storage disabled: this page only */ }
}

/** The call this tab takes part in (survives a reload of the tab). */
export function stored() {
  try { return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch { return null; }
}

export function store(value) {
  try {
    if (value) sessionStorage.setItem(STORE_KEY, JSON.stringify(value));
    else sessionStorage.removeItem(STORE_KEY);
  } catch { /* storage disabled: no resume after a reload */ }
}

/** Camera and microphone; falls back to the microphone alone. Throws with .code "denied" | "no_device". */
export async function openMedia() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw Object.assign(new Error("no media"), { code: "no_device" });
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 } } });
  } catch (err) {
    if (err && err.name === "NotAllowedError") throw Object.assign(err, { code: "denied" });
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err2) {
      throw Object.assign(err2, { code: err2 && err2.name === "NotAllowedError" ? "denied" : "no_device" });
    }
  }
}

/** What getStats() says about a connection: frames, rates, round trip, the path in use. */
export async function readStats(pc, previous = null) {
  const out = { at: performance.now(), framesDecoded: 0, framesSent: 0, fps: null, width: null, height: null,
    bytesIn: 0, packetsIn: 0, packetsLost: 0, jitterMs: null, rttMs: null, local: null, remote: null,
    bitrateKbps: null, loss: null };
  const report = await pc.getStats();
  let pairId = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.bytesIn += s.bytesReceived || 0;
      out.packetsIn += s.packetsReceived || 0;
      out.packetsLost += Math.max(0, s.packetsLost || 0);
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        out.fps = s.framesPerSecond ?? out.fps;
        out.width = s.frameWidth ?? out.width;
        out.height = s.frameHeight ?? out.height;
      } else if (s.kind === "audio" && typeof s.jitter === "number") {
        out.jitterMs = s.jitter * 1000;
      }
    } else if (s.type === "outbound-rtp" && s.kind === "video") {
      out.framesSent += s.framesSent || 0;
    } else if (s.type === "candidate-pair" && (s.id === pairId || (!pairId && s.nominated && s.state === "succeeded"))) {
      if (typeof s.currentRoundTripTime === "number") out.rttMs = s.currentRoundTripTime * 1000;
      const local = report.get(s.localCandidateId);
      const remote = report.get(s.remoteCandidateId);
      out.local = local ? local.candidateType : null;
      out.remote = remote ? remote.candidateType : null;
    }
  });
  if (previous) {
    const dt = (out.at - previous.at) / 1000;
    if (dt > 0) out.bitrateKbps = Math.max(0, ((out.bytesIn - previous.bytesIn) * 8) / dt / 1000);
    const got = out.packetsIn - previous.packetsIn;
    const lost = out.packetsLost - previous.packetsLost;
    if (got + lost > 0) out.loss = Math.min(1, Math.max(0, lost / (got + lost)));
  }
  return out;
}

