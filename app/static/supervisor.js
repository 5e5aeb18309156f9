/**
 * The supervisor's board (docs/security.md, "Who may do what"): every waiting and held
 * conversation live over the supervisor stream (`/workbench/api/events`, a supervisor's token),
 * with the supervisors' activity (whispers, barges, ratings); one conversation listened to over
 * its own stream, notes included; and the supervisor's actions on it: whisper to the agent
 * holding it, barge in (then answer, release or close it as its agent), re-assign it.
 */
import { createApi, LiveStream, seg } from './switchboard.js';
import { byId, clock, el, showConnection, showError, tokenSubject, Transcript, Typing, workbenchAuthor } from './ui.js';

const STORAGE_KEY = 'switchboard.supervisor';
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const WB = '/workbench/api';
// The board shows the conversations that need people: waiting for one, or held by one.
const SHOWN = ['waiting_agent', 'agent_active'];
// At most this many pages of each status are read when the board is rebuilt.
const BOARD_PAGES = 5;
// The newest entries of the activity log kept on screen.
const ACTIVITY_KEPT = 50;

/** @type {{supervisorId: string, token: string|null, selected: string|null}|null} */
let me = null;
let boardStream = null;
/** Shown conversations: name -> session (or what the events said of it). */
const board = new Map();
/** The conversation listened to. */
const conv = { name: null, session: null, stream: null };
/** Sessions whose state is being asked for again (several events in a row: one request). */
const refreshing = new Set();

const api = createApi({ token: () => me?.token });
const dom = {
  connection: byId('connection'),
  error: byId('error'),
  signin: byId('signin'),
  signinForm: byId('signin-form'),
  supervisorId: byId('supervisor-id'),
  supervisorToken: byId('supervisor-token'),
  board: byId('board'),
  list: byId('board-list'),
  count: byId('board-count'),
  empty: byId('board-empty'),
  activity: byId('activity'),
  whoami: byId('whoami'),
  signout: byId('signout'),
  convTitle: byId('conv-title'),
  convConnection: byId('conv-connection'),
  convStatus: byId('conv-status'),
  transcript: byId('conv-transcript'),
  typing: byId('conv-typing'),
  whisperForm: byId('whisper-form'),
  whisper: byId('whisper'),
  whisperSend: byId('whisper-send'),
  replyForm: byId('reply-form'),
  reply: byId('reply'),
  send: byId('send'),
  barge: byId('barge'),
  release: byId('release'),
  close: byId('close'),
  reassignForm: byId('reassign-form'),
  reassignTo: byId('reassign-to'),
  reassignNote: byId('reassign-note'),
  reassign: byId('reassign'),
};

const typing = new Typing(dom.typing);
const transcript = new Transcript(dom.transcript, workbenchAuthor(() => me?.supervisorId));

function save() {
  if (me) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(me));
  else sessionStorage.removeItem(STORAGE_KEY);
}

function report(error) {
  showError(dom.error, error);
}

const sessionPath = (name) => `${WB}/sessions/${seg(name)}`;

// --- the board -------------------------------------------------------------------------------

function describe(s) {
  const parts = [s.status === 'agent_active' ? `held by ${s.agent_id}` : 'waiting'];
  if (s.unread) parts.push(`${s.unread} unread`);
  if (s.whispers) parts.push(`${s.whispers} whispered`);
  return parts.join(' · ');
}

function renderBoard() {
  const items = [...board.values()].map((s) => el('li', {
    class: `session${s.session_name === conv.name ? ' selected' : ''}`,
    attrs: { 'data-session': s.session_name, 'data-status': s.status, 'data-agent': s.agent_id || '' },
  }, [
    el('button', { class: 'link', text: s.session_name,
      attrs: { type: 'button', 'data-action': 'listen', 'aria-label': `Listen to ${s.session_name}` } }),
    el('span', { class: 'hint', text: describe(s) }),
  ]));
  dom.list.replaceChildren(...items);
  dom.count.textContent = String(board.size);
  dom.empty.hidden = board.size > 0;
}

function boardSet(session) {
  const name = session.session_name;
  if (SHOWN.includes(session.status)) board.set(name, { ...board.get(name), ...session });
  else board.delete(name);
  renderBoard();
}

/** The board from the listings: at the start, and whenever the stream cannot resume. */
async function resyncBoard() {
  const lists = await Promise.all(SHOWN.map((status) => api.all(
    `${WB}/sessions?status=${status}`, 'sessions', { maxPages: BOARD_PAGES },
  )));
  board.clear();
  for (const list of lists) for (const session of list.items) board.set(session.session_name, session);
  renderBoard();
}

/** Ask for a session's state again (its unread count moved, its holder changed). */
function refreshSoon(name) {
  if (refreshing.has(name)) return;
  refreshing.add(name);
  setTimeout(async () => {
    refreshing.delete(name);
    try {
      const session = await api.get(sessionPath(name));
      boardSet(session);
      if (name === conv.name) applyConv(session);
    } catch {
      // Gone, or the server away: the next event or resync says.
    }
  }, 200);
}

function logActivity(text, kind, timestamp) {
  dom.activity.prepend(el('li', { class: 'notice', text: `${clock(timestamp)} ${text}`, attrs: { 'data-kind': kind } }));
  while (dom.activity.children.length > ACTIVITY_KEPT) dom.activity.lastElementChild.remove();
}

function onBoardEvent(event) {
  const p = event.payload || {};
  switch (event.type) {
    case 'status_change':
      boardSet({ session_name: p.session_name, status: p.status, agent_id: p.agent_id });
      refreshSoon(p.session_name); // the rest of its state (a hand-off note, unread)
      break;
    case 'new_message':
      if (p.message?.role === 'customer' && board.has(p.session_name)) refreshSoon(p.session_name);
      break;
    case 'read':
      if (p.reader === 'agent' && board.has(p.session_name)) refreshSoon(p.session_name);
      break;
    case 'whisper':
      logActivity(`${p.supervisor_id} whispered to ${p.agent_id} on ${p.session_name}: ${p.content}`, 'whisper', event.timestamp);
      if (board.has(p.session_name)) refreshSoon(p.session_name);
      break;
    case 'barge':
      logActivity(`${p.supervisor_id} barged in on ${p.session_name}, taking it from ${p.from_agent_id}`, 'barge', event.timestamp);
      break;
    case 'rating':
      logActivity(`${p.session_name} rated ${p.score} of 5${p.comment ? `: ${p.comment}` : ''}`, 'rating', event.timestamp);
      break;
    default:
      break;
  }
}

// --- the conversation listened to ------------------------------------------------------------

function statusText(s) {
  switch (s.status) {
    case 'bot_active': return 'With the bot.';
    case 'waiting_agent': return 'Waiting for an agent.';
    case 'agent_active': return s.agent_id === me.supervisorId ? 'You hold it.' : `Held by ${s.agent_id}.`;
    case 'closed': return 'Closed.';
    default: return s.status;
  }
}

function applyConv(session) {
  if (session.session_name !== conv.name) return;
  conv.session = session;
  const held = session.status === 'agent_active';
  const mine = held && session.agent_id === me.supervisorId;
  dom.convStatus.textContent = statusText(session);
  dom.convStatus.dataset.status = session.status;
  dom.convStatus.dataset.agent = session.agent_id || '';
  dom.whisper.disabled = !held || mine;
  dom.whisperSend.disabled = !held || mine;
  dom.whisper.placeholder = !held ? 'Whisper: no agent holds it'
    : mine ? 'Whisper: you hold it yourself' : `Whisper to ${session.agent_id}: the customer never sees it`;
  dom.barge.disabled = !held || mine;
  dom.reply.disabled = !mine;
  dom.send.disabled = !mine;
  dom.release.disabled = !mine;
  dom.close.disabled = !mine;
  dom.reassign.disabled = !SHOWN.includes(session.status);
}

async function resyncConv() {
  const name = conv.name;
  const [state, history] = await Promise.all([
    api.get(sessionPath(name)),
    api.all(`${sessionPath(name)}/messages`, 'messages'),
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
  switch (event.type) {
    case 'new_message':
    case 'note':
      transcript.add(p.message);
      typing.hide(p.message.role);
      break;
    case 'typing':
      typing.show(p.who);
      break;
    case 'agent_joined':
      transcript.notice(`${p.agent_id === me.supervisorId ? 'You' : p.agent_id} joined.`, 'joined');
      break;
    case 'agent_left':
      transcript.notice(`${p.agent_id === me.supervisorId ? 'You' : p.agent_id} left.`, 'left');
      break;
    case 'status_change':
      typing.hide();
      refreshSoon(conv.name);
      break;
    case 'rating':
      transcript.notice(`Rated ${p.score} of 5${p.comment ? `: ${p.comment}` : ''}.`, 'rating');
      break;
    default:
      break;
  }
}

function listen(name) {
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
  renderBoard();
  conv.stream = new LiveStream(`${sessionPath(name)}/events`, {
    token: me.token,
    onEvent: onConvEvent,
    onResync: resyncConv,
    onState: (state, s) => {
      showConnection(dom.convConnection, s, 'Conversation');
      if (state === 'failed') report(s.error);
    },
    probe: () => api.get(sessionPath(name)),
  });
  showConnection(dom.convConnection, conv.stream, 'Conversation');
  conv.stream.start();
}

// --- actions ---------------------------------------------------------------------------------

/** A supervisor's action (or, holding the conversation, an agent's); the session after it. */
async function act(action, body) {
  report(null);
  try {
    const answer = await api.post(`${sessionPath(conv.name)}/${action}`, body);
    const session = answer.session || answer;
    boardSet(session);
    applyConv(session);
    return session;
  } catch (error) {
    report(error);
    if (conv.name) refreshSoon(conv.name); // out of date: someone else acted first
    return null;
  }
}

async function whisper(event) {
  event.preventDefault();
  const content = dom.whisper.value.trim();
  if (!content || !conv.name) return;
  if (await act('whisper', { supervisor_id: me.supervisorId, content })) dom.whisper.value = '';
}

async function reply(event) {
  event.preventDefault();
  const content = dom.reply.value.trim();
  if (!content || !conv.name) return;
  try {
    const answer = await api.post(`${sessionPath(conv.name)}/messages`, { agent_id: me.supervisorId, content });
    transcript.add(answer.message, { local: true });
    dom.reply.value = '';
  } catch (error) {
    report(error);
  }
}

async function reassign(event) {
  event.preventDefault();
  if (!conv.name) return;
  const to = dom.reassignTo.value.trim();
  const body = { supervisor_id: me.supervisorId, ...(to ? { to_agent_id: to } : { to_queue: true }) };
  const note = dom.reassignNote.value.trim();
  if (note) body.note = note;
  if (await act('reassign', body)) {
    dom.reassignTo.value = '';
    dom.reassignNote.value = '';
  }
}

function onListClick(event) {
  const button = event.target.closest('button[data-action="listen"]');
  const item = button?.closest('[data-session]');
  if (item) listen(item.dataset.session);
}

// --- signing in and out ----------------------------------------------------------------------

function enter(saved) {
  me = { supervisorId: saved.supervisorId, token: saved.token || null, selected: saved.selected || null };
  save();
  dom.whoami.textContent = me.supervisorId;
  dom.signin.hidden = true;
  dom.board.hidden = false;
  boardStream = new LiveStream(`${WB}/events`, {
    token: me.token,
    onEvent: onBoardEvent,
    onResync: resyncBoard,
    onState: (state, s) => {
      showConnection(dom.connection, s);
      if (state === 'failed') report(s.error);
    },
    probe: () => api.get(`${WB}/sessions?status=waiting_agent&limit=1`),
  });
  showConnection(dom.connection, boardStream);
  boardStream.start();
  if (me.selected && NAME.test(me.selected)) listen(me.selected);
}

function signin(event) {
  event.preventDefault();
  report(null);
  const token = dom.supervisorToken.value.trim() || null;
  let supervisorId = dom.supervisorId.value.trim();
  if (!supervisorId && token) supervisorId = tokenSubject(token) || '';
  if (!NAME.test(supervisorId)) {
    report(new Error('Enter a supervisor id: 1 to 64 letters, digits, _ or -.'));
    return;
  }
  enter({ supervisorId, token });
}

function signout() {
  boardStream?.close();
  conv.stream?.close();
  Object.assign(conv, { name: null, session: null, stream: null });
  me = null;
  save();
  board.clear();
  renderBoard();
  dom.activity.replaceChildren();
  transcript.clear();
  typing.hide();
  dom.board.hidden = true;
  dom.signin.hidden = false;
  dom.connection.textContent = 'Not connected';
  dom.connection.dataset.state = 'idle';
  report(null);
}

dom.signinForm.addEventListener('submit', signin);
dom.signout.addEventListener('click', signout);
dom.list.addEventListener('click', onListClick);
dom.whisperForm.addEventListener('submit', whisper);
dom.replyForm.addEventListener('submit', reply);
dom.reassignForm.addEventListener('submit', reassign);
dom.barge.addEventListener('click', () => conv.name && act('barge', { supervisor_id: me.supervisorId }));
dom.release.addEventListener('click', () => conv.name && act('release', { agent_id: me.supervisorId }));
dom.close.addEventListener('click', () => conv.name && act('close', { agent_id: me.supervisorId }));
window.addEventListener('pagehide', () => {
  boardStream?.close();
  conv.stream?.close();
});
window.addEventListener('pageshow', (event) => {
  if (event.persisted) window.location.reload(); // back from the back/forward cache: reopen
});

try {
  const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
  if (saved && NAME.test(saved.supervisorId)) enter(saved);
} catch {
  sessionStorage.removeItem(STORAGE_KEY);
}
