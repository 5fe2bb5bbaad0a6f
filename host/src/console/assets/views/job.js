// One migration, live: what is happening (status, bar, ETA, counters, current step and
// object), what failed and what can be done, and buttons for what its state and the
// signed-in role allow. The job's event stream drives it; after a dropped connection it
// resumes after the last event seen, so nothing is missed or shown twice.

import * as api from '../api.js';
import { h, fill, badge, bar, when, duration, between, eta, count, confirmAction, guarded, notice, debounce } from '../ui.js';
import { planPanel, logPanel, objectsPanel, errorsPanel, recordsPanel } from './job_parts.js';

/// The buttons, in the order shown; destructive ones ask first.
const ACTIONS = [
  ['validate', 'Dry run', null],
  ['approve', 'Approve', null],
  ['execute', 'Run', null],
  ['pause', 'Pause', null],
  ['resume', 'Resume', null],
  ['retry', 'Retry failed steps', null],
  ['retry-objects', 'Retry failed objects', null],
  ['cancel', 'Cancel', 'Cancel this migration? Work in progress stops at its next safe point.'],
  ['rollback', 'Roll back', 'Roll back every step that changed data, in reverse order?'],
  ['delete', 'Delete', 'Delete this migration and its history? This cannot be undone.'],
];

export async function jobView(main, id) {
  let job = await api.call(`/migrations/${encodeURIComponent(id)}`).catch((e) => {
    fill(main, h('h1', {}, 'Migration'), h('p', { class: 'error' }, e.message), h('a', { href: '#/' }, 'Back to the list'));
    return null;
  });
  if (!job) return null;

  const title = h('h1');
  const state = h('div', { class: 'state' });
  const progress = h('div', { class: 'progress' });
  const cards = h('div', { class: 'stats' });
  const where = h('p', { class: 'where' });
  const buttons = h('div', { class: 'actions', role: 'group', 'aria-label': 'actions' });
  const exports = h('p', { class: 'exports' }, 'Export: ',
    ['logs.csv', 'logs.jsonl', 'objects.csv', 'objects.jsonl'].map((f) =>
      h('a', { href: `/api/v1/migrations/${job.id}/export/${f}`, download: '' }, f)));
  const plan = planPanel();
  const logs = logPanel(job.id);
  const objects = objectsPanel(job.id);
  const errors = errorsPanel();
  const records = recordsPanel();
  const spec = h('details', { class: 'card' }, h('summary', {}, 'Parameters, grants, options'), h('pre'));

  fill(main,
    h('p', {}, h('a', { href: '#/' }, '← Migrations')),
    h('div', { class: 'heading' }, title, state),
    progress, cards, where, buttons,
    errors.panel,
    h('div', { class: 'columns' }, plan.panel, records.panel),
    logs.panel, objects.panel, exports, spec);

  function stat(label, value, cls) {
    return h('div', { class: `stat ${cls || ''}` }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
  }

  function render() {
    fill(title, `${job.kind} `, h('span', { class: 'muted mono' }, job.id.slice(0, 8)));
    fill(state, badge(job.status), h('span', { class: 'muted' }, ` ${job.plugin.name} ${job.plugin.version} · created by ${job.created_by}`));
    fill(progress, bar(job.percentage, 'migration progress'),
      h('span', { class: 'eta' }, job.status === 'executing' ? `ETA ${eta(job.estimated_seconds_remaining)}` : ''));
    fill(cards,
      stat('completed', count(job.completed_objects), 'ok'),
      stat('failed', count(job.failed_objects), job.failed_objects ? 'bad' : ''),
      stat('skipped', count(job.skipped_objects)),
      stat('total', count(job.total_objects)),
      stat('started', when(job.start_time)),
      stat('ended', when(job.end_time)),
      stat('duration', duration(job.duration_ms ?? between(job.start_time, job.end_time))),
      // Contract 0.2 handlers may estimate; shown beside the actual duration.
      job.estimated_duration_ms !== null ? stat('estimated', duration(job.estimated_duration_ms)) : null);
    fill(where, job.current_step ? ['Now: step ', h('strong', {}, job.current_step),
      job.current_object ? [' · object ', h('code', {}, job.current_object)] : null] : null);
    renderButtons();
    plan.update(job);
    errors.update(job);
    records.update(job);
    objects.update(job);
    spec.querySelector('pre').textContent = JSON.stringify(
      { parameters: job.spec.parameters, grants: job.grants, options: job.options }, null, 2);
  }

  let shownActions = null;
  function renderButtons() {
    // Rebuilt only when what may be done changes, so a focused button keeps its focus.
    const key = job.allowed_actions.join(',');
    if (key === shownActions) return;
    shownActions = key;
    if (!api.can('operator')) {
      fill(buttons, h('span', { class: 'muted' }, 'Viewers can watch; an operator token can act.'));
      return;
    }
    fill(buttons, ACTIONS.filter(([a]) => job.allowed_actions.includes(a)).map(([action, label, ask]) =>
      h('button', { type: 'button', class: ask ? 'danger' : (action === 'execute' ? 'primary' : ''), dataset: { action },
        onclick: (ev) => guarded(async () => {
          if (ask && !(await confirmAction(ask))) return;
          ev.target.disabled = true;
          try {
            if (action === 'delete') {
              const force = job.rollback_available && !['completed', 'partial'].includes(job.status);
              await api.call(`/migrations/${job.id}${force ? '?force=true' : ''}`, { method: 'DELETE' });
              notice('Deleted.');
              location.hash = '#/';
              return;
            }
            // retry-objects takes a body (which step); {} retries every partial step.
            const body = action === 'retry-objects' ? {} : undefined;
            job = await api.call(`/migrations/${job.id}/${action}`, { method: 'POST', body });
            render();
            if (ended) {
              // The stream closed when the job ended; it runs again now.
              ended = false;
              stream.reopen();
            }
          } finally {
            ev.target.disabled = false;
          }
        }) }, label)));
  }

  // The snapshot is read again when the job's state, steps or records change; progress
  // events move the bar and counters in between.
  const reread = debounce(() => guarded(async () => {
    job = await api.call(`/migrations/${job.id}`);
    render();
  }), 150);
  let ended = false;
  const seen = [];
  render();
  await Promise.all([guarded(() => logs.load(job.last_event_seq)), guarded(() => objects.start(job))]);
  // Since navigation began, until header, plan, log and first page of results are all shown.
  const renderedMs = performance.now();
  const startedAfter = job.last_event_seq;
  const stream = api.follow(`/migrations/${job.id}/events`, {
    progress: (e) => {
      job.percentage = e.percentage;
      job.estimated_seconds_remaining = e.eta_seconds;
      job.current_step = e.step;
      if (e.current_object) job.current_object = e.current_object;
      render();
    },
    log: (e) => logs.event(e),
    objects: (e) => {
      objects.event(e);
      reread();
    },
    state: reread,
    step: reread,
    audit: reread,
    'dry-run': reread,
    final: (snap) => {
      job = snap;
      ended = true;
      render();
    },
  }, { after: startedAfter, seen });
  // For tests and the benchmark: drop the stream and resume it after the last event seen; the
  // events this page processed; when the page was first complete.
  window.ploverConsole = {
    reconnect: () => stream.reopen(),
    lastEventId: () => stream.last(),
    seen: () => seen.slice(),
    startedAfter,
    renderedMs,
  };
  return () => stream.close();
}
