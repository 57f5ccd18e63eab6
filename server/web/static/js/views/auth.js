// Sign-in (password, then TOTP or a recovery code), enrolment from an
// invitation link, and the password change a password_expired session needs.

import * as api from "../api.js";
import { alertBox, field, h, replace, T } from "../dom.js";
import { describeApiError, retryCountdown } from "./errors.js";

function submitButton(label) {
  return h("button", { type: "submit", class: "primary" }, label);
}

function busy(form, on) {
  for (const el of form.querySelectorAll("button, input, select, textarea")) el.disabled = on;
  form.setAttribute("aria-busy", on ? "true" : "false");
}

/** Run `fn` for a form submit: errors shown in `box`, 429 counted down on the button. */
async function guarded(form, box, fn) {
  box.clear();
  busy(form, true);
  try {
    await fn();
  } catch (err) {
    box.show(...describeApiError(err));
    if (err.code === "rate_limited" || (err.code === "unavailable" && err.retryAfterS)) {
      await retryCountdown(box, err.retryAfterS || 5);
    }
  } finally {
    if (form.isConnected) busy(form, false);
  }
}

const CODE_ATTRS = {
  inputmode: "numeric",
  autocomplete: "one-time-code",
  pattern: "[0-9]{6}",
  maxlength: "6",
  required: true,
};

// -- sign-in ------------------------------------------------------------------------
export function signinView(main, { onSignedIn, notice = null }) {
  const box = alertBox();
  const info = notice ? h("div", { class: "notice", role: "status" }, notice) : null;
  const email = field(T("signin.email"), { type: "email", autocomplete: "username", required: true, name: "email" });
  const password = field(T("signin.password"), { type: "password", autocomplete: "current-password", required: true });
  const step1 = h("form", { class: "card narrow", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", tabindex: "-1" }, T("signin.title")),
    info, box.el, email.wrap, password.wrap, submitButton(T("signin.next")));

  step1.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(step1, box, async () => {
      const step = await api.login(email.input.value.trim(), password.input.value);
      password.input.value = "";
      if (step.next === "enrol") {
        // an administrator reset this account's MFA: set up the app again
        replace(main, totpStep(main, step, onSignedIn));
        main.querySelector("h1").focus();
        return;
      }
      replace(main, mfaStep(step.challenge));
      main.querySelector("input").focus();
    });
  });

  function mfaStep(challenge) {
    const box2 = alertBox();
    let useRecovery = false;
    const code = field(T("signin.code"), { ...CODE_ATTRS }, T("signin.code_hint"));
    const recovery = field(T("signin.recovery"), { autocomplete: "off", spellcheck: "false" }, T("signin.recovery_hint"));
    recovery.wrap.hidden = true;
    const toggle = h("button", { type: "button", class: "link" }, T("signin.use_recovery"));
    const form = h("form", { class: "card narrow", "aria-labelledby": "mfa-title" },
      h("h1", { id: "mfa-title", tabindex: "-1" }, T("signin.mfa_title")),
      box2.el, code.wrap, recovery.wrap, submitButton(T("signin.submit")), toggle,
      h("button", { type: "button", class: "link", onclick: () => replace(main, step1) }, T("signin.restart")));
    toggle.addEventListener("click", () => {
      useRecovery = !useRecovery;
      code.wrap.hidden = useRecovery;
      code.input.required = !useRecovery;
      recovery.wrap.hidden = !useRecovery;
      recovery.input.required = useRecovery;
      replace(toggle, T(useRecovery ? "signin.use_code" : "signin.use_recovery"));
      (useRecovery ? recovery.input : code.input).focus();
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      guarded(form, box2, async () => {
        try {
          const session = useRecovery
            ? await api.loginMfa(challenge, { recoveryCode: recovery.input.value.trim() })
            : await api.loginMfa(challenge, { code: code.input.value.trim() });
          await onSignedIn(session);
        } catch (err) {
          if (err.code === "challenge_invalid") {
            replace(main, step1);
            box.show(...describeApiError(err));
            return;
          }
          code.input.value = "";
          throw err;
        }
      });
    });
    return form;
  }

  replace(main, step1);
  return step1;
}

// -- enrolment ------------------------------------------------------------------------
/** Set up TOTP: QR code, manual key, first code (retried until right); then the recovery codes. */
function totpStep(main, enrolment, onEnrolled) {
  const box2 = alertBox();
  const code = field(T("enrol.code"), { ...CODE_ATTRS }, T("enrol.code_hint"));
  const secret = secretOf(enrolment.otpauth_uri);
  const step = h("form", { class: "card narrow", "aria-labelledby": "totp-title" },
    h("h1", { id: "totp-title", tabindex: "-1" }, T("enrol.totp_title")),
    h("p", {}, T("enrol.totp_intro")),
    qrImage(enrolment.qr_svg),
    h("details", {}, h("summary", {}, T("enrol.manual")),
      h("p", {}, T("enrol.manual_intro")), h("code", { class: "secret" }, secret.replace(/(.{4})/g, "$1 ").trim())),
    box2.el, code.wrap, submitButton(T("enrol.confirm")));
  step.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(step, box2, async () => {
      try {
        const session = await api.confirmEnrolment(enrolment.challenge, code.input.value.trim());
        replace(main, recoveryStep(session, onEnrolled));
        main.querySelector("h1").focus();
      } catch (err) {
        code.input.value = "";
        if (err.code === "mfa_failed") code.input.focus();
        throw err;
      }
    });
  });
  return step;
}

function recoveryStep(session, onEnrolled) {
  const codes = session.recovery_codes || [];
  const saved = h("input", { type: "checkbox", id: "codes-saved" });
  const go = h("button", { type: "button", class: "primary", disabled: true }, T("enrol.continue"));
  saved.addEventListener("change", () => { go.disabled = !saved.checked; });
  go.addEventListener("click", () => onEnrolled(session));
  return h("section", { class: "card narrow", "aria-labelledby": "codes-title" },
    h("h1", { id: "codes-title", tabindex: "-1" }, T("enrol.codes_title")),
    h("p", {}, T("enrol.codes_intro")),
    h("ol", { class: "codes", "aria-label": T("enrol.codes_title") }, codes.map((c) => h("li", {}, h("code", {}, c)))),
    h("div", { class: "check" }, saved, h("label", { for: "codes-saved" }, T("enrol.codes_saved"))),
    go);
}

function qrImage(svg) {
  // An SVG in an <img> never runs script; a blob: URL keeps the CSP strict (no data:, no inline).
  const url = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
  const img = h("img", { class: "qr", src: url, alt: T("enrol.qr_alt"), width: "220", height: "220" });
  img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
  return img;
}

function secretOf(uri) {
  try {
    return new URL(uri).searchParams.get("secret") || "";
  } catch {
    return "";
  }
}

export function enrolView(main, token, { onEnrolled }) {
  history.replaceState(null, "", "#/enrol"); // the token leaves the address bar and the history
  const box = alertBox();
  const pw = field(T("enrol.password"), { type: "password", autocomplete: "new-password", required: true }, T("password.rules"));
  const pw2 = field(T("enrol.password_again"), { type: "password", autocomplete: "new-password", required: true });
  const form = h("form", { class: "card narrow", "aria-labelledby": "enrol-title" },
    h("h1", { id: "enrol-title", tabindex: "-1" }, T("enrol.title")),
    h("p", {}, T("enrol.intro")), box.el, pw.wrap, pw2.wrap, submitButton(T("enrol.next")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (pw.input.value !== pw2.input.value) {
      box.show(T("password.mismatch"));
      pw2.input.focus();
      return;
    }
    guarded(form, box, async () => {
      const enrolment = await api.acceptInvitation(token, pw.input.value);
      replace(main, totpStep(main, enrolment, onEnrolled));
      main.querySelector("h1").focus();
    });
  });

  replace(main, form);
  return form;
}

// -- password expired ----------------------------------------------------------------
export function passwordView(main, { onChanged }) {
  const box = alertBox();
  const pw = field(T("password.new"), { type: "password", autocomplete: "new-password", required: true }, T("password.rules"));
  const pw2 = field(T("password.again"), { type: "password", autocomplete: "new-password", required: true });
  const current = field(T("password.current"), { type: "password", autocomplete: "current-password" });
  const code = field(T("signin.code"), { ...CODE_ATTRS, required: false });
  const reauthPart = h("fieldset", { hidden: true }, h("legend", {}, T("password.reauth")), current.wrap, code.wrap);
  const form = h("form", { class: "card narrow", "aria-labelledby": "pw-title" },
    h("h1", { id: "pw-title", tabindex: "-1" }, T("password.title")),
    h("p", {}, T("password.expired_intro")), box.el, pw.wrap, pw2.wrap, reauthPart,
    submitButton(T("password.submit")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (pw.input.value !== pw2.input.value) {
      box.show(T("password.mismatch"));
      return;
    }
    guarded(form, box, async () => {
      if (!reauthPart.hidden) await api.reauth(current.input.value, code.input.value.trim());
      try {
        await api.changePassword(pw.input.value);
      } catch (err) {
        if (err.code === "reauth_required") {
          reauthPart.hidden = false;
          current.input.required = true;
          code.input.required = true;
          current.input.focus();
        }
        throw err;
      }
      await onChanged();
    });
  });
  replace(main, form);
  return form;
}
