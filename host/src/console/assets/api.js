// The console's only way to the server: the HTTP API, with the session cookie the browser
// keeps (HttpOnly: scripts never see it) and the session's CSRF token on every change.

let csrf = null;
let session = null;
let signedOut = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || 'error';
    this.details = body?.details ?? null;
  }
}

export function current() {
  return session;
}

/// Called when a request finds the session gone (signed out elsewhere, token revoked).
export function onSignedOut(f) {
  signedOut = f;
}

export function can(role) {
  const rank = { viewer: 0, operator: 1, admin: 2 };
  return session !== null && rank[session.role] >= rank[role];
}

export async function loadSession() {
  const r = await fetch('/api/v1/session', { credentials: 'same-origin' });
  if (r.status === 401) {
    session = csrf = null;
    return null;
  }
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  session = await r.json();
  csrf = session.csrf;
  return session;
}

export async function signIn(token) {
  session = await call('/session', { method: 'POST', body: { token } });
  csrf = session.csrf;
  return session;
}

export async function signOut() {
  try {
    await call('/session', { method: 'DELETE' });
  } finally {
    session = csrf = null;
  }
}

/// A JSON call to `/api/v1{path}`; `raw` sends bytes as they are.
export async function call(path, { method = 'GET', body, raw, signal } = {}) {
  const headers = {};
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    headers['Content-Type'] = 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  const r = await fetch('/api/v1' + path, {
    method, headers, body: payload, credentials: 'same-origin', signal,
  });
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    const e = new ApiError(r.status, data);
    if (r.status === 401 && path !== '/session') {
      session = csrf = null;
      signedOut(e);
    }
    throw e;
  }
  return data;
}

/// Follow an event stream: `on[type](data, id)` for each event. The browser reconnects by
/// itself after a network error, sending the last id it saw (`Last-Event-ID`), and the server
/// replays what was missed; `reopen()` starts a new connection after the last id seen.
export function follow(path, on, { after = null, seen = null } = {}) {
  let last = after;
  let source = null;
  const open = () => {
    const url = '/api/v1' + path + (last !== null ? `?after=${last}` : '');
    source = new EventSource(url, { withCredentials: true });
    for (const [type, handler] of Object.entries(on)) {
      source.addEventListener(type, (ev) => {
        if (ev.lastEventId) last = Number(ev.lastEventId);
        let data = null;
        try { data = JSON.parse(ev.data); } catch { data = ev.data; }
        handler(data, last);
        // [id, type, committed at (ms), handled at (ms)]: what tests and the benchmark read.
        if (seen) seen.push([ev.lastEventId ? Number(ev.lastEventId) : null, type,
          data && data.at ? Date.parse(data.at) : null, Date.now()]);
        if (type === 'final') source.close();
      });
    }
  };
  open();
  return {
    close: () => source.close(),
    reopen: () => { source.close(); open(); },
    last: () => last,
  };
}
