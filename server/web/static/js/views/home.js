// The home of each role, and "my sessions".

import * as api from "../api.js";
import { alertBox, field, h, replace, T, time } from "../dom.js";
import { nameOf, presenceOf } from "../state.js";
import { conversationList } from "./chat.js";
import { describeApiError } from "./errors.js";
import { recordLink } from "./records_common.js";
import { EEG_ROLES, eegExamsCard } from "./eeg_exams.js";

const STAFF = new Set(["secretary", "practitioner", "technician", "interpreter", "admin"]);

/** Contacts (from presence) with their name and state, filtered by role when names are known;
 *  `records`: a link to each patient's medical record. */
function peopleList(ctx, { roles = null, empty, records = false }) {
  const ul = h("ul", { class: "people" });
  const render = () => {
    if (ul.dataset.rendered && !ul.isConnected) {
      ctx.presence.removeEventListener("change", render);
      ctx.names.removeEventListener("change", render);
      return;
    }
    ul.dataset.rendered = "1";
    const users = ctx.presence.users().filter((u) => u !== ctx.me);
    ctx.names.want(users);
    const shown = users.filter((u) => !roles || !ctx.names.role(u) || roles.has(ctx.names.role(u)));
    if (!shown.length) {
      replace(ul, h("li", { class: "empty" }, T(empty)));
      return;
    }
    const same = (u, i) => ul.children[i].dataset.user === u && ul.children[i].dataset.role === (ctx.names.role(u) || "");
    if (ul.children.length === shown.length && shown.every(same)) return;
    replace(ul, shown.map((u) => h("li", { dataset: { user: u, role: ctx.names.role(u) || "" } },
      nameOf(ctx.names, u),
      ctx.names.role(u) ? h("span", { class: "role" }, T(`role.${ctx.names.role(u)}`)) : null,
      records && ctx.names.role(u) === "patient" ? recordLink(u, "records.open_record", { class: "rec-link" }) : null,
      presenceOf(ctx.presence, u))));
  };
  ctx.presence.addEventListener("change", render);
  ctx.names.addEventListener("change", render);
  render();
  return ul;
}

function consultationForm(ctx) {
  const box = alertBox();
  const ref = field(T("home.consultation_ref"), { required: true, autocomplete: "off", pattern: "[A-Za-z0-9][A-Za-z0-9._:-]{0,63}" }, T("home.consultation_ref_hint"));
  const form = h("form", { class: "inline-form" }, box.el, ref.wrap, h("button", { type: "submit" }, T("home.open_consultation")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    box.clear();
    try {
      const conv = await ctx.chat.create({ kind: "consultation", consultation: ref.input.value.trim() });
      location.hash = `#/c/${conv}`;
    } catch (err) {
      box.show(...describeApiError(err));
    }
  });
  return form;
}

function colleagueForm(ctx) {
  const box = alertBox();
  const select = h("select", { id: "colleague", required: true });
  const fill = () => {
    if (select.dataset.rendered && !select.isConnected) {
      ctx.presence.removeEventListener("change", fill);
      ctx.names.removeEventListener("change", fill);
      return;
    }
    select.dataset.rendered = "1";
    const staff = ctx.presence.users().filter((u) => u !== ctx.me && STAFF.has(ctx.names.role(u)));
    const current = select.value;
    replace(select, h("option", { value: "" }, T("home.choose")), staff.map((u) => h("option", { value: u }, ctx.names.label(u))));
    select.value = current;
  };
  ctx.presence.addEventListener("change", fill);
  ctx.names.addEventListener("change", fill);
  fill();
  const form = h("form", { class: "inline-form" }, box.el,
    h("div", { class: "field" }, h("label", { for: "colleague" }, T("home.colleague")), select),
    h("button", { type: "submit" }, T("home.message_colleague")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    box.clear();
    try {
      const conv = await ctx.chat.create({ kind: "direct", members: [select.value] });
      location.hash = `#/c/${conv}`;
    } catch (err) {
      box.show(...describeApiError(err));
    }
  });
  return form;
}

function delegationsSection(ctx) {
  const list = h("ul", { class: "people" }, h("li", { class: "empty" }, T("chat.loading")));
  const section = h("section", { class: "card", "aria-labelledby": "deleg-title" },
    h("h2", { id: "deleg-title" }, T(ctx.role === "secretary" ? "home.acting_for" : "home.delegations")), list);
  api.myDelegations().then((data) => {
    const items = (data.delegations || []).filter((d) => (ctx.role === "secretary" ? d.delegate_id === ctx.me : d.practitioner_id === ctx.me));
    if (!items.length) {
      replace(list, h("li", { class: "empty" }, T("home.no_delegations")));
      return;
    }
    replace(list, items.map((d) => {
      const other = ctx.role === "secretary" ? d.practitioner_id : d.delegate_id;
      const li = h("li", {}, nameOf(ctx.names, other), " ",
        h("span", { class: "scopes" }, d.scopes.map((s, i) => [i ? ", " : "", T(`scope.${s}`)])),
        ctx.role === "secretary" ? presenceOf(ctx.presence, other) : null);
      if (ctx.role !== "secretary") {
        li.append(h("button", {
          type: "button", class: "small danger",
          onclick: async () => {
            try { await api.revokeDelegation(d.id); li.remove(); } catch (err) { section.append(h("p", { role: "alert" }, describeApiError(err))); }
          },
        }, T("home.revoke")));
      }
      return li;
    }));
  }, (err) => replace(list, h("li", { role: "alert" }, describeApiError(err))));
  return section;
}

export function homeView(main, ctx) {
  const role = ctx.role;
  if (ctx.hub.online) ctx.hub.subscribePresence([], true).catch(() => {}); // fresh contacts
  const greet = h("h1", { tabindex: "-1" }, T("home.hello"), " ", nameOf(ctx.names, ctx.me));
  const rows = [greet];
  if (role === "patient") {
    rows.push(
      h("section", { class: "card", "aria-labelledby": "team-title" },
        h("h2", { id: "team-title" }, T("home.care_team")), peopleList(ctx, { empty: "home.no_team" })),
      h("section", { class: "card", "aria-labelledby": "consult-title" },
        h("h2", { id: "consult-title" }, T("home.consultations")),
        conversationList(ctx, { filter: (c) => c.kind === "consultation", empty: "home.no_consultations" }),
        h("p", {}, h("a", { href: "#/check", class: "check-link" }, T("home.check_devices"))),
        consultationForm(ctx)),
      h("section", { class: "card", "aria-labelledby": "my-record-title" },
        h("h2", { id: "my-record-title" }, T("records.my_record")),
        h("p", {}, T("records.my_record_intro")), recordLink(ctx.me, "records.open_my_record", { class: "button" })),
    );
  } else {
    if (role === "practitioner") {
      rows.push(h("section", { class: "card", "aria-labelledby": "patients-title" },
        h("h2", { id: "patients-title" }, T("home.patients")),
        peopleList(ctx, { roles: new Set(["patient"]), empty: "home.no_patients", records: true }),
        consultationForm(ctx)));
    }
    if (role === "secretary") {
      rows.push(h("section", { class: "card", "aria-labelledby": "patients-title" },
        h("h2", { id: "patients-title" }, T("home.patients_of")),
        peopleList(ctx, { roles: new Set(["patient"]), empty: "home.no_patients", records: true })));
    }
    if (role === "secretary" || role === "practitioner") rows.push(delegationsSection(ctx));
    if (EEG_ROLES.has(role)) rows.push(eegExamsCard(ctx));
    rows.push(
      h("section", { class: "card", "aria-labelledby": "convs-title" },
        h("h2", { id: "convs-title" }, T("home.conversations")), conversationList(ctx), colleagueForm(ctx)),
      h("section", { class: "card", "aria-labelledby": "colleagues-title" },
        h("h2", { id: "colleagues-title" }, T("home.colleagues")),
        peopleList(ctx, { roles: STAFF, empty: "home.no_colleagues" })),
    );
  }
  replace(main, h("div", { class: "home" }, rows));
}

// -- my sessions ---------------------------------------------------------------------
export function sessionsView(main) {
  const box = alertBox();
  const done = h("p", { class: "alert ok", role: "status", hidden: true });
  const table = h("table", { class: "sessions" });
  const othersBtn = h("button", { type: "button", class: "danger" }, T("sessions.revoke_others"));
  const section = h("section", { class: "card", "aria-labelledby": "sessions-title" },
    h("h1", { id: "sessions-title", tabindex: "-1" }, T("sessions.title")),
    h("p", {}, T("sessions.intro")), box.el, done, table, othersBtn);
  replace(main, section);

  async function load() {
    try {
      const data = await api.mySessions();
      replace(table,
        h("caption", { class: "visually-hidden" }, T("sessions.title")),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, T("sessions.device")),
          h("th", { scope: "col" }, T("sessions.started")),
          h("th", { scope: "col" }, T("sessions.last_seen")),
          h("th", { scope: "col" }, T("sessions.ends")),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, T("sessions.actions"))))),
        h("tbody", {}, data.sessions.map((s) => h("tr", { class: s.current ? "current" : "" },
          h("td", {}, s.current ? T("sessions.this_device") : T("sessions.other_device"), s.source ? ` (${s.source})` : ""),
          h("td", {}, time(s.created_at_us / 1000, true)),
          h("td", {}, time(s.last_seen_at_us / 1000, true)),
          h("td", {}, time(s.expires_at_us / 1000, true)),
          h("td", {}, s.current ? null : h("button", {
            type: "button", class: "small danger",
            onclick: async () => {
              try { await api.revokeSession(s.session_id); await load(); } catch (err) { box.show(...describeApiError(err)); }
            },
          }, T("sessions.revoke")))))));
      othersBtn.disabled = data.sessions.length < 2;
    } catch (err) {
      box.show(...describeApiError(err));
    }
  }

  othersBtn.addEventListener("click", async () => {
    box.clear();
    try {
      const { revoked } = await api.revokeOthers();
      replace(done, T("sessions.revoked", { n: revoked }));
      done.hidden = false;
      await load();
    } catch (err) {
      box.show(...describeApiError(err));
    }
  });
  load();
}
