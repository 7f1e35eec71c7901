// The dashboard shell: header (state, totals, start/stop, connection), hash router, shared state.
import { api, LiveStream } from './client.js';
import { el, clear, debounce, fmtCost, fmtDuration, toast } from './util.js';
import * as overview from './overview.js';
import * as features from './features.js';
import * as sessions from './sessions.js';
import * as session from './session.js';
import * as config from './config.js';

const TAIL_LINES = 200;

// Shared, live state. Views read it and subscribe to changes.
export const store = {
  status: null,
  features: null,
  tails: new Map(), // track name -> [{id, cls, text, session_id}]
  listeners: new Set(),
  changed(what) { for (const fn of [...this.listeners]) fn(what); },
  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); },
};

const live = new LiveStream({ onState: showConnection });

async function refreshStatus() {
  try {
    store.status = await api.get('/api/status');
    store.changed('status');
    renderHeader();
  } catch (err) {
    if (err.status) toast(err.message, 'error', err.hint);
  }
}

let featuresAsked = 0;
async function refreshFeatures() {
  const asked = ++featuresAsked;
  try {
    const { features } = await api.get('/api/features');
    if (asked !== featuresAsked) return; // a later request was sent: its answer is newer
    store.features = features;
    store.changed('features');
  } catch (err) {
    if (err.status) toast(err.message, 'error', err.hint);
  }
}

const refreshStatusSoon = debounce(refreshStatus, 300);
const refreshFeaturesSoon = debounce(refreshFeatures, 400);
let snapshotLastId = 0;

function pushTail(track, line) {
  if (!track) return;
  let lines = store.tails.get(track);
  if (!lines) { lines = []; store.tails.set(track, lines); }
  lines.push(line);
  if (lines.length > TAIL_LINES) lines.splice(0, lines.length - TAIL_LINES);
}

function wireEvents() {
  live.on('output', (ev) => {
    const d = ev.data;
    const line = { id: ev.id, session_id: d.session_id, event: d.event || {} };
    pushTail(d.track, line);
    store.changed({ type: 'output', track: d.track, line });
  });
  live.on('*', (ev) => {
    if (ev.type === 'output' || ev.id <= snapshotLastId) return;
    if (ev.type === 'track' && store.status) {
      const t = (store.status.tracks || []).find((x) => x.name === ev.data.name);
      if (t) {
        for (const k of ['phase', 'feature_id', 'paused', 'feature_name', 'session_id', 'agent', 'phase_started_at']) {
          if (k in ev.data && (ev.data[k] !== null || !['session_id', 'agent'].includes(k))) t[k] = ev.data[k];
        }
        if ('reason' in ev.data) t.paused_reason = ev.data.reason;
        store.changed('status');
      }
    }
    if (ev.type === 'session' && store.status && ev.data.status === 'running') {
      const t = (store.status.tracks || []).find((x) => x.name === ev.data.track);
      if (t) { t.session_id = ev.data.id; t.agent = ev.data.agent; store.changed('status'); }
    }
    if (ev.type === 'notice') {
      toast(ev.data.message || 'notice', ev.data.level === 'error' ? 'error' : 'info');
    }
    refreshStatusSoon();
    if (ev.type === 'feature' || ev.type === 'merge' || ev.type === 'session') refreshFeaturesSoon();
    store.changed({ type: ev.type, event: ev });
  });
  live.on('_open', () => {
    snapshotLastId = Math.min(snapshotLastId, live.lastId ?? 0);
    refreshStatusSoon();
    refreshFeaturesSoon();
  });
}

// ------------------------------------------------------------------------------- header
const header = {};

function buildHeader() {
  const nav = el('nav', { class: 'tabs', 'aria-label': 'views' },
    ['overview', 'features', 'sessions', 'config'].map((name) =>
      el('a', { href: `#/${name}`, dataset: { view: name }, text: name[0].toUpperCase() + name.slice(1) })));
  header.state = el('span', { class: 'state', id: 'run-state', text: '…' });
  header.totals = el('span', { class: 'totals' });
  header.conn = el('span', { class: 'conn conn-connecting', id: 'connection', title: 'live connection' },
    el('span', { class: 'dot' }), el('span', { class: 'label', text: 'connecting' }));
  header.start = el('button', { class: 'btn primary', id: 'btn-start', type: 'button', text: 'Start', onclick: () => control('start') });
  header.stop = el('button', { class: 'btn', id: 'btn-stop', type: 'button', text: 'Stop', onclick: () => control('stop') });
  header.project = el('strong', { class: 'project', text: 'agent-orchestrator' });
  const bar = el('header', { class: 'topbar' },
    el('div', { class: 'brand' }, header.project, header.state),
    nav,
    el('div', { class: 'controls' }, header.totals, header.start, header.stop, header.conn));
  document.body.prepend(bar);
  header.nav = nav;
}

async function control(action) {
  try {
    const result = await api.post(`/api/${action}`);
    toast(action === 'start' ? 'Processing started' : 'Stopping: agents are being stopped', 'info');
    if (store.status) store.status.state = result.state;
    refreshStatus();
  } catch (err) {
    toast(err.message, 'error', err.hint);
  }
}

function renderHeader() {
  const s = store.status;
  if (!s) return;
  header.project.textContent = s.project || 'agent-orchestrator';
  document.title = `${s.project || 'agent-orchestrator'} · ${s.state}`;
  header.state.textContent = s.state;
  header.state.className = `state state-${s.state}`;
  const running = s.state === 'running';
  header.start.disabled = running || s.state === 'stopping' || !s.daemon;
  header.stop.disabled = !running;
  const c = s.counts || {};
  clear(header.totals).append(
    el('span', { title: 'cost so far', text: fmtCost(s.cost_usd) }),
    s.eta_seconds ? el('span', { title: 'estimated time left', text: `ETA ${fmtDuration(s.eta_seconds)}` }) : '',
    el('span', { title: 'passed / total', text: `${c.passed || 0}/${Object.values(c).reduce((a, b) => a + b, 0)} passed` }));
}

function showConnection(state) {
  if (!header.conn) return;
  header.conn.className = `conn conn-${state}`;
  header.conn.querySelector('.label').textContent = state;
  header.conn.title = state === 'live' ? 'live: receiving events' : 'not connected: reconnecting on its own';
}

// ------------------------------------------------------------------------------- router
const routes = [
  [/^#\/overview$/, overview],
  [/^#\/features$/, features],
  [/^#\/sessions$/, sessions],
  [/^#\/sessions\/(\d+)$/, session],
  [/^#\/config$/, config],
];
let current = null;
const main = el('main', { id: 'view' });

function route() {
  const hash = location.hash || '#/overview';
  let match = null;
  let view = null;
  for (const [re, mod] of routes) {
    match = hash.split('?')[0].match(re);
    if (match) { view = mod; break; }
  }
  if (!view) { location.hash = '#/overview'; return; }
  if (current && current.unmount) current.unmount();
  clear(main);
  const name = hash.slice(2).split('/')[0].split('?')[0];
  for (const a of header.nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.view === name);
  current = view.mount(main, { api, live, store, params: match.slice(1), query: new URLSearchParams(hash.split('?')[1] || '') });
}

async function boot() {
  // On a non-loopback bind the printed URL carries ?token= once (it sets a cookie): drop it from the address bar.
  if (new URLSearchParams(location.search).has('token')) history.replaceState(null, '', location.pathname + location.hash);
  buildHeader();
  document.body.append(main);
  wireEvents();
  window.addEventListener('hashchange', route);
  await refreshStatus();
  // Replay the recent past of the stream so the live tails start filled; the state itself comes
  // from the snapshot, so replayed non-output events older than it are ignored.
  snapshotLastId = (store.status && store.status.last_event_id) || 0;
  live.start(Math.max(0, snapshotLastId - 2000));
  // The view is shown at once; the backlog (megabytes with thousands of features) follows, and
  // the features view draws it when it arrives.
  route();
  refreshFeatures();
}

boot();
