// Small helpers every view uses: building elements, statuses that read without colour,
// times and durations, a confirmation dialog, notices.

/// An element: `h('td', { class: 'x', onclick }, 'text', child…)`.
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/// Replace everything in `parent` with `children`.
export function fill(parent, ...children) {
  parent.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return parent;
}

// A symbol per status, so the state reads without colour too.
const SYMBOLS = {
  planned: '○', validating: '◔', 'awaiting-approval': '◇', executing: '▶', paused: '❚❚',
  completed: '✓', partial: '◑', failed: '✕', 'rolling-back': '↺', 'rolled-back': '↩',
  'rollback-failed': '✕', cancelled: '⊘', pending: '○', running: '▶', interrupted: '❚❚',
  'rollback-skipped': '–', success: '✓', error: '✕', skipped: '–',
};

/// A status badge: symbol, word, and a colour class.
export function badge(status) {
  return h('span', { class: `badge s-${status}`, title: status },
    h('span', { 'aria-hidden': 'true' }, SYMBOLS[status] || '•'), ' ', status);
}

/// A progress bar with its number, readable by screen readers.
export function bar(pct, label) {
  const p = Math.max(0, Math.min(100, pct || 0));
  const fillEl = h('div', { class: 'fill' });
  // Through the CSSOM: the page's policy allows no inline style attributes.
  fillEl.style.width = `${p}%`;
  return h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': p, 'aria-label': label || 'progress' },
  fillEl,
  h('span', { class: 'pct' }, `${p.toFixed(1)} %`));
}

export function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  // Today's times need no date; older ones keep it so a list spanning days reads correctly.
  const today = d.toDateString() === new Date().toDateString();
  return today
    ? d.toLocaleTimeString(undefined, { timeStyle: 'medium' })
    : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function between(start, end) {
  if (!start) return null;
  return (end ? new Date(end) : new Date()) - new Date(start);
}

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  return duration(seconds * 1000);
}

export function count(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString();
}

/// Ask before doing something that cannot be undone; resolves true when confirmed.
export function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    document.getElementById('confirm-ok').focus();
  });
}

/// A short notice at the corner of the page.
export function notice(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const t = h('div', { class: `toast ${kind}` }, text);
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

/// Run `f`, showing any error it throws as a notice.
export async function guarded(f) {
  try {
    return await f();
  } catch (e) {
    notice(e.message || String(e), 'error');
    return undefined;
  }
}

/// Calls `f` at most once per `ms`, the last call winning.
export function debounce(f, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => f(...args), ms);
  };
}
