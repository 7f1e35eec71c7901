// The HTTP API client (token sent transparently) and the live event stream with reconnection.

const tokenMeta = document.querySelector('meta[name="ao-token"]');
const TOKEN = tokenMeta ? tokenMeta.content : '';

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || 'error';
    this.hint = err.hint || '';
    this.problems = err.problems || [];
  }
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const api = {
  get: (path) => request('GET', path),
  post: (path, body = {}) => request('POST', path, body),
  patch: (path, body) => request('PATCH', path, body),
};

// A bus for server-sent events: views subscribe to types ('*' for all); the stream reconnects
// by itself and resumes after the last id it saw (no gap, no duplicate).
export class LiveStream {
  constructor({ url = '/api/events', onState = () => {} } = {}) {
    this.url = url;
    this.onState = onState;
    this.handlers = new Map();
    this.lastId = null;
    this.source = null;
    this.retryMs = 1000;
    this.timer = null;
    this.state = 'connecting';
    this.types = ['status', 'feature', 'session', 'output', 'track', 'merge', 'notice'];
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  start(lastId = null) {
    if (lastId !== null) this.lastId = lastId;
    this.connect();
  }

  connect() {
    if (this.source) this.source.close();
    const url = this.lastId !== null ? `${this.url}${this.url.includes('?') ? '&' : '?'}last_id=${this.lastId}` : this.url;
    const source = new EventSource(url);
    this.source = source;
    this.setState('connecting');
    source.onopen = () => { this.retryMs = 1000; this.setState('live'); this.emit('_open', {}); };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. daemon down): reconnect ourselves, resuming after lastId.
        this.setState('offline');
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(Math.round(this.retryMs * 1.5), 5000);
      } else {
        this.setState('reconnecting');
      }
    };
    for (const type of this.types) {
      source.addEventListener(type, (msg) => this.dispatch(type, msg));
    }
    // The daemon's history was reset (new database): forget our position and reload everything.
    source.addEventListener('reset', (msg) => {
      this.lastId = Number(msg.lastEventId) || 0;
      this.emit('_open', {});
    });
  }

  dispatch(type, msg) {
    const id = Number(msg.lastEventId);
    if (Number.isFinite(id) && this.lastId !== null && id <= this.lastId) return;
    if (Number.isFinite(id)) this.lastId = id;
    let data;
    try { data = JSON.parse(msg.data); } catch { return; }
    const event = { id, type, data };
    this.emit(type, event);
    this.emit('*', event);
  }

  emit(type, event) {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(event); } catch (err) { console.error(err); }
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  close() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.setState('closed');
  }
}
