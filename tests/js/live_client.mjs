/**
 * Drives app/static/switchboard.js in Node.js against a live server, for tests/test_js_client.py.
 *
 *     node --experimental-eventsource tests/js/live_client.mjs '<config JSON>'
 *
 * config: {
 *   base: "http://127.0.0.1:PORT",            // server origin (createApi base, LiveStream base)
 *   streams: [{name, path, token?, lastEventId?, resync?: [api paths], probe?: api path}],
 *   options?: {minDelay, maxDelay, staleAfter},   // LiveStream options shared by all streams
 *   lifetime?: seconds                          // exit(3) after this long, whatever happens
 * }
 *
 * Prints one JSON object per line on stdout:
 *   {"kind": "ready"}                                       all streams started
 *   {"kind": "open", "path", "token": bool, "last_event_id"} an EventSource was created
 *   {"kind": "es_error", "path", "readyState"}              an EventSource reported an error
 *   {"kind": "event", "stream", "type", "id", "payload"}    LiveStream's onEvent
 *   {"kind": "state", "stream", "state", "connects", "resyncs", "error"}   onState
 *   {"kind": "resync", "stream", "initial", "recovered", "data": {path: digest}} onResync done
 * and exits 0 when its standard input closes (closing every stream first).
 */
import { createApi, LiveStream } from '../../app/static/switchboard.js';

const config = JSON.parse(process.argv[2]);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

if (typeof EventSource !== 'function') {
  process.stderr.write('no global EventSource: run node with --experimental-eventsource\n');
  process.exit(2);
}

// Record every EventSource the module creates (the URL it asked for, and the errors it
// reports), without changing what it does.
const NativeEventSource = globalThis.EventSource;
globalThis.EventSource = class RecordedEventSource extends NativeEventSource {
  constructor(url, init) {
    super(url, init);
    const parsed = new URL(String(url));
    print({
      kind: 'open',
      path: parsed.pathname,
      token: parsed.searchParams.has('token'),
      last_event_id: parsed.searchParams.get('last_event_id'),
    });
    this.addEventListener('error', () => {
      print({ kind: 'es_error', path: parsed.pathname, readyState: this.readyState });
    });
  }
};

/** What a refetched resource says, in short: ids of messages, names of sessions, a status. */
function digest(body) {
  if (body && Array.isArray(body.messages)) return { messages: body.messages.map((m) => m.id) };
  if (body && Array.isArray(body.sessions)) return { sessions: body.sessions.map((s) => s.session_name) };
  if (body && typeof body.status === 'string') return { status: body.status, agent_id: body.agent_id };
  return body;
}

const streams = config.streams.map((spec) => {
  const api = createApi({ base: config.base, token: spec.token || null });
  return new LiveStream(spec.path, {
    ...(config.options || {}),
    base: config.base,
    token: spec.token || null,
    lastEventId: spec.lastEventId || null,
    onEvent: (event) => print({
      kind: 'event', stream: spec.name, type: event.type, id: event.id, payload: event.payload,
    }),
    onState: (state, stream) => print({
      kind: 'state', stream: spec.name, state, connects: stream.connects, resyncs: stream.resyncs,
      error: stream.error ? { status: stream.error.status, code: stream.error.code } : null,
    }),
    onResync: async ({ initial, recovered }) => {
      const data = {};
      for (const path of spec.resync || []) data[path] = digest(await api.get(path));
      print({ kind: 'resync', stream: spec.name, initial, recovered, data });
    },
    probe: spec.probe ? () => api.get(spec.probe) : undefined,
  });
});

for (const stream of streams) stream.start();
print({ kind: 'ready' });

function shutdown(code) {
  for (const stream of streams) stream.close();
  process.exit(code);
}

process.stdin.on('end', () => shutdown(0));
process.stdin.resume();
setTimeout(() => {
  process.stderr.write('lifetime over\n');
  shutdown(3);
}, (config.lifetime || 60) * 1000).unref();
