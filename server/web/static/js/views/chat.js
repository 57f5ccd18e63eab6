// Conversations: the list (unread counts, live) and one conversation (history
// with infinite scroll, send, edit, delete, receipts, typing, presence).

import { h, replace, T, time, alertBox } from "../dom.js";
import { t } from "../i18n.js";
import { HubError } from "../medhub.js";
import { nameOf, presenceOf } from "../state.js";
import { describeApiError } from "./errors.js";

const PAGE = 50;
const TYPING_SHOWN_MS = 4000;
const TYPING_EVERY_MS = 2000;

function newId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The people of a conversation other than me, as a list of name elements. */
function othersOf(ctx, c) {
  return (c.members || []).filter((m) => m !== ctx.me);
}

export function convTitle(ctx, c) {
  const others = othersOf(ctx, c);
  const names = [];
  others.slice(0, 3).forEach((m, i) => {
    if (i) names.push(", ");
    names.push(nameOf(ctx.names, m));
  });
  if (others.length > 3) names.push(" ", T("chat.and_more", { n: others.length - 3 }));
  if (c.title) return [c.title];
  if (c.kind === "consultation") return [T("chat.consultation_with"), " ", ...names];
  return names.length ? names : [T("chat.only_you")];
}

// -- the list ----------------------------------------------------------------------------
export function conversationList(ctx, { filter = null, empty = "chat.none" } = {}) {
  const ul = h("ul", { class: "convs" });
  const render = () => {
    if (!ul.isConnected && ul.dataset.rendered) {
      ctx.chat.removeEventListener("change", render);
      return;
    }
    ul.dataset.rendered = "1";
    const items = ctx.chat.list().filter((c) => !filter || filter(c));
    if (!items.length) {
      replace(ul, h("li", { class: "empty" }, ctx.chat.loaded ? T(empty) : T("chat.loading")));
      return;
    }
    replace(ul, items.map((c) => {
      const unread = c.unread || 0;
      const others = othersOf(ctx, c);
      return h("li", { class: unread ? "conv unread" : "conv", dataset: { conv: c.conv } },
        h("a", { href: `#/c/${c.conv}`, "aria-current": ctx.chat.active === c.conv ? "page" : null },
          h("span", { class: "conv-title" }, convTitle(ctx, c)),
          others.length === 1 ? presenceOf(ctx.presence, others[0]) : null,
          unread
            ? h("span", { class: "badge", dataset: { unread: String(unread) } }, T("chat.unread", { n: unread }))
            : null));
    }));
  };
  ctx.chat.addEventListener("change", render);
  render();
  return ul;
}

// -- one conversation ------------------------------------------------------------------------
export function conversationView(main, ctx, conv) {
  const me = ctx.me;
  const hub = ctx.hub;
  const messages = new Map(); // seq -> {ev, el}
  const pending = new Map(); // client_msg_id -> {text, el}
  const receipts = new Map(); // user -> {delivered_seq, read_seq}
  const typing = new Map(); // user -> timer
  let oldest = null;
  let more = true;
  let loadingOlder = false;
  let lastTypingSent = 0;
  let editing = null;

  const box = alertBox();
  const list = h("ol", { class: "messages", role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-label": T("chat.messages") });
  const olderSentinel = h("li", { class: "older" }, T("chat.loading_older"));
  const typingLine = h("p", { class: "typing", "aria-live": "polite" });
  const input = h("textarea", { id: "composer", rows: "2", maxlength: "4000", required: true, placeholder: T("chat.placeholder") });
  const sendBtn = h("button", { type: "submit", class: "primary" }, T("chat.send"));
  const composer = h("form", { class: "composer" },
    h("label", { for: "composer", class: "visually-hidden" }, T("chat.message")), input, sendBtn);
  const head = h("div", { class: "conv-head" });
  const section = h("section", { class: "conversation", "aria-labelledby": "conv-title" },
    head, box.el, list, typingLine, composer);
  replace(main, section);

  // -- header: title and the other party's presence --
  function renderHead() {
    const c = ctx.chat.get(conv);
    const others = c ? othersOf(ctx, c) : [];
    replace(head,
      h("a", { href: "#/conversations", class: "back" }, T("chat.back")),
      h("h1", { id: "conv-title", tabindex: "-1" }, c ? convTitle(ctx, c) : T("chat.conversation")),
      h("ul", { class: "members" }, others.map((u) => h("li", {}, nameOf(ctx.names, u), " ", presenceOf(ctx.presence, u)))),
      // calls: consultations, and conversations between staff (the hub decides: policy rule 7)
      others.length && (c.kind === "consultation" || ctx.role !== "patient")
        ? h("a", { href: `#/call/${conv}`, class: "call-link" }, T("call.video_call")) : null);
    if (others.length) hub.subscribePresence(others).catch(() => {});
  }

  // -- messages --
  // The others' receipts are known from live receipt events only (chat.list gives my
  // own positions, not theirs): an older message of mine shows no state until one comes.
  const seenLive = new Set();

  function receiptOf(seq) {
    let read = false;
    let delivered = false;
    for (const [user, r] of receipts) {
      if (user === me) continue;
      if (r.read_seq >= seq) read = true;
      if (r.delivered_seq >= seq) delivered = true;
    }
    return read ? "read" : delivered ? "delivered" : seenLive.has(seq) ? "sent" : "unknown";
  }

  function messageEl(ev) {
    const mine = ev.sender === me;
    const deleted = ev.deleted_at || ev.text === null || ev.text === undefined;
    const li = h("li", { class: `msg${mine ? " mine" : ""}${deleted ? " deleted" : ""}`, dataset: { seq: String(ev.seq) } });
    const meta = h("p", { class: "meta" }, nameOf(ctx.names, ev.sender), " · ", time(ev.at));
    if (ev.edited_at && !deleted) meta.append(" · ", h("span", { class: "edited" }, T("chat.edited")));
    const body = deleted ? h("p", { class: "text gone" }, T("chat.deleted")) : h("p", { class: "text" }, ev.text);
    li.append(meta, body);
    if (mine && !deleted) {
      const state = receiptOf(ev.seq);
      li.append(h("p", { class: "receipt", dataset: { receipt: state } }, state === "unknown" ? null : T(`chat.receipt_${state}`)));
      li.append(h("div", { class: "actions" },
        h("button", { type: "button", class: "small", onclick: () => startEdit(ev.seq) }, T("chat.edit")),
        h("button", { type: "button", class: "small danger", onclick: () => removeMessage(ev.seq) }, T("chat.delete"))));
    }
    return li;
  }

  function place(seq, el) {
    // keep the list in seq order (history pages come older-first, live ones newest)
    const after = [...list.children].find((li) => li.dataset.seq && Number(li.dataset.seq) > seq);
    list.insertBefore(el, after || null);
  }

  function apply(ev) {
    if (!ev || !ev.seq) return;
    if (ev.kind === "message") {
      const held = messages.get(ev.seq);
      if (held && (held.ev.version || 1) >= (ev.version || 1) && !(ev.deleted_at && !held.ev.deleted_at)) return;
      const el = messageEl(ev);
      if (held) held.el.replaceWith(el);
      else place(ev.seq, el);
      messages.set(ev.seq, { ev, el });
      if (ev.sender === me) {
        const p = pending.get(ev.client_msg_id);
        if (p) { p.el.remove(); pending.delete(ev.client_msg_id); }
      }
    } else if (ev.kind === "edit" || ev.kind === "delete") {
      const held = messages.get(ev.target);
      if (!held) return;
      if (ev.kind === "edit" && (held.ev.version || 1) >= (ev.version || 1)) return;
      const next = ev.kind === "edit"
        ? { ...held.ev, text: ev.text, version: ev.version, edited_at: ev.at }
        : { ...held.ev, text: null, deleted_at: ev.at };
      if (held.ev.deleted_at) return;
      const el = messageEl(next);
      held.el.replaceWith(el);
      messages.set(ev.target, { ev: next, el });
    }
  }

  function refreshReceipts() {
    for (const { ev, el } of messages.values()) {
      const r = el.querySelector(".receipt");
      if (!r) continue;
      const state = receiptOf(ev.seq);
      if (r.dataset.receipt !== state) {
        r.dataset.receipt = state;
        replace(r, state === "unknown" ? null : T(`chat.receipt_${state}`));
      }
    }
  }

  function newestSeq() {
    let max = 0;
    for (const [seq, m] of messages) if (m.ev.kind === "message" && seq > max) max = seq;
    return max;
  }

  function markRead() {
    if (document.visibilityState !== "visible" || !section.isConnected) return;
    const c = ctx.chat.get(conv);
    const last = Math.max(newestSeq(), c ? c.last_seq || 0 : 0);
    if (last) ctx.chat.markRead(conv, last);
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function scrollToEnd() {
    list.scrollTop = list.scrollHeight;
  }

  // -- history and infinite scroll --
  async function loadOlder() {
    if (loadingOlder || !more) return;
    loadingOlder = true;
    const before = list.scrollHeight - list.scrollTop;
    try {
      const data = await hub.request("chat.history", oldest === null ? { conv, limit: PAGE } : { conv, before: oldest, limit: PAGE });
      for (const ev of data.events) apply(ev);
      if (data.events.length) oldest = Math.min(oldest ?? Infinity, data.events[0].seq);
      more = data.more;
      if (!more) olderSentinel.remove();
      list.scrollTop = list.scrollHeight - before;
    } catch (err) {
      box.show(...describeApiError(err));
    } finally {
      loadingOlder = false;
    }
    // a short first page that does not fill the box: keep going
    if (more && list.scrollHeight <= list.clientHeight) loadOlder();
  }

  list.append(olderSentinel);
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadOlder();
  }, { root: list });

  // -- sending (kept until acknowledged: retried with the same client id across reconnects) --
  function pendingEl(text) {
    return h("li", { class: "msg mine pending" },
      h("p", { class: "meta" }, nameOf(ctx.names, me)),
      h("p", { class: "text" }, text),
      h("p", { class: "receipt", dataset: { receipt: "pending" } }, T("chat.receipt_pending")));
  }

  async function deliver(clientMsgId) {
    const p = pending.get(clientMsgId);
    for (;;) {
      try {
        const { seq } = await hub.request("chat.send", { conv, client_msg_id: clientMsgId, text: p.text }, { waitS: Infinity });
        seenLive.add(seq);
        if (messages.has(seq)) refreshReceipts();
        if (messages.has(seq)) { p.el.remove(); pending.delete(clientMsgId); }
        else p.seq = seq;
        return;
      } catch (err) {
        if (!section.isConnected && !pending.has(clientMsgId)) return;
        if (err instanceof HubError && err.code !== "unavailable" && err.code !== "timeout") {
          p.el.classList.add("failed");
          replace(p.el.querySelector(".receipt"), T("chat.receipt_failed"));
          box.show(...describeApiError(err));
          return;
        }
        if (hub.state === "ended") return;
        await new Promise((r) => setTimeout(r, (err.retryAfterS || 0.2) * 1000));
      }
    }
  }

  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (editing !== null) {
      finishEdit(text);
      return;
    }
    const id = newId("w-");
    const el = pendingEl(text);
    pending.set(id, { text, el });
    list.append(el);
    scrollToEnd();
    input.value = "";
    deliver(id);
  });

  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    } else if (e.key === "Escape" && editing !== null) {
      cancelEdit();
    }
  });

  input.addEventListener("input", () => {
    const now = Date.now();
    if (editing === null && input.value && now - lastTypingSent > TYPING_EVERY_MS && hub.online) {
      lastTypingSent = now;
      hub.request("chat.typing", { conv }).catch(() => {});
    }
  });

  // -- edit and delete --
  function startEdit(seq) {
    const m = messages.get(seq);
    if (!m) return;
    editing = seq;
    input.value = m.ev.text || "";
    replace(sendBtn, T("chat.save"));
    composer.classList.add("editing");
    input.focus();
  }

  function cancelEdit() {
    editing = null;
    input.value = "";
    replace(sendBtn, T("chat.send"));
    composer.classList.remove("editing");
  }

  async function finishEdit(text) {
    const seq = editing;
    cancelEdit();
    try {
      await hub.request("chat.edit", { conv, seq, client_msg_id: newId("e-"), text });
    } catch (err) {
      box.show(...describeApiError(err));
    }
  }

  async function removeMessage(seq) {
    if (!confirm(t("chat.confirm_delete"))) return;
    try {
      await hub.request("chat.delete", { conv, seq, client_msg_id: newId("d-") });
    } catch (err) {
      box.show(...describeApiError(err));
    }
  }

  // -- live events --
  function showTyping() {
    const users = [...typing.keys()];
    if (!users.length) {
      typingLine.replaceChildren();
      return;
    }
    replace(typingLine, users.map((u, i) => [i ? ", " : "", nameOf(ctx.names, u)]), " ", T("chat.typing", { n: users.length }));
  }

  const onEvent = (e) => {
    const ev = e.detail;
    if (!section.isConnected) {
      hub.removeEventListener("event", onEvent);
      observer.disconnect();
      return;
    }
    if (ev.ch !== `conv:${conv}`) return;
    if (ev.seq > 0) {
      const stick = nearBottom();
      seenLive.add(ev.seq);
      apply({ ...ev.data, seq: ev.seq, kind: ev.kind });
      if (ev.kind === "message" && ev.data && typing.has(ev.data.sender)) {
        clearTimeout(typing.get(ev.data.sender));
        typing.delete(ev.data.sender);
        showTyping();
      }
      if (stick || (ev.data && ev.data.sender === me)) scrollToEnd();
      markRead();
    } else if (ev.kind === "receipt" && ev.data) {
      receipts.set(ev.data.user, ev.data);
      refreshReceipts();
    } else if (ev.kind === "typing" && ev.data && ev.data.user !== me) {
      clearTimeout(typing.get(ev.data.user));
      typing.set(ev.data.user, setTimeout(() => { typing.delete(ev.data.user); showTyping(); }, TYPING_SHOWN_MS));
      showTyping();
    } else if (ev.kind === "resume_failed") {
      box.show(...describeApiError(ev.data || {}));
    }
  };
  hub.addEventListener("event", onEvent);
  const onVisible = () => {
    if (!section.isConnected) { document.removeEventListener("visibilitychange", onVisible); return; }
    markRead();
  };
  document.addEventListener("visibilitychange", onVisible);
  // Messages still waiting for the hub live only in this page: ask before it closes.
  const onLeave = (e) => {
    if (!section.isConnected) { removeEventListener("beforeunload", onLeave); return; }
    if (pending.size) e.preventDefault();
  };
  addEventListener("beforeunload", onLeave);
  const onChat = () => {
    if (!section.isConnected) { ctx.chat.removeEventListener("change", onChat); return; }
    if (!head.dataset.ready && ctx.chat.get(conv)) { head.dataset.ready = "1"; renderHead(); }
  };
  ctx.chat.addEventListener("change", onChat);

  // -- open --
  ctx.chat.open(conv);
  renderHead();
  if (ctx.chat.get(conv)) head.dataset.ready = "1";
  (async () => {
    try {
      await hub.follow(conv, null);
    } catch (err) {
      if (err instanceof HubError) {
        replace(section, h("div", { class: "card" }, h("h1", { tabindex: "-1" }, T("chat.unavailable")), h("p", {}, describeApiError(err)),
          h("a", { href: "#/conversations" }, T("chat.back"))));
        return;
      }
    }
    await loadOlder();
    scrollToEnd();
    observer.observe(olderSentinel);
    markRead();
  })();
  return section;
}
