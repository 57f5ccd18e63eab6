// Building the page without innerHTML: h(tag, attrs, ...children).
//
// A child may be a string (text, never parsed as HTML), a node, an array, or
// T(key, params): translated text tagged for i18n.js. An attribute value may
// be T(key) too (labels, placeholders). Handlers: {onclick: fn}.

import { formatTime, t } from "./i18n.js";

class Tr {
  constructor(key, params) {
    this.key = key;
    this.params = params;
  }
}

/** Translated text (re-translated in place when the language changes). */
export function T(key, params = {}) {
  return new Tr(key, params);
}

function textNode(tr) {
  const span = document.createElement("span");
  span.dataset.i18n = tr.key;
  if (Object.keys(tr.params).length) span.dataset.i18nArgs = JSON.stringify(tr.params);
  span.textContent = t(tr.key, tr.params);
  return span;
}

export function append(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) child.forEach((c) => append(el, c));
  else if (child instanceof Tr) el.append(textNode(child));
  else if (child instanceof Node) el.append(child);
  else el.append(document.createTextNode(String(child)));
}

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  const i18nAttrs = [];
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value instanceof Tr) {
      el.setAttribute(name, t(value.key, value.params));
      i18nAttrs.push(`${name}=${value.key}`);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  if (i18nAttrs.length) el.dataset.i18nAttr = i18nAttrs.join(";");
  append(el, children);
  return el;
}

/** Replace the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A <time> showing epoch milliseconds `ms` in the current language. */
export function time(ms, full = false) {
  const el = h("time", { datetime: new Date(ms).toISOString() }, formatTime(ms, full));
  el.dataset.time = String(ms);
  if (full) el.dataset.timeFull = "1";
  return el;
}

/** A labelled form field: returns {wrap, input}. */
export function field(label, attrs = {}, hint = null) {
  const id = attrs.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  const hintId = hint ? `${id}-hint` : null;
  const input = h(attrs.tag || "input", { ...attrs, tag: null, id, "aria-describedby": hintId });
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null);
  return { wrap, input };
}

/** An alert box (role=alert) for errors; empty when `message` is null. */
export function alertBox() {
  const el = h("div", { class: "alert", role: "alert", hidden: true });
  return {
    el,
    show(...content) {
      replace(el, ...content);
      el.hidden = false;
    },
    clear() {
      el.replaceChildren();
      el.hidden = true;
    },
  };
}
