/**
 * The agent workbench: the waiting queue and this agent's conversations (with their unread
 * customer messages), live over the agent's stream (its own channel plus the broadcast of
 * transfer requests and queue changes), and the open conversation, live over that session's
 * stream: take over, reply, release, close, transfer; the customer typing, read marks on the
 * agents' messages once the customer has read them, private notes between agents, and the
 * customer's rating once given. Routing (docs/routing.md): the agent's presence (online, away,
 * offline) and load, the other agents, and the conversations offered to it (auto assignment),
 * each with a live countdown to its expiry, to accept or decline.
 */
import { createApi, LiveStream, seg, withQuery } from './switchboard.js';
import {
  byId, clock, el, ReadReceipts, showConnection, showError, throttle, tokenSubject, Transcript, Typing, workbenchAuthor,
} from './ui.js';

const STORAGE_KEY = 'switchboard.agent';
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const WB = '/workbench/api';
// The queue is shown a page at a time, oldest first ("Show more" for the next): an agent takes
// the oldest, and a long queue (thousands) would be a heavy answer and a long list.
const QUEUE_PAGE = 100;
// My conversations are found among every agent_active session: at most this many pages of them.
const HELD_PAGES = 10;
const STATUS_LABELS = { online: 'online', away: 'away', offline: 'offline' };
// The agents list is asked for again this long after the last change that may move a load
// (several changes in a row: one request).
const AGENTS_DEBOUNCE = 300;
// And this often anyway: an offer to another agent changes its load with no event here.
const AGENTS_EVERY = 15000;
// The countdowns are looked at this often (their text changes once a second).
const TICK = 250;
// The server's clock is only trusted over ours when they differ by more than this (seconds):
// event timestamps are whole seconds, so a smaller difference cannot be told from rounding.
const SKEW_MIN = 2;

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
/** The open conversation; `left`: an agent_left waiting for the status change that says where to. */
const conv = { name: null, session: null, stream: null, left: null };
/** Every agent that has a status: id -> {agent_id, status, capacity, active, updated_at}. */
const agents = new Map();
/** `pending`: the status this page is setting, null when none. */
const agentsLoad = { timer: null, running: null, again: false, epoch: 0, pending: null, poll: null };
/** Offers to this agent: session name -> {offer, node, seconds, bar}. */
const offers = new Map();
let ticker = null;
/** Server time minus ours (seconds): recent samples from live events, and what is applied. */
const clockSamples = [];
let skew = 0;

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
  noteForm: byId('note-form'),
  note: byId('note'),
  noteSend: byId('note-send'),
  convRating: byId('conv-rating'),
  takeover: byId('takeover'),
  release: byId('release'),
  close: byId('close'),
  presence: byId('presence'),
  load: byId('load'),
  offersSection: byId('offers-section'),
  offers: byId('offers'),
  offersCount: byId('offers-count'),
  offersNote: byId('offers-note'),
  supervisorNote: byId('supervisor-note'),
  agents: byId('agents'),
  agentsEmpty: byId('agents-empty'),
  convSummary: byId('conv-summary'),
  convSummaryText: byId('conv-summary-text'),
  transferForm: byId('transfer-form'),
  transferTo: byId('transfer-to'),
  transferNote: byId('transfer-note'),
  transferButton: byId('transfer'),
};

const typing = new Typing(dom.typing);
const transcript = new Transcript(dom.list, workbenchAuthor(() => me?.agentId));

function save() {
  if (me) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(me));
  else sessionStorage.removeItem(STORAGE_KEY);
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
    return el('li', {
      class: classes.join(' ').trim(), attrs: { 'data-session': name, 'data-unread': String(info.unread) },
    }, [button]);
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

/** The conversation in my list while I hold it, with `unread` (its unread customer messages) when known. */
function mineSet(name, held, unread = null) {
  if (held && !mine.has(name)) mine.set(name, { unread: unread ?? 0 });
  else if (!held && mine.has(name)) mine.delete(name);
  else if (held && unread !== null && mine.get(name).unread !== unread) mine.get(name).unread = unread;
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
    loadAgents(),
  ]);
  mine.clear();
  for (const s of active.items) {
    if (s.agent_id === me.agentId) mine.set(s.session_name, { unread: s.unread ?? 0 });
  }
  renderMine();
  resyncOffers();
}

function onAgentEvent(event) {
  if (event.id && me) {
    me.lastEventId = event.id;
    save();
  }
  const p = event.payload || {};
  switch (event.type) {
    case 'connected':
    case 'heartbeat':
      clockSample(event.timestamp); // sent now, never replayed: the server's clock
      break;
    case 'transfer_request':
      queueAdd({ session_name: p.session_name, status: p.status, escalation_reason: p.reason,
        handoff_summary: p.summary, updated_at: event.timestamp });
      refreshAgentsSoon(); // back in the queue from an agent (transfer, offline): its load
      break;
    case 'status_change':
      if (p.status === 'waiting_agent') {
        queueAdd({ session_name: p.session_name, status: p.status, updated_at: event.timestamp });
      } else {
        queueRemove(p.session_name);
        offerRemove(p.session_name); // taken, closed or back to the bot: the offer has ended
      }
      mineSet(p.session_name, p.status === 'agent_active' && p.agent_id === me.agentId);
      refreshAgentsSoon();
      break;
    case 'offer':
      offerAdd(p);
      refreshAgentsSoon(); // an offer counts against this agent's capacity
      break;
    case 'offer_ended': {
      // Declined (here or in another tab), expired, or withdrawn: the card goes.
      const why = { expired: 'expired', declined: 'was declined', withdrawn: 'was withdrawn' }[p.reason] || 'ended';
      offerRemove(p.session_name, { note: `The offer of ${p.session_name} ${why}.` });
      refreshAgentsSoon();
      break;
    }
    case 'agent_status':
      agentStatus(p);
      break;
    case 'whisper':
      // From a supervisor to this agent alone: the customer never sees it (docs/security.md).
      supervisorSaid(p.session_name, `Whisper from ${p.supervisor_id}: ${p.content}`, 'whisper');
      break;
    case 'barge':
      // The status_change that comes with it takes the conversation off "My conversations".
      supervisorSaid(p.session_name, `Supervisor ${p.supervisor_id} took the conversation over.`, 'barge');
      break;
    case 'new_message':
      // A customer wrote in a conversation I hold. The open one shows it from its own stream
      // and, while the page is seen, reads it (the read's answer says what is left unread).
      if (mine.has(p.session_name) && !(p.session_name === conv.name && document.visibilityState === 'visible')) {
        mine.get(p.session_name).unread += 1;
        renderMine();
      }
      break;
    default:
      break;
  }
}

/** A supervisor's word to this agent: in the open conversation's transcript if it is about it,
 * and in the side column (the newest) wherever the agent is. */
function supervisorSaid(name, text, kind) {
  dom.supervisorNote.textContent = `${name}: ${text}`;
  dom.supervisorNote.dataset.kind = kind;
  dom.supervisorNote.hidden = false;
  if (name === conv.name) transcript.notice(text, kind);
}

// --- presence, load and the other agents -----------------------------------------------------

/** This agent's record, if it has set a status (or been counted a conversation). */
const myAgent = () => (me ? agents.get(me.agentId) : undefined);

function renderPresence() {
  const agent = myAgent();
  const status = agent?.status || 'offline';
  dom.presence.dataset.status = status;
  // While a change is on its way the switch shows the one asked for; the status is the known.
  const shown = agentsLoad.pending || status;
  dom.presence.disabled = Boolean(agentsLoad.pending);
  for (const input of dom.presence.querySelectorAll('input[name=presence]')) {
    input.checked = input.value === shown;
  }
  if (agent && Number.isFinite(agent.capacity)) {
    const active = agent.active ?? 0;
    dom.load.textContent = `${active} / ${agent.capacity} conversations`;
    dom.load.dataset.active = String(active);
    dom.load.dataset.capacity = String(agent.capacity);
    dom.load.dataset.full = String(active >= agent.capacity);
  } else {
    dom.load.textContent = `${mine.size} conversations (no capacity until a status is set)`;
    dom.load.dataset.active = String(mine.size);
    dom.load.dataset.capacity = '';
    dom.load.dataset.full = 'false';
  }
}

function renderAgents() {
  // Those who can take conversations first, then by id.
  const rank = { online: 0, away: 1, offline: 2 };
  const sorted = [...agents.values()].sort((a, b) => (rank[a.status] ?? 3) - (rank[b.status] ?? 3)
    || a.agent_id.localeCompare(b.agent_id));
  dom.agents.replaceChildren(...sorted.map((a) => el('li', {
    class: 'agent-row', attrs: { 'data-agent': a.agent_id, 'data-status': a.status },
  }, [
    el('span', { class: 'agent-name', text: a.agent_id === me?.agentId ? `${a.agent_id} (you)` : a.agent_id }),
    el('span', { class: 'agent-status', text: STATUS_LABELS[a.status] || a.status }),
    el('span', { class: 'agent-load', text: `${a.active ?? 0} / ${a.capacity}`,
      attrs: { title: 'conversations held or offered / capacity' } }),
  ])));
  dom.agentsEmpty.hidden = agents.size > 0;
  renderTransferChoices();
  renderPresence();
}

/** The transfer's choices: back to the queue, or another agent (not one who is offline). */
function renderTransferChoices() {
  const chosen = dom.transferTo.value;
  const options = [el('option', { text: 'Back to the queue', attrs: { value: 'queue' } })];
  for (const a of [...agents.values()].sort((x, y) => x.agent_id.localeCompare(y.agent_id))) {
    if (a.agent_id === me?.agentId) continue;
    const option = el('option', {
      text: `${a.agent_id} (${STATUS_LABELS[a.status] || a.status}, ${a.active ?? 0} / ${a.capacity})`,
      attrs: { value: a.agent_id },
    });
    option.disabled = a.status === 'offline';
    options.push(option);
  }
  // Unchanged choices stay as they are (a list the agent has open is not closed under it).
  const key = options.map((o) => `${o.value}|${o.textContent}|${o.disabled}`).join('\n');
  if (key === dom.transferTo.dataset.key) return;
  dom.transferTo.dataset.key = key;
  dom.transferTo.replaceChildren(...options);
  const still = options.find((o) => o.value === chosen && !o.disabled);
  dom.transferTo.value = still ? chosen : 'queue';
}

/** GET the agents; a call while one runs asks for one more after it (so the last one is fresh). */
function loadAgents() {
  if (agentsLoad.running) {
    agentsLoad.again = true;
    return agentsLoad.running;
  }
  const agentId = me.agentId;
  agentsLoad.running = (async () => {
    try {
      do {
        agentsLoad.again = false;
        const epoch = agentsLoad.epoch;
        const body = await api.get(`${WB}/agents`);
        if (!me || me.agentId !== agentId) return;
        // A status this page set (or heard) while the list was on its way is newer than it.
        const mineNow = epoch !== agentsLoad.epoch ? agents.get(agentId) : undefined;
        agents.clear();
        for (const a of body.agents || []) agents.set(a.agent_id, a);
        if (mineNow) agents.set(agentId, { ...agents.get(agentId), ...mineNow });
        renderAgents();
      } while (agentsLoad.again);
    } finally {
      agentsLoad.running = null;
    }
  })();
  return agentsLoad.running;
}

function refreshAgentsSoon() {
  if (!me) return;
  clearTimeout(agentsLoad.timer);
  agentsLoad.timer = setTimeout(() => {
    agentsLoad.timer = null;
    if (me) loadAgents().catch(() => {}); // the next change, or a resync, tries again
  }, AGENTS_DEBOUNCE);
}

/** An `agent_status` event: some agent's presence or capacity changed. */
function agentStatus(p) {
  const known = agents.get(p.agent_id) || { agent_id: p.agent_id, active: 0 };
  agents.set(p.agent_id, { ...known, status: p.status, capacity: p.capacity });
  if (p.agent_id === me.agentId) {
    agentsLoad.epoch += 1;
    if (p.status === 'offline') offersClear('You are offline: your offers were withdrawn.');
  }
  renderAgents();
  refreshAgentsSoon(); // the event has no load: `active`
}

async function setStatus(status) {
  if (agentsLoad.pending || !me) return;
  report(null);
  agentsLoad.pending = status;
  renderPresence();
  try {
    const agent = await api.post(`${WB}/agents/${seg(me.agentId)}/status`, { status });
    agentsLoad.epoch += 1;
    agents.set(agent.agent_id, agent);
    if (agent.status === 'offline') offersClear('You are offline: your offers were withdrawn.');
  } catch (error) {
    report(error);
  } finally {
    agentsLoad.pending = null;
    renderAgents(); // and the switch: back to the known status if the change failed
  }
}

// --- offers ----------------------------------------------------------------------------------

/** A clock sample: an event's timestamp (whole seconds, server time) as it arrives. */
function clockSample(timestamp) {
  if (!Number.isFinite(timestamp)) return;
  clockSamples.push(timestamp - Date.now() / 1000);
  if (clockSamples.length > 5) clockSamples.shift();
  // A timestamp is the server's time rounded down, so the largest recent sample is the
  // closest; half a second for the rounding.
  const estimate = Math.max(...clockSamples) + 0.5;
  skew = Math.abs(estimate) > SKEW_MIN ? estimate : 0;
}

const serverNow = () => Date.now() / 1000 + skew;

function offerNote(text) {
  dom.offersNote.textContent = text || '';
  dom.offersNote.hidden = !text;
}

function renderOffersCount() {
  dom.offersSection.hidden = offers.size === 0;
  dom.offersCount.textContent = String(offers.size);
}

/** An offer to this agent (an `offer` event, or found on a waiting session after a resync). */
function offerAdd(p) {
  const left = p.expires_at - serverNow();
  if (!p.session_name || !(left > 0)) return; // replayed, or too late already
  const known = offers.get(p.session_name);
  if (known && known.offer.expires_at === p.expires_at) return;
  offerRemove(p.session_name, { quiet: true });
  const name = p.session_name;
  const seconds = el('span', { class: 'offer-seconds' });
  const bar = el('progress', { attrs: { max: String(Math.max(1, Math.ceil(left))), 'aria-hidden': 'true' } });
  const node = el('li', {
    class: 'session offer', attrs: { 'data-session': name, 'data-expires-at': String(p.expires_at) },
  }, [
    el('div', { class: 'session-info' }, [
      el('strong', { text: name }),
      ...(p.reason ? [el('span', { class: 'hint offer-reason', text: p.reason })] : []),
      ...(p.summary ? [el('p', { class: 'summary', text: p.summary })] : []),
    ]),
    el('p', { class: 'countdown', attrs: { role: 'timer' } }, ['Expires in ', seconds, ' s']),
    bar,
    el('div', { class: 'session-actions' }, [
      el('button', { text: 'Accept',
        attrs: { type: 'button', 'data-action': 'accept', 'aria-label': `Accept ${name}` } }),
      el('button', { class: 'secondary', text: 'Decline',
        attrs: { type: 'button', 'data-action': 'decline', 'aria-label': `Decline ${name}` } }),
    ]),
  ]);
  offers.set(name, { offer: p, node, seconds, bar });
  dom.offers.append(node);
  offerNote(null);
  renderOffersCount();
  tick();
  if (!ticker) ticker = setInterval(tick, TICK);
}

function offerRemove(name, { quiet = false, note = null } = {}) {
  const known = offers.get(name);
  if (!known) return;
  offers.delete(name);
  known.node.remove();
  if (!quiet) offerNote(note);
  renderOffersCount();
  if (offers.size === 0 && ticker) {
    clearInterval(ticker);
    ticker = null;
  }
}

function offersClear(note = null) {
  for (const name of [...offers.keys()]) offerRemove(name, { quiet: true });
  offerNote(note);
}

/** Each offer's seconds left; one that reaches 0 is gone (the router offers it to another). */
function tick() {
  const now = serverNow();
  for (const [name, { offer, seconds, bar }] of offers) {
    const left = offer.expires_at - now;
    if (left <= 0) {
      offerRemove(name, { note: `The offer of ${name} expired.` });
      refreshAgentsSoon();
      continue;
    }
    const whole = Math.ceil(left);
    if (seconds.textContent !== String(whole)) {
      seconds.textContent = String(whole);
      seconds.dataset.seconds = String(whole);
    }
    bar.value = Math.max(0, Number(bar.max) - left);
  }
}

/**
 * After a (re)connection: the offers the first page of the queue shows out to this agent
 * (offers go to the head of the queue), and no card for an offer that ended meanwhile.
 */
function resyncOffers() {
  for (const s of queue.values()) {
    if (!('offer' in s)) continue; // known from an event only: says nothing of offers
    const offer = s.offer;
    if (offer && offer.agent_id === me.agentId) {
      offerAdd({ session_name: s.session_name, expires_at: offer.expires_at,
        reason: s.escalation_reason, summary: s.handoff_summary });
    } else {
      offerRemove(s.session_name, { quiet: true });
    }
  }
  if (queueCursor === null) {
    for (const name of [...offers.keys()]) if (!queue.has(name)) offerRemove(name, { quiet: true });
  }
}

async function answerOffer(name, action) {
  const known = offers.get(name);
  if (!known) return;
  for (const button of known.node.querySelectorAll('button')) button.disabled = true;
  const session = await act(name, action);
  offerRemove(name, { quiet: true }); // accepted, declined, or refused: ended either way
  if (session && action === 'accept') {
    select(name);
    applyConv(session);
    dom.reply.focus();
  }
}

function onOffersClick(event) {
  const button = event.target.closest('button[data-action]');
  const item = event.target.closest('[data-session]');
  if (button && item) answerOffer(item.dataset.session, button.dataset.action);
}

// --- the open conversation -------------------------------------------------------------------

const convPath = () => `${WB}/sessions/${seg(conv.name)}`;

/** Whether this agent holds the session (only the holder types and reads for the agents' side). */
const holds = (session) => session?.status === 'agent_active' && session.agent_id === me?.agentId;

const reads = new ReadReceipts(
  () => (holds(conv.session) ? transcript.newest(['customer']) : null),
  async (upTo) => {
    const session = await api.post(`${convPath()}/read`, { agent_id: me.agentId, up_to: upTo });
    mineSet(session.session_name, holds(session), session.unread ?? 0);
  },
);
const sendTyping = throttle(() => api.post(`${convPath()}/typing`, { agent_id: me.agentId }));

/** The customer's rating of the open conversation, once given. */
function showConvRating(rating) {
  dom.convRating.hidden = !rating;
  if (!rating) return;
  const stars = el('span', { class: 'stars-shown', text: '★'.repeat(rating.score) + '☆'.repeat(5 - rating.score),
    attrs: { 'aria-hidden': 'true' } });
  const comment = rating.comment ? `: “${rating.comment}”` : '.';
  dom.convRating.replaceChildren(stars, ` The customer rated this conversation ${rating.score} of 5${comment}`);
  dom.convRating.dataset.score = String(rating.score);
}

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
  const held = holds(session);
  dom.convStatus.textContent = statusText(session);
  dom.convStatus.dataset.status = session.status;
  dom.convStatus.dataset.agent = session.agent_id || '';
  dom.reply.disabled = !held;
  dom.send.disabled = !held;
  dom.release.disabled = !held;
  dom.takeover.disabled = !['waiting_agent', 'bot_active'].includes(session.status);
  dom.close.disabled = session.status === 'closed' || Boolean(session.agent_id && !held);
  dom.convSummaryText.textContent = session.handoff_summary || '';
  dom.convSummary.hidden = !session.handoff_summary;
  dom.transferForm.hidden = !held;
  dom.note.disabled = false; // any agent may leave a note, in any status
  dom.noteSend.disabled = false;
  showConvRating(session.rating);
  mineSet(conv.name, held);
  reads.check(); // taken over, or loaded: what the customer wrote is now read
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
  conv.left = null;
  for (const message of history.items) transcript.add(message);
  if (state.read?.customer) transcript.markRead(state.read.customer, ['agent']);
  reads.reset(state.read?.agent ?? null);
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
      reads.check();
      break;
    case 'note':
      transcript.add(p.message);
      break;
    case 'typing':
      if (p.who !== 'agent') typing.show(p.who); // the agents' own side is not shown
      break;
    case 'read':
      if (p.reader === 'customer') transcript.markRead(p.up_to, ['agent']);
      break;
    case 'rating':
      if (conv.session) applyConv({ ...conv.session, rating: { score: p.score, comment: p.comment } });
      break;
    case 'status_change': {
      typing.hide();
      const left = conv.left;
      conv.left = null;
      applyConv({ ...(conv.session || {}), status: p.status, agent_id: p.agent_id });
      if (left !== null) {
        // Where the conversation went says what leaving was: a release, a transfer, ...
        const whom = who(left);
        if (p.status === 'bot_active') transcript.notice(`${whom} released the conversation: back to the bot.`, 'left');
        else if (p.status === 'waiting_agent') transcript.notice(`${whom} handed the conversation back to the queue.`, 'left');
        else if (p.status === 'agent_active') transcript.notice(`${whom} transferred the conversation.`, 'left');
        else transcript.notice(`${whom} left the conversation.`, 'left');
      } else if (p.status === 'waiting_agent') {
        transcript.notice('The customer asked for a human.', 'waiting');
      }
      if (p.status === 'closed') transcript.notice('The conversation was closed.', 'closed');
      break;
    }
    case 'agent_joined':
      if (conv.left !== null) {
        transcript.notice(`${who(conv.left)} transferred the conversation.`, 'left');
        conv.left = null;
      }
      transcript.notice(`${who(p.agent_id)} took over.`, 'joined');
      break;
    case 'agent_left':
      // Told once the status change that follows it says where the conversation went.
      conv.left = p.agent_id;
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
  conv.left = null;
  me.selected = name;
  save();
  transcript.clear();
  typing.hide();
  reads.reset();
  showConvRating(null);
  dom.convTitle.textContent = `Conversation ${name}`;
  dom.convStatus.textContent = 'Loading…';
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
    mineSet(name, holds(session), session.unread ?? 0);
    if (conv.name === name) applyConv(session);
    refreshAgentsSoon(); // this agent's load moved
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

async function addNote(event) {
  event.preventDefault();
  const content = dom.note.value.trim();
  const name = conv.name;
  if (!content || !name) return;
  dom.noteSend.disabled = true;
  report(null);
  try {
    const answer = await api.post(`${convPath()}/notes`, { agent_id: me.agentId, content });
    dom.note.value = '';
    if (conv.name === name) transcript.add(answer.message, { local: true });
  } catch (error) {
    report(error);
  } finally {
    dom.noteSend.disabled = !conv.name;
  }
  dom.note.focus();
}

async function transfer(event) {
  event.preventDefault();
  const name = conv.name;
  if (!name) return;
  const to = dom.transferTo.value;
  const note = dom.transferNote.value.trim();
  const body = { agent_id: me.agentId, ...(to === 'queue' ? { to_queue: true } : { to_agent_id: to }) };
  if (note) body.note = note;
  report(null);
  dom.transferButton.disabled = true;
  try {
    const session = await api.post(`${WB}/sessions/${seg(name)}/transfer`, body);
    dom.transferNote.value = '';
    mineSet(name, holds(session));
    if (conv.name === name) {
      applyConv(session);
      transcript.notice(to === 'queue' ? 'You handed the conversation back to the queue.'
        : session.status === 'agent_active' ? `You transferred the conversation to ${to}.`
          : `You offered the conversation to ${to}; it waits at the front of the queue until they accept.`, 'transfer');
    }
    refreshAgentsSoon();
  } catch (error) {
    report(error);
    if (error.code === 'conflict' || error.code === 'session_not_found') resyncLists().catch(() => {});
  } finally {
    dom.transferButton.disabled = false;
  }
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
  agentsLoad.poll = setInterval(() => {
    if (agentStream?.state === 'connected') refreshAgentsSoon();
  }, AGENTS_EVERY);
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
  Object.assign(conv, { name: null, session: null, stream: null, left: null });
  me = null;
  save();
  offersClear();
  agents.clear();
  clearTimeout(agentsLoad.timer);
  clearInterval(agentsLoad.poll);
  agentsLoad.timer = null;
  agentsLoad.poll = null;
  agentsLoad.epoch += 1;
  clockSamples.length = 0;
  skew = 0;
  renderAgents();
  queue.clear();
  queueLater.clear();
  queueCursor = null;
  queueLoads += 1;
  mine.clear();
  transcript.clear();
  typing.hide();
  reads.reset();
  showConvRating(null);
  dom.note.disabled = true;
  dom.noteSend.disabled = true;
  dom.supervisorNote.hidden = true;
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
dom.reply.addEventListener('input', () => {
  if (holds(conv.session)) sendTyping(); // the customer is told (throttled)
});
dom.noteForm.addEventListener('submit', addNote);
dom.offers.addEventListener('click', onOffersClick);
dom.transferForm.addEventListener('submit', transfer);
dom.presence.addEventListener('change', (event) => {
  if (event.target.name === 'presence') setStatus(event.target.value);
});
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
