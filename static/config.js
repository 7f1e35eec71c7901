// Configuration: the effective settings (defaults applied, secrets masked) with their help text.
import { el, clear } from './util.js';

function flatten(obj, prefix = '', out = []) {
  for (const [key, value] of Object.entries(obj || {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === 'object' && !Array.isArray(value) && !['agents'].includes(path) && Object.keys(value).length) {
      flatten(value, path, out);
    } else {
      out.push([path, value]);
    }
  }
  return out;
}

export function mount(root, { api }) {
  const box = el('section', { class: 'config', id: 'config' }, el('p', { class: 'muted', text: 'loading…' }));
  root.append(box);
  api.get('/api/config').then((data) => {
    const help = new Map((data.settings || []).map((s) => [s.key, s]));
    const rows = flatten(data.config).map(([key, value]) => {
      const setting = help.get(key);
      return el('tr', {},
        el('td', { class: 'mono', text: key }),
        el('td', {}, el('code', { class: 'value', text: JSON.stringify(value) })),
        el('td', { class: 'small muted', text: setting ? setting.help : '' }));
    });
    clear(box).append(
      el('p', {}, 'Source: ', el('code', { text: data.source || '(defaults: no orchestrator.config.json)' }),
        '. Values shown are the effective ones (defaults applied); secrets are masked as ***.'),
      (data.warnings || []).length ? el('ul', { class: 'warnings' }, data.warnings.map((w) => el('li', { text: w }))) : '',
      el('div', { class: 'table-wrap' }, el('table', { class: 'grid', id: 'config-table' },
        el('thead', {}, el('tr', {}, ['Setting', 'Value', 'Meaning'].map((h) => el('th', { text: h })))),
        el('tbody', {}, rows))));
  }).catch((err) => {
    clear(box).append(el('p', { class: 'error', text: err.message }), el('p', { class: 'muted', text: err.hint || '' }));
  });
  return { unmount() {} };
}
