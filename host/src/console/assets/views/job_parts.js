// The panels of a migration's page: its plan, live log, object results, errors, dry run and
// audit trail. Each is built once and updated in place as events arrive.

import * as api from '../api.js';
import { h, fill, badge, when, duration, between, count, guarded } from '../ui.js';

/// The plan as a timeline in dependency order (a step comes after every step it needs).
export function planPanel() {
  const list = h('ol', { class: 'steps' });
  const risk = h('p');
  const panel = h('section', { class: 'card', 'aria-labelledby': 'plan-h' },
    h('h2', { id: 'plan-h' }, 'Plan'), risk, list);
  return {
    panel,
    update(job) {
      fill(risk, h('span', { class: `risk r-${job.plan.risk}` }, `${job.plan.risk} risk`),
        job.plan.risk_notes.length ? h('span', { class: 'muted' }, ' · ', job.plan.risk_notes.join(' · ')) : null);
      fill(list, job.steps.map((s) => h('li', { class: `step s-${s.status}`, dataset: { step: s.id } },
        h('div', { class: 'step-head' }, badge(s.status), h('strong', {}, s.id), h('span', { class: 'muted' }, s.kind)),
        h('div', {}, s.description),
        h('div', { class: 'facts' },
          s.depends_on.length ? h('span', {}, `after ${s.depends_on.join(', ')}`) : h('span', {}, 'first'),
          h('span', {}, `attempts ${s.attempts}`),
          h('span', {}, `objects ${count(s.objects)}${s.expected_objects !== null ? ` of ${count(s.expected_objects)}` : ''}`),
          h('span', {}, `took ${duration(between(s.started_at, s.ended_at))}`),
          s.estimated_duration_ms !== null ? h('span', {}, `estimated ${duration(s.estimated_duration_ms)}`) : null,
          s.outcome === 'partial' ? h('span', { class: 'tag no' }, 'partial: some objects failed') : null,
          h('span', {}, s.reversible ? 'reversible' : 'not reversible'),
          h('span', {}, s.resumable ? 'resumable' : 'not resumable')),
        s.summary ? h('div', { class: 'muted' }, s.summary) : null,
        s.error ? h('div', { class: 'error' }, s.error) : null)));
    },
  };
}

const LEVELS = ['debug', 'info', 'warning', 'error'];
/// The most log lines kept on the page (the server keeps the job's newest `max_log_lines`).
const MAX_LINES = 5000;

/// The live log: coloured by level, filter and search, follows the end unless the reader
/// scrolled up.
export function logPanel(id) {
  const lines = [];
  const box = h('div', { class: 'log', tabindex: 0, role: 'log', 'aria-label': 'log lines' });
  const level = h('select', { id: 'log-level', onchange: () => render() },
    h('option', { value: 'debug' }, 'all levels'), LEVELS.slice(1).map((l) => h('option', { value: l }, `${l} and up`)));
  const search = h('input', { id: 'log-search', type: 'search', placeholder: 'search the log', oninput: () => render() });
  const following = h('span', { class: 'muted' });
  let follow = true;
  box.addEventListener('scroll', () => {
    follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    following.textContent = follow ? '' : 'paused: scroll to the end to follow';
  });
  const panel = h('section', { class: 'card', 'aria-labelledby': 'log-h' },
    h('div', { class: 'heading' }, h('h2', { id: 'log-h' }, 'Log'),
      h('div', { class: 'filters' }, h('label', { for: 'log-level' }, 'Level'), level,
        h('label', { for: 'log-search' }, 'Search'), search, following)),
    box);

  function line(l) {
    return h('div', { class: `line l-${l.level}` },
      h('span', { class: 'when' }, new Date(l.at).toLocaleTimeString()),
      h('span', { class: 'lvl' }, l.level),
      l.step ? h('span', { class: 'step-tag' }, l.step) : null,
      h('span', { class: 'msg' }, l.message));
  }
  function shown(l) {
    const q = search.value.trim().toLowerCase();
    return LEVELS.indexOf(l.level) >= LEVELS.indexOf(level.value)
      && (!q || l.message.toLowerCase().includes(q) || (l.step || '').toLowerCase().includes(q));
  }
  function render() {
    fill(box, lines.filter(shown).map(line));
    if (follow) box.scrollTop = box.scrollHeight;
  }
  function add(l) {
    if (lines.length && lines[lines.length - 1].seq >= l.seq) return;
    lines.push(l);
    if (lines.length > MAX_LINES) {
      lines.splice(0, lines.length - MAX_LINES);
      render();
      return;
    }
    if (shown(l)) {
      box.append(line(l));
      if (follow) box.scrollTop = box.scrollHeight;
    }
  }
  return {
    panel,
    /// Read the kept lines up to `upTo` (the events after it arrive live).
    async load(upTo) {
      let after = 0;
      for (;;) {
        const page = await api.call(`/migrations/${id}/logs?after=${after}&limit=1000`);
        for (const l of page.items) if (l.seq <= upTo) lines.push(l);
        if (!page.items.length || page.next_after >= upTo) break;
        after = page.next_after;
      }
      render();
    },
    event(e) {
      add({ seq: e.seq, at: e.at, level: e.level, source: e.source, step: e.step, message: e.message });
    },
  };
}

const PAGE = 100;

/// Object results, a page at a time (so 100,000 of them cost a page), errors first when
/// there are any; the newest arrive live while the last page is shown.
export function objectsPanel(id) {
  const body = h('tbody');
  const status = h('select', { id: 'obj-status', onchange: () => { starts.length = 0; after = null; guarded(load); } },
    h('option', { value: '' }, 'every status'), ['error', 'skipped', 'success'].map((s) => h('option', { value: s }, s)));
  const info = h('span', { class: 'muted' });
  const starts = []; // the `after` of each page before this one
  let after = null;
  let page = null;
  const prev = h('button', { type: 'button', onclick: () => { after = starts.pop() ?? null; guarded(load); } }, '← Earlier');
  const next = h('button', { type: 'button', onclick: () => { starts.push(after); after = page.next_after; guarded(load); } }, 'Later →');
  const panel = h('section', { class: 'card', 'aria-labelledby': 'obj-h' },
    h('div', { class: 'heading' }, h('h2', { id: 'obj-h' }, 'Object results'),
      h('div', { class: 'filters' }, h('label', { for: 'obj-status' }, 'Status'), status, info)),
    h('div', { class: 'scroll' }, h('table', { class: 'objects' },
      h('thead', {}, h('tr', {}, ['#', 'Step', 'Object', 'Type', 'Status', 'Duration', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    h('div', { class: 'pager' }, prev, next));

  function row(o) {
    return h('tr', { class: `o-${o.status}` },
      h('td', { class: 'num' }, o.index),
      h('td', {}, o.step),
      h('td', { class: 'mono' }, o.name),
      h('td', {}, o.object_type),
      h('td', {}, badge(o.status)),
      h('td', { class: 'num' }, `${(o.duration_micros / 1000).toFixed(2)} ms`),
      h('td', { class: 'error' }, o.error || ''));
  }
  async function load() {
    const q = new URLSearchParams({ limit: PAGE });
    if (after !== null) q.set('after', after);
    if (status.value) q.set('status', status.value);
    // Each object's latest result: errors a retry of failed objects redid are left out.
    q.set('current', 'true');
    page = await api.call(`/migrations/${id}/objects?${q}`);
    fill(body, page.items.length ? page.items.map(row)
      : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, status.value ? `No ${status.value} results here.` : 'No results yet.')));
    prev.disabled = starts.length === 0;
    next.disabled = page.next_after === null;
  }
  return {
    panel,
    async start(job) {
      if (job.failed_objects > 0) status.value = 'error';
      await load();
    },
    update(job) {
      info.textContent = `${count(job.completed_objects)} done · ${count(job.failed_objects)} failed · ${count(job.skipped_objects)} skipped`;
    },
    /// An `objects` event: on the last unfiltered page, its results are shown as they come.
    event(e) {
      if (status.value || (page && page.items.length >= PAGE)) return;
      const shownUpTo = page && page.items.length ? page.items[page.items.length - 1].index : -1;
      const rows = e.results.map((r, i) => ({ ...r, index: e.first_index + i, step: e.step }))
        .filter((o) => o.index > shownUpTo);
      if (!rows.length) return;
      if (!page.items.length) body.replaceChildren();
      for (const o of rows.slice(0, PAGE - page.items.length)) {
        page.items.push(o);
        body.append(row(o));
      }
      page.next_after = page.items[page.items.length - 1].index;
      next.disabled = page.items.length < PAGE;
    },
  };
}

/// What went wrong, whether trying again can help, and what to do about it.
export function errorsPanel() {
  const list = h('ul', { class: 'errors' });
  const panel = h('section', { class: 'card alert', 'aria-labelledby': 'err-h', hidden: true },
    h('h2', { id: 'err-h' }, 'Errors'), list);
  return {
    panel,
    update(job) {
      panel.hidden = job.errors.length === 0 && job.warnings.length === 0;
      fill(list,
        job.errors.map((e) => h('li', {},
          h('div', {}, h('strong', {}, e.kind), e.step ? ` in step ${e.step}` : '', ` (${e.phase}, ${when(e.at)})`,
            ' ', h('span', { class: `tag ${e.retryable ? 'ok' : 'no'}` }, e.retryable ? 'retryable' : 'not retryable')),
          h('div', { class: 'error' }, e.message),
          (e.recovery || []).length
            ? h('ul', { class: 'recovery', 'aria-label': 'What the handler suggests' },
              e.recovery.map((r) => h('li', {}, h('code', {}, r.action), ' ', r.description)))
            : null,
          h('div', { class: 'muted' }, 'Next: ', e.advice))),
        job.warnings.map((w) => h('li', { class: 'warning' }, w)));
    },
  };
}

/// The dry run's findings by severity, the approval, and the job's audit trail.
export function recordsPanel() {
  const dry = h('div');
  const approval = h('div');
  const audit = h('ol', { class: 'audit' });
  const panel = h('section', { class: 'card', 'aria-labelledby': 'rec-h' },
    h('h2', { id: 'rec-h' }, 'Dry run, approval, audit'),
    h('h3', {}, 'Dry run'), dry, h('h3', {}, 'Approval'), approval, h('h3', {}, 'Audit trail'), audit);
  return {
    panel,
    update(job) {
      const d = job.dry_run;
      if (!d) fill(dry, h('p', { class: 'muted' }, 'No dry run yet.'));
      else {
        const stale = d.plan_hash !== job.plan_hash || d.plugin_sha256 !== job.plugin.sha256;
        const bySeverity = ['error', 'warning', 'info'].map((sev) => [sev, d.report.findings.filter((f) => f.severity === sev)]);
        fill(dry,
          h('p', {}, d.passed ? badge('completed') : badge('failed'), ` ${d.passed ? 'passed' : 'did not pass'} · ${when(d.at)} by ${d.by}`,
            stale ? h('span', { class: 'warning' }, ' · of another plan or plugin') : null),
          bySeverity.filter(([, fs]) => fs.length).map(([sev, fs]) => h('div', {},
            h('h4', {}, `${sev} (${fs.length})`),
            h('ul', {}, fs.map((f) => h('li', { class: `f-${sev}` }, h('code', {}, f.code), f.step ? ` [${f.step}] ` : ' ', f.message))))));
      }
      fill(approval, job.approval
        ? h('p', {}, `Approved by ${job.approval.by} · ${when(job.approval.at)}${job.approval.plan_hash !== job.plan_hash ? ' (of another plan)' : ''}`)
        : h('p', { class: 'muted' }, job.options.approval_required ? 'Needs an approval before it runs.' : 'Not required.'));
      fill(audit, job.audit.length ? job.audit.slice().reverse().map((a) => h('li', {},
        h('span', { class: 'muted' }, when(a.at)), ' ', h('strong', {}, a.actor), ` ${a.action}: ${a.outcome}`))
        : h('li', { class: 'muted' }, 'No actions yet.'));
    },
  };
}
