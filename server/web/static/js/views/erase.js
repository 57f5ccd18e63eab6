// Erasing an account (a deletion request), for the organisation's admins:
// POST /records/accounts/<id>/erase pseudonymises the person (docs/records.md).
// It cannot be undone, so the admin confirms by typing the person's name.

import { alertBox, field, h, replace, T } from "../dom.js";
import { rec } from "./records_common.js";
import { describeApiError } from "./errors.js";

/**
 * An "Erase…" button for `user` ({id, name}); the confirmation opens in `slot`.
 * `onDone()` runs once the account is erased (reload the list).
 */
export function eraseButton(user, slot, onDone) {
  return h("button", {
    type: "button", class: "small danger",
    onclick: () => askErase(user, slot, onDone),
  }, T("erase.button"));
}

function askErase(user, slot, onDone) {
  const box = alertBox();
  const typed = field(T("erase.type_name", { name: user.name }), { autocomplete: "off", spellcheck: "false" });
  const go = h("button", { type: "submit", class: "danger", disabled: true }, T("erase.confirm"));
  const close = () => slot.replaceChildren();
  const form = h("form", { class: "card erase", "aria-labelledby": "erase-title" },
    h("h2", { id: "erase-title" }, T("erase.title", { name: user.name })),
    h("p", {}, T("erase.what")), h("p", { class: "notice" }, T("erase.cannot_undo")),
    box.el, typed.wrap,
    h("div", { class: "actions" }, go, h("button", { type: "button", class: "link", onclick: close }, T("admin.cancel"))));
  typed.input.addEventListener("input", () => { go.disabled = typed.input.value.trim() !== user.name; });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (typed.input.value.trim() !== user.name) return;
    box.clear();
    go.disabled = true;
    try {
      await rec.erase(user.id);
      replace(slot, h("p", { class: "alert ok", role: "status" }, T("erase.done", { name: user.name })));
      await onDone();
    } catch (err) {
      box.show(...(err.code === "conflict" ? [T("erase.already")] : describeApiError(err)));
      go.disabled = false;
    }
  });
  replace(slot, form);
  slot.scrollIntoView({ block: "nearest" });
  typed.input.focus();
}
