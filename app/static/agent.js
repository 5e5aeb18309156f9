/**
 * The agent workbench: the waiting queue and this agent's conversations, live over the agent's
 * stream (its own channel plus the broadcast of transfer requests and queue changes), and the
 * open conversation, live over that session's stream: take over, reply, release, close.
 */
import { createApi, LiveStream, seg, withQuery } from './switchboard.js';
import { byId, clock, el, showConnection, showError, Transcript, Typing } from './ui.js';

const STORAGE_KEY = 'switchboard.agent';
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const WB = '/workbench/api';
// The queue is shown a page at a time, oldest first ("Show more" for the next): an agent takes
// the oldest, and a long queue (thousands) would be a heavy answer and a long list.
const QUEUE_PAGE = 100;
// My conversations are found among every agent_active session: at most this many pages of them.
const HELD_PAGES = 10;

/** @type {{agentId: string, token: string|null, lastEventId: string|null, selected: string|null}|null} */
let me = null;
let agentStream = null;
/** Waiting sessions, oldest first: name -> session (or what a transfer_request says of it). */
const queue = new Map();
/**
 * Where the shown part of the queue ends: the `next_cursor` of its last page, null once the
 * whole queue is shown. Sessions announced meanwhile are newer than any not yet shown, so they
 * wait in `queueLater` until the end is reached; `queueLoads` tells a stale page from a fresh one.
 */
let queueCursor = null;
const queueLater = new Map();
let queueLoads = 0;
/** Sessions this agent holds: name -> {unread} */
const mine = new Map();
/** The open conversation. */
const conv = { name: null, session: null, stream: null };

const api = createApi({ token: () => me?.token });
const dom = {
  connection: byId('connection'),
  error: byId('error'),
  signin: byId('signin'),
  signinForm: byId('signin-form'),
  agentId: byId('agent-id'),
  agentToken: byId('agent-token'),
  workbench: byId('workbench'),
  whoami: byId('whoami'),
  signout: byId('signout'),
  queue: byId('queue'),
  queueCount: byId('queue-count'),
  queueEmpty: byId('queue-empty'),
  queueMore: byId('queue-more'),
  mine: byId('mine'),
  mineEmpty: byId('mine-empty'),
  convSection: byId('conversation'),
  convTitle: byId('conv-title'),
  convConnection: byId('conv-connection'),
  convStatus: byId('conv-status'),
  list: byId('conv-transcript'),
  typing: byId('conv-typing'),
  replyForm: byId('reply-form'),
  reply: byId('reply'),
  send: byId('send'),
  takeover: byId('takeover'),
  release: byId('release'),
  close: byId('close'),
};

const typing = new Typing(dom.typing);
const transcript = new Transcript(dom.list, (message) => {
  if (message.role === 'customer') return 'Customer';
  if (message.role === 'bot') return 'Bot';
  return message.agent_id === me?.agentId ? 'You' : `Agent ${message.agent_id || ''}`.trim();
});

function save() {
  if (me) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(me));
  else sessionStorage.removeItem(STORAGE_KEY);
}

/** The `sub` of a JWT, unverified: only to fill in the agent id field. */
function tokenSubject(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')));
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null;
  }
}

function report(error) {
  showError(dom.error, error);
}

// --- the queue and my conversations ----------------------------------------------------------

function renderQueue() {
  const items = [...queue.values()].map((s) => el('li', {
    class: 'session', attrs: { 'data-session': s.session_name },
  }, [
    el('div', { class: 'session-info' }, [
      el('strong', { text: s.session_name }),
      el('span', { class: 'hint', text: [s.escalation_reason, s.updated_at && `since ${clock(s.updated_at)}`].filter(Boolean).join(' · ') }),
      // What the bot (or whoever escalated) says the customer needs: nobody asks them again.
      ...(s.handoff_summary ? [el('p', { class: 'summary', text: s.handoff_summary })] : []),
    ]),
    el('div', { class: 'session-actions' }, [
      el('button', { class: 'secondary', text: 'View',
        attrs: { type: 'button', 'data-action': 'view', 'aria-label': `View ${s.session_name}` } }),
      el('button', { text: 'Take over',
        attrs: { type: 'button', 'data-action': 'takeover', 'aria-label': `Take over ${s.session_name}` } }),
    ]),
  ]));
  dom.queue.replaceChildren(...items);
  const more = queueCursor !== null;
  dom.queueCount.textContent = more ? `${queue.size}+` : String(queue.size);
  dom.queueEmpty.hidden = queue.size > 0 || more;
  dom.queueMore.hidden = !more;
}

function renderMine() {
  const items = [...mine.entries()].map(([name, info]) => {
    const label = info.unread ? `${name} (${info.unread} new)` : name;
    const button = el('button', { class: 'link', text: label,
      attrs: { type: 'button', 'data-action': 'view', 'aria-label': `Open ${label}` } });
    const classes = ['session', name === conv.name ? 'selected' : '', info.unread ? 'unread' : ''];
    return el('li', { class: classes.join(' ').trim(), attrs: { 'data-session': name } }, [button]);
  });
  dom.mine.replaceChildren(...items);
  dom.mineEmpty.hidden = mine.size > 0;
}

// A session joins the queue, or what is known of it grows (its status_change and its
// transfer_request arrive apart; the latter brings the reason and the summary).
function queueAdd(session) {
  const name = session.session_name;
  if (queueCursor !== null) {
    queueLater.set(name, { ...queueLater.get(name), ...session }); // shown when the end of the queue is
  } else {
    queue.set(name, { ...queue.get(name), ...session });
    renderQueue();
  }
}

function queueRemove(name) {
  queueLater.delete(name);
  if (queue.delete(name)) renderQueue();
}

/** Show a page of the queue: the first (`cursor` null, replacing what is shown) or the next. */
async function loadQueue(cursor) {
  const load = ++queueLoads;
  dom.queueMore.disabled = true;
  try {
    const page = await api.get(withQuery(`${WB}/sessions`, { status: 'waiting_agent', limit: QUEUE_PAGE, cursor }));
    if (load !== queueLoads) return; // a newer load replaced this one
    if (cursor === null) queue.clear();
    for (const s of page.sessions) queue.set(s.session_name, s);
    queueCursor = page.next_cursor ?? null;
    if (queueCursor === null) {
      for (const [name, s] of queueLater) if (!queue.has(name)) queue.set(name, s);
      queueLater.clear();
    }
    renderQueue();
  } finally {
    if (load === queueLoads) dom.queueMore.disabled = false;
  }
}

async function showMore() {
  report(null);
  try {
    await loadQueue(queueCursor);
  } catch (error) {
    report(error);
  }
}

function mineSet(name, held) {
  if (held && !mine.has(name)) mine.set(name, { unread: 0 });
  else if (!held && mine.has(name)) mine.delete(name);
  else return;
  renderMine();
}

/**
 * Rebuild the queue (its first page) and my conversations: first connection, and after
 * `recovered: false`.
 */
async function resyncLists() {
  queueLater.clear();
  const [, active] = await Promise.all([
    loadQueue(null),
    api.all(withQuery(`${WB}/sessions`, { status: 'agent_active' }), 'sessions', { maxPages: HELD_PAGES }),
  ]);
  const unread = new Map(mine);
  mine.clear();
  for (const s of active.items) {
    if (s.agent_id === me.agentId) mine.set(s.session_name, unread.get(s.session_name) || { unread: 0 });
  }
  renderMine();
}

function onAgentEvent(event) {
  if (event.id && me) {
    me.lastEventId = event.id;
    save();
  }
  const p = event.payload || {};
  switch (event.type) {
    case 'transfer_request':
      queueAdd({ session_name: p.session_name, status: p.status, escalation_reason: p.reason,
        handoff_summary: p.summary, updated_at: event.timestamp });
      break;
    case 'status_change':
      if (p.status === 'waiting_agent') {
        queueAdd({ session_name: p.session_name, status: p.status, updated_at: event.timestamp });
      } else {
        queueRemove(p.session_name);
      }
      mineSet(p.session_name, p.status === 'agent_active' && p.agent_id === me.agentId);
      break;
    case 'new_message':
      // A customer wrote in a conversation I hold; the open one shows it from its own stream.
      if (p.session_name !== conv.name && mine.has(p.session_name)) {
        mine.get(p.session_name).unread += 1;
        renderMine();
      }
      break;
    default:
      break;
  }
}

// --- the open conversation -------------------------------------------------------------------

const convPath = () => `${WB}/sessions/${seg(conv.name)}`;

function statusText(s) {
  switch (s.status) {
    case 'bot_active': return 'With the bot.';
    case 'waiting_agent': return `Waiting for an agent${s.escalation_reason ? ` (${s.escalation_reason})` : ''}.`;
    case 'agent_active':
      return s.agent_id === me.agentId ? 'You hold this conversation.' : `Held by ${s.agent_id}.`;
    case 'closed': return 'Closed.';
    default: return s.status;
  }
}

function applyConv(session) {
  if (!conv.name || session.session_name && session.session_name !== conv.name) return;
  conv.session = session;
  const held = session.status === 'agent_active' && session.agent_id === me.agentId;
  dom.convStatus.textContent = statusText(session);
  dom.convStatus.dataset.status = session.status;
  dom.convStatus.dataset.agent = session.agent_id || '';
  dom.reply.disabled = !held;
  dom.send.disabled = !held;
  dom.release.disabled = !held;
  dom.takeover.disabled = !['waiting_agent', 'bot_active'].includes(session.status);
  dom.close.disabled = session.status === 'closed' || Boolean(session.agent_id && !held);
  mineSet(conv.name, held);
}

async function resyncConv() {
  const name = conv.name;
  const [state, history] = await Promise.all([
    api.get(convPath()),
    api.all(`${convPath()}/messages`, 'messages'), // the whole transcript: every page
  ]);
  if (name !== conv.name) return;
  transcript.clear();
  typing.hide();
  for (const message of history.items) transcript.add(message);
  applyConv(state);
}

function onConvEvent(event) {
  const p = event.payload || {};
  if (p.session_name && p.session_name !== conv.name) return;
  const who = (id) => (id === me.agentId ? 'You' : id);
  switch (event.type) {
    case 'new_message':
      transcript.add(p.message);
      typing.hide(p.message.role);
      break;
    case 'typing':
      typing.show(p.who);
      break;
    case 'status_change':
      typing.hide();
      applyConv({ ...(conv.session || {}), status: p.status, agent_id: p.agent_id });
      if (p.status === 'waiting_agent') transcript.notice('The customer asked for a human.', 'waiting');
      if (p.status === 'closed') transcript.notice('The conversation was closed.', 'closed');
      break;
    case 'agent_joined':
      transcript.notice(`${who(p.agent_id)} took over.`, 'joined');
      break;
    case 'agent_left':
      transcript.notice(`${who(p.agent_id)} released the conversation: back to the bot.`, 'left');
      break;
    default:
      break;
  }
}

function select(name) {
  if (conv.name === name && conv.stream) return;
  conv.stream?.close();
  conv.name = name;
  conv.session = null;
  me.selected = name;
  save();
  transcript.clear();
  typing.hide();
  dom.convTitle.textContent = `Conversation ${name}`;
  dom.convStatus.textContent = 'Loading…';
  if (mine.has(name)) mine.get(name).unread = 0;
  renderMine();
  conv.stream = new LiveStream(`${convPath()}/events`, {
    token: me.token,
    onEvent: onConvEvent,
    onResync: resyncConv,
    onState: (state, s) => {
      showConnection(dom.convConnection, s, 'Conversation');
      if (state === 'failed') report(s.error);
    },
    probe: () => api.get(convPath()),
  });
  showConnection(dom.convConnection, conv.stream, 'Conversation');
  conv.stream.start();
  if (window.matchMedia('(max-width: 760px)').matches) {
    dom.convSection.scrollIntoView({ block: 'start' });
  }
}

// --- actions ---------------------------------------------------------------------------------

async function act(name, action) {
  report(null);
  try {
    const session = await api.post(`${WB}/sessions/${seg(name)}/${action}`, { agent_id: me.agentId });
    if (session.status !== 'waiting_agent') queueRemove(name);
    mineSet(name, session.status === 'agent_active' && session.agent_id === me.agentId);
    if (conv.name === name) applyConv(session);
    return session;
  } catch (error) {
    report(error);
    if (error.code === 'conflict' || error.code === 'session_not_found') {
      resyncLists().catch(() => {}); // the queue was out of date: someone else was faster
    }
    return null;
  }
}

async function takeover(name) {
  const session = await act(name, 'takeover');
  if (session) {
    select(name);
    applyConv(session);
    dom.reply.focus();
  }
}

async function sendReply(event) {
  event.preventDefault();
  const content = dom.reply.value.trim();
  if (!content || !conv.name) return;
  dom.send.disabled = true;
  report(null);
  try {
    const answer = await api.post(`${convPath()}/messages`, { agent_id: me.agentId, content });
    dom.reply.value = '';
    transcript.add(answer.message, { local: true });
    applyConv(answer.session);
  } catch (error) {
    report(error);
    if (conv.session) applyConv(conv.session);
  }
  dom.reply.focus();
}

function onListClick(event) {
  const button = event.target.closest('button[data-action]');
  const item = event.target.closest('[data-session]');
  if (!button || !item) return;
  const name = item.dataset.session;
  if (button.dataset.action === 'takeover') takeover(name);
  else select(name);
}

// --- signing in and out ----------------------------------------------------------------------

function enter(saved) {
  me = { agentId: saved.agentId, token: saved.token || null,
    lastEventId: saved.lastEventId || null, selected: saved.selected || null };
  save();
  dom.whoami.textContent = me.agentId;
  dom.signin.hidden = true;
  dom.workbench.hidden = false;
  agentStream = new LiveStream(`${WB}/agents/${seg(me.agentId)}/events`, {
    token: me.token,
    lastEventId: me.lastEventId,
    onEvent: onAgentEvent,
    onResync: resyncLists,
    onState: (state, s) => {
      showConnection(dom.connection, s);
      if (state === 'failed') report(s.error);
    },
    probe: () => api.get(withQuery(`${WB}/sessions`, { status: 'waiting_agent', limit: 1 })),
  });
  showConnection(dom.connection, agentStream);
  agentStream.start();
  if (me.selected && NAME.test(me.selected)) select(me.selected);
}

function signin(event) {
  event.preventDefault();
  report(null);
  const token = dom.agentToken.value.trim() || null;
  let agentId = dom.agentId.value.trim();
  if (!agentId && token) agentId = tokenSubject(token) || '';
  if (!NAME.test(agentId)) {
    report(new Error('Enter an agent id: 1 to 64 letters, digits, _ or -.'));
    return;
  }
  enter({ agentId, token });
}

function signout() {
  agentStream?.close();
  conv.stream?.close();
  Object.assign(conv, { name: null, session: null, stream: null });
  me = null;
  save();
  queue.clear();
  queueLater.clear();
  queueCursor = null;
  queueLoads += 1;
  mine.clear();
  transcript.clear();
  typing.hide();
  dom.workbench.hidden = true;
  dom.signin.hidden = false;
  dom.connection.textContent = 'Not connected';
  dom.connection.dataset.state = 'idle';
  report(null);
}

dom.signinForm.addEventListener('submit', signin);
dom.signout.addEventListener('click', signout);
dom.queue.addEventListener('click', onListClick);
dom.queueMore.addEventListener('click', showMore);
dom.mine.addEventListener('click', onListClick);
dom.replyForm.addEventListener('submit', sendReply);
dom.takeover.addEventListener('click', () => conv.name && takeover(conv.name));
dom.release.addEventListener('click', () => conv.name && act(conv.name, 'release'));
dom.close.addEventListener('click', () => conv.name && act(conv.name, 'close'));
window.addEventListener('pagehide', () => {
  agentStream?.close();
  conv.stream?.close();
});
window.addEventListener('pageshow', (event) => {
  if (event.persisted) window.location.reload(); // back from the back/forward cache: reopen
});

try {
  const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
  if (saved && NAME.test(saved.agentId)) enter(saved);
} catch {
  sessionStorage.removeItem(STORAGE_KEY);
}
