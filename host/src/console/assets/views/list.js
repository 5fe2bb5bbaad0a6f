// The migrations, newest first: filter by status and handler, page on, and see every job's
// state change as it happens (the all-jobs event stream), without reloading.

import * as api from '../api.js';
import { h, fill, badge, bar, when, duration, between, debounce, guarded, notice } from '../ui.js';

const STATUSES = ['planned', 'validating', 'awaiting-approval', 'executing', 'paused', 'completed',
  'partial', 'failed', 'rolling-back', 'rolled-back', 'rollback-failed', 'cancelled'];
const PAGE = 25;

export async function listView(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const filter = { status: params.get('status') || '', handler: params.get('handler') || '' };
  const cursors = []; // the cursors of the pages before this one
  let cursor = null;
  let page = null;

  const status = h('select', { id: 'f-status', onchange: () => { filter.status = status.value; restart(); } },
    h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === filter.status }, s)));
  const handler = h('input', { id: 'f-handler', placeholder: 'handler, e.g. kv-copy', value: filter.handler,
    onchange: () => { filter.handler = handler.value.trim(); restart(); } });
  const table = h('tbody');
  const total = h('span', { class: 'muted' });
  const prev = h('button', { type: 'button', onclick: () => { cursor = cursors.pop() ?? null; load(); } }, '← Newer');
  const next = h('button', { type: 'button', onclick: () => { cursors.push(cursor); cursor = page.next_cursor; load(); } }, 'Older →');
  const live = h('span', { class: 'live', title: 'following every job' }, '● live');

  const actions = [];
  if (api.can('operator')) {
    actions.push(h('a', { class: 'button primary', href: '#/new' }, 'New migration'));
    actions.push(h('button', { type: 'button', id: 'try-it', onclick: () => guarded(async () => {
      const job = await api.call('/demo', { method: 'POST' });
      notice('Sample sessions seeded and a kv-copy planned: run it from its page.');
      location.hash = `#/jobs/${job.id}`;
    }) }, 'Try it: plan a demo copy'));
  }

  fill(main,
    h('div', { class: 'heading' }, h('h1', {}, 'Migrations'), live, h('div', { class: 'actions' }, actions)),
    h('div', { class: 'filters' },
      h('label', { for: 'f-status' }, 'Status'), status,
      h('label', { for: 'f-handler' }, 'Handler'), handler, total),
    h('div', { class: 'scroll' }, h('table', { class: 'jobs' },
      h('thead', {}, h('tr', {},
        ['Status', 'Migration', 'Handler', 'Progress', 'Objects', 'Started', 'Ended', 'Duration']
          .map((t) => h('th', { scope: 'col' }, t)))),
      table)),
    h('div', { class: 'pager' }, prev, next));

  function row(j) {
    return h('tr', { dataset: { id: j.id } },
      h('td', {}, badge(j.status)),
      h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.kind), h('div', { class: 'muted mono' }, j.id.slice(0, 8))),
      h('td', {}, `${j.plugin.name} ${j.plugin.version}`),
      h('td', { class: 'progress-cell' }, bar(j.percentage, `progress of ${j.id}`)),
      h('td', { class: 'num' }, `${j.completed_objects.toLocaleString()}${j.failed_objects ? ` · ${j.failed_objects} failed` : ''}`),
      h('td', {}, when(j.start_time)),
      h('td', {}, when(j.end_time)),
      h('td', {}, duration(between(j.start_time, j.end_time))));
  }

  async function load() {
    const q = new URLSearchParams({ limit: PAGE });
    if (filter.status) q.set('status', filter.status);
    if (filter.handler) q.set('handler', filter.handler);
    if (cursor) q.set('cursor', cursor);
    page = await api.call(`/migrations?${q}`);
    fill(table, page.items.length ? page.items.map(row)
      : h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No migrations match.')));
    total.textContent = `${page.total.toLocaleString()} in all`;
    prev.disabled = cursors.length === 0;
    next.disabled = !page.next_cursor;
  }

  function restart() {
    cursors.length = 0;
    cursor = null;
    const q = new URLSearchParams();
    if (filter.status) q.set('status', filter.status);
    if (filter.handler) q.set('handler', filter.handler);
    history.replaceState(null, '', `#/${q.toString() ? '?' + q : ''}`);
    guarded(load);
  }

  // A change to a job on this page updates its row; a new job shows on the first page.
  const refresh = debounce(() => guarded(load), 250);
  const updateRow = async (id) => {
    const tr = table.querySelector(`tr[data-id="${id}"]`);
    if (!tr) {
      if (!cursor) refresh();
      return;
    }
    const j = await api.call(`/migrations/${id}`).catch(() => null);
    if (j) tr.replaceWith(row(j));
  };
  const stream = api.follow('/events', {
    state: (change) => guarded(() => updateRow(change.job)),
    lagged: () => refresh(),
  });
  // Progress moves between state changes: refresh the running rows every few seconds.
  const ticker = setInterval(() => {
    for (const tr of table.querySelectorAll('tr[data-id]')) {
      if (tr.querySelector('.s-executing, .s-rolling-back, .s-validating')) guarded(() => updateRow(tr.dataset.id));
    }
  }, 2000);

  await guarded(load);
  return () => { stream.close(); clearInterval(ticker); };
}
