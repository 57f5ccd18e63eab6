// One report (#/records/<patient>/r/<report>): its text, its state, what the
// caller may do with it, and its version history.
//
// The server shows each caller the version they may read (a patient: the newest
// signed one, also while an amendment is being written). Actions offered:
// - a draft, to its author: edit (PATCH with the version shown; 409: reloaded),
//   sign (saves first when the text changed), delete while never signed;
// - a signed report, to a practitioner caring for the patient: amend (a new draft
//   citing the signed version; it stays invisible to the patient until signed).

import { alertBox, field, h, replace, T, time } from "../dom.js";
import { t } from "../i18n.js";
import { nameOf } from "../state.js";
import { describeRecordsError, ms, rec, recordHref, rightsOn, statusBadge } from "./records_common.js";

export function reportView(main, ctx, patientId, reportId) {
  const box = alertBox();
  const done = h("p", { class: "alert ok", role: "status", hidden: true });
  const body = h("div", {}, h("p", { class: "empty" }, T("chat.loading")));
  const history = h("div", { class: "table-wrap" });
  const back = h("a", { class: "back", href: recordHref(patientId) }, T("records.back"));
  replace(main, h("div", { class: "records report" }, back, box.el, done, body,
    h("section", { class: "card", "aria-labelledby": "rep-history-title" },
      h("h2", { id: "rep-history-title" }, T("records.history")), history)));

  let rights = { write: false };
  const say = (...content) => { replace(done, ...content); done.hidden = false; };

  async function load() {
    let r;
    try {
      r = await rec.report(reportId);
    } catch (err) {
      replace(body, h("section", { class: "card" },
        h("h1", { tabindex: "-1" }, T("records.unavailable")), h("p", { role: "alert" }, describeRecordsError(err))));
      replace(history);
      return false;
    }
    render(r);
    await loadHistory();
    return true;
  }

  function render(r) {
    const mine = r.author_id === ctx.me;
    const draft = r.status === "draft";
    const head = h("div", { class: "card rep" },
      h("h1", { tabindex: "-1" }, r.title),
      h("p", { class: "rep-meta" }, statusBadge(r.status), " ", T(`records.kind_${r.kind}`), " · ",
        T("records.version_n", { n: r.version }), " · ", T("records.by"), " ", nameOf(ctx.names, r.author_id)),
      r.signed_by && !draft
        ? h("p", { class: "rep-signed" }, T("records.signed_by"), " ", nameOf(ctx.names, r.signed_by), " ",
          T("records.on"), " ", time(ms(r.signed_us), true))
        : null,
      r.cites ? h("p", { class: "hint" }, T("records.amends", { n: r.cites })) : null,
      draft && !mine ? h("p", { class: "notice" }, T("records.draft_of_other")) : null,
      h("div", { class: "rep-text", dataset: { version: String(r.version) } }, r.text || ""));
    const actions = h("div", { class: "actions" });
    head.append(actions);
    const slot = h("div");
    if (draft && mine) {
      replace(slot, editor(r, { amend: false }));
      if (r.final_version === null) {
        actions.append(h("button", {
          type: "button", class: "small danger",
          onclick: async () => {
            if (!confirm(t("records.confirm_delete_draft"))) return;
            try {
              await rec.deleteReport(reportId);
              location.hash = recordHref(patientId);
            } catch (err) {
              box.show(...describeRecordsError(err));
            }
          },
        }, T("records.delete_draft")));
      }
    } else if (!draft && rights.write && r.version === r.latest_version) {
      actions.append(h("button", {
        type: "button", class: "small",
        onclick: () => { replace(slot, editor(r, { amend: true })); slot.querySelector("textarea").focus(); },
      }, T("records.amend")));
    }
    replace(body, head, slot);
  }

  /** The editing form of a draft (save, sign) or of an amendment (save it as a draft). */
  function editor(r, { amend }) {
    const ebox = alertBox();
    const title = field(T("records.report_title"), { required: true, maxlength: 200, value: r.title, autocomplete: "off" });
    const text = field(T("records.report_text"), { tag: "textarea", rows: 10, maxlength: 60000 });
    text.input.value = r.text || "";
    const save = h("button", { type: "submit", class: amend ? "primary" : "" }, T(amend ? "records.save_amendment" : "records.save"));
    const sign = amend ? null : h("button", { type: "button", class: "primary" }, T("records.sign"));
    const form = h("form", { class: "card rep-editor", "aria-labelledby": "rep-edit-title" },
      h("h2", { id: "rep-edit-title" }, T(amend ? "records.amend_title" : "records.edit_title")),
      h("p", { class: "hint" }, T(amend ? "records.amend_hint" : "records.sign_hint")),
      ebox.el, title.wrap, text.wrap, h("div", { class: "actions" }, save, sign,
        amend ? h("button", { type: "button", class: "link", onclick: () => render(r) }, T("admin.cancel")) : null));
    const changed = () => title.input.value.trim() !== r.title || text.input.value !== (r.text || "");

    async function run(fn, okKey) {
      ebox.clear();
      box.clear();
      save.disabled = true;
      if (sign) sign.disabled = true;
      try {
        await fn();
        say(T(okKey));
        await load();
      } catch (err) {
        if (err.code === "conflict") {
          // someone (another tab) changed it meanwhile: show the current version
          await load();
        }
        box.show(...describeRecordsError(err));
      } finally {
        save.disabled = false;
        if (sign) sign.disabled = false;
      }
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (amend) {
        const b = { version: r.version, text: text.input.value };
        if (title.input.value.trim() !== r.title) b.title = title.input.value.trim();
        run(() => rec.amendReport(reportId, b), "records.amended");
      } else {
        run(() => rec.editReport(reportId, { version: r.version, title: title.input.value.trim(), text: text.input.value }), "records.saved");
      }
    });
    if (sign) {
      sign.addEventListener("click", () => {
        if (!form.reportValidity()) return;
        if (!confirm(t("records.confirm_sign"))) return;
        run(async () => {
          let version = r.version;
          if (changed()) {
            const saved = await rec.editReport(reportId, { version, title: title.input.value.trim(), text: text.input.value });
            version = saved.version;
          }
          await rec.signReport(reportId, version);
        }, "records.signed");
      });
    }
    return form;
  }

  async function loadHistory() {
    let data;
    try {
      data = await rec.reportVersions(reportId);
    } catch (err) {
      replace(history, h("p", { role: "alert" }, describeRecordsError(err)));
      return;
    }
    const versions = [...data.versions].reverse();
    replace(history, h("table", { class: "rec-table rep-history" },
      h("caption", { class: "visually-hidden" }, T("records.history")),
      h("thead", {}, h("tr", {}, ["records.version", "records.change", "records.state", "records.who", "records.when"]
        .map((k) => h("th", { scope: "col" }, T(k))))),
      h("tbody", {}, versions.map((v) => h("tr", { dataset: { version: String(v.version) } },
        h("th", { scope: "row" }, String(v.version)),
        h("td", {}, T(`records.action_${v.action}`),
          v.cites ? [" ", h("span", { class: "role" }, T("records.amends", { n: v.cites }))] : null,
          h("details", {}, h("summary", {}, v.title), h("div", { class: "rep-text" }, v.text))),
        h("td", {}, statusBadge(v.status)),
        h("td", {}, v.changed_by ? nameOf(ctx.names, v.changed_by) : T("records.system")),
        h("td", {}, time(ms(v.changed_us), true)))))));
  }

  (async () => {
    rights = await rightsOn(ctx, patientId);
    await load();
    const h1 = main.querySelector("h1");
    if (h1) h1.focus();
  })();
}
