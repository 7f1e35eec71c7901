// Small DOM and formatting helpers shared by every view. No framework.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined || Number.isNaN(Number(usd))) return '–';
  const n = Number(usd);
  return n >= 100 ? `$${n.toFixed(0)}` : `$${n.toFixed(n < 1 ? 4 : 2)}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(r).padStart(2, '0')}s`;
  return `${r}s`;
}

export function fmtTime(epoch) {
  if (!epoch) return '–';
  const d = new Date(epoch * 1000);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return sameDay ? time : `${d.toLocaleDateString()} ${time}`;
}

export function fmtTokens(n) {
  if (!n) return '0';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

export function badge(value, kind = 'status') {
  const text = value === null || value === undefined || value === '' ? '–' : String(value);
  return el('span', { class: `badge ${kind}-${text.replace(/[^a-z0-9_-]/gi, '')}`, text });
}

export function truncate(text, max) {
  const s = String(text ?? '');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

export function oneLine(value, max = 160) {
  let s = typeof value === 'string' ? value : JSON.stringify(value ?? '');
  s = s.replace(/\s+/g, ' ').trim();
  return truncate(s, max);
}

// The most telling part of a tool's input: the command, the file, the pattern... else compact JSON.
export function toolSummary(input, max = 160) {
  if (input && typeof input === 'object' && !Array.isArray(input)) {
    for (const key of ['command', 'cmd', 'file_path', 'path', 'pattern', 'url', 'query', 'description']) {
      const v = input[key];
      if (typeof v === 'string' && v) return oneLine(v, max);
      if (Array.isArray(v) && v.length) return oneLine(v.join(' '), max);
    }
  }
  return oneLine(input, max);
}

// Calls fn at most once per `ms`, trailing: bursts of events cause one refresh.
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  wrapped.cancel = () => { if (timer) clearTimeout(timer); timer = null; };
  return wrapped;
}

let toastBox = null;
export function toast(message, level = 'info', hint = '') {
  if (!toastBox) {
    toastBox = el('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(toastBox);
  }
  const node = el('div', { class: `toast toast-${level}` }, el('div', { text: message }),
    hint ? el('div', { class: 'hint', text: hint }) : null);
  node.addEventListener('click', () => node.remove());
  toastBox.append(node);
  setTimeout(() => node.remove(), level === 'error' ? 12000 : 5000);
}

// One line of agent output for the live tails on the overview.
export function tailLine(ev) {
  const d = ev.data || {};
  switch (ev.kind) {
    case 'text': return { cls: 'text', text: ev.text };
    case 'thinking': return { cls: 'thinking', text: ev.text };
    case 'tool_call': return { cls: 'tool', text: `→ ${d.name || ev.text || 'tool'} ${toolSummary(d.input, 200)}` };
    case 'tool_result': return { cls: d.is_error ? 'error' : 'tool-result', text: `← ${oneLine(d.output ?? ev.text, 200)}` };
    case 'error': return { cls: 'error', text: `✗ ${ev.text}` };
    case 'stderr': return { cls: 'stderr', text: ev.text };
    case 'result': return { cls: d.success === false ? 'error' : 'result', text: `■ ${d.success === false ? 'failed' : 'done'}${d.cost_usd != null ? ` · ${fmtCost(d.cost_usd)}` : ''}${ev.text ? ` · ${oneLine(ev.text, 160)}` : ''}` };
    case 'rate_limit': return { cls: 'error', text: `rate limit ${d.status || ''}${d.resets_at ? ` until ${fmtTime(d.resets_at)}` : ''}` };
    case 'retry': return { cls: 'stderr', text: `retry ${d.attempt ?? ''} (${d.status ?? ''})` };
    case 'init': return { cls: 'meta', text: `session ${d.session_id || ''} ${d.model || ''}`.trim() };
    case 'usage': return null;
    default: return ev.text ? { cls: 'raw', text: ev.text } : null;
  }
}
