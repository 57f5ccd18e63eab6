// The organisation's people, for its admins: invite, re-invite, disable,
// roles, care relationships and delegations, through the REST API the CLI uses.

import * as api from "../api.js";
import { alertBox, field, h, replace, T } from "../dom.js";
import { t } from "../i18n.js";
import { eraseButton } from "./erase.js";
import { describeApiError } from "./errors.js";

const ROLES = ["patient", "practitioner", "secretary", "technician", "interpreter", "admin"];
// Actions added to the API after the first release: shown only when the server lists them.
const OPTIONAL_ACTIONS = ["reinvite", "reset-mfa", "enable", "force-password-reset"];

function inviteLink(token) {
  return `${location.origin}/#/invite/${token}`;
}

function linkBox(token, who) {
  const url = inviteLink(token);
  const out = h("input", { type: "text", readonly: true, value: url, class: "link-out", "aria-label": T("admin.invite_link") });
  return h("div", { class: "notice", role: "status" },
    h("p", {}, T("admin.invite_ready"), " ", h("strong", {}, who)),
    out,
    h("button", {
      type: "button", class: "small",
      onclick: async () => {
        out.select();
        try { await navigator.clipboard.writeText(url); } catch { document.execCommand("copy"); }
      },
    }, T("admin.copy")),
    h("p", { class: "hint" }, T("admin.invite_hint")));
}

export function adminView(main, ctx) {
  const box = alertBox();
  const status = h("div", { class: "status-area", "aria-live": "polite" });
  const table = h("table", { class: "people-table" });
  const reauthSlot = h("div");
  const eraseSlot = h("div"); // erasing an account: the typed confirmation (erase.js)
  let people = [];
  let optional = [];
  let canErase = false; // the server serves POST /records/accounts/{user_id}/erase

  async function withReauth(fn) {
    try {
      return await fn();
    } catch (err) {
      if (err.code !== "reauth_required") throw err;
      await askReauth();
      return fn();
    }
  }

  function askReauth() {
    return new Promise((resolve, reject) => {
      const rbox = alertBox();
      const pw = field(T("password.current"), { type: "password", autocomplete: "current-password", required: true });
      const code = field(T("signin.code"), { inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", required: true });
      const form = h("form", { class: "card reauth" }, h("h2", {}, T("password.reauth")), rbox.el, pw.wrap, code.wrap,
        h("button", { type: "submit", class: "primary" }, T("admin.confirm")),
        h("button", { type: "button", class: "link", onclick: () => { reauthSlot.replaceChildren(); reject(new api.ApiError(403, "reauth_required")); } }, T("admin.cancel")));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        try {
          await api.reauth(pw.input.value, code.input.value.trim());
          reauthSlot.replaceChildren();
          resolve();
        } catch (err) {
          rbox.show(...describeApiError(err));
        }
      });
      replace(reauthSlot, form);
      pw.input.focus();
    });
  }

  async function act(label, fn) {
    box.clear();
    try {
      const out = await withReauth(fn);
      replace(status, h("p", { class: "ok" }, T("admin.done"), " ", label));
      const token = out && (out.invitation_token || out.invitation);
      if (token) status.append(linkBox(token, label));
      await load();
    } catch (err) {
      box.show(...describeApiError(err));
    }
  }

  function row(u) {
    if (u.id === ctx.me) {
      return h("tr", { dataset: { user: u.id } }, h("th", { scope: "row" }, u.name), h("td", {}, u.email),
        h("td", {}, T(`role.${u.role}`)), h("td", {}, h("span", { class: `status ${u.status}` }, T(`status.${u.status}`))),
        h("td", {}, T("person.you")));
    }
    const roleSel = h("select", { "aria-label": T("admin.role_of", { name: u.name }) },
      ROLES.map((r) => h("option", { value: r, selected: r === u.role }, T(`role.${r}`))));
    const actions = h("div", { class: "actions" },
      roleSel,
      h("button", { type: "button", class: "small", onclick: () => act(u.name, () => api.userAction(u.id, "role", { role: roleSel.value })) }, T("admin.set_role")),
      u.status !== "disabled"
        ? h("button", {
          type: "button", class: "small danger",
          onclick: () => { if (confirm(t("admin.confirm_disable", { name: u.name }))) act(u.name, () => api.userAction(u.id, "disable")); },
        }, T("admin.disable"))
        : null,
      // `locked` is the account's own lock (every address); a lock from one address (the
      // owner's typos, the usual case) is not listed, and Unlock lifts it too: always offered
      u.status !== "invited"
        ? h("button", { type: "button", class: "small", onclick: () => act(u.name, () => api.userAction(u.id, "unlock")) }, T("admin.unlock"))
        : null,
      optional.filter((a) => a !== "enable" || u.status === "disabled").map((a) =>
        h("button", { type: "button", class: "small", onclick: () => act(u.name, () => api.userAction(u.id, a)) }, T(`admin.action_${a}`))),
      canErase ? eraseButton(u, eraseSlot, load) : null);
    return h("tr", { dataset: { user: u.id } },
      h("th", { scope: "row" }, u.name),
      h("td", {}, u.email),
      h("td", {}, T(`role.${u.role}`)),
      h("td", {}, h("span", { class: `status ${u.status}` }, T(`status.${u.status}`)),
        u.locked ? [" ", h("span", { class: "status disabled" }, T("admin.locked"))] : null),
      h("td", {}, actions));
  }

  function options(select, role, placeholder) {
    const current = select.value;
    replace(select, h("option", { value: "" }, T(placeholder)),
      people.filter((u) => u.role === role && u.status !== "disabled").map((u) => h("option", { value: u.id }, u.name)));
    select.value = current;
  }

  // -- invite --
  const ibox = alertBox();
  const iname = field(T("admin.name"), { required: true, autocomplete: "off" });
  const iemail = field(T("admin.email"), { type: "email", required: true, autocomplete: "off" });
  const irole = h("select", { id: "invite-role", required: true }, ROLES.map((r) => h("option", { value: r }, T(`role.${r}`))));
  const iresult = h("div");
  const inviteForm = h("form", { class: "card", "aria-labelledby": "invite-title" },
    h("h2", { id: "invite-title" }, T("admin.invite")), ibox.el, iname.wrap, iemail.wrap,
    h("div", { class: "field" }, h("label", { for: "invite-role" }, T("admin.role")), irole),
    h("button", { type: "submit", class: "primary" }, T("admin.send_invite")), iresult);
  inviteForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    ibox.clear();
    try {
      const out = await api.invite(ctx.org, { name: iname.input.value.trim(), email: iemail.input.value.trim(), role: irole.value });
      replace(iresult, linkBox(out.invitation_token, iname.input.value.trim()));
      iname.input.value = "";
      iemail.input.value = "";
      await load();
    } catch (err) {
      ibox.show(...describeApiError(err));
    }
  });

  // -- care relationships --
  const cbox = alertBox();
  const ckind = h("select", { id: "care-kind" }, ["consultation", "follows"].map((k) => h("option", { value: k }, T(`care.${k}`))));
  const cprac = h("select", { id: "care-prac", required: true });
  const cpat = h("select", { id: "care-pat", required: true });
  const cref = field(T("home.consultation_ref"), { autocomplete: "off", pattern: "[A-Za-z0-9._:-]{1,64}" }, T("admin.ref_hint"));
  const careList = h("ul", { class: "people", "aria-label": T("admin.care_list") });
  const careForm = h("form", { class: "card", "aria-labelledby": "care-title" },
    h("h2", { id: "care-title" }, T("admin.care")), cbox.el,
    h("div", { class: "field" }, h("label", { for: "care-kind" }, T("admin.care_kind")), ckind),
    h("div", { class: "field" }, h("label", { for: "care-prac" }, T("role.practitioner")), cprac),
    h("div", { class: "field" }, h("label", { for: "care-pat" }, T("role.patient")), cpat),
    cref.wrap, h("button", { type: "submit", class: "primary" }, T("admin.record")), careList);
  careForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    cbox.clear();
    const body = { kind: ckind.value, actor_id: cprac.value, patient_id: cpat.value };
    if (cref.input.value.trim()) body.ref_id = cref.input.value.trim();
    try {
      await api.addCare(body);
      replace(status, h("p", { class: "ok" }, T("admin.care_done")));
      cref.input.value = "";
      await loadLinks();
    } catch (err) {
      cbox.show(...describeApiError(err));
    }
  });

  // -- delegations --
  const dbox = alertBox();
  const dprac = h("select", { id: "deleg-prac", required: true });
  const dsec = h("select", { id: "deleg-sec", required: true });
  const scopes = ["consultations", "contact", "records"].map((s) => {
    const id = `scope-${s}`;
    return { s, input: h("input", { type: "checkbox", id, checked: s === "consultations" }), label: h("label", { for: id }, T(`scope.${s}`)) };
  });
  const delegList = h("ul", { class: "people", "aria-label": T("admin.deleg_list") });
  const delegForm = h("form", { class: "card", "aria-labelledby": "deleg-admin-title" },
    h("h2", { id: "deleg-admin-title" }, T("admin.delegate")), dbox.el,
    h("div", { class: "field" }, h("label", { for: "deleg-prac" }, T("role.practitioner")), dprac),
    h("div", { class: "field" }, h("label", { for: "deleg-sec" }, T("role.secretary")), dsec),
    h("fieldset", {}, h("legend", {}, T("admin.scopes")), scopes.map((x) => h("div", { class: "check" }, x.input, x.label))),
    h("button", { type: "submit", class: "primary" }, T("admin.grant")), delegList);
  delegForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    dbox.clear();
    try {
      await api.grantDelegation({ practitioner_id: dprac.value, delegate_id: dsec.value, scopes: scopes.filter((x) => x.input.checked).map((x) => x.s) });
      replace(status, h("p", { class: "ok" }, T("admin.delegate_done")));
      await loadLinks();
    } catch (err) {
      dbox.show(...describeApiError(err));
    }
  });

  const nameIn = (id) => (people.find((u) => u.id === id) || { name: "…" }).name;

  /** Care relationships and delegations, when the server lists them (GET .../care-relationships, .../delegations). */
  async function loadLinks() {
    if (await api.supports("GET", "/orgs/{org_id}/care-relationships")) {
      try {
        const data = await api.api("GET", `/orgs/${ctx.org}/care-relationships`);
        replace(careList, data.relationships.map((r) => h("li", {},
          h("span", {}, T(`care.${r.kind}`)), nameIn(r.actor_id), " → ", nameIn(r.patient_id),
          r.ref_id ? h("code", {}, r.ref_id) : null,
          h("button", { type: "button", class: "small danger", onclick: () => act(nameIn(r.patient_id), async () => { await api.endCare(r.id); await loadLinks(); }) }, T("admin.end")))));
      } catch (err) {
        cbox.show(...describeApiError(err));
      }
    }
    if (await api.supports("GET", "/orgs/{org_id}/delegations")) {
      try {
        const data = await api.api("GET", `/orgs/${ctx.org}/delegations`);
        replace(delegList, data.delegations.map((d) => h("li", {},
          nameIn(d.practitioner_id), " → ", nameIn(d.delegate_id), " ",
          h("span", { class: "scopes" }, d.scopes.map((sc, i) => [i ? ", " : "", T(`scope.${sc}`)])),
          h("button", { type: "button", class: "small danger", onclick: () => act(nameIn(d.delegate_id), async () => { await api.revokeDelegation(d.id); await loadLinks(); }) }, T("home.revoke")))));
      } catch (err) {
        dbox.show(...describeApiError(err));
      }
    }
  }

  async function load() {
    try {
      const data = await api.users(ctx.org);
      people = data.users;
      ctx.names.learn(Object.fromEntries(people.map((u) => [u.id, { name: u.name, role: u.role, org: u.org_id }])));
      replace(table,
        h("caption", {}, T("admin.people")),
        h("thead", {}, h("tr", {},
          ["admin.name", "admin.email", "admin.role", "admin.status", "admin.actions"].map((k) => h("th", { scope: "col" }, T(k))))),
        h("tbody", {}, people.map(row)));
      options(cprac, "practitioner", "home.choose");
      options(cpat, "patient", "home.choose");
      options(dprac, "practitioner", "home.choose");
      options(dsec, "secretary", "home.choose");
    } catch (err) {
      box.show(...describeApiError(err));
    }
  }

  replace(main, h("div", { class: "admin" },
    h("h1", { tabindex: "-1" }, T("admin.title")), reauthSlot, eraseSlot, box.el, status,
    h("div", { class: "table-wrap" }, table),
    h("div", { class: "grid" }, inviteForm, careForm, delegForm)));

  (async () => {
    const found = await Promise.all(OPTIONAL_ACTIONS.map((a) => api.supports("POST", `/users/{user_id}/${a}`)));
    optional = OPTIONAL_ACTIONS.filter((_, i) => found[i]);
    canErase = await api.supports("POST", "/records/accounts/{user_id}/erase");
    await load();
    await loadLinks();
  })();
}
