// EEG exams in the app: the card of the home page (the exams I am assigned to,
// live and finished recordings), #/eeg (the same list on its own page) and the
// exam page #/eeg/exam/<exam>: its recordings, the viewer of the live one, and
// for the technician a synthetic recorder in the browser to start and stop
// (eeg/source.js; a real recorder is `medhub-eeg record`).

import { api } from "../api.js";
import { alertBox, h, replace, T, time } from "../dom.js";
import { BrowserRecorder } from "../eeg/source.js";
import { nameOf } from "../state.js";
import { describeApiError } from "./errors.js";
import { clock, mountViewer, viewerView } from "./eeg.js";

export const EEG_ROLES = new Set(["technician", "interpreter", "practitioner"]);
const ID = "[a-z]-[0-9a-f]{1,38}";
const ROUTE = new RegExp(`^#/eeg(?:/exam/(${ID})|/(t-[0-9a-f]{8}))?$`);

/** Show the EEG screen of `hash`; false when `hash` is not an EEG route. */
export function eegRoute(main, ctx, hash) {
  const m = hash.match(ROUTE);
  if (!m) return false;
  if (m[1]) examView(main, ctx, m[1]);
  else if (m[2]) viewerView(main, ctx, m[2]);
  else listView(main, ctx);
  return true;
}

const streamSeconds = (s) => s.durable_end / s.rate;

function streamRow(s) {
  return h("li", { dataset: { stream: s.id, state: s.state } },
    h("a", { href: `#/eeg/${s.id}` }, h("code", {}, s.id)), " ",
    h("span", { class: `eeg-badge ${s.state === "live" ? "live" : ""}` }, T(`eeg.state_${s.state}`)), " ",
    h("span", { class: "hint" }, `${s.channels} ch · ${s.rate} Hz · ${clock(streamSeconds(s))}`), " ",
    time(s.created_us / 1000, true));
}

function examItem(ctx, exam) {
  const live = exam.streams.filter((s) => s.state === "live");
  return h("li", { class: "eeg-exam", dataset: { exam: exam.id } },
    h("a", { href: `#/eeg/exam/${exam.id}` }, T("eeg.exam_of"), " ", nameOf(ctx.names, exam.patient_id)),
    live.length ? [" ", h("span", { class: "eeg-badge live" }, T("eeg.state_live"))] : null,
    exam.indication ? h("span", { class: "hint" }, ` · ${exam.indication}`) : null,
    exam.streams.length
      ? h("ul", { class: "eeg-streams" }, exam.streams.map(streamRow))
      : h("p", { class: "hint" }, T("eeg.no_recording")));
}

/** A card listing my exams (home of technicians, interpreters and practitioners). */
export function eegExamsCard(ctx) {
  const list = h("ul", { class: "eeg-exams" }, h("li", { class: "empty" }, T("chat.loading")));
  const card = h("section", { class: "card", "aria-labelledby": "eeg-exams-title" },
    h("h2", { id: "eeg-exams-title" }, T("eeg.my_exams")), list);
  api("GET", "/eeg/exams").then((data) => {
    const exams = (data && data.exams) || [];
    // assigned to me (an admin sees the organisation's; not here)
    const mine = exams.filter((e) => e.technician_id === ctx.me || e.interpreters.includes(ctx.me) || e.ordering_id === ctx.me);
    if (!mine.length) {
      replace(list, h("li", { class: "empty" }, T("eeg.no_exams")));
      return;
    }
    // live first, then the newest
    const live = (e) => e.streams.some((s) => s.state === "live");
    mine.sort((a, b) => Number(live(b)) - Number(live(a)) || b.updated_us - a.updated_us);
    replace(list, mine.map((e) => examItem(ctx, e)));
  }, (err) => replace(list, h("li", { role: "alert" }, describeApiError(err))));
  return card;
}

function listView(main, ctx) {
  replace(main, h("div", { class: "home" }, h("h1", { tabindex: "-1" }, T("eeg.exams")), eegExamsCard(ctx)));
}

/** The exam page: recordings, the live one's viewer, the technician's recorder. */
function examView(main, ctx, examId) {
  const box = alertBox();
  const streams = h("ul", { class: "eeg-streams" });
  const tools = h("div", { class: "eeg-tools" });
  const holder = h("div", { class: "eeg-holder" });
  const heading = h("h1", { id: "eeg-exam-title", tabindex: "-1" }, T("eeg.exam"));
  const people = h("p", { class: "hint" });
  replace(main, h("section", { class: "card eeg-page eeg-exam-page", "aria-labelledby": "eeg-exam-title" },
    heading, people, box.el, tools, h("h2", {}, T("eeg.recordings")), streams, holder));
  ctx.eegSources = ctx.eegSources || new Map(); // exam -> BrowserRecorder (keeps going while I browse)
  let watching = null;

  async function load() {
    let exam;
    try {
      exam = await api("GET", `/eeg/exams/${examId}`);
    } catch (err) {
      box.show(...describeApiError(err));
      return;
    }
    replace(heading, T("eeg.exam_of"), " ", nameOf(ctx.names, exam.patient_id));
    replace(people, T("eeg.technician"), " ", nameOf(ctx.names, exam.technician_id), " · ",
      T("eeg.interpreters"), " ", exam.interpreters.map((u, i) => [i ? ", " : "", nameOf(ctx.names, u)]));
    replace(streams, exam.streams.length ? exam.streams.map(streamRow) : h("li", { class: "empty" }, T("eeg.no_recording")));
    renderTools(exam);
    const live = exam.streams.find((s) => s.state === "live");
    const mine = ctx.eegSources.get(examId);
    const show = (mine && mine.state !== "closed" && mine.sid) || (live && live.id) || null;
    if (show && show !== watching) {
      watching = show;
      await mountViewer(holder, ctx, show);
    }
  }

  function renderTools(exam) {
    if (exam.technician_id !== ctx.me) {
      replace(tools);
      return;
    }
    const mine = ctx.eegSources.get(examId);
    const running = mine && mine.state !== "closed";
    const start = h("button", { type: "button", class: "primary", hidden: running }, T("eeg.start_demo"));
    const stop = h("button", { type: "button", class: "danger", hidden: !running }, T("eeg.stop"));
    const state = h("p", { class: "hint", role: "status" },
      running ? T("eeg.streaming", { stream: mine.sid }) : T("eeg.demo_hint"));
    const stored = h("span", { class: "hint eeg-stored" });
    if (running) {
      const show = () => {
        if (!stored.isConnected && stored.dataset.shown) return;
        stored.dataset.shown = "1";
        stored.dataset.acked = String(mine.acked);
        replace(stored, T("eeg.stored", { t: clock(mine.acked / mine.meta.rate) }),
          mine.refusals.length ? [" ", T("eeg.refused_frames", { code: mine.refusals[mine.refusals.length - 1] })] : null);
      };
      mine.addEventListener("acked", show);
      mine.addEventListener("refused", show);
      show();
    }
    start.addEventListener("click", async () => {
      box.clear();
      start.disabled = true;
      const rec = new BrowserRecorder(ctx.hub, examId);
      try {
        await rec.start();
        ctx.eegSources.set(examId, rec);
        await load();
      } catch (err) {
        box.show(...describeApiError(err));
        start.disabled = false;
      }
    });
    stop.addEventListener("click", async () => {
      box.clear();
      stop.disabled = true;
      try {
        await mine.stop();
        await load();
      } catch (err) {
        box.show(...describeApiError(err));
        stop.disabled = false;
      }
    });
    replace(tools, h("div", { class: "eeg-recorder" }, start, stop, state, stored));
  }

  load();
}
