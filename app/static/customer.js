/**
 * The customer page: start a conversation, chat with the bot, ask for a human, talk to the
 * agent, live over the session's stream: the agent typing, read marks on the customer's
 * messages once the agent has read them, and once the conversation is closed, a prompt to rate
 * it. The conversation (name, token, last event id) is kept in sessionStorage, so a reload
 * resumes it.
 */
import { ApiError, createApi, LiveStream, seg } from './switchboard.js';
import {
  byId, randomName, ReadReceipts, showConnection, showError, throttle, Transcript, Typing,
} from './ui.js';

const STORAGE_KEY = 'switchboard.customer';
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
// Who writes on the other side of the conversation (what the customer's reads acknowledge).
const OTHER_SIDE = ['bot', 'agent'];

/** @type {{name: string, token: string|null, lastEventId: string|null}|null} */
let current = null;
/** @type {LiveStream|null} */
let stream = null;
let session = null;
/** An agent_left not told yet: the status change after it says where the conversation went. */
let agentLeft = null;
/** The score chosen in the rating prompt, 1 to 5 (null: none yet). */
let score = null;

const api = createApi({ token: () => current?.token });
const dom = {
  connection: byId('connection'),
  error: byId('error'),
  start: byId('start'),
  startForm: byId('start-form'),
  nameInput: byId('session-name'),
  generate: byId('generate'),
  startButton: byId('start-button'),
  chat: byId('chat'),
  title: byId('chat-title'),
  status: byId('status'),
  list: byId('transcript'),
  typing: byId('typing'),
  queuePlace: byId('queue-place'),
  chatForm: byId('chat-form'),
  message: byId('message'),
  send: byId('send'),
  escalate: byId('escalate'),
  newChat: byId('new-chat'),
  rating: byId('rating'),
  ratingForm: byId('rating-form'),
  stars: byId('stars'),
  ratingComment: byId('rating-comment'),
  ratingSend: byId('rating-send'),
  ratingThanks: byId('rating-thanks'),
};

const typing = new Typing(dom.typing);
const transcript = new Transcript(dom.list, (message) => {
  if (message.role === 'customer') return 'You';
  if (message.role === 'bot') return 'Bot';
  return message.agent_id ? `Agent ${message.agent_id}` : 'Agent';
});

const sessionPath = () => `/chatbot/api/sessions/${seg(current.name)}`;

const reads = new ReadReceipts(
  () => transcript.newest(OTHER_SIDE),
  (upTo) => api.post(`${sessionPath()}/read`, { up_to: upTo }),
);
const sendTyping = throttle(() => api.post(`${sessionPath()}/typing`));

function save() {
  if (current) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(current));
  else sessionStorage.removeItem(STORAGE_KEY);
}

function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
    return saved && NAME.test(saved.name) ? saved : null;
  } catch {
    return null;
  }
}

/** What the customer is told about the session's state. */
function statusText(s) {
  switch (s.status) {
    case 'bot_active': return 'You are chatting with the bot.';
    case 'waiting_agent': return 'Waiting for an agent…';
    case 'agent_active': return `You are talking to ${s.agent_id || 'an agent'}.`;
    case 'closed': return 'This conversation is closed.';
    default: return s.status;
  }
}

/** "You are number 3 in line (about 2 min)", from GET .../queue or a queue_update. */
function showPlace(place) {
  const waiting = place && place.position;
  dom.queuePlace.hidden = !waiting;
  if (!waiting) return;
  const where = place.position === 1 ? 'You are next in line' : `You are number ${place.position} in line`;
  const wait = place.estimated_wait_seconds;
  const about = wait == null ? '' : ` (about ${Math.max(1, Math.round(wait / 60))} min)`;
  dom.queuePlace.textContent = `${where}${about}.`;
  dom.queuePlace.dataset.position = String(place.position);
}

function applySession(next) {
  session = next;
  dom.status.textContent = statusText(next);
  dom.status.dataset.status = next.status;
  dom.status.dataset.agent = next.agent_id || '';
  const closed = next.status === 'closed';
  dom.message.disabled = closed;
  dom.send.disabled = closed;
  dom.escalate.disabled = next.status !== 'bot_active';
  if (next.status !== 'waiting_agent') showPlace(null);
  showRating();
}

/** Once the conversation is closed: the rating prompt, or "Thanks" once it is rated. */
function showRating() {
  const rated = session?.rating;
  dom.rating.hidden = session?.status !== 'closed';
  dom.ratingForm.hidden = Boolean(rated);
  dom.ratingThanks.hidden = !rated;
  dom.ratingThanks.textContent = rated ? `Thanks for your feedback: ${rated.score} of 5.` : '';
  for (const star of dom.stars.querySelectorAll('button[data-score]')) {
    const value = Number(star.dataset.score);
    star.setAttribute('aria-pressed', String(value === score));
    star.classList.toggle('on', score !== null && value <= score);
  }
  dom.ratingSend.disabled = score === null;
}

function resetRating() {
  score = null;
  dom.ratingComment.value = '';
  showRating();
}

/** Rebuild the view from the API: at the first connection and after `recovered: false`. */
async function resync() {
  const [state, history] = await Promise.all([
    api.get(sessionPath()),
    api.all(`${sessionPath()}/messages`, 'messages'), // the whole transcript: every page
  ]);
  transcript.clear();
  agentLeft = null;
  typing.hide();
  for (const message of history.items) transcript.add(message);
  if (state.read?.agent) transcript.markRead(state.read.agent, ['customer']);
  applySession(state);
  reads.reset(state.read?.customer ?? null);
  reads.check();
  if (state.status === 'waiting_agent') showPlace(await api.get(`${sessionPath()}/queue`));
}

function onEvent(event) {
  if (event.id && current) {
    current.lastEventId = event.id;
    save();
  }
  const p = event.payload || {};
  switch (event.type) {
    case 'new_message':
      transcript.add(p.message);
      typing.hide(p.message.role);
      reads.check();
      break;
    case 'typing':
      if (p.who !== 'customer') typing.show(p.who);
      break;
    case 'read':
      if (p.reader === 'agent') transcript.markRead(p.up_to, ['customer']);
      break;
    case 'rating':
      // Sent here, or in another tab of this conversation.
      if (session) applySession({ ...session, rating: { score: p.score, comment: p.comment } });
      break;
    case 'queue_update':
      showPlace(p);
      break;
    case 'status_change':
      typing.hide();
      applySession({ ...(session || {}), status: p.status, agent_id: p.agent_id });
      if (agentLeft !== null) {
        // Where the conversation went says what the agent's leaving was.
        const left = agentLeft;
        agentLeft = null;
        if (p.status === 'bot_active') transcript.notice(`${left} left: you are back to the bot.`, 'left');
        else if (p.status === 'waiting_agent') transcript.notice(`${left} left: waiting for the next agent…`, 'left');
        else transcript.notice(`${left} left the conversation.`, 'left');
      } else if (p.status === 'waiting_agent') {
        transcript.notice('Waiting for an agent…', 'waiting');
      }
      if (p.status === 'closed') transcript.notice('The conversation was closed.', 'closed');
      break;
    case 'agent_joined':
      if (agentLeft !== null) transcript.notice(`${agentLeft} passed you to ${p.agent_id}.`, 'left');
      agentLeft = null;
      transcript.notice(`${p.agent_id} joined the conversation.`, 'joined');
      break;
    case 'agent_left':
      agentLeft = p.agent_id; // told with the status change that follows (released? transferred?)
      break;
    default:
      break; // connected, heartbeat, and types a later version may add
  }
}

function openStream() {
  stream?.close();
  stream = new LiveStream(`${sessionPath()}/events`, {
    token: current.token,
    lastEventId: current.lastEventId,
    onEvent,
    onResync: resync,
    onState: (state, s) => {
      showConnection(dom.connection, s);
      if (state === 'failed') showError(dom.error, s.error);
    },
    probe: () => api.get(sessionPath()),
  });
  showConnection(dom.connection, stream);
  stream.start();
}

function enter(name, token, lastEventId = null) {
  current = { name, token: token || null, lastEventId };
  save();
  dom.title.textContent = `Conversation ${name}`;
  dom.start.hidden = true;
  dom.chat.hidden = false;
  transcript.clear();
  agentLeft = null;
  typing.hide();
  reads.reset();
  resetRating();
  openStream();
  dom.message.focus();
}

async function start(event) {
  event.preventDefault();
  showError(dom.error, null);
  const name = dom.nameInput.value.trim();
  if (name && !NAME.test(name)) {
    showError(dom.error, new Error('Use 1 to 64 letters, digits, _ or -.'));
    return;
  }
  dom.startButton.disabled = true;
  try {
    const created = await api.post('/chatbot/api/sessions', name ? { session_name: name } : {});
    enter(created.session_name, created.token);
  } catch (error) {
    if (error instanceof ApiError && error.code === 'session_exists') {
      // Rejoin it if this deployment lets us read it (no authentication); else pick another.
      try {
        current = { name, token: null, lastEventId: null };
        await api.get(sessionPath());
        enter(name, null);
        return;
      } catch {
        current = null;
        showError(dom.error, new Error(`"${name}" is taken: choose another name.`));
        return;
      }
    }
    showError(dom.error, error);
  } finally {
    dom.startButton.disabled = false;
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const content = dom.message.value.trim();
  if (!content || !current) return;
  dom.send.disabled = true;
  showError(dom.error, null);
  try {
    const answer = await api.post('/chatbot/api/chat', { session_name: current.name, content });
    dom.message.value = '';
    transcript.add(answer.message, { local: true });
    if (answer.reply) transcript.add(answer.reply, { local: true });
    applySession(answer.session);
    reads.check();
  } catch (error) {
    showError(dom.error, error);
  } finally {
    dom.send.disabled = session?.status === 'closed';
    dom.message.focus();
  }
}

async function escalate() {
  dom.escalate.disabled = true;
  showError(dom.error, null);
  try {
    applySession(await api.post('/chatbot/api/manual/escalate', { session_name: current.name }));
  } catch (error) {
    showError(dom.error, error);
    if (session) applySession(session);
  }
}

/** The user writes: the agent's side is told (throttled), while the conversation is open. */
function onInput() {
  if (current && session && session.status !== 'closed') sendTyping();
}

function chooseScore(event) {
  const star = event.target.closest('button[data-score]');
  if (!star) return;
  score = Number(star.dataset.score);
  showRating();
}

async function rate(event) {
  event.preventDefault();
  if (!current || score === null) return;
  const comment = dom.ratingComment.value.trim();
  dom.ratingSend.disabled = true;
  showError(dom.error, null);
  try {
    applySession(await api.post(`${sessionPath()}/rating`, comment ? { score, comment } : { score }));
  } catch (error) {
    showError(dom.error, error); // already_rated: the rating event shows "Thanks" as well
    showRating();
  }
}

function newConversation() {
  stream?.close();
  stream = null;
  current = null;
  session = null;
  save();
  transcript.clear();
  agentLeft = null;
  typing.hide();
  reads.reset();
  resetRating();
  dom.chat.hidden = true;
  dom.start.hidden = false;
  dom.connection.textContent = 'Not connected';
  dom.connection.dataset.state = 'idle';
  showError(dom.error, null);
  dom.nameInput.value = '';
  dom.nameInput.focus();
}

dom.startForm.addEventListener('submit', start);
dom.generate.addEventListener('click', () => { dom.nameInput.value = randomName('web-'); });
dom.chatForm.addEventListener('submit', sendMessage);
dom.message.addEventListener('input', onInput);
dom.stars.addEventListener('click', chooseScore);
dom.ratingForm.addEventListener('submit', rate);
dom.escalate.addEventListener('click', escalate);
dom.newChat.addEventListener('click', newConversation);
window.addEventListener('pagehide', () => stream?.close());
window.addEventListener('pageshow', (event) => {
  if (event.persisted && current) openStream(); // back from the back/forward cache
});

const saved = load();
if (saved) enter(saved.name, saved.token, saved.lastEventId);
