/**
 * Switchboard browser client: small helpers for the JSON API and a resilient `EventSource`
 * wrapper. Dependency-free ES module, no build step:
 *
 *     import { createApi, LiveStream } from '/console/switchboard.js';
 *
 * It also runs unchanged in Node.js with `--experimental-eventsource` (global `EventSource`,
 * `fetch` and `URL`); outside a page, give absolute URLs or the `base` option.
 *
 * The wire contract is docs/api.md; what a resumed stream promises is docs/delivery.md; how to
 * use this module (and the same from Python or curl) is docs/clients.md.
 * @module switchboard
 */

// EventSource.readyState values (the spec's numbers, so that no global is needed to read them).
const CONNECTING = 0;
const CLOSED = 2;
// Event types sent without an SSE id (docs/api.md, "On the wire").
const ID_LESS = new Set(['heartbeat', 'typing', 'queue_update']);

/** An error answered by the API in its JSON shape `{"error": {"code", "message", "fields"}}`. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached.
   * @param {string} code `error.code` (`conflict`, `unavailable`, ...), or `network_error`.
   * @param {string} message `error.message`, readable by a person.
   * @param {Object<string, string[]>|null} [fields] Offending fields of a validation error.
   * @param {number|null} [retryAfter] Seconds from the `Retry-After` header, if any.
   */
  constructor(status, code, message, fields = null, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = fields;
    this.retryAfter = retryAfter;
  }

  /** True when trying again later may work (network, 429, 5xx). */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** One URL path segment (session names and agent ids are `[A-Za-z0-9_-]`, but be safe). */
export const seg = (value) => encodeURIComponent(String(value));

/** The most items one page of a listing holds (`?limit=`, 1 to 1,000; 100 when absent). */
export const MAX_PAGE = 1000;

/**
 * `path` with query parameters added (null and undefined ones left out).
 * @param {string} path
 * @param {Object<string, (string|number|null|undefined)>} params
 * @returns {string}
 */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) query.append(name, String(value));
  }
  const text = query.toString();
  if (!text) return path;
  return `${path}${path.includes('?') ? '&' : '?'}${text}`;
}

/**
 * JSON API helpers bound to a base URL and a token.
 * @param {Object} [options]
 * @param {string} [options.base] URL prefix; '' for the page's own origin.
 * @param {(() => (string|null|undefined))|string|null} [options.token] Bearer token, or a
 *   function returning the current one (tokens are not needed under `--insecure`).
 * @returns {{request: function(string, string, Object=): Promise<any>,
 *            get: function(string): Promise<any>, post: function(string, Object=): Promise<any>,
 *            all: function(string, string, Object=): Promise<{items: Array, complete: boolean}>}}
 *   Each resolves to the parsed JSON body (`all`: the items of every page), or rejects with
 *   an {@link ApiError}.
 */
export function createApi({ base = '', token = null } = {}) {
  async function request(method, path, body) {
    const headers = { Accept: 'application/json' };
    const bearer = typeof token === 'function' ? token() : token;
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(base + path, init);
    } catch {
      throw new ApiError(0, 'network_error', 'The server cannot be reached.');
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      const retry = Number.parseInt(response.headers.get('Retry-After') || '', 10);
      throw new ApiError(
        response.status,
        error.code || 'http_error',
        error.message || `HTTP ${response.status}`,
        error.fields || null,
        Number.isFinite(retry) ? retry : null,
      );
    }
    return data;
  }
  /**
   * Every item of a paged listing (the queue, a transcript): its pages, following
   * `next_cursor` until it is null, at most `maxPages` of them (`complete` says whether the
   * end was reached). A page may hold fewer than `limit` items with more to come: only a null
   * cursor ends the listing. A cursor the server no longer knows (`invalid_cursor`: its
   * transcript message was trimmed meanwhile) starts the listing again, within the same budget.
   * @param {string} path The listing, with its own query if any (`?status=agent_active`).
   * @param {string} key The array of each page (`sessions`, `messages`).
   * @param {{limit?: number, maxPages?: number}} [options]
   */
  async function all(path, key, { limit = MAX_PAGE, maxPages = 10 } = {}) {
    let items = [];
    let cursor = null;
    for (let page = 0; page < maxPages; page += 1) {
      let body;
      try {
        body = await request('GET', withQuery(path, { limit, cursor }));
      } catch (error) {
        if (!(error instanceof ApiError && error.code === 'invalid_cursor' && cursor !== null)) throw error;
        items = [];
        cursor = null;
        continue;
      }
      items = items.concat(body[key] || []);
      cursor = body.next_cursor ?? null;
      if (cursor === null) return { items, complete: true };
    }
    return { items, complete: false };
  }
  return {
    request,
    get: (path) => request('GET', path),
    post: (path, body = {}) => request('POST', path, body),
    all,
  };
}

/**
 * Compare two event ids of the form `<milliseconds>-<sequence>`; null when either is not one.
 * @param {string} a
 * @param {string} b
 * @returns {number|null} negative, 0 or positive like a sort comparator.
 */
export function compareIds(a, b) {
  const pa = /^(\d+)-(\d+)$/.exec(a || '');
  const pb = /^(\d+)-(\d+)$/.exec(b || '');
  if (!pa || !pb) return null;
  const ms = BigInt(pa[1]) - BigInt(pb[1]);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(pa[2]) - BigInt(pb[2]);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}

/**
 * @typedef {Object} SwitchboardEvent The event envelope (docs/api.md, "Event envelope").
 * @property {string} type `connected`, `new_message`, `status_change`, ...
 * @property {Object} payload
 * @property {number} timestamp Unix seconds.
 * @property {string} source `ai_chatbot`, `agent_workbench` or `system`.
 * @property {string|null} id The SSE event id (null for heartbeats).
 */

/**
 * @typedef {'connecting'|'connected'|'reconnecting'|'failed'|'closed'} StreamState
 */

/**
 * An `EventSource` that stays live:
 *
 * - switches on `data.type` and hands every event to `onEvent`;
 * - tracks the last event id; the browser resends it (`Last-Event-ID`) on its own reconnects,
 *   and when the browser gives up (an HTTP error such as 503 during an outage) the stream is
 *   reopened with `?last_event_id=`, with a capped, jittered backoff;
 * - calls `onResync` at the first `connected` and whenever `connected` says
 *   `"recovered": false`: the view must then be rebuilt from the API. Events that arrive while
 *   the promise it returns is pending are held and delivered after it, so they apply on top of
 *   the refetched state; a resync that fails is retried (unless the API answered 4xx);
 * - reopens a stream that has been silent longer than `staleAfter` (the server sends a
 *   heartbeat every 30 s by default, so 75 s is 2.5 intervals), which catches a dead
 *   connection nobody reported;
 * - with `probe`, asks the API before reopening after a failure: a 4xx answer (unknown session,
 *   expired token) stops the stream in state `failed` instead of retrying forever.
 */
export class LiveStream {
  /**
   * @param {string} url Stream URL, e.g. `/chatbot/api/sessions/demo/events`.
   * @param {Object} [options]
   * @param {string|null} [options.base] Base for a relative `url`; defaults to the page's
   *   location (needed outside a page, e.g. in Node.js: the server's origin).
   * @param {string|null} [options.token] Sent as `?token=` (EventSource cannot set headers).
   * @param {string|null} [options.lastEventId] Resume from here (a reopened page).
   * @param {function(SwitchboardEvent): void} [options.onEvent]
   * @param {function(StreamState, LiveStream): void} [options.onState]
   * @param {function({initial: boolean, recovered: boolean}): (Promise<void>|void)} [options.onResync]
   * @param {function(): Promise<any>} [options.probe] A cheap API call on the same resource.
   * @param {number} [options.minDelay] First reopen delay, ms.
   * @param {number} [options.maxDelay] Longest reopen delay, ms.
   * @param {number} [options.staleAfter] Reopen after this long without any event, ms (0: never).
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { minDelay: 1000, maxDelay: 10000, staleAfter: 75000, ...options };
    /** @type {string|null} The newest event id seen. */
    this.lastEventId = options.lastEventId || null;
    /** @type {StreamState} */
    this.state = 'connecting';
    /** `connected` events seen: 1 after the first connection, +1 per reconnection. */
    this.connects = 0;
    /** Times the view was told to rebuild itself (the first load counts). */
    this.resyncs = 0;
    /** @type {ApiError|null} Why the stream stopped, in state `failed`. */
    this.error = null;
    this._source = null;
    this._attempts = 0;
    this._timer = null;
    this._watchdog = null;
    this._heardAt = 0;
    this._held = null; // events held while a resync runs
    this._resyncWanted = null;
  }

  /** Open the stream (once). @returns {LiveStream} this */
  start() {
    if (this._source || this.state === 'closed') return this;
    this._open();
    if (this.options.staleAfter > 0) {
      const every = Math.max(1000, this.options.staleAfter / 3);
      this._watchdog = setInterval(() => this._checkStale(), every);
    }
    return this;
  }

  /** Close for good (leaving the page, switching conversation). */
  close() {
    this._shut();
    clearInterval(this._watchdog);
    this._setState('closed');
  }

  _open() {
    const base = this.options.base || globalThis.location?.href;
    const url = base ? new URL(this.url, base) : new URL(this.url);
    if (this.options.token) url.searchParams.set('token', this.options.token);
    if (this.lastEventId) url.searchParams.set('last_event_id', this.lastEventId);
    const source = new EventSource(url);
    source.onmessage = (message) => this._receive(message);
    source.onerror = () => this._failed(source);
    this._source = source;
    this._heardAt = Date.now();
  }

  _shut() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._source) {
      this._source.onmessage = null;
      this._source.onerror = null;
      this._source.close();
      this._source = null;
    }
  }

  _receive(message) {
    this._heardAt = Date.now();
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return; // not an envelope: ignore, as the contract asks of unknown input
    }
    if (!data || typeof data.type !== 'string') return;
    const id = message.lastEventId || null;
    // Events without an id (heartbeat, typing): a browser's lastEventId still holds the
    // previous event's id, which must neither order nor drop them.
    if (ID_LESS.has(data.type)) return this._deliver({ ...data, id: null });
    if (data.type !== 'connected' && id && this.lastEventId) {
      // The server delivers each event once; this guard only protects the view.
      const order = compareIds(id, this.lastEventId);
      if (order !== null && order <= 0) return;
    }
    if (id) this.lastEventId = id;
    const event = { ...data, id };
    if (data.type === 'connected') {
      this.connects += 1;
      this._attempts = 0;
      this.error = null;
      const recovered = data.payload?.recovered !== false;
      const initial = this.resyncs === 0;
      if (initial || !recovered) this.resyncs += 1;
      this._setState('connected', true);
      if (initial || !recovered) this._resync({ initial, recovered });
    }
    this._deliver(event);
  }

  _deliver(event) {
    if (this._held) this._held.push(event);
    else this.options.onEvent?.(event);
  }

  async _resync(info) {
    this._resyncWanted = info;
    if (this._held) return; // a resync is running: it will run again with this request
    this._held = [];
    let delay = this.options.minDelay;
    while (this._resyncWanted && this.state !== 'closed') {
      const wanted = this._resyncWanted;
      this._resyncWanted = null;
      this._held = []; // the refetched state includes whatever was held so far
      try {
        await this.options.onResync?.(wanted);
      } catch (error) {
        if (error instanceof ApiError && !error.transient) {
          this.error = error; // 4xx: refetching again cannot help
          this._shut();
          this._setState('failed');
          break;
        }
        this._resyncWanted = wanted;
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, this.options.maxDelay);
      }
    }
    const held = this._held;
    this._held = null;
    if (this.state === 'closed' || this.state === 'failed') return;
    for (const event of held) this.options.onEvent?.(event);
  }

  _failed(source) {
    if (source !== this._source || this.state === 'closed') return;
    this._setState('reconnecting');
    if (source.readyState === CONNECTING) {
      // The browser retries by itself, sending Last-Event-ID. Node's EventSource reports
      // CONNECTING too when a connection is refused, then closes for good: look again once
      // this event has been handled.
      setTimeout(() => this._gaveUp(source), 0);
      return;
    }
    this._gaveUp(source);
  }

  /** The EventSource stopped retrying (an HTTP error status): reopen with ?last_event_id=. */
  _gaveUp(source) {
    if (source !== this._source || this.state === 'closed' || source.readyState !== CLOSED) return;
    this._shut();
    this._setState('reconnecting');
    this._scheduleReopen();
  }

  _scheduleReopen(retryAfter = null) {
    const { minDelay, maxDelay } = this.options;
    const base = Math.min(maxDelay, minDelay * 2 ** this._attempts);
    // Jittered (half to all of the step), so that clients do not all come back at once, and
    // never sooner than a Retry-After the API answered.
    const delay = Math.max(base / 2 + Math.random() * (base / 2), (retryAfter || 0) * 1000);
    this._attempts += 1;
    this._timer = setTimeout(() => this._reopen(), delay);
  }

  async _reopen() {
    this._timer = null;
    if (this.state === 'closed') return;
    if (this.options.probe) {
      try {
        await this.options.probe();
      } catch (error) {
        if (this.state === 'closed') return;
        if (error instanceof ApiError && !error.transient) {
          this.error = error; // 4xx: retrying cannot help
          this._setState('failed');
          return;
        }
        this._scheduleReopen(error instanceof ApiError ? error.retryAfter : null);
        return;
      }
    }
    if (this.state !== 'closed' && !this._source) this._open();
  }

  _checkStale() {
    if (!this._source || this.state === 'closed') return;
    if (this._source.readyState === CLOSED) {
      this._gaveUp(this._source); // closed without a word: reopen it
      return;
    }
    if (Date.now() - this._heardAt > this.options.staleAfter) {
      this._shut();
      this._setState('reconnecting');
      this._open();
    }
  }

  _setState(state, always = false) {
    if (this.state === 'closed' || (this.state === state && !always)) return;
    this.state = state;
    this.options.onState?.(state, this);
  }
}
