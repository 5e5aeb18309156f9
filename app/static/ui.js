/**
 * DOM helpers shared by the console pages. Text goes in with `textContent` only: nothing a
 * client or the server sends is ever parsed as HTML.
 * @module ui
 */

/** @param {string} id @returns {HTMLElement} */
export const byId = (id) => document.getElementById(id);

/**
 * Create an element.
 * @param {string} tag
 * @param {{class?: string, text?: string, attrs?: Object<string, string>}} [props]
 * @param {Array<Node|string>} [children]
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [name, value] of Object.entries(props.attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

/** `HH:MM` of unix seconds, in the reader's time zone. */
export function clock(seconds) {
  const date = new Date(seconds * 1000);
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A random, valid session name (the server also makes one when none is given). */
export function randomName(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The author label of a message on the workbench's pages: "You" for the page's own agent (or
 * supervisor), notes marked as internal.
 * @param {function(): (string|undefined)} self The id of whoever uses the page.
 * @returns {function(Object): string}
 */
export function workbenchAuthor(self) {
  return (message) => {
    if (message.role === 'customer') return 'Customer';
    if (message.role === 'bot') return 'Bot';
    const author = message.agent_id === self() ? 'You' : `Agent ${message.agent_id || ''}`.trim();
    return message.role === 'note' ? `Internal note · ${author}` : author;
  };
}

/** The `sub` of a JWT, unverified: only to fill in a sign-in form's id field. */
export function tokenSubject(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')));
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null;
  }
}

/** Show an error (or clear it with null) in a role="alert" element. */
export function showError(node, error) {
  node.textContent = error ? error.message || String(error) : '';
  node.hidden = !error;
}

const STATE_TEXT = {
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  failed: 'Disconnected',
  closed: 'Offline',
};

/**
 * Mirror a LiveStream's state in an element: its text, and `data-state`, `data-connects`
 * and `data-resyncs` attributes (which the browser test reads).
 * @param {HTMLElement} node
 * @param {import('./switchboard.js').LiveStream} stream
 * @param {string} [what] What the stream is, for the text ("Conversation").
 */
export function showConnection(node, stream, what = '') {
  const prefix = what ? `${what}: ` : '';
  let text = STATE_TEXT[stream.state] || stream.state;
  if (stream.state === 'connected' && stream.connects > 1) {
    text = stream.resyncs > 1 ? 'Live (reconnected, refreshed)' : 'Live (reconnected)';
  }
  if (stream.state === 'failed' && stream.error) text += ` (${stream.error.message})`;
  node.textContent = prefix + text;
  node.dataset.state = stream.state;
  node.dataset.connects = String(stream.connects);
  node.dataset.resyncs = String(stream.resyncs);
}

/**
 * A conversation on screen: messages de-duplicated by id, in the order of the session's
 * stream, plus notices (status changes).
 *
 * A message shown from an API answer before its event arrives (`local`) stays last until its
 * echo comes: events are in transcript order, so anything the stream brings meanwhile is older
 * and goes before it.
 */
export class Transcript {
  /**
   * @param {HTMLElement} list An <ol> with role="log".
   * @param {function(Object): string} who The label of a message's author.
   */
  constructor(list, who) {
    this.list = list;
    this.who = who;
    /** @type {Map<string, {node: HTMLElement, local: boolean}>} */
    this.items = new Map();
    // Follow the newest message unless the reader has scrolled up to read older ones.
    this.follow = true;
    this.height = list.clientHeight;
    list.addEventListener('scroll', () => {
      if (list.clientHeight !== this.height) return; // a resize scrolled it, not the reader
      this.follow = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    });
    new ResizeObserver(() => {
      this.height = list.clientHeight;
      this._follow();
    }).observe(list);
  }

  clear() {
    this.items.clear();
    this.list.replaceChildren();
    this.follow = true;
  }

  /** Add a message unless it is on screen; `local`: from an API answer, not the stream. */
  add(message, { local = false } = {}) {
    const known = this.items.get(message.id);
    if (known) {
      if (!local && known.local) {
        known.local = false;
        delete known.node.dataset.local;
      }
      return false;
    }
    const node = el('li', {
      class: `msg msg-${message.role}`,
      attrs: { 'data-message-id': message.id, 'data-role': message.role },
    }, [
      el('span', { class: 'msg-who', text: this.who(message) }),
      el('p', { class: 'msg-text', text: message.content }),
      el('time', { class: 'msg-time', text: clock(message.created_at),
        attrs: { datetime: new Date(message.created_at * 1000).toISOString() } }),
    ]);
    if (local) node.dataset.local = 'true';
    this.items.set(message.id, { node, local });
    this._place(node, local);
    return true;
  }

  /** The id of the newest message on screen written by one of `roles`, or null. */
  newest(roles) {
    const nodes = this.list.querySelectorAll('[data-message-id]');
    for (let index = nodes.length - 1; index >= 0; index -= 1) {
      if (roles.includes(nodes[index].dataset.role)) return nodes[index].dataset.messageId;
    }
    return null;
  }

  /**
   * The other side has read up to the message `upTo`: mark the messages of `roles` up to it
   * (a read position only moves forward, so what is marked stays marked); nothing when that
   * message is not on screen.
   */
  markRead(upTo, roles) {
    const target = this.items.get(upTo);
    if (!target) return;
    for (const node of this.list.querySelectorAll('[data-message-id]')) {
      if (roles.includes(node.dataset.role) && !node.dataset.read) {
        node.dataset.read = 'true';
        node.append(el('span', { class: 'msg-read', text: 'Read' }));
      }
      if (node === target.node) break;
    }
  }

  /** A line about the conversation (someone joined, back to the bot). */
  notice(text, kind = '') {
    this._place(el('li', { class: 'notice', text, attrs: { 'data-notice': kind } }), false);
  }

  _place(node, local) {
    const waiting = local ? null : this.list.querySelector('[data-local]');
    this.list.insertBefore(node, waiting);
    this._follow();
  }

  _follow() {
    if (this.follow) this.list.scrollTop = this.list.scrollHeight;
  }
}

/**
 * "The customer is typing…" under a transcript, with moving dots, from `typing` events
 * (ephemeral: no id). Shown until a message from the one typing, a status change, or TYPING_FOR
 * ms without another `typing` (docs/api.md, "Typing": people send one every 2 s while they
 * type, the bot every 4 s while it prepares a reply).
 */
export const TYPING_FOR = 5000;
const TYPING_LABELS = { bot: 'The assistant is typing…', customer: 'The customer is typing…', agent: 'The agent is typing…' };

export class Typing {
  /** @param {HTMLElement} node The indicator (hidden when idle). */
  constructor(node) {
    this.node = node;
    this.who = null;
    this.timer = null;
  }

  show(who) {
    this.who = who;
    const dots = el('span', { class: 'dots', attrs: { 'aria-hidden': 'true' } }, [el('span'), el('span'), el('span')]);
    this.node.replaceChildren(dots, TYPING_LABELS[who] || 'Typing…');
    this.node.dataset.who = who;
    this.node.hidden = false;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.hide(), TYPING_FOR);
  }

  /** Hide it (for a message: only if it comes from the one typing). */
  hide(role = null) {
    if (role !== null && role !== this.who) return;
    clearTimeout(this.timer);
    this.who = null;
    this.node.hidden = true;
  }
}

/** How often a page says that its user is typing: the server takes one a sender every 2 s. */
export const TYPING_EVERY = 2000;

/**
 * A function that calls `send` at most once every `every` ms, however often it is called (on
 * every keystroke). Failures are left unsaid: typing is only a hint.
 * @param {function(): Promise<any>} send
 * @param {number} [every]
 * @returns {function(): void}
 */
export function throttle(send, every = TYPING_EVERY) {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < every) return;
    last = now;
    send().catch(() => {});
  };
}

/**
 * The read receipts a page sends (docs/api.md, "Read receipts"): the other side's newest
 * message on screen, while the page is visible (`document.visibilityState`), once per new
 * one: a read position only moves forward, so sending the same one again would say nothing.
 */
export class ReadReceipts {
  /**
   * @param {function(): (string|null)} newest The message to acknowledge now: the other side's
   *   newest on screen; null when there is none, or when this page may not say it.
   * @param {function(string): Promise<any>} send Sends the read up to that message.
   */
  constructor(newest, send) {
    this.newest = newest;
    this.send = send;
    this.sent = null;
    document.addEventListener('visibilitychange', () => this.check());
  }

  /** Another view (a conversation opened, refetched): `known` is how far the server has it. */
  reset(known = null) {
    this.sent = known;
  }

  /** Send a read if a message the reader can see has not been acknowledged yet. */
  check() {
    if (document.visibilityState !== 'visible') return;
    const upTo = this.newest();
    if (!upTo || upTo === this.sent) return;
    this.sent = upTo;
    this.send(upTo).catch(() => {
      if (this.sent === upTo) this.sent = null; // the next check tries again
    });
  }
}
