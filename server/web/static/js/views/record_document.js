// One document (#/records/<patient>/d/<document>): its metadata, downloads of its
// current and older contents, its version history, and (writers) a new version.

import { alertBox, field, h, replace, T, time } from "../dom.js";
import { nameOf } from "../state.js";
import { describeRecordsError, mediaLabel, ms, rec, recordHref, rightsOn, sizeLabel } from "./records_common.js";

export function documentView(main, ctx, patientId, documentId) {
  const box = alertBox();
  const done = h("p", { class: "alert ok", role: "status", hidden: true });
  const body = h("div", {}, h("p", { class: "empty" }, T("chat.loading")));
  const history = h("div", { class: "table-wrap" });
  const tools = h("div");
  replace(main, h("div", { class: "records document" },
    h("a", { class: "back", href: recordHref(patientId) }, T("records.back")), box.el, done, body, tools,
    h("section", { class: "card", "aria-labelledby": "doc-history-title" },
      h("h2", { id: "doc-history-title" }, T("records.history")), history)));

  async function load() {
    let d;
    try {
      d = await rec.document(documentId);
    } catch (err) {
      replace(body, h("section", { class: "card" },
        h("h1", { tabindex: "-1" }, T("records.unavailable")), h("p", { role: "alert" }, describeRecordsError(err))));
      replace(history);
      replace(tools);
      return false;
    }
    const readable = d.title !== null;
    replace(body, h("section", { class: "card" },
      h("h1", { tabindex: "-1" }, readable ? d.title : T("records.title_hidden")),
      h("dl", { class: "rec-meta" },
        readable && d.filename ? [h("dt", {}, T("records.filename")), h("dd", {}, d.filename)] : null,
        readable && d.description ? [h("dt", {}, T("records.description")), h("dd", {}, d.description)] : null,
        h("dt", {}, T("records.type")), h("dd", {}, mediaLabel(d.media_type),
          d.archived ? [" ", h("span", { class: "role" }, T("records.archived"))] : null),
        d.size !== null ? [h("dt", {}, T("records.size")), h("dd", {}, sizeLabel(d.size))] : null,
        h("dt", {}, T("records.version")), h("dd", {}, String(d.version)),
        h("dt", {}, T("records.updated")), h("dd", {}, time(ms(d.updated_us), true))),
      readable && d.media_type
        ? h("a", { href: rec.contentUrl(d.id), download: "", class: "button primary" }, T("records.download"))
        : null));
    if (readable) await loadHistory();
    else replace(history, h("p", { class: "empty" }, T("records.history_hidden")));
    return readable;
  }

  async function loadHistory() {
    let data;
    try {
      data = await rec.documentVersions(documentId);
    } catch (err) {
      replace(history, h("p", { role: "alert" }, describeRecordsError(err)));
      return;
    }
    const versions = [...data.versions].reverse();
    replace(history, h("table", { class: "rec-table doc-history" },
      h("caption", { class: "visually-hidden" }, T("records.history")),
      h("thead", {}, h("tr", {}, ["records.version", "records.change", "records.who", "records.when"]
        .map((k) => h("th", { scope: "col" }, T(k))),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, T("records.actions"))))),
      h("tbody", {}, versions.map((v) => h("tr", { dataset: { version: String(v.version) } },
        h("th", { scope: "row" }, String(v.version)),
        h("td", {}, T(`records.action_${v.action}`),
          v.media_type ? [" ", h("span", { class: "role" }, mediaLabel(v.media_type), ", ", sizeLabel(v.size))] : null),
        h("td", {}, v.changed_by ? nameOf(ctx.names, v.changed_by) : T("records.system")),
        h("td", {}, time(ms(v.changed_us), true)),
        h("td", {}, v.action === "content" && v.media_type
          ? h("a", { href: rec.contentUrl(documentId, v.version), download: "", class: "button small" },
            T("records.download_version", { n: v.version }))
          : null))))));
  }

  function newVersionForm() {
    const ubox = alertBox();
    const file = field(T("records.file"), { type: "file", required: true }, T("records.file_hint"));
    const submit = h("button", { type: "submit", class: "primary" }, T("records.upload"));
    const form = h("form", { class: "card", "aria-labelledby": "doc-upload-title" },
      h("h2", { id: "doc-upload-title" }, T("records.new_version")), ubox.el, file.wrap, submit);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      ubox.clear();
      const f = file.input.files[0];
      if (!f) return;
      submit.disabled = true;
      try {
        await rec.upload(documentId, f);
        replace(done, T("records.uploaded"));
        done.hidden = false;
        form.reset();
        await load();
      } catch (err) {
        ubox.show(...describeRecordsError(err));
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  (async () => {
    const [rights, readable] = await Promise.all([rightsOn(ctx, patientId), load()]);
    if (rights.write && readable) replace(tools, newVersionForm());
    const h1 = main.querySelector("h1");
    if (h1) h1.focus();
  })();
}
