// The loaded plugins: a list, each one's details (version, kinds, sha256, contract, limits),
// upload (admin) and delete (admin; refused while a job uses it).

import * as api from '../api.js';
import { h, fill, guarded, notice, confirmAction } from '../ui.js';

export async function pluginsView(main) {
  const plugins = await api.call('/plugins');
  const file = h('input', { type: 'file', id: 'p-file', accept: '.wasm,application/wasm' });
  const upload = api.can('admin') ? h('form', { class: 'inline', onsubmit: (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) return;
    guarded(async () => {
      const p = await api.call('/plugins', { method: 'POST', raw: await f.arrayBuffer() });
      notice(`${p.name} ${p.version} loaded.`);
      location.hash = `#/plugins/${encodeURIComponent(p.name)}/${encodeURIComponent(p.version)}`;
    });
  } }, h('label', { for: 'p-file' }, 'Upload a component'), file, h('button', { type: 'submit' }, 'Upload')) : null;
  fill(main,
    h('div', { class: 'heading' }, h('h1', {}, 'Plugins'), upload),
    h('div', { class: 'scroll' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Version', 'Kinds', 'Publisher', 'Contract', 'sha256'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, plugins.map((p) => h('tr', {},
        h('td', {}, h('a', { href: `#/plugins/${encodeURIComponent(p.name)}/${encodeURIComponent(p.version)}` }, p.name)),
        h('td', {}, p.version),
        h('td', {}, p.kinds.join(', ')),
        h('td', {}, p.publisher),
        h('td', {}, p.contract_version),
        h('td', { class: 'mono' }, p.sha256.slice(0, 12))))))));
  return null;
}

export async function pluginView(main, name, version) {
  const p = await api.call(`/plugins/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
  const row = (k, v) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v));
  const remove = api.can('admin') ? h('button', { type: 'button', class: 'danger', onclick: () => guarded(async () => {
    if (!(await confirmAction(`Unload and forget ${p.name} ${p.version}?`))) return;
    await api.call(`/plugins/${encodeURIComponent(p.name)}/${encodeURIComponent(p.version)}`, { method: 'DELETE' });
    notice('Removed.');
    location.hash = '#/plugins';
  }) }, 'Delete') : null;
  fill(main,
    h('p', {}, h('a', { href: '#/plugins' }, '← Plugins')),
    h('div', { class: 'heading' }, h('h1', {}, `${p.name} ${p.version}`), remove),
    h('p', {}, p.description),
    h('table', { class: 'facts' }, h('tbody', {},
      row('kinds', p.kinds.join(', ')),
      row('publisher', p.publisher),
      row('contract', p.contract_version),
      row('sha256', h('code', {}, p.sha256)),
      row('memory', `${Math.round(p.limits.memory_bytes / 1048576)} MiB`),
      row('call timeout', `${p.limits.call_timeout / 1000} s`),
      row('fuel', p.limits.fuel ?? 'not metered'))));
  return null;
}
