// The consultation room (#/call/<conv>), the incoming-call screen (on every page of
// the callee) and the camera, microphone and network check (#/check[/<conv>]).
// The calls themselves are js/call.js; see docs/web.md, "Video calls".

import { CallManager, readStats, relayOnly, setRelayOnly } from "../call.js";
import { alertBox, h, replace, T } from "../dom.js";
import { t } from "../i18n.js";
import { nameOf, presenceOf } from "../state.js";
import { conversationView } from "./chat.js";
import { describeApiError } from "./errors.js";

const ENDED_SHOWN_MS = 15_000;
const REASONS = new Set(["user_hangup", "cancelled", "rejected", "busy", "timeout", "ice_failed", "media_failed",
  "error", "forbidden", "answered_elsewhere", "denied", "no_device"]);

/** The call manager of this signed-in page, with the incoming-call screen. Call before hub.start(). */
export function startCalls(ctx, hub) {
  const calls = new CallManager(hub, ctx.me);
  incomingScreen(ctx, calls, hub);
  return calls;
}

/** Why a call ended, in words (`by`: who ended it; `peer`: the other party). */
export function endedText(ctx, session) {
  const reason = session.endReason;
  const name = ctx.names.label(session.peer);
  const mine = session.endedBy === ctx.me;
  if (reason === "user_hangup") return T(mine ? "call.end.you_hung_up" : "call.end.they_hung_up", { name });
  if (reason === "cancelled") return T(mine ? "call.end.you_cancelled" : "call.end.missed", { name });
  if (reason === "rejected") return T(session.role === "caller" ? "call.end.they_declined" : "call.end.you_declined", { name });
  if (reason === "timeout") return T(session.everConnected ? "call.end.lost" : session.role === "caller" ? "call.end.no_answer" : "call.end.missed", { name });
  if (REASONS.has(reason)) return T(`call.end.${reason}`, { name });
  return describeApiError({ code: reason });
}

// -- the incoming-call screen ------------------------------------------------------------
function incomingScreen(ctx, calls, hub) {
  const box = h("div", { class: "incoming", role: "alertdialog", "aria-modal": "false", "aria-labelledby": "incoming-title",
    "aria-describedby": "incoming-text", hidden: true });
  document.body.append(box);
  let shown = null; // the call id on screen
  let hideTimer = null;
  const title = document.title;

  function hide() {
    clearTimeout(hideTimer);
    box.hidden = true;
    box.dataset.state = "";
    shown = null;
    document.title = title;
  }

  function ringing(ring) {
    clearTimeout(hideTimer);
    shown = ring.call;
    box.dataset.state = "ringing";
    box.dataset.call = ring.call;
    const name = nameOf(ctx.names, ring.caller);
    const answer = h("button", { type: "button", class: "primary", onclick: () => {
      hide();
      calls.answer(ring.call).catch(() => {}); // the room says what happened
      location.hash = `#/call/${ring.conv}`;
    } }, T("call.answer"));
    replace(box,
      h("h2", { id: "incoming-title" }, T("call.incoming")),
      h("p", { id: "incoming-text" }, name, " ", T("call.is_calling")),
      h("div", { class: "controls" }, answer,
        h("button", { type: "button", class: "danger", onclick: () => { hide(); calls.decline(ring.call); } }, T("call.decline"))));
    box.hidden = false;
    document.title = `${t("call.incoming")} · ${t("app.title")}`;
    answer.focus({ preventScroll: true });
  }

  function over(e) {
    const { call, reason, by, ring } = e.detail;
    if (call !== shown || reason === "declined") return;
    document.title = title;
    box.dataset.state = reason;
    const session = { endReason: reason, endedBy: by, peer: ring.caller, role: "callee", everConnected: false };
    replace(box,
      h("h2", { id: "incoming-title" }, T("call.incoming_over")),
      h("p", { id: "incoming-text", role: "status" }, endedText(ctx, session)),
      h("div", { class: "controls" }, h("button", { type: "button", class: "small", onclick: hide }, T("call.close"))));
    hideTimer = setTimeout(hide, ENDED_SHOWN_MS);
  }

  calls.addEventListener("ring", (e) => ringing(e.detail.ring));
  calls.addEventListener("ringend", over);
  hub.addEventListener("state", (e) => { if (e.detail.state === "ended") box.remove(); });
}

// -- the consultation room ---------------------------------------------------------------
function statusText(ctx, session) {
  const name = ctx.names.label(session.peer);
  switch (session.state) {
    case "idle": return T("call.status.idle");
    case "calling": return T("call.status.calling", { name });
    case "connecting": return T("call.status.connecting");
    case "connected": {
      const s = Math.max(0, Math.floor((Date.now() - (session.connectedAt || Date.now())) / 1000));
      const clock = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
      return T("call.status.connected", { time: clock });
    }
    case "reconnecting":
      if (session.peerAway) return T("call.status.peer_away", { name });
      if (!session.hub.online) return T("call.status.self_away");
      return T("call.status.media_interrupted");
    default: return endedText(ctx, session);
  }
}

/** The path of a call's media in words (`kind`: the candidate type in use). */
function pathText(kind) {
  if (!kind) return "–";
  return T(kind === "relay" ? "call.path.relay" : kind === "host" ? "call.path.direct" : "call.path.network");
}

function detailsList(stats) {
  const n = (v, digits = 0) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "–");
  const rows = [
    ["call.detail.path", stats ? pathText(stats.local === "relay" || stats.remote === "relay" ? "relay" : stats.local) : "–"],
    ["call.detail.rtt", stats ? `${n(stats.rttMs)} ms` : "–"],
    ["call.detail.video", stats && stats.width ? `${stats.width}×${stats.height}, ${n(stats.fps)} fps` : "–"],
    ["call.detail.frames", stats ? String(stats.framesDecoded) : "–"],
    ["call.detail.bitrate", stats ? `${n(stats.bitrateKbps)} kbit/s` : "–"],
    ["call.detail.loss", stats && stats.loss !== null ? `${n(stats.loss * 100, 1)} %` : "–"],
  ];
  return rows.map(([key, value]) => [h("dt", {}, T(key)), h("dd", {}, value)]);
}

/** The room of conversation `conv`: video, controls, the chat beside, the other's presence. */
export function roomView(main, ctx, conv) {
  const calls = ctx.calls;
  const c = ctx.chat.get(conv);
  const others = c ? (c.members || []).filter((m) => m !== ctx.me) : [];
  let session = calls.session({ conv, peer: others.length === 1 ? others[0] : null });
  if (!session.peer && others.length === 1) session.peer = others[0];

  const box = alertBox();
  const selfVideo = h("video", { class: "self", autoplay: true, playsinline: true, muted: true, "aria-label": T("call.your_camera") });
  selfVideo.muted = true;
  const remoteVideo = h("video", { class: "remote", autoplay: true, playsinline: true, "aria-label": T("call.their_video") });
  const remoteOff = h("p", { class: "remote-off", hidden: true });
  const status = h("p", { class: "call-status", role: "status", "aria-live": "polite" });
  const peerMedia = h("p", { class: "peer-media", "aria-live": "polite" });
  const details = h("dl", { class: "call-figures" });
  const startBtn = h("button", { type: "button", class: "primary", onclick: () => start() }, T("call.start"));
  const micBtn = h("button", { type: "button", "aria-pressed": "false", onclick: () => session.setAudio(!session.audioOn) });
  const camBtn = h("button", { type: "button", "aria-pressed": "false", onclick: () => session.setVideo(!session.videoOn) });
  const hangBtn = h("button", { type: "button", class: "danger", onclick: () => session.hangup() });
  const calleePick = others.length > 1
    ? h("select", { id: "callee", "aria-label": T("call.whom") }, others.map((u) => h("option", { value: u }, ctx.names.label(u))))
    : null;
  const peerLine = h("p", { class: "room-peer" });
  // leaving the room ends a call: these two are hidden during one
  const backLink = h("a", { href: `#/c/${conv}`, class: "back" }, T("call.back"));
  const checkLink = h("a", { href: `#/check/${conv}`, class: "check-link" }, T("call.check_link"));
  const head = h("div", { class: "room-head" },
    backLink,
    h("h1", { id: "room-title", tabindex: "-1" }, T(c && c.kind !== "consultation" ? "call.room_title_call" : "call.room_title"),
      " ", session.peer ? nameOf(ctx.names, session.peer) : null),
    peerLine);
  const chat = h("aside", { class: "room-chat", "aria-label": T("call.chat") });
  const section = h("section", { class: "room", "aria-labelledby": "room-title" },
    h("div", { class: "room-main" }, head, box.el,
      h("div", { class: "stage" }, remoteVideo, remoteOff, selfVideo),
      status, peerMedia,
      h("div", { class: "controls" }, calleePick, startBtn, micBtn, camBtn, hangBtn,
        checkLink),
      h("details", { class: "call-details" }, h("summary", {}, T("call.details")), details)),
    chat);
  replace(main, section);
  conversationView(chat, ctx, conv);
  if (session.peer) ctx.hub.subscribePresence([session.peer]).catch(() => {});

  let remoteVersion = -1;
  function render() {
    if (!section.isConnected) return;
    const state = session.state;
    section.dataset.state = state;
    replace(status, statusText(ctx, session));
    if (peerLine.dataset.user !== (session.peer || "")) {
      peerLine.dataset.user = session.peer || "";
      replace(peerLine, session.peer ? [nameOf(ctx.names, session.peer), " ", presenceOf(ctx.presence, session.peer)] : null);
    }
    const inCall = state === "calling" || state === "connecting" || state === "connected" || state === "reconnecting";
    startBtn.hidden = inCall;
    replace(startBtn, T(state === "ended" ? "call.again" : "call.start"));
    if (calleePick) calleePick.hidden = inCall;
    hangBtn.hidden = !inCall;
    backLink.hidden = inCall;
    checkLink.hidden = inCall;
    replace(hangBtn, T(state === "calling" ? "call.cancel" : "call.hangup"));
    micBtn.setAttribute("aria-pressed", String(!session.audioOn));
    replace(micBtn, T(session.audioOn ? "call.mute" : "call.unmute"));
    camBtn.setAttribute("aria-pressed", String(!session.videoOn));
    replace(camBtn, T(session.videoOn ? "call.camera_off" : "call.camera_on"));
    if (selfVideo.srcObject !== session.local) selfVideo.srcObject = session.local;
    if (remoteVersion !== session.remoteVersion) {
      remoteVersion = session.remoteVersion;
      remoteVideo.srcObject = session.remote.getTracks().length ? session.remote : null;
      if (remoteVideo.srcObject) remoteVideo.play().catch(() => {});
    }
    const name = session.peer ? ctx.names.label(session.peer) : "";
    const live = state === "connected" || state === "reconnecting";
    remoteOff.hidden = !(live && !session.remoteVideoOn);
    replace(remoteOff, live && !session.remoteVideoOn ? T("call.peer_camera_off", { name }) : null);
    replace(peerMedia, live && !session.remoteAudioOn ? T("call.peer_muted", { name }) : null);
    replace(details, detailsList(session.stats));
  }

  async function start() {
    box.clear();
    if (calleePick) session.to = session.peer = calleePick.value;
    await session.start().catch(() => {}); // the status line says why it ended
  }

  function bind(next) {
    if (next === session) return;
    session.removeEventListener("change", render);
    if (!session.calling) session.release();
    session = next;
    session.addEventListener("change", render);
    render();
  }

  session.addEventListener("change", render);
  const onSession = (e) => {
    if (!section.isConnected) { calls.removeEventListener("session", onSession); return; }
    if (e.detail.session.conv === conv) bind(e.detail.session);
  };
  calls.addEventListener("session", onSession);
  const tick = setInterval(() => { if (section.isConnected) { if (session.state === "connected") replace(status, statusText(ctx, session)); } else clearInterval(tick); }, 1000);
  const onNames = () => { if (section.isConnected) render(); else ctx.names.removeEventListener("change", onNames); };
  ctx.names.addEventListener("change", onNames);
  ctx.hub.addEventListener("state", render);
  // Leaving the room ends the call and turns the camera off; closing the tab asks first.
  const onLeave = () => {
    if (section.isConnected) return;
    removeEventListener("hashchange", onLeave);
    removeEventListener("beforeunload", onUnload);
    ctx.hub.removeEventListener("state", render);
    session.removeEventListener("change", render);
    session.release();
  };
  const onUnload = (e) => { if (section.isConnected && session.calling) e.preventDefault(); };
  addEventListener("hashchange", onLeave);
  addEventListener("beforeunload", onUnload);
  render();
  if (session.phase === "idle" || session.phase === "ended") {
    session.prepare().then(render, (err) => {
      if (err.code !== "released") box.show(endedText(ctx, { ...session, endReason: err.code || "no_device", peer: session.peer }));
    });
  }
  return section;
}

// -- the camera, microphone and network check ---------------------------------------------------
const CHECK_CONNECT_MS = 15_000;
const CHECK_FRAMES = 10; // video frames that must come back
const CHECK_PINGS = 3;
const SOUND_LEVEL = 0.01; // RMS of the microphone's signal that counts as sound

/** Resolves true once cond() holds (checked on each change of `session` and every 250 ms), false after ms. */
function until(session, cond, ms) {
  return new Promise((resolve) => {
    const done = (v) => {
      clearTimeout(timer);
      clearInterval(poll);
      session.removeEventListener("change", on);
      resolve(v);
    };
    const on = () => { if (cond()) done(true); };
    const timer = setTimeout(() => done(false), ms);
    const poll = setInterval(on, 250);
    session.addEventListener("change", on);
    on();
  });
}

/** The microphone's loudness on `meter` while the check runs: {peak, stop()}. */
function listen(stream, meter) {
  const out = { peak: 0, stop: () => {} };
  if (!stream.getAudioTracks().length || !window.AudioContext) return out;
  try {
    const audio = new AudioContext();
    const analyser = audio.createAnalyser();
    analyser.fftSize = 1024;
    audio.createMediaStreamSource(stream).connect(analyser);
    audio.resume().catch(() => {});
    const buf = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      const rms = Math.sqrt(buf.reduce((a, v) => a + v * v, 0) / buf.length);
      out.peak = Math.max(out.peak, rms);
      meter.value = Math.min(1, rms * 4);
    }, 100);
    out.stop = () => { clearInterval(timer); audio.close().catch(() => {}); };
  } catch { /* no Web Audio: the level is not measured */ }
  return out;
}

/** Keep the last frame of `video` on screen (a canvas in its place) once its call ends. */
function freeze(video) {
  if (!video.videoWidth || !video.isConnected) return;
  const still = h("canvas", { class: "still", width: String(video.videoWidth), height: String(video.videoHeight),
    role: "img", "aria-label": video.getAttribute("aria-label") });
  still.getContext("2d").drawImage(video, 0, 0);
  video.hidden = true;
  video.srcObject = null;
  video.before(still);
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  return v.length ? v[Math.floor(v.length / 2)] : null;
}

/**
 * A test call with the echo service: camera, microphone, then the network (the video
 * must come back), with round-trip figures. Resolves true when all three work.
 */
async function runCheck(ctx, { selfVideo, echoVideo, items, meter, figures }) {
  echoVideo.parentElement.querySelectorAll("canvas.still").forEach((c) => c.remove());
  echoVideo.hidden = false;
  const set = (key, result, ...content) => {
    items[key].dataset.result = result;
    replace(items[key].querySelector(".result"), ...content);
  };
  for (const key of Object.keys(items)) set(key, "pending", T("check.pending"));
  replace(figures);
  const session = ctx.calls.session({ echo: true });
  let stream;
  try {
    stream = await session.prepare();
  } catch (err) {
    const why = T(err.code === "denied" ? "check.denied" : "check.no_device");
    set("camera", "fail", why);
    set("microphone", "fail", why);
    set("network", "skipped", T("check.skipped"));
    return false;
  }
  selfVideo.srcObject = stream;
  const camera = stream.getVideoTracks()[0];
  const cameraOk = Boolean(camera && camera.readyState === "live");
  if (cameraOk) {
    const { width, height } = camera.getSettings();
    set("camera", "ok", T("check.camera_ok", { size: width && height ? `${width}×${height}` : "" }));
  } else {
    set("camera", "fail", T("check.no_camera"));
  }
  const level = listen(stream, meter);
  set("microphone", "running", T("check.listening"));
  set("network", "running", T("check.calling"));
  const started = performance.now();
  let networkOk = false;
  try {
    await session.start();
    const connected = await until(session, () => session.state === "connected" || session.phase === "ended", CHECK_CONNECT_MS);
    if (!connected || session.phase === "ended") {
      set("network", "fail", session.phase === "ended" ? endedText(ctx, session) : T("check.no_connection"));
    } else {
      const connectMs = performance.now() - started;
      echoVideo.srcObject = session.remote;
      echoVideo.play().catch(() => {});
      let stats = null;
      const back = await until(session, () => (stats = session.stats) && stats.framesDecoded >= CHECK_FRAMES, CHECK_CONNECT_MS);
      const rtts = [];
      for (let i = 0; i < CHECK_PINGS; i++) rtts.push(await session.ping().catch(() => null));
      const echo = await session.echoStats().catch(() => null);
      stats = session.pc ? await readStats(session.pc, session.stats) : stats;
      const path = stats && (stats.local === "relay" || stats.remote === "relay") ? "relay" : stats && stats.local;
      networkOk = back;
      if (back) set("network", "ok", T("check.network_ok"), " (", pathText(path), ")");
      else set("network", "fail", T("check.no_video_back"));
      const row = (key, value, name) => [h("dt", {}, T(key)), h("dd", { dataset: { figure: name } }, value)];
      const ms = (v) => (typeof v === "number" ? `${Math.round(v)} ms` : "–");
      const channel = median(rtts.filter((v) => v !== null));
      replace(figures,
        row("check.fig.connect", ms(connectMs), "connect"),
        row("check.fig.path", pathText(path), "path"),
        row("check.fig.rtt", ms(stats && stats.rttMs), "rtt"),
        row("check.fig.channel", ms(channel), "channel"),
        echo && typeof echo.rtcp_rtt_ms === "number" ? row("check.fig.echo_rtt", ms(echo.rtcp_rtt_ms), "echo-rtt") : null,
        row("check.fig.frames", T("check.frames", { sent: stats ? stats.framesSent : 0, back: stats ? stats.framesDecoded : 0 }), "frames"));
    }
  } catch (err) {
    set("network", "fail", err.code === "not_found" ? T("check.no_service") : describeApiError(err));
  } finally {
    level.stop();
    meter.value = Math.min(1, level.peak * 4);
    freeze(echoVideo);
    await session.hangup();
  }
  const heard = level.peak >= SOUND_LEVEL;
  set("microphone", heard ? "ok" : "warn", T(heard ? "check.sound_ok" : "check.no_sound"));
  return cameraOk && heard && networkOk;
}

export function checkView(main, ctx, conv = null) {
  const box = alertBox();
  const selfVideo = h("video", { class: "self", autoplay: true, playsinline: true, muted: true, "aria-label": T("call.your_camera") });
  selfVideo.muted = true;
  const echoVideo = h("video", { class: "remote", autoplay: true, playsinline: true, muted: true, "aria-label": T("check.echo_video") });
  echoVideo.muted = true;
  const items = {};
  for (const key of ["camera", "microphone", "network"]) {
    items[key] = h("li", { dataset: { check: key, result: "pending" } }, h("strong", {}, T(`check.${key}`)), " ", h("span", { class: "result" }, T("check.pending")));
  }
  const meter = h("meter", { min: "0", max: "1", value: "0", "aria-label": T("check.level") });
  items.microphone.append(" ", meter);
  const figures = h("dl", { class: "check-figures" });
  const verdict = h("p", { class: "verdict", role: "status" });
  const relay = h("input", { type: "checkbox", id: "relay-only", checked: relayOnly(), "aria-describedby": "relay-hint" });
  const relayHint = h("p", { class: "hint", id: "relay-hint" }, T("check.relay_hint"));
  relay.addEventListener("change", () => setRelayOnly(relay.checked));
  const run = h("button", { type: "button", class: "primary" }, T("check.start"));
  const section = h("section", { class: "card precheck", "aria-labelledby": "check-title", dataset: { result: "idle" } },
    h("h1", { id: "check-title", tabindex: "-1" }, T("check.title")),
    h("p", {}, T("check.intro")), box.el,
    h("div", { class: "check-stage" },
      h("figure", {}, selfVideo, h("figcaption", {}, T("call.your_camera"))),
      h("figure", {}, echoVideo, h("figcaption", {}, T("check.echo_video")))),
    h("ul", { class: "checklist" }, Object.values(items)),
    verdict, figures,
    h("div", { class: "check" }, relay, h("label", { for: "relay-only" }, T("check.relay"))), relayHint,
    h("div", { class: "controls" }, run, conv ? h("a", { href: `#/call/${conv}` }, T("check.back_to_room")) : null));
  replace(main, section);
  ctx.calls.hasRelay().then((yes) => {
    if (!yes && !relay.checked) {
      relay.disabled = true;
      replace(relayHint, T("check.no_relay"));
    }
  }, () => {});

  const onLeave = () => {
    if (section.isConnected) return;
    removeEventListener("hashchange", onLeave);
    ctx.calls.session({ echo: true }).release();
  };
  addEventListener("hashchange", onLeave);
  let running = null;
  run.addEventListener("click", async () => {
    if (running) return;
    run.disabled = true;
    box.clear();
    section.dataset.result = "running";
    replace(verdict, T("check.running"));
    running = runCheck(ctx, { selfVideo, echoVideo, items, meter, figures });
    try {
      const ok = await running;
      section.dataset.result = ok ? "ok" : "problem";
      replace(verdict, T(ok ? "check.all_good" : "check.problem"));
    } catch (err) {
      section.dataset.result = "problem";
      replace(verdict, T("check.problem"));
      box.show(...[].concat(err.code && REASONS.has(err.code) ? endedText(ctx, { endReason: err.code }) : describeApiError(err)));
    } finally {
      running = null;
      run.disabled = false;
      replace(run, T("check.again"));
    }
  });
  return section;
}
