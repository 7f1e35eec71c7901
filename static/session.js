// One session: metadata and its normalised events. Events are fetched in pages, rendered in
// requestAnimationFrame batches into chunks of CHUNK events; chunks far off-screen are emptied
// (their height kept) and rebuilt when they come back, so 100,000 events stay fluid. While the
// session runs, a session-filtered event stream appends new events (resuming by id: no gap, no
// duplicate). Tool calls are folded together with their result.
import { el, clear, fmtCost, fmtDuration, fmtTime, fmtTokens, badge, toolSummary, toast } from './util.js';

const CHUNK = 200;
const PAGE = 1000;
const FRAME_BUDGET_MS = 10;
const SHOW_CHARS = 4000;
const EST_EVENT_PX = 34;
const ENDED = new Set(['succeeded', 'failed', 'interrupted']);

export function mount(root, { api, params }) {
  const sessionId = Number(params[0]);
  const head = el('section', { class: 'session-head', id: 'session-head' }, el('p', { class: 'muted', text: 'loading…' }));
  const counter = el('span', { class: 'muted', id: 'event-count', text: '0 events' });
  const follow = el('input', { type: 'checkbox', id: 'follow' });
  const list = el('div', { class: 'events', id: 'events', role: 'log', 'aria-label': 'session events' });
  root.append(head,
    el('div', { class: 'toolbar sticky' }, el('a', { href: '#/sessions', text: '← sessions' }), counter,
      el('span', { class: 'spacer' }),
      el('label', { class: 'check' }, follow, ' follow'),
      el('button', { type: 'button', class: 'btn small', text: 'top', onclick: () => window.scrollTo(0, 0) }),
      el('button', { type: 'button', class: 'btn small', text: 'end', onclick: () => scrollEnd() })),
    list);

  let disposed = false;
  let session = null;
  let lastId = 0;
  let total = 0;
  let loading = true;
  let stream = null;
  const queue = [];
  const chunks = [];
  const calls = new Map();
  let rafId = 0;

  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const chunk = entry.target.__chunk;
      if (!chunk) continue;
      if (entry.isIntersecting && !chunk.rendered) renderChunk(chunk);
      else if (!entry.isIntersecting && chunk.rendered && chunk.events.length >= CHUNK) emptyChunk(chunk);
    }
  }, { rootMargin: '1500px 0px' });

  function newChunk() {
    // A chunk starting far below the screen is not built now (its height is estimated); the
    // observer builds it if it ever comes near the screen.
    const far = list.getBoundingClientRect().bottom > window.innerHeight + 4000;
    const chunk = { events: [], el: el('div', { class: 'chunk' }), rendered: !far };
    if (far) chunk.el.style.height = `${CHUNK * EST_EVENT_PX}px`;
    chunk.el.__chunk = chunk;
    chunks.push(chunk);
    list.append(chunk.el);
    observer.observe(chunk.el);
    return chunk;
  }

  function renderChunk(chunk) {
    const frag = document.createDocumentFragment();
    for (const ev of chunk.events) frag.append(nodeFor(ev));
    chunk.el.style.height = '';
    clear(chunk.el).append(frag);
    chunk.rendered = true;
  }

  function emptyChunk(chunk) {
    const h = chunk.el.getBoundingClientRect().height;
    chunk.el.style.height = `${h}px`;
    for (const ev of chunk.events) ev.node = null;
    clear(chunk.el);
    chunk.rendered = false;
  }

  // ---------------------------------------------------------------- event -> DOM
  function nodeFor(ev) {
    const d = ev.data || {};
    let node;
    switch (ev.kind) {
      case 'text':
        node = el('div', { class: 'ev ev-text' }, longText(ev.text, ev));
        break;
      case 'thinking':
        node = el('details', { class: 'ev ev-thinking' }, el('summary', { text: 'thinking' }), longText(ev.text, ev));
        break;
      case 'tool_call':
        node = toolNode(ev);
        break;
      case 'tool_result':
        node = el('div', { class: `ev ev-tool-result${d.is_error ? ' is-error' : ''}` },
          el('div', { class: 'label', text: d.is_error ? 'tool error' : 'tool result' }), longText(resultText(ev), ev));
        break;
      case 'error':
        node = el('div', { class: 'ev ev-error', role: 'note' }, el('strong', { text: d.fatal ? 'fatal error: ' : 'error: ' }), longText(ev.text, ev));
        break;
      case 'result':
        node = el('div', { class: `ev ev-result ${d.success === false ? 'is-error' : 'is-ok'}` },
          el('div', { class: 'label', text: [d.success === false ? 'failed' : 'finished', d.subtype, d.num_turns != null ? `${d.num_turns} turns` : null, d.cost_usd != null ? fmtCost(d.cost_usd) : null].filter(Boolean).join(' · ') }),
          ev.text ? longText(ev.text, ev) : '');
        break;
      case 'usage':
        node = el('div', { class: 'ev ev-meta', text: `tokens ${fmtTokens(d.input_tokens)} in / ${fmtTokens(d.output_tokens)} out${d.cost_usd != null ? ` · ${fmtCost(d.cost_usd)}` : ''}` });
        break;
      case 'init':
        node = el('div', { class: 'ev ev-meta', text: `started ${d.model ? `with ${d.model}` : ''} ${d.session_id ? `(agent session ${d.session_id})` : ''}` });
        break;
      case 'rate_limit':
        node = el('div', { class: 'ev ev-warn', text: `rate limited${d.status ? ` (${d.status})` : ''}${d.resets_at ? `, resets ${fmtTime(d.resets_at)}` : ''} ${ev.text || ''}` });
        break;
      case 'retry':
        node = el('div', { class: 'ev ev-warn', text: `API retry ${d.attempt ?? ''}${d.status ? ` (status ${d.status})` : ''}${d.delay_ms ? ` in ${Math.round(d.delay_ms / 1000)}s` : ''}` });
        break;
      case 'stderr':
        node = el('div', { class: 'ev ev-stderr' }, longText(ev.text, ev));
        break;
      default:
        node = el('div', { class: 'ev ev-raw' }, longText(ev.text || JSON.stringify(d), ev));
    }
    node.title = ev.ts ? fmtTime(ev.ts) : '';
    node.dataset.id = ev.id;
    ev.node = node;
    return node;
  }

  function resultText(ev) {
    const out = ev.data && ev.data.output !== undefined ? ev.data.output : ev.text;
    return typeof out === 'string' ? out : JSON.stringify(out, null, 2);
  }

  // Huge texts show their start and a button for the rest.
  function longText(text, ev) {
    const s = String(text ?? '');
    const box = el('div', { class: 'body' });
    if (s.length <= SHOW_CHARS || ev.expanded) { box.textContent = s; return box; }
    box.textContent = `${s.slice(0, SHOW_CHARS)}…`;
    const more = el('button', { type: 'button', class: 'btn small more', text: `show all ${s.length.toLocaleString()} characters`,
      onclick: () => { ev.expanded = true; box.textContent = s; } });
    return el('div', {}, box, more);
  }

  function toolNode(ev) {
    const d = ev.data || {};
    const res = ev.result;
    const failed = res && res.data && res.data.is_error;
    const input = typeof d.input === 'string' ? d.input : JSON.stringify(d.input ?? {}, null, 2);
    const node = el('details', { class: `ev ev-tool${failed ? ' is-error' : ''}${res ? '' : ' pending'}` },
      el('summary', {}, el('span', { class: 'tool-name', text: d.name || 'tool' }), ' ',
        el('span', { class: 'tool-input', text: toolSummary(d.input, 140) }),
        el('span', { class: 'tool-state', text: res ? (failed ? ' ✗' : ' ✓') : ' …' })),
      el('div', { class: 'label', text: 'input' }), el('div', { class: 'body mono' }, longText(input, ev)),
      res ? el('div', { class: 'label', text: failed ? 'error' : 'result' }) : '',
      res ? el('div', { class: `body mono${failed ? ' error-text' : ''}` }, longText(resultText(res), res)) : '');
    node.open = Boolean(ev.open || failed);
    node.addEventListener('toggle', () => { ev.open = node.open; });
    return node;
  }

  // ---------------------------------------------------------------- feeding
  function add(ev) {
    if (ev.id <= lastId) return;
    lastId = ev.id;
    total += 1;
    const d = ev.data || {};
    if (ev.kind === 'tool_result' && d.id && calls.has(d.id)) {
      const call = calls.get(d.id);
      calls.delete(d.id);
      call.result = ev;
      if (call.node && call.node.isConnected) call.node.replaceWith(nodeFor(call));
      return;
    }
    if (ev.kind === 'tool_call' && d.id) calls.set(d.id, ev);
    let chunk = chunks[chunks.length - 1];
    if (!chunk || chunk.events.length >= CHUNK) chunk = newChunk();
    chunk.events.push(ev);
    if (chunk.rendered) chunk.el.append(nodeFor(ev));
    if (chunk.events.length === CHUNK) {
      // sealed: ask the observer again, so a full chunk already off-screen is released
      observer.unobserve(chunk.el);
      observer.observe(chunk.el);
    }
  }

  function pump() {
    rafId = 0;
    if (disposed) return;
    const start = performance.now();
    let n = 0;
    while (queue.length && performance.now() - start < FRAME_BUDGET_MS) {
      const batch = queue.splice(0, 200);
      for (const ev of batch) add(ev);
      n += batch.length;
    }
    counter.textContent = `${total.toLocaleString()} events${loading || queue.length ? ' · loading…' : ''}`;
    if (n && follow.checked) scrollEnd();
    if (queue.length) schedule();
  }

  function schedule() { if (!rafId) rafId = requestAnimationFrame(pump); }
  function enqueue(events) { for (const ev of events) queue.push(ev); schedule(); }
  function scrollEnd() { window.scrollTo(0, document.documentElement.scrollHeight); }

  // ---------------------------------------------------------------- loading
  function renderHead() {
    const s = session;
    const dur = fmtDuration((s.ended_at || Date.now() / 1000) - s.started_at);
    const item = (k, v, wide = false) => el('div', { class: wide ? 'kv wide' : 'kv' }, el('span', { class: 'k', text: k }), el('span', { class: 'v' }, v));
    clear(head).append(
      el('h1', {}, `Session #${s.id} `, badge(s.status, 'sess'), s.status === 'running' ? el('span', { class: 'live-dot', title: 'live' }) : ''),
      el('div', { class: 'kv-grid' },
        item('feature', el('a', { href: `#/features?q=${s.feature_id}`, text: `#${s.feature_id}` })),
        item('track', s.track), item('phase', s.phase), item('attempt', String(s.attempt ?? '')),
        item('agent', s.model ? `${s.agent} (${s.model})` : s.agent),
        item('started', fmtTime(s.started_at)), item('duration', dur),
        item('cost', fmtCost(s.cost_usd)), item('tokens', `${fmtTokens(s.input_tokens)} in / ${fmtTokens(s.output_tokens)} out`),
        s.num_turns != null ? item('turns', String(s.num_turns)) : '',
        s.exit_reason ? item('exit', `${s.exit_reason}${s.exit_code != null ? ` (code ${s.exit_code})` : ''}`) : '',
        s.failure_category ? item('failure', badge(s.failure_category, 'cat')) : '',
        s.agent_session_id ? item('agent session', el('span', { class: 'mono small', text: s.agent_session_id }), true) : '',
        s.cwd ? item('directory', el('span', { class: 'mono small', text: s.cwd }), true) : ''),
      s.error ? el('div', { class: 'ev ev-error' }, el('strong', { text: 'error: ' }), s.error) : '',
      s.truncated ? el('p', { class: 'ev ev-warn', text: 'output was longer than agent.maxOutputBytes; the rest was not kept' }) : '',
      s.prompt ? el('details', { class: 'prompt' }, el('summary', { text: 'prompt' }), el('pre', { text: s.prompt })) : '',
      s.final_text ? el('details', { class: 'prompt' }, el('summary', { text: 'final answer' }), el('pre', { text: s.final_text })) : '');
  }

  async function load() {
    // the first page of events is asked for together with the session
    const firstPage = api.get(`/api/sessions/${sessionId}/events?after=0&limit=${PAGE}`);
    firstPage.catch(() => {}); // a missing session is reported below
    try {
      session = (await api.get(`/api/sessions/${sessionId}`)).session;
    } catch (err) {
      clear(head).append(el('p', { class: 'error', text: err.message }), el('p', { class: 'muted', text: err.hint || '' }));
      loading = false;
      return;
    }
    renderHead();
    follow.checked = session.status === 'running';
    let after = 0;
    for (;;) {
      if (disposed) return;
      let page;
      try {
        page = await (after === 0 ? firstPage : api.get(`/api/sessions/${sessionId}/events?after=${after}&limit=${PAGE}`));
      } catch (err) {
        toast(err.message, 'error', err.hint);
        break;
      }
      enqueue(page.events);
      after = page.next_after;
      if (!page.more) break;
      while (queue.length > PAGE * 4 && !disposed) await new Promise((r) => setTimeout(r, 16));
    }
    loading = false;
    schedule();
    if (session.status === 'running') openStream(after);
  }

  function openStream(after) {
    stream = new EventSource(`/api/events?session=${sessionId}&last_id=${after}`);
    stream.addEventListener('output', (msg) => {
      const id = Number(msg.lastEventId);
      const data = JSON.parse(msg.data);
      const e = data.event || {};
      enqueue([{ id, ts: Date.now() / 1000, kind: e.kind, text: e.text, data: e.data || {} }]);
    });
    stream.addEventListener('session', async (msg) => {
      const data = JSON.parse(msg.data);
      if (!ENDED.has(data.status)) return;
      stream.close();
      stream = null;
      try { session = (await api.get(`/api/sessions/${sessionId}`)).session; renderHead(); } catch { /* shown on next visit */ }
    });
  }

  const timer = setInterval(() => { if (session && session.status === 'running') renderHead(); }, 5000);
  load();
  return {
    unmount() {
      disposed = true;
      if (stream) stream.close();
      if (rafId) cancelAnimationFrame(rafId);
      observer.disconnect();
      clearInterval(timer);
    },
  };
}
