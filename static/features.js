// Features: table with filter and search, failure reasons, and the actions retry, edit and add.
import { el, clear, fmtCost, badge, toast, truncate } from './util.js';

const STATUSES = ['open', 'in_progress', 'verifying', 'passed', 'failed', 'blocked'];

export function mount(root, { api, store, query }) {
  const search = el('input', { type: 'search', id: 'feature-search', placeholder: 'search name, description, id…', 'aria-label': 'search features', value: query.get('q') || '' });
  const statusSel = el('select', { id: 'feature-status', 'aria-label': 'filter by status' },
    el('option', { value: '', text: 'all statuses' }), STATUSES.map((s) => el('option', { value: s, text: s })));
  statusSel.value = query.get('status') || '';
  const trackSel = el('select', { id: 'feature-track', 'aria-label': 'filter by track' }, el('option', { value: '', text: 'all tracks' }));
  const addBtn = el('button', { type: 'button', class: 'btn primary', id: 'btn-add-feature', text: 'Add feature', onclick: () => openForm(null) });
  const count = el('span', { class: 'muted count' });
  const tbody = el('tbody');
  const table = el('table', { class: 'grid features', id: 'features-table' },
    el('thead', {}, el('tr', {}, ['#', 'Feature', 'Track', 'Status', 'Failure', 'Branch', 'Attempts', 'Cost', ''].map((h) => el('th', { text: h })))),
    tbody);
  root.append(
    el('div', { class: 'toolbar' }, search, statusSel, trackSel, count, el('span', { class: 'spacer' }), addBtn),
    el('div', { class: 'table-wrap' }, table));

  for (const input of [search, statusSel, trackSel]) input.addEventListener('input', render);

  function fillTracks() {
    const names = ((store.status && store.status.tracks) || []).map((t) => t.name);
    const have = new Set([...trackSel.options].map((o) => o.value));
    for (const name of names) if (!have.has(name)) trackSel.append(el('option', { value: name, text: name }));
  }

  function matches(f) {
    if (statusSel.value && f.status !== statusSel.value) return false;
    if (trackSel.value && f.route_track !== trackSel.value) return false;
    const q = search.value.trim().toLowerCase();
    if (!q) return true;
    return String(f.id) === q.replace(/^#/, '') ||
      `${f.name} ${f.description || ''} ${f.category || ''} ${f.failure_reason || ''}`.toLowerCase().includes(q);
  }

  function row(f) {
    const latest = f.latest_session;
    const failure = f.failure_category || f.failure_reason
      ? el('div', { class: 'failure' }, f.failure_category ? badge(f.failure_category, 'cat') : '',
        f.failure_reason ? el('div', { class: 'reason', title: f.failure_reason, text: truncate(f.failure_reason, 180) }) : '')
      : el('span', { class: 'muted', text: '–' });
    const retry = el('button', { type: 'button', class: 'btn small', dataset: { action: 'retry', id: f.id }, text: 'Retry',
      disabled: !['failed', 'blocked', 'passed'].includes(f.status) && !(f.status === 'open' && f.attempts), onclick: () => doRetry(f) });
    const edit = el('button', { type: 'button', class: 'btn small', dataset: { action: 'edit', id: f.id }, text: 'Edit', onclick: () => openForm(f) });
    return el('tr', { dataset: { id: f.id, status: f.status } },
      el('td', { class: 'num', text: f.id }),
      el('td', {}, el('div', { class: 'fname', text: f.name }),
        f.category ? el('div', { class: 'muted small', text: f.category }) : '',
        latest ? el('a', { class: 'small', href: `#/sessions/${latest.id}`, text: `${latest.phase} session #${latest.id}` }) : ''),
      el('td', { text: f.route_track || '' }),
      el('td', {}, badge(f.status), f.waiting_on && f.waiting_on.length
        ? el('div', { class: 'muted small waits', text: `waits for ${f.waiting_on.map((d) => `#${d}`).join(', ')}` }) : ''),
      el('td', {}, failure),
      el('td', { class: 'mono small', text: f.branch || '–' }),
      el('td', { class: 'num', text: f.attempts ?? 0 }),
      el('td', { class: 'num', text: f.cost_usd != null ? fmtCost(f.cost_usd) : '–' }),
      el('td', { class: 'actions' }, retry, edit));
  }

  let rows = new Map();

  function render() {
    fillTracks();
    const list = store.features;
    clear(tbody);
    if (!list) { tbody.append(el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'loading…' }))); return; }
    const shown = list.filter(matches);
    count.textContent = `${shown.length} of ${list.length}`;
    const frag = document.createDocumentFragment();
    const seen = new Map();
    for (const f of shown) {
      // unchanged features keep their row (and any button about to be clicked)
      const key = JSON.stringify(f);
      const cached = rows.get(f.id);
      const tr = cached && cached.key === key ? cached.tr : row(f);
      seen.set(f.id, { key, tr });
      frag.append(tr);
    }
    rows = seen;
    if (!shown.length) frag.append(el('tr', {}, el('td', { colspan: 9, class: 'muted', text: list.length ? 'no feature matches' : 'features.json has no features yet' })));
    tbody.append(frag);
  }

  async function doRetry(f) {
    try {
      await api.post(`/api/features/${f.id}/retry`, {});
      toast(`Feature #${f.id} queued again`);
    } catch (err) {
      toast(err.message, 'error', err.hint);
    }
  }

  function openForm(f) {
    const editing = Boolean(f);
    const fields = {
      name: el('input', { name: 'name', required: true, value: f ? f.name : '' }),
      category: el('input', { name: 'category', value: f ? f.category || '' : '' }),
      description: el('textarea', { name: 'description', rows: 3 }),
      steps: el('textarea', { name: 'steps', rows: 4, placeholder: 'one acceptance step per line' }),
      priority: el('input', { name: 'priority', type: 'number', step: 1, value: f ? f.priority ?? 0 : 0 }),
      dependsOn: el('input', { name: 'dependsOn', placeholder: 'ids, e.g. 1, 4', value: f && f.dependsOn ? f.dependsOn.join(', ') : '' }),
      track: el('select', { name: 'track' }, el('option', { value: '', text: '(by category)' }),
        ((store.status && store.status.tracks) || []).map((t) => el('option', { value: t.name, text: t.name }))),
      agent: el('input', { name: 'agent', placeholder: 'default agent', value: f ? f.agent || '' : '' }),
    };
    fields.description.value = f ? f.description || '' : '';
    fields.steps.value = f && f.steps ? f.steps.join('\n') : '';
    fields.track.value = f ? f.track || '' : '';
    const errors = el('div', { class: 'form-errors', role: 'alert' });
    const label = (text, input) => el('label', {}, el('span', { text }), input);
    const dialog = el('dialog', { class: 'form-dialog', id: 'feature-dialog' });
    const form = el('form', { method: 'dialog' },
      el('h2', { text: editing ? `Edit feature #${f.id}` : 'Add a feature' }),
      label('Name', fields.name), label('Category', fields.category), label('Description', fields.description),
      label('Steps', fields.steps),
      el('div', { class: 'row' }, label('Priority', fields.priority), label('Depends on', fields.dependsOn)),
      el('div', { class: 'row' }, label('Track', fields.track), label('Agent', fields.agent)),
      errors,
      el('div', { class: 'dialog-actions' },
        el('button', { type: 'button', class: 'btn', text: 'Cancel', onclick: () => dialog.close() }),
        el('button', { type: 'submit', class: 'btn primary', id: 'feature-save', text: editing ? 'Save' : 'Add' })));
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener('close', () => dialog.remove());
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = {
        name: fields.name.value.trim(),
        category: fields.category.value.trim(),
        description: fields.description.value,
        steps: fields.steps.value.split('\n').map((s) => s.trim()).filter(Boolean),
        priority: Number(fields.priority.value || 0),
        dependsOn: fields.dependsOn.value.split(/[\s,]+/).filter(Boolean).map(Number),
        track: fields.track.value || null,
        agent: fields.agent.value.trim() || null,
      };
      let body = data;
      if (editing) {
        body = {};
        for (const [k, v] of Object.entries(data)) {
          const before = f[k] ?? (Array.isArray(v) ? [] : (typeof v === 'number' ? 0 : (v === null ? null : '')));
          if (JSON.stringify(before) !== JSON.stringify(v)) body[k] = v;
        }
        if (!Object.keys(body).length) { dialog.close(); return; }
      } else {
        for (const k of ['track', 'agent']) if (body[k] === null) delete body[k];
        if (!body.dependsOn.length) delete body.dependsOn;
      }
      try {
        const result = editing ? await api.patch(`/api/features/${f.id}`, body) : await api.post('/api/features', body);
        toast(editing ? `Feature #${f.id} saved` : `Feature #${result.feature.id} added`);
        dialog.close();
        const list = await api.get('/api/features');
        store.features = list.features;
        store.changed('features');
      } catch (err) {
        clear(errors).append(el('div', { text: err.message }), ...(err.problems || []).map((p) => el('div', { text: `• ${p}` })),
          err.hint ? el('div', { class: 'hint', text: err.hint }) : '');
      }
    });
    dialog.showModal();
    fields.name.focus();
  }

  const off = store.subscribe((what) => { if (what === 'features' || what === 'status') render(); });
  render();
  return { unmount() { off(); } };
}
