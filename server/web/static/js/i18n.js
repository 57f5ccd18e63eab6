// French and English: chosen from the browser, switchable, remembered (localStorage).
//
// Text put on the page with T(key) (see dom.js) is tagged with data-i18n, and
// attributes with data-i18n-attr, so setLang() translates the page in place
// without re-rendering it: what the person typed stays where it is.

import en from "./locales/en.js";
import fr from "./locales/fr.js";

export const DICTS = { en, fr };
export const LANGS = Object.keys(DICTS);
const STORE_KEY = "medhub.lang";

function pick() {
  let stored = null;
  try { stored = localStorage.getItem(STORE_KEY); } catch { /* storage disabled */ }
  if (stored && DICTS[stored]) return stored;
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const base = String(l).toLowerCase().split("-")[0];
    if (DICTS[base]) return base;
  }
  return "en";
}

export let lang = pick();

/** The text of `key` in the current language, with {name} placeholders filled. */
export function t(key, params = {}) {
  let text = DICTS[lang][key];
  if (text === undefined) text = DICTS.en[key];
  if (text === undefined) return key;
  if (typeof text === "object") {
    const n = Number(params.n ?? 0);
    text = text[new Intl.PluralRules(lang).select(n)] ?? text.other;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

export function has(key) {
  return key in DICTS.en;
}

/** A date and time in the current language (epoch milliseconds). */
export function formatTime(ms, withDate = false) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  const opts = today && !withDate
    ? { hour: "2-digit", minute: "2-digit" }
    : { dateStyle: "medium", timeStyle: "short" };
  return new Intl.DateTimeFormat(lang, opts).format(d);
}

/** Re-translate every tagged node under `root`. */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    const args = el.dataset.i18nArgs ? JSON.parse(el.dataset.i18nArgs) : {};
    el.textContent = t(el.dataset.i18n, args);
  }
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split("=");
      el.setAttribute(attr, t(key));
    }
  }
  for (const el of root.querySelectorAll("[data-time]")) {
    el.textContent = formatTime(Number(el.dataset.time), el.dataset.timeFull === "1");
  }
}

export function setLang(next) {
  if (!DICTS[next]) return;
  lang = next;
  try { localStorage.setItem(STORE_KEY, next); } catch { /* storage disabled */ }
  document.documentElement.lang = next;
  document.title = t("app.title");
  translate(document);
  dispatchEvent(new CustomEvent("medhub:lang", { detail: { lang: next } }));
}

document.documentElement.lang = lang;
