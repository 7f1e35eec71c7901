// Overview: totals, a card per track (current feature, phase, elapsed, live output tail), pause/resume.
import { el, clear, fmtCost, fmtDuration, fmtTokens, toast, tailLine } from './util.js';

const SHOWN_LINES = 120;

export function mount(root, { api, store }) {
  const totals = el('section', { class: 'totals-grid', id: 'totals' });
  const cards = el('section', { class: 'tracks', id: 'tracks' });
  root.append(el('h1', { class: 'visually-hidden', text: 'Overview' }), totals, cards);
  const cardByTrack = new Map();

  function renderTotals() {
    const s = store.status;
    if (!s) return;
    const c = s.counts || {};
    const running = (c.in_progress || 0) + (c.verifying || 0);
    const tile = (label, value, cls = '') => el('div', { class: `tile ${cls}` },
      el('div', { class: 'tile-value', text: value }), el('div', { class: 'tile-label', text: label }));
    clear(totals).append(
      tile('open', c.open || 0, 'st-open'),
      tile('running', running, 'st-running'),
      tile('passed', c.passed || 0, 'st-passed'),
      tile('failed', c.failed || 0, 'st-failed'),
      c.blocked ? tile('blocked', c.blocked, 'st-blocked') : '',
      tile('cost so far', fmtCost(s.cost_usd)),
      tile('tokens in/out', `${fmtTokens((s.tokens || {}).input)}/${fmtTokens((s.tokens || {}).output)}`),
      tile('est. time left', s.eta_seconds ? fmtDuration(s.eta_seconds) : (running ? '…' : '–')));
  }

  function buildCard(track) {
    const parts = {};
    parts.title = el('h2', { class: 'track-name' });
    parts.phase = el('span', { class: 'badge' });
    parts.feature = el('div', { class: 'track-feature' });
    parts.meta = el('div', { class: 'track-meta' });
    parts.pause = el('button', { type: 'button', class: 'btn small', onclick: () => togglePause(track.name) });
    parts.tail = el('div', { class: 'tail', role: 'log', 'aria-live': 'off', 'aria-label': `output of ${track.name}` });
    parts.card = el('article', { class: 'card track', dataset: { track: track.name } },
      el('div', { class: 'card-head' }, parts.title, parts.phase, parts.pause),
      parts.feature, parts.meta, parts.tail);
    cardByTrack.set(track.name, parts);
    cards.append(parts.card);
    for (const line of store.tails.get(track.name) || []) addLine(parts, line);
    return parts;
  }

  function renderCards() {
    const s = store.status;
    if (!s) return;
    const placeholder = cards.querySelector('.placeholder');
    if (placeholder) placeholder.remove();
    for (const track of s.tracks || []) {
      const parts = cardByTrack.get(track.name) || buildCard(track);
      parts.card.style.setProperty('--track-color', track.color || '#3b82f6');
      parts.title.textContent = track.name;
      const phase = track.paused ? 'paused' : (track.phase || 'idle');
      parts.phase.textContent = phase;
      parts.phase.className = `badge phase-${phase}`;
      parts.pause.textContent = track.paused ? 'Resume' : 'Pause';
      parts.pause.dataset.action = track.paused ? 'resume' : 'pause';
      parts.pause.disabled = !s.daemon;
      clear(parts.feature);
      if (track.feature_id != null) {
        parts.feature.append(el('span', { class: 'fid', text: `#${track.feature_id}` }), ' ',
          el('span', { text: track.feature_name || '' }));
        if (track.session_id) parts.feature.append(' ', el('a', { href: `#/sessions/${track.session_id}`, class: 'session-link', text: 'session →' }));
      } else {
        parts.feature.append(el('span', { class: 'muted', text: track.paused ? (track.paused_reason || 'paused') : 'no feature running' }));
      }
      parts.startedAt = track.phase_started_at;
      parts.agent = track.agent;
      const counts = track.counts || {};
      parts.counts = `${counts.passed || 0} passed · ${counts.open || 0} open · ${counts.failed || 0} failed`;
      if (track.paused && track.paused_reason) parts.counts += ` · ${track.paused_reason}`;
      tick(parts);
    }
  }

  function tick(parts) {
    const elapsed = parts.startedAt ? fmtDuration(Date.now() / 1000 - parts.startedAt) : null;
    parts.meta.textContent = [parts.agent, elapsed ? `${elapsed} in phase` : null, parts.counts].filter(Boolean).join(' · ');
  }

  // Lines are added once per frame, card by card: a burst of output (or the replay of the recent
  // past when the page opens) costs one layout per card, not one per line.
  const pending = new Map(); // parts -> [line]
  let frame = 0;

  function addLine(parts, line) {
    let lines = pending.get(parts);
    if (!lines) { lines = []; pending.set(parts, lines); }
    lines.push(line);
    if (lines.length > SHOWN_LINES * 2) lines.splice(0, lines.length - SHOWN_LINES);
    if (!frame) frame = requestAnimationFrame(flushLines);
  }

  function flushLines() {
    frame = 0;
    for (const [parts, lines] of pending) {
      const frag = document.createDocumentFragment();
      for (const line of lines.slice(-SHOWN_LINES)) {
        const rendered = tailLine(line.event);
        if (!rendered || !rendered.text) continue;
        frag.append(el('div', { class: `line ${rendered.cls}`, text: rendered.text.length > 2000 ? `${rendered.text.slice(0, 2000)}…` : rendered.text }));
      }
      if (!frag.childNodes.length) continue;
      const tail = parts.tail;
      const stick = tail.scrollHeight - tail.scrollTop - tail.clientHeight < 40;
      tail.append(frag);
      while (tail.childElementCount > SHOWN_LINES) tail.firstElementChild.remove();
      if (stick) tail.scrollTop = tail.scrollHeight;
    }
    pending.clear();
  }

  async function togglePause(name) {
    const parts = cardByTrack.get(name);
    const action = parts.pause.dataset.action;
    try {
      await api.post(`/api/tracks/${encodeURIComponent(name)}/${action}`);
      toast(`Track ${name} ${action === 'pause' ? 'paused' : 'resumed'}`);
    } catch (err) {
      toast(err.message, 'error', err.hint);
    }
  }

  const off = store.subscribe((what) => {
    if (what === 'status') { renderTotals(); renderCards(); return; }
    if (what && what.type === 'output') {
      const parts = cardByTrack.get(what.track);
      if (parts) addLine(parts, what.line);
    }
  });
  const timer = setInterval(() => { for (const parts of cardByTrack.values()) tick(parts); }, 1000);
  renderTotals();
  renderCards();
  if (!store.status) cards.append(el('p', { class: 'muted placeholder', text: 'loading…' }));
  return { unmount() { off(); clearInterval(timer); if (frame) cancelAnimationFrame(frame); } };
}
