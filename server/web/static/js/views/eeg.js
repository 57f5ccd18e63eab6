// The EEG viewer (#/eeg/<stream>): live or finished recordings, for the exam's
// interpreters, technician and ordering practitioner (docs/web.md "EEG").
//
// Traces on a canvas (eeg/render.js) from an EegSession (eeg/session.js);
// montages, sensitivity, page length and filters are computed here, in the
// browser. Annotations: click the traces (or use the current position), type,
// add; edit and delete from the list; others' appear as they are made.

import { alertBox, h, replace, T } from "../dom.js";
import { t } from "../i18n.js";
import { EegSession } from "../eeg/session.js";
import { TraceRenderer } from "../eeg/render.js";
import { MONTAGES } from "../eeg/montage.js";
import { HIGH_PASS_HZ, LOW_PASS_HZ, NOTCH_HZ } from "../eeg/filters.js";
import { nameOf } from "../state.js";
import { describeApiError } from "./errors.js";

export const SENSITIVITIES = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 200];
export const PAGES_S = [10, 15, 20, 30];
export const ANNOTATION_KINDS = ["note", "eyes_closed", "eyes_open", "hyperventilation", "photic", "artefact", "seizure"];

/** "1:05.250" for a time in seconds from the start of the recording. */
export function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return `${m}:${rest.toFixed(3).padStart(6, "0")}`;
}

function select(id, label, options, value, onchange) {
  const el = h("select", { id }, options.map(([v, text]) => h("option", { value: String(v) }, text)));
  el.value = String(value);
  el.addEventListener("change", () => onchange(el.value));
  return h("div", { class: "field eeg-field" }, h("label", { for: id }, label), el);
}

const hz = (v) => (Number(v) === 0 ? T("eeg.off") : `${v} Hz`);

/**
 * Build the viewer of stream `sid` into `container`; resolves once watching
 * (an alert in words when the hub refuses: forbidden, not_found ...).
 * Returns {session, renderer} or null when refused.
 */
export async function mountViewer(container, ctx, sid) {
  const box = alertBox();
  replace(container, h("p", { class: "empty" }, T("chat.loading")));
  const session = new EegSession(ctx.hub, sid, { columnsPerS: Math.max(50, container.clientWidth / 10) });
  try {
    await session.open();
  } catch (err) {
    replace(container, box.el);
    box.show(T("eeg.refused"), " ", ...describeApiError(err));
    return null;
  }
  const labels = h("ul", { class: "eeg-labels", "aria-label": T("eeg.channels") });
  const canvas = h("canvas", { class: "eeg-canvas", role: "img", "aria-label": T("eeg.traces"), tabindex: "0" });
  const status = h("p", { class: "eeg-status", role: "status" });
  const drawn = h("span", { class: "eeg-drawn", dataset: { samples: "0" } });
  const range = h("span", { class: "eeg-range" });
  const liveBtn = h("button", { type: "button", class: "small primary eeg-live" }, T("eeg.back_to_live"));
  const back = h("button", { type: "button", class: "small" }, T("eeg.page_back"));
  const fwd = h("button", { type: "button", class: "small" }, T("eeg.page_forward"));
  const renderer = new TraceRenderer(canvas, session, {
    onLayout: (derivs) => replace(labels, derivs.map((d) => h("li", {}, d.label))),
    onDrawn: (n) => { drawn.dataset.samples = String(n); },
  });
  renderer.gapLabel = t("eeg.gap");
  const set = (k, conv = Number) => (v) => renderer.set({ [k]: conv(v) });
  const s = renderer.settings;
  const toolbar = h("div", { class: "eeg-toolbar" },
    select(`eeg-montage-${sid}`, T("eeg.montage"), MONTAGES.map((m) => [m, T(`eeg.montage_${m}`)]), s.montage, set("montage", String)),
    select(`eeg-sens-${sid}`, T("eeg.sensitivity"), SENSITIVITIES.map((v) => [v, `${v} µV/mm`]), s.sensitivity, set("sensitivity")),
    select(`eeg-page-${sid}`, T("eeg.page"), PAGES_S.map((v) => [v, `${v} s`]), s.pageS, set("pageS")),
    select(`eeg-hp-${sid}`, T("eeg.high_pass"), HIGH_PASS_HZ.map((v) => [v, hz(v)]), s.hp, set("hp")),
    select(`eeg-lp-${sid}`, T("eeg.low_pass"), LOW_PASS_HZ.map((v) => [v, hz(v)]), s.lp, set("lp")),
    select(`eeg-notch-${sid}`, T("eeg.notch"), NOTCH_HZ.map((v) => [v, hz(v)]), s.notch, set("notch")));
  const nav = h("div", { class: "eeg-nav" }, back, fwd, liveBtn, range, status, drawn);
  const plot = h("div", { class: "eeg-plot" }, labels, canvas);
  const notes = annotationsPanel(ctx, session, renderer);
  replace(container, h("div", { class: "eeg-viewer", dataset: { stream: sid } }, box.el, toolbar, nav, plot, notes.el));

  back.addEventListener("click", () => renderer.move(-1));
  fwd.addEventListener("click", () => renderer.move(1));
  liveBtn.addEventListener("click", () => renderer.goLive());
  canvas.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") renderer.move(-1);
    else if (e.key === "ArrowRight") renderer.move(1);
    else return;
    e.preventDefault();
  });
  canvas.addEventListener("click", (e) => {
    const rect = canvas.getBoundingClientRect();
    renderer.cursor = renderer.outputAt(e.clientX - rect.left);
    renderer.dirty = true;
    notes.at(Math.round(renderer.cursor * session.factor));
  });
  session.addEventListener("failed", (e) => box.show(...describeApiError(e.detail.error)));
  session.addEventListener("annotations", () => notes.render());

  // status line: live lag, or how far back; the page's time range
  const rate = () => session.meta.rate;
  const tick = () => {
    if (!canvas.isConnected) {
      session.close();
      renderer.stop();
      return;
    }
    const pageStartS = (renderer.start * session.factor) / rate();
    replace(range, `${clock(pageStartS)} – ${clock(pageStartS + renderer.settings.pageS)}`);
    liveBtn.hidden = session.state !== "live" || renderer.live;
    let words;
    if (session.state === "closed") words = T("eeg.finished", { duration: clock((session.end * session.factor) / rate()) });
    else if (session.state === "revoked") words = T("eeg.revoked");
    else if (!renderer.live) words = T("eeg.behind", { s: Math.round(((session.end - renderer.start) * session.factor) / rate()) });
    else {
      const lag = session.lagS();
      words = lag === null ? T("eeg.live") : T("eeg.live_lag", { s: lag.toFixed(1) });
    }
    status.dataset.state = session.state === "live" && renderer.live ? "live" : session.state;
    status.dataset.end = String(session.end);
    replace(status, words);
    setTimeout(tick, 250);
  };
  session.addEventListener("state", () => {
    if (session.state === "closed" && renderer.live) renderer.live = false;
  });
  renderer.set({});
  if (session.state === "closed") renderer.showAt(0);
  else renderer.goLive();
  renderer.run();
  tick();
  notes.render();
  return { session, renderer };
}

/** The annotation form and list of a viewer. */
function annotationsPanel(ctx, session, renderer) {
  const box = alertBox();
  const kind = h("select", { id: `eeg-kind-${session.sid}` }, ANNOTATION_KINDS.map((k) => h("option", { value: k }, T(`eeg.kind_${k}`))));
  const text = h("input", { id: `eeg-text-${session.sid}`, maxlength: 512, autocomplete: "off" });
  const where = h("span", { class: "hint eeg-where" });
  const submit = h("button", { type: "submit", class: "primary small" }, T("eeg.add_annotation"));
  const cancel = h("button", { type: "button", class: "small", hidden: true }, T("eeg.cancel"));
  const list = h("ul", { class: "eeg-notes-list" });
  let onset = null; // source sample chosen by a click, else the current position
  let editing = null;
  const form = h("form", { class: "eeg-note-form" }, box.el,
    h("div", { class: "field eeg-field" }, h("label", { for: kind.id }, T("eeg.kind")), kind),
    h("div", { class: "field eeg-field grow" }, h("label", { for: text.id }, T("eeg.text")), text),
    submit, cancel, where);
  const el = h("section", { class: "eeg-notes", "aria-label": T("eeg.annotations") },
    h("h2", {}, T("eeg.annotations")), form, list);

  const rate = () => session.meta.rate;
  const showWhere = () => replace(where, onset === null ? T("eeg.at_current") : T("eeg.at", { t: clock(onset / rate()) }));
  const current = () => {
    if (onset !== null) return onset;
    const j = renderer.live ? session.end - 1 : renderer.start;
    return Math.max(0, Math.round(j * session.factor));
  };
  const reset = () => {
    editing = null;
    onset = null;
    text.value = "";
    kind.value = "note";
    cancel.hidden = true;
    replace(submit, T("eeg.add_annotation"));
    renderer.cursor = null;
    renderer.dirty = true;
    showWhere();
  };
  cancel.addEventListener("click", reset);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    box.clear();
    const fields = { onset: current(), text: text.value.trim(), kind: kind.value };
    if (editing) fields.duration = editing.duration || 0;
    try {
      if (editing) await session.editAnnotation(editing.id, fields);
      else await session.annotate(fields);
      reset();
    } catch (err) {
      box.show(...describeApiError(err));
    }
  });

  function render() {
    const items = [...session.annotations.values()].sort((a, b) => a.onset - b.onset);
    if (!items.length) {
      replace(list, h("li", { class: "empty" }, T("eeg.no_annotations")));
      return;
    }
    replace(list, items.map((a) => h("li", { dataset: { annotation: a.id } },
      h("button", { type: "button", class: "link eeg-goto", onclick: () => renderer.showAt(a.onset / session.factor - 1 * session.rate) },
        clock(a.onset / rate())),
      " ", h("span", { class: "role" }, T(`eeg.kind_${a.kind}`)), " ", h("span", { class: "eeg-note-text" }, a.text),
      " ", h("span", { class: "hint" }, nameOf(ctx.names, a.author)),
      h("button", {
        type: "button", class: "small",
        onclick: () => {
          editing = a;
          onset = a.onset;
          text.value = a.text;
          kind.value = ANNOTATION_KINDS.includes(a.kind) ? a.kind : "note";
          cancel.hidden = false;
          replace(submit, T("eeg.save_annotation"));
          showWhere();
          text.focus();
        },
      }, T("eeg.edit")),
      h("button", {
        type: "button", class: "small danger",
        onclick: async () => {
          try { await session.deleteAnnotation(a.id); } catch (err) { box.show(...describeApiError(err)); }
        },
      }, T("eeg.delete")))));
    ctx.names.want(items.map((a) => a.author));
  }
  showWhere();
  return {
    el,
    render,
    at(sample) {
      onset = sample;
      showWhere();
    },
  };
}

/** #/eeg/<stream>: the viewer on its own page. */
export function viewerView(main, ctx, sid) {
  const holder = h("div", { class: "eeg-holder" });
  replace(main, h("section", { class: "card eeg-page", "aria-labelledby": "eeg-title" },
    h("h1", { id: "eeg-title", tabindex: "-1" }, T("eeg.viewer_title"), " ", h("code", {}, sid)),
    h("p", {}, h("a", { href: "#/eeg" }, T("eeg.all_exams"))), holder));
  mountViewer(holder, ctx, sid);
}
