// What the app knows while signed in: people's names, presence, conversations.
//
// Each book is an EventTarget that says "change"; views show names and
// presence with live elements (nameOf, presenceOf) that update themselves.

import { directory } from "./api.js";
import { h, replace, T } from "./dom.js";
import { t } from "./i18n.js";

// -- names -------------------------------------------------------------------------
export class NameBook extends EventTarget {
  constructor(me) {
    super();
    this.me = me;
    this.people = new Map(); // id -> {name, role, org}
    this._asked = new Set();
    this._queue = new Set();
    this._timer = null;
  }

  /** Names learnt elsewhere (the admin's user list). */
  learn(people) {
    for (const [id, p] of Object.entries(people)) this.people.set(id, p);
    this.dispatchEvent(new Event("change"));
  }

  /** Ask the directory for the ids not known yet (batched). */
  want(ids) {
    for (const id of ids) {
      if (id && !this.people.has(id) && !this._asked.has(id)) this._queue.add(id);
    }
    if (this._queue.size && !this._timer) this._timer = setTimeout(() => this._flush(), 0);
  }

  async _flush() {
    this._timer = null;
    const ids = [...this._queue].slice(0, 200);
    ids.forEach((id) => { this._queue.delete(id); this._asked.add(id); });
    try {
      this.learn(await directory(ids));
    } catch {
      ids.forEach((id) => this._asked.delete(id)); // try again next time
    }
    if (this._queue.size) this._flush();
  }

  role(id) {
    const p = this.people.get(id);
    return p ? p.role : null;
  }

  label(id) {
    const p = this.people.get(id);
    if (p && p.name) return p.name;
    if (id === this.me) return t("person.you");
    return t("person.unknown", { tag: String(id).slice(-4) });
  }
}

/** A span showing user `id`'s name, updated when the name is learnt. */
export function nameOf(book, id) {
  const el = h("span", { class: "name", dataset: { user: id } }, book.label(id));
  book.want([id]);
  const update = () => {
    if (!el.isConnected) { book.removeEventListener("change", update); return; }
    el.textContent = book.label(id);
  };
  book.addEventListener("change", update);
  addEventListener("medhub:lang", update);
  return el;
}

// -- presence --------------------------------------------------------------------
export const STATES = ["offline", "online", "away", "busy", "in-call"];

export class PresenceBook extends EventTarget {
  constructor(hub) {
    super();
    this.states = new Map(); // user -> {state, ts, last_seen}
    this.stale = false; // while disconnected, states are not known to be current
    hub.addEventListener("state", (e) => {
      const stale = e.detail.state !== "online";
      if (stale === this.stale) return;
      this.stale = stale;
      for (const user of this.states.keys()) this.dispatchEvent(new CustomEvent("change", { detail: { user } }));
    });
    // Every welcome may carry other rights (close 4011): forget, then the snapshot refills.
    hub.addEventListener("welcome", () => {
      const gone = [...this.states.keys()];
      this.states.clear();
      for (const user of gone) this.dispatchEvent(new CustomEvent("change", { detail: { user } }));
    });
    hub.addEventListener("event", (e) => {
      const ev = e.detail;
      if (ev.kind !== "presence" || !ev.data) return;
      const held = this.states.get(ev.data.user);
      if (held && held.ts > ev.data.ts) return; // keep the newest (a snapshot and an event may cross)
      this.states.set(ev.data.user, ev.data);
      this.dispatchEvent(new CustomEvent("change", { detail: ev.data }));
    });
  }

  get(user) {
    return this.stale ? null : this.states.get(user) || null;
  }

  /** Users seen, in the order they were learnt. */
  users() {
    return [...this.states.keys()];
  }
}

/** A live presence badge of `user`: a dot and the state in words. */
export function presenceOf(book, user) {
  const el = h("span", { class: "presence", dataset: { presenceUser: user } });
  const render = () => {
    const p = book.get(user);
    const state = p ? p.state : "unknown";
    el.dataset.state = state;
    replace(el, h("span", { class: "dot", "aria-hidden": "true" }), T(`presence.${state}`));
  };
  render();
  const update = (e) => {
    if (!el.isConnected) { book.removeEventListener("change", update); return; }
    if (e.detail && e.detail.user === user) render();
  };
  book.addEventListener("change", update);
  return el;
}

// -- conversations ---------------------------------------------------------------
export class ChatStore extends EventTarget {
  /** hub: the Hub; me: my user id. Follows every listed conversation to keep unread counts live. */
  constructor(hub, me) {
    super();
    this.hub = hub;
    this.me = me;
    this.convs = new Map(); // conv -> {conv, kind, title, members, last_seq, read_seq, unread}
    this.active = null; // the conversation open on screen
    this.loaded = false;
    hub.addEventListener("event", (e) => this._event(e.detail));
    hub.addEventListener("welcome", () => { if (this.loaded) this.load(); });
  }

  /** Load every page of chat.list (at most 5 pages of 100) and follow each conversation. */
  async load() {
    let after = null;
    const seen = new Set();
    for (let page = 0; page < 5; page++) {
      const data = await this.hub.request("chat.list", after ? { after, limit: 100 } : { limit: 100 });
      for (const c of data.conversations) {
        seen.add(c.conv);
        const held = this.convs.get(c.conv);
        if (held && held.last_seq > c.last_seq) c.last_seq = held.last_seq;
        this.convs.set(c.conv, { ...held, ...c });
      }
      if (!data.more) break;
      after = data.next;
    }
    this.loaded = true;
    this._changed();
    await Promise.all([...seen].map((conv) => {
      const c = this.convs.get(conv);
      return this.hub.follow(conv, c.last_seq).catch(() => {});
    }));
  }

  list() {
    return [...this.convs.values()].sort((a, b) => (b.last_at || 0) - (a.last_at || 0) || (a.conv < b.conv ? -1 : 1));
  }

  get(conv) {
    return this.convs.get(conv) || null;
  }

  /** Mark `conv` as open on screen (null: none); its unread count goes to 0 once read. */
  open(conv) {
    this.active = conv;
    this._changed();
  }

  /** Send a read receipt for `conv` up to `seq` (when the page is visible). */
  markRead(conv, seq) {
    const c = this.convs.get(conv);
    if (!c || seq <= (c.read_seq || 0)) return;
    c.read_seq = seq;
    c.unread = 0;
    this._changed();
    this.hub.request("chat.receipt", { conv, seq, kind: "read" }).catch(() => {});
  }

  async create(body) {
    const data = await this.hub.request("chat.create", body);
    await this.load();
    return data.conv;
  }

  _event(ev) {
    if (!String(ev.ch).startsWith("conv:")) return;
    const conv = ev.ch.slice(5);
    if (ev.kind === "conversation") {
      this.load().catch(() => {});
      return;
    }
    const c = this.convs.get(conv);
    if (!c) return;
    if (ev.seq > 0 && ev.kind === "message" && ev.data) {
      c.last_seq = Math.max(c.last_seq || 0, ev.seq);
      c.last_at = ev.data.at;
      if (ev.data.sender !== this.me) {
        const visible = this.active === conv && document.visibilityState === "visible";
        if (!visible) {
          c.unread = (c.unread || 0) + 1;
          this.hub.request("chat.receipt", { conv, seq: ev.seq, kind: "delivered" }).catch(() => {});
        }
      }
      this._changed();
    } else if (ev.seq > 0) {
      c.last_seq = Math.max(c.last_seq || 0, ev.seq);
    }
  }

  _changed() {
    this.dispatchEvent(new Event("change"));
  }
}
