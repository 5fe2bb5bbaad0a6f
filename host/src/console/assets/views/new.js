// A new migration: pick a handler and kind, write its parameters as JSON (checked as you
// type), bind what it opens to configured connections, set options, and plan it.

import * as api from '../api.js';
import { h, fill, guarded } from '../ui.js';

export async function newView(main) {
  const [plugins, connections] = await Promise.all([
    api.call('/plugins'), api.call('/connections'),
  ]);
  const byLabel = new Map(plugins.map((p) => [`${p.name}@${p.version}`, p]));
  const handler = h('select', { id: 'n-handler', required: true, onchange: () => chose() },
    plugins.map((p) => h('option', { value: `${p.name}@${p.version}` }, `${p.name} ${p.version}`)));
  const kind = h('select', { id: 'n-kind' });
  const about = h('p', { class: 'muted', id: 'n-about' });
  const params = h('textarea', { id: 'n-params', rows: 8, spellcheck: 'false', oninput: () => check(params, paramsNote) }, '{}');
  const paramsNote = h('span', { class: 'note' });
  const options = h('textarea', { id: 'n-options', rows: 4, spellcheck: 'false', oninput: () => check(options, optionsNote) }, '{}');
  const optionsNote = h('span', { class: 'note' });
  const grants = h('div', { class: 'grants' });
  const error = h('p', { class: 'error', role: 'alert' });
  const names = h('datalist', { id: 'n-connections' },
    connections.items.map((c) => h('option', { value: c.name }, `${c.name} (${c.kind})`)));

  function check(area, note) {
    try {
      const v = JSON.parse(area.value || '{}');
      if (typeof v !== 'object' || Array.isArray(v) || v === null) throw new Error('must be a JSON object');
      note.textContent = '✓ valid';
      note.className = 'note ok';
      area.removeAttribute('aria-invalid');
      return v;
    } catch (e) {
      note.textContent = `✕ ${e.message}`;
      note.className = 'note bad';
      area.setAttribute('aria-invalid', 'true');
      return null;
    }
  }

  function grantRow(binding = '', connection = '') {
    const row = h('div', { class: 'grant' },
      h('input', { class: 'g-binding', placeholder: 'binding (what the plugin opens)', value: binding, 'aria-label': 'binding' }),
      h('span', { 'aria-hidden': 'true' }, '→'),
      h('input', { class: 'g-connection', placeholder: 'connection', value: connection, list: 'n-connections', 'aria-label': 'connection' }),
      h('button', { type: 'button', class: 'link', onclick: () => row.remove() }, 'remove'));
    grants.append(row);
  }

  function chose() {
    const p = byLabel.get(handler.value);
    fill(kind, p.kinds.map((k) => h('option', { value: k }, k)));
    fill(about, p.description);
  }

  const form = h('form', { class: 'card', onsubmit: (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const parameters = check(params, paramsNote);
    const opts = check(options, optionsNote);
    if (!parameters || !opts) {
      error.textContent = 'Fix the JSON first.';
      return;
    }
    const bound = {};
    for (const row of grants.querySelectorAll('.grant')) {
      const b = row.querySelector('.g-binding').value.trim();
      const c = row.querySelector('.g-connection').value.trim();
      if (b && c) bound[b] = c;
    }
    guarded(async () => {
      try {
        const job = await api.call('/migrations', { method: 'POST', body: {
          handler: handler.value, kind: kind.value, parameters, grants: bound, options: opts,
        } });
        location.hash = `#/jobs/${job.id}`;
      } catch (e) {
        error.textContent = e.message;
      }
    });
  } },
  h('h1', {}, 'New migration'),
  h('label', { for: 'n-handler' }, 'Handler'), handler, about,
  h('label', { for: 'n-kind' }, 'Kind'), kind,
  h('label', { for: 'n-params' }, 'Parameters (JSON)'), params, paramsNote,
  h('fieldset', {}, h('legend', {}, 'Grants'),
    h('p', { class: 'muted' }, connections.any_sled_bucket
      ? 'Bind each name the handler opens to a configured connection, or to any bucket of the embedded database by its name.'
      : 'Bind each name the handler opens to a configured connection.'),
    grants, names,
    h('button', { type: 'button', onclick: () => grantRow() }, 'Add a grant')),
  h('label', { for: 'n-options' }, 'Options (JSON, e.g. {"approval_required": true})'), options, optionsNote,
  error,
  h('button', { type: 'submit', class: 'primary' }, 'Plan it'));
  fill(main, form);
  chose();
  grantRow('source', '');
  grantRow('target', '');
  check(params, paramsNote);
  check(options, optionsNote);
  return null;
}
