// A patient's medical record (docs/records.md, docs/web.md "Medical records"):
// routes #/records/<patient>, #/records/<patient>/d/<document>, #/records/<patient>/r/<report>.
//
// The record page lists the documents and reports the caller may see (GET
// /records/patients/<id>, newest first; a null title means "index only": no
// link, no download), and offers what the caller may do: upload a document
// (create it, then PUT its raw bytes; the server tells the type by its first
// bytes), start a report (practitioners caring for the patient), "export my
// data" (the patient).

import { alertBox, field, h, replace, T, time } from "../dom.js";
import { nameOf } from "../state.js";
import { documentView } from "./record_document.js";
import { reportView } from "./record_report.js";
import {
  documentHref, ID, mediaLabel, ms, rec, recordHref, reportHref, rightsOn, sizeLabel,
  describeRecordsError, statusBadge,
} from "./records_common.js";

const ROUTE = new RegExp(`^#/records/(${ID})(?:/(d|r)/(${ID}))?$`);

/** Show the records screen of `hash`; false when `hash` is not a records route. */
export function recordsRoute(main, ctx, hash) {
  const m = hash.match(ROUTE);
  if (!m) return false;
  const [, patientId, kind, id] = m;
  if (kind === "d") documentView(main, ctx, patientId, id);
  else if (kind === "r") reportView(main, ctx, patientId, id);
  else recordView(main, ctx, patientId);
  return true;
}

/** "Medical record of <name>" or "My medical record", as heading content. */
export function recordTitle(ctx, patientId) {
  if (ctx.role === "patient" && ctx.me === patientId) return [T("records.my_record")];
  return [T("records.record_of"), " ", nameOf(ctx.names, patientId)];
}

/** The page of one patient's record. */
export function recordView(main, ctx, patientId) {
  const box = alertBox();
  const done = h("p", { class: "alert ok", role: "status", hidden: true });
  const docs = h("div", { class: "table-wrap" }, h("p", { class: "empty" }, T("chat.loading")));
  const reports = h("div", { class: "table-wrap" }, h("p", { class: "empty" }, T("chat.loading")));
  const tools = h("div", { class: "grid" });
  const head = h("div", { class: "rec-head" }, h("h1", { tabindex: "-1" }, recordTitle(ctx, patientId)));
  replace(main, h("div", { class: "records" }, head, box.el, done,
    h("section", { class: "card", "aria-labelledby": "rec-docs-title" },
      h("h2", { id: "rec-docs-title" }, T("records.documents")), docs),
    h("section", { class: "card", "aria-labelledby": "rec-reports-title" },
      h("h2", { id: "rec-reports-title" }, T("records.reports")), reports),
    tools));

  const say = (...content) => { replace(done, ...content); done.hidden = false; };

  async function load() {
    let index;
    try {
      index = await rec.index(patientId);
    } catch (err) {
      replace(docs);
      replace(reports);
      box.show(...describeRecordsError(err));
      return;
    }
    renderDocuments(index.documents || []);
    renderReports(index.reports || []);
  }

  function renderDocuments(list) {
    if (!list.length) {
      replace(docs, h("p", { class: "empty" }, T("records.no_documents")));
      return;
    }
    replace(docs, h("table", { class: "rec-table" },
      h("caption", { class: "visually-hidden" }, T("records.documents")),
      h("thead", {}, h("tr", {}, ["records.title", "records.type", "records.size", "records.updated"]
        .map((k) => h("th", { scope: "col" }, T(k))),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, T("records.actions"))))),
      h("tbody", {}, list.map((d) => {
        const readable = d.title !== null;
        return h("tr", { dataset: { document: d.id } },
          h("th", { scope: "row" }, readable
            ? h("a", { href: documentHref(patientId, d.id) }, d.title)
            : h("span", { class: "hidden-title" }, T("records.title_hidden"))),
          h("td", {}, mediaLabel(d.media_type), d.archived ? [" ", h("span", { class: "role" }, T("records.archived"))] : null),
          h("td", {}, sizeLabel(d.size)),
          h("td", {}, time(ms(d.updated_us), true)),
          h("td", {}, readable && d.media_type
            ? h("a", { href: rec.contentUrl(d.id), download: "", class: "button small" }, T("records.download"))
            : null));
      }))));
  }

  function renderReports(list) {
    if (!list.length) {
      replace(reports, h("p", { class: "empty" }, T("records.no_reports")));
      return;
    }
    replace(reports, h("table", { class: "rec-table" },
      h("caption", { class: "visually-hidden" }, T("records.reports")),
      h("thead", {}, h("tr", {}, ["records.title", "records.kind", "records.state", "records.author", "records.updated"]
        .map((k) => h("th", { scope: "col" }, T(k))))),
      h("tbody", {}, list.map((r) => h("tr", { dataset: { report: r.id } },
        h("th", { scope: "row" }, r.title !== null
          ? h("a", { href: reportHref(patientId, r.id) }, r.title)
          : h("span", { class: "hidden-title" }, T("records.title_hidden"))),
        h("td", {}, T(`records.kind_${r.kind}`)),
        h("td", {}, statusBadge(r.status)),
        h("td", {}, nameOf(ctx.names, r.author_id)),
        h("td", {}, time(ms(r.updated_us), true)))))));
  }

  // -- upload a document (writers) --
  function uploadForm() {
    const ubox = alertBox();
    const title = field(T("records.doc_title"), { required: true, maxlength: 200, autocomplete: "off" });
    const file = field(T("records.file"), { type: "file", required: true }, T("records.file_hint"));
    const busy = h("p", { class: "hint", role: "status" });
    const submit = h("button", { type: "submit", class: "primary" }, T("records.upload"));
    const form = h("form", { class: "card", "aria-labelledby": "rec-upload-title" },
      h("h2", { id: "rec-upload-title" }, T("records.upload_title")), ubox.el, title.wrap, file.wrap, submit, busy);
    file.input.addEventListener("change", () => {
      const f = file.input.files[0];
      if (f && !title.input.value.trim()) title.input.value = f.name.replace(/\.[A-Za-z0-9]{1,5}$/, "").slice(0, 200);
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      ubox.clear();
      const f = file.input.files[0];
      if (!f) return;
      submit.disabled = true;
      replace(busy, T("records.uploading"));
      let doc = null;
      try {
        doc = await rec.createDocument({ patient_id: patientId, title: title.input.value.trim(), filename: f.name.slice(0, 255) });
        await rec.upload(doc.id, f);
        say(T("records.uploaded"), " ", h("strong", {}, title.input.value.trim()));
        form.reset();
        await load();
      } catch (err) {
        // a document whose content was refused is removed (a tombstone), not left empty
        if (doc) await rec.deleteDocument(doc.id).catch(() => {});
        ubox.show(...describeRecordsError(err));
      } finally {
        submit.disabled = false;
        replace(busy);
      }
    });
    return form;
  }

  // -- start a report (writers) --
  function reportForm() {
    const rbox = alertBox();
    const title = field(T("records.report_title"), { required: true, maxlength: 200, autocomplete: "off" });
    const text = field(T("records.report_text"), { tag: "textarea", rows: 6, maxlength: 60000 });
    const form = h("form", { class: "card", "aria-labelledby": "rec-new-report-title" },
      h("h2", { id: "rec-new-report-title" }, T("records.new_report")), rbox.el, title.wrap, text.wrap,
      h("button", { type: "submit", class: "primary" }, T("records.save_draft")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      rbox.clear();
      try {
        const r = await rec.createReport({
          patient_id: patientId, kind: "consultation_note", title: title.input.value.trim(), text: text.input.value,
        });
        location.hash = reportHref(patientId, r.id);
      } catch (err) {
        rbox.show(...describeRecordsError(err));
      }
    });
    return form;
  }

  (async () => {
    const rights = await rightsOn(ctx, patientId);
    if (rights.self) {
      head.append(h("p", {}, h("a", { href: rec.exportUrl(), download: "", class: "button" }, T("records.export")),
        " ", h("span", { class: "hint" }, T("records.export_hint"))));
    }
    if (rights.write) replace(tools, uploadForm(), reportForm());
    await load();
  })();
}

export { recordHref };
