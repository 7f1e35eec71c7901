// Session history: newest first, with filters and paging; rows link to the session page.
import { el, clear, fmtCost, fmtDuration, fmtTime, badge, debounce } from './util.js';

const PAGE = 50;

export function mount(root, { api, live, store, query }) {
  const filters = {
    feature: el('input', { type: 'number', min: 0, placeholder: 'feature id', id: 'sessions-feature', 'aria-label': 'feature id', value: query.get('feature') || '' }),
    track: el('select', { id: 'sessions-track', 'aria-label': 'track' }, el('option', { value: '', text: 'all tracks' }),
      ((store.status && store.status.tracks) || []).map((t) => el('option', { value: t.name, text: t.name }))),
    status: el('select', { id: 'sessions-status', 'aria-label': 'status' }, el('option', { value: '', text: 'all statuses' }),
      ['running', 'succeeded', 'failed', 'interrupted'].map((s) => el('option', { value: s, text: s }))),
    phase: el('select', { id: 'sessions-phase', 'aria-label': 'phase' }, el('option', { value: '', text: 'all phases' }),
      ['implement', 'verify', 'fix', 'conflict'].map((s) => el('option', { value: s, text: s }))),
  };
  filters.track.value = query.get('track') || '';
  filters.status.value = query.get('status') || '';
  let offset = 0;
  let total = 0;
  const info = el('span', { class: 'muted' });
  const prev = el('button', { type: 'button', class: 'btn small', text: '← newer', onclick: () => { offset = Math.max(0, offset - PAGE); load(); } });
  const next = el('button', { type: 'button', class: 'btn small', text: 'older →', onclick: () => { offset += PAGE; load(); } });
  const tbody = el('tbody');
  root.append(
    el('div', { class: 'toolbar' }, Object.values(filters), el('span', { class: 'spacer' }), info, prev, next),
    el('div', { class: 'table-wrap' }, el('table', { class: 'grid sessions', id: 'sessions-table' },
      el('thead', {}, el('tr', {}, ['#', 'Feature', 'Track', 'Phase', 'Agent', 'Status', 'Started', 'Duration', 'Cost', 'Failure'].map((h) => el('th', { text: h })))),
      tbody)));

  for (const input of Object.values(filters)) input.addEventListener('change', () => { offset = 0; load(); });

  async function load() {
    const params = new URLSearchParams({ limit: PAGE, offset });
    for (const [k, input] of Object.entries(filters)) if (input.value) params.set(k, input.value);
    try {
      const data = await api.get(`/api/sessions?${params}`);
      total = data.total;
      render(data.sessions);
    } catch (err) {
      clear(tbody).append(el('tr', {}, el('td', { colspan: 10, class: 'error', text: `${err.message} ${err.hint || ''}` })));
    }
  }

  function render(rows) {
    clear(tbody);
    info.textContent = total ? `${offset + 1}–${Math.min(offset + PAGE, total)} of ${total}` : 'no sessions';
    prev.disabled = offset === 0;
    next.disabled = offset + PAGE >= total;
    const now = Date.now() / 1000;
    const frag = document.createDocumentFragment();
    for (const s of rows) {
      const link = el('a', { href: `#/sessions/${s.id}`, text: `#${s.id}` });
      frag.append(el('tr', { dataset: { id: s.id } },
        el('td', {}, link),
        el('td', { text: `#${s.feature_id}` }),
        el('td', { text: s.track }),
        el('td', { text: s.phase }),
        el('td', { text: s.model ? `${s.agent} (${s.model})` : s.agent }),
        el('td', {}, badge(s.status, 'sess')),
        el('td', { text: fmtTime(s.started_at) }),
        el('td', { text: fmtDuration((s.ended_at || now) - s.started_at) }),
        el('td', { class: 'num', text: fmtCost(s.cost_usd) }),
        el('td', { class: 'small', text: [s.failure_category, s.error].filter(Boolean).join(': ').slice(0, 160) || '' })));
    }
    tbody.append(frag);
  }

  const reload = debounce(() => { if (offset === 0) load(); }, 800);
  const off = live.on('session', reload);
  load();
  return { unmount() { off(); reload.cancel(); } };
}
