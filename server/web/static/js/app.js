// The app: session, header, connection banner and the hash router.
//
// Routes: #/signin, #/invite/<token> (enrolment), #/password (expired),
// #/ (home of the role), #/conversations, #/c/<conv>, #/sessions, #/people
// (admins), #/records/<patient>[/d/<document>|/r/<report>] (medical records),
// #/call/<conv> (the consultation room), #/check[/<conv>] (camera and network check),
// #/eeg, #/eeg/exam/<exam>, #/eeg/<stream> (EEG exams and the viewer).
// The invitation token lives in the fragment, which browsers never
// send to the server, and is removed from the address bar once read.

import * as api from "./api.js";
import { h, replace, T } from "./dom.js";
import { formatTime, has, lang, LANGS, setLang, t, translate } from "./i18n.js";
import { Hub } from "./medhub.js";
import { ChatStore, NameBook, PresenceBook } from "./state.js";
import { checkView, roomView, startCalls } from "./views/call.js";
import { adminView } from "./views/admin.js";
import { enrolView, passwordView, signinView } from "./views/auth.js";
import { conversationList, conversationView } from "./views/chat.js";
import { describeApiError } from "./views/errors.js";
import { homeView, sessionsView } from "./views/home.js";
import { recordsRoute } from "./views/records.js";
import { EEG_ROLES, eegRoute } from "./views/eeg_exams.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const nav = document.getElementById("nav");
const langBtn = document.getElementById("lang");

const CONTACTS_REFRESH_MS = 60_000;
let ctx = null; // {session, me, role, org, hub, names, presence, chat}
let endedNotice = null;
let rightsChanged = false; // a 4011 reconnect: the role may have changed (checked once online)
let notices = []; // the sign-in's notices (failed attempts, a lock), in words: kept until closed

// -- connection banner -------------------------------------------------------------
function showBanner(kind, ...content) {
  banner.dataset.kind = kind;
  replace(banner, ...content);
  banner.hidden = content.length === 0;
}

function onHubState(e) {
  const { state, reason, retryInS } = e.detail;
  banner.dataset.state = state;
  if (state === "online") {
    showNotices(); // the connection's messages gone, the sign-in's notices back
    if (rightsChanged) {
      rightsChanged = false;
      refreshRole();
    }
    return;
  }
  if (state === "connecting") {
    showBanner("info", T("conn.connecting"));
  } else if (state === "reconnecting") {
    if (reason === "rights_changed") rightsChanged = true;
    const key = ({ restarting: "conn.restarting", rights_changed: "conn.rights_changed", abusive: "conn.abusive", busy: "conn.busy", slow: "conn.slow" })[reason] || "conn.lost";
    const parts = [T(key)];
    if (!navigator.onLine) parts.push(" ", T("conn.offline"));
    parts.push(" ", T("conn.reconnecting"));
    if (retryInS && retryInS >= 1) parts.push(" ", T("conn.retry_in", { n: Math.ceil(retryInS) }));
    parts.push(" ", T("conn.kept"));
    showBanner("warn", ...parts);
  }
}

/** After a rights change: the session's role again; a new role gets its own screens. */
async function refreshRole() {
  const held = ctx;
  let session = null;
  try {
    session = await api.currentSession();
  } catch {
    return; // kept as it is: the next rights change or reload tells again
  }
  if (!session || ctx !== held || session.role === held.role) return;
  held.role = session.role;
  held.session = session;
  renderNav();
  route();
}

function onHubEnded(e) {
  const { reason } = e.detail;
  if (reason === "session_ended" || reason === "auth_failed") {
    sessionEnded("ended.session");
  } else if (reason === "too_many_connections") {
    showBanner("error", T("ended.too_many"), " ",
      h("button", { type: "button", class: "small", onclick: () => { ctx.hub = null; startHub(); } }, T("ended.retry")));
  } else if (reason === "client_refused") {
    showBanner("error", T("ended.refused"), " ",
      h("button", { type: "button", class: "small", onclick: () => location.reload() }, T("ended.reload")));
  }
}

// -- session -------------------------------------------------------------------------
function startHub() {
  const hub = new Hub();
  ctx.hub = hub;
  ctx.presence = new PresenceBook(hub);
  ctx.chat = new ChatStore(hub, ctx.me);
  ctx.calls = startCalls(ctx, hub); // before start(): rings on every open page
  hub.addEventListener("state", onHubState);
  hub.addEventListener("ended", onHubEnded);
  hub.addEventListener("welcome", () => {
    if (ctx && ctx.hub === hub && !ctx.chat.loaded) ctx.chat.load().catch(() => {});
  }, { once: true });
  hub.start();
  // contacts: care team, patients, colleagues; asked again every minute, since the
  // hub fixes the list when subscribing (someone who enrols later joins it then)
  hub.subscribePresence([], true).catch(() => {});
  const refresh = setInterval(() => {
    if (hub.state === "ended") clearInterval(refresh);
    else if (hub.online) hub.subscribePresence([], true).catch(() => {});
  }, CONTACTS_REFRESH_MS);
}

function signedIn(session) {
  if (ctx && ctx.hub) ctx.hub.stop();
  ctx = {
    session,
    me: session.user_id,
    role: session.role,
    org: session.org_id,
    names: new NameBook(session.user_id),
    hub: null,
    presence: null,
    chat: null,
  };
  endedNotice = null;
  renderNav();
  if (session.restricted) return;
  startHub();
  ctx.names.want([ctx.me]);
  notices = Array.isArray(session.notices) ? session.notices.map(noticeText).filter(Boolean) : [];
  if (notices.length) showNotices();
}

/** The sign-in's notices in the banner, with a button to close them (or no banner). */
function showNotices() {
  if (!notices.length) return showBanner("ok");
  const close = () => {
    notices = [];
    showBanner("ok");
  };
  showBanner("info", ...notices.map((text) => h("p", {}, text)),
    h("button", { type: "button", class: "small", onclick: close }, T("notice.dismiss")));
}

/** A login notice (e.g. failed attempts since the last sign-in) in words. */
function noticeText(n) {
  if (typeof n === "string") return n;
  const key = `notice.${n.code}`;
  const when = n.at ? formatTime(n.at * 1000, true) : "";
  return has(key) ? t(key, { ...n, when, n: n.failures || 0 }) : n.message || n.code || "";
}

function sessionEnded(noticeKey) {
  if (ctx && ctx.hub) ctx.hub.stop();
  ctx = null;
  api.setCsrf(null);
  endedNotice = noticeKey;
  notices = [];
  showBanner("ok");
  renderNav();
  location.hash = "#/signin";
  route();
}

async function signOut() {
  const hub = ctx && ctx.hub;
  try {
    await api.logout();
  } catch {
    // the session may already be gone: signing out here is what matters
  }
  if (hub) hub.stop();
  ctx = null;
  endedNotice = "ended.signed_out";
  notices = [];
  showBanner("ok");
  renderNav();
  location.hash = "#/signin";
  route();
}

// -- header ---------------------------------------------------------------------------
function renderNav() {
  if (!ctx || ctx.session.restricted) {
    nav.replaceChildren();
    return;
  }
  const links = [["#/", "nav.home"], ["#/conversations", "nav.conversations"]];
  if (ctx.role === "admin") links.push(["#/people", "nav.people"]);
  if (EEG_ROLES.has(ctx.role)) links.push(["#/eeg", "nav.eeg"]);
  links.push(["#/sessions", "nav.sessions"]);
  replace(nav,
    h("ul", {}, links.map(([href, key]) => h("li", {}, h("a", { href, dataset: { route: href } }, T(key))))),
    h("button", { type: "button", id: "signout", class: "small", onclick: signOut }, T("nav.signout")));
  markCurrent();
}

function markCurrent() {
  const hash = location.hash || "#/";
  for (const a of nav.querySelectorAll("a[data-route]")) {
    const r = a.dataset.route;
    const current = r === "#/" ? hash === "#/" || hash === "" : hash.startsWith(r) || (r === "#/conversations" && hash.startsWith("#/c/"));
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function renderLangButton() {
  const other = LANGS.find((l) => l !== lang);
  langBtn.textContent = other.toUpperCase();
  langBtn.setAttribute("lang", other);
  langBtn.setAttribute("aria-label", t(`lang.switch_to_${other}`));
}

langBtn.addEventListener("click", () => {
  setLang(LANGS.find((l) => l !== lang));
  renderLangButton();
});

// -- router ----------------------------------------------------------------------------
function focusHeading() {
  const h1 = main.querySelector("h1");
  if (h1) h1.focus({ preventScroll: false });
}

function route() {
  markCurrent();
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return; // in-page anchors
  const invite = hash.match(/^#\/invite\/([A-Za-z0-9_-]{16,128})$/);
  if (invite) {
    if (ctx && ctx.hub) ctx.hub.stop();
    ctx = null;
    renderNav();
    enrolView(main, invite[1], {
      onEnrolled: (session) => {
        signedIn(session);
        location.hash = "#/";
      },
    });
    focusHeading();
    return;
  }
  if (hash === "#/enrol") {
    replace(main, h("section", { class: "card narrow" }, h("h1", { tabindex: "-1" }, T("enrol.title")), h("p", {}, T("enrol.link_used")),
      h("a", { href: "#/signin" }, T("signin.title"))));
    return;
  }
  if (!ctx) {
    const notice = endedNotice ? T(endedNotice) : null;
    signinView(main, {
      notice,
      onSignedIn: async (session) => {
        signedIn(session);
        location.hash = session.restricted ? "#/password" : "#/";
        route();
      },
    });
    focusHeading();
    return;
  }
  if (ctx.session.restricted) {
    passwordView(main, {
      onChanged: async () => {
        const session = await api.currentSession();
        if (!session) return sessionEnded("ended.session");
        signedIn(session);
        location.hash = "#/";
        route();
      },
    });
    focusHeading();
    return;
  }
  if (ctx.chat && ctx.chat.active && !hash.startsWith("#/c/")) ctx.chat.open(null);
  const conv = hash.match(/^#\/c\/([A-Za-z0-9][A-Za-z0-9._:-]{0,63})$/);
  const call = hash.match(/^#\/(call|check)\/([A-Za-z0-9][A-Za-z0-9._:-]{0,63})$/);
  if (conv) {
    conversationView(main, ctx, conv[1]);
  } else if (call && call[1] === "call") {
    roomView(main, ctx, call[2]);
  } else if (hash === "#/check" || call) {
    checkView(main, ctx, call ? call[2] : null);
  } else if (hash === "#/conversations") {
    replace(main, h("section", { class: "card", "aria-labelledby": "list-title" },
      h("h1", { id: "list-title", tabindex: "-1" }, T("nav.conversations")), conversationList(ctx)));
  } else if (hash === "#/sessions") {
    sessionsView(main);
  } else if (hash.startsWith("#/eeg") && eegRoute(main, ctx, hash)) {
    // EEG exams, the viewer, the technician's page (views/eeg_exams.js, views/eeg.js)
  } else if (hash.startsWith("#/records/") && recordsRoute(main, ctx, hash)) {
    // a patient's medical record, a document, a report (views/records.js)
  } else if (hash === "#/people" && ctx.role === "admin") {
    adminView(main, ctx);
  } else if (ctx.role === "admin" && (hash === "#/" || hash === "#/signin")) {
    adminView(main, ctx);
  } else {
    homeView(main, ctx);
  }
  focusHeading();
}

// -- boot ----------------------------------------------------------------------------
api.apiEvents.addEventListener("unauthenticated", () => { if (ctx) sessionEnded("ended.session"); });
api.apiEvents.addEventListener("password_expired", () => {
  if (ctx) {
    ctx.session.restricted = "password_expired";
    if (ctx.hub) ctx.hub.stop();
    renderNav();
    location.hash = "#/password";
  }
});
addEventListener("hashchange", route);
addEventListener("offline", () => showBanner("warn", T("conn.offline")));
document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

async function boot() {
  document.title = t("app.title");
  translate(document);
  renderLangButton();
  if (!window.isSecureContext) {
    // the session cookie is Secure (__Host-): browsers keep it only over HTTPS or on localhost
    showBanner("error", T("boot.insecure"));
  }
  let session = null;
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/invite/")) {
    try {
      session = await api.currentSession();
    } catch (err) {
      replace(main, h("section", { class: "card narrow" }, h("h1", { tabindex: "-1" }, T("boot.failed")),
        h("p", {}, describeApiError(err)), h("button", { type: "button", onclick: () => location.reload() }, T("ended.reload"))));
      return;
    }
  }
  if (session) signedIn(session);
  route();
  document.body.dataset.ready = "1";
}

boot();
