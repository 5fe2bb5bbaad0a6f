// The console's shell: who is signed in, the navigation, and a router over the URL's hash
// (#/, #/jobs/ID, #/new, #/plugins, #/plugins/NAME/VERSION).

import * as api from './api.js';
import { h, fill, guarded } from './ui.js';
import { signInView } from './views/signin.js';
import { listView } from './views/list.js';
import { jobView } from './views/job.js';
import { newView } from './views/new.js';
import { pluginsView, pluginView } from './views/plugins.js';

const main = document.getElementById('main');
let leave = null; // what the current view stops (its event streams) when the page changes

function routes() {
  const path = location.hash.replace(/^#/, '') || '/';
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'jobs' && parts[1]) return () => jobView(main, parts[1]);
  if (parts[0] === 'new') return () => newView(main);
  if (parts[0] === 'plugins' && parts[2]) return () => pluginView(main, parts[1], parts[2]);
  if (parts[0] === 'plugins') return () => pluginsView(main);
  return () => listView(main);
}

async function show() {
  if (leave) leave();
  leave = null;
  if (!api.current()) {
    renderChrome();
    leave = signInView(main, () => show());
    return;
  }
  renderChrome();
  main.focus({ preventScroll: true });
  leave = (await routes()()) || null;
}

function renderChrome() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const s = api.current();
  if (!s) {
    fill(nav);
    fill(who);
    return;
  }
  const here = location.hash || '#/';
  const link = (href, text) => h('a', { href, 'aria-current': here === href ? 'page' : null }, text);
  fill(nav, link('#/', 'Migrations'), api.can('operator') ? link('#/new', 'New migration') : null,
    link('#/plugins', 'Plugins'));
  fill(who,
    h('span', { class: 'muted' }, `${s.name} · ${s.role}`),
    h('button', { type: 'button', class: 'link', onclick: () => guarded(async () => {
      await api.signOut();
      show();
    }) }, 'Sign out'));
}

api.onSignedOut(() => show());
window.addEventListener('hashchange', show);
guarded(async () => {
  await api.loadSession();
  await show();
});
