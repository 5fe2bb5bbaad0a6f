// Sign-in: an API token is exchanged for a session cookie; the token is not kept anywhere.

import * as api from '../api.js';
import { h, fill } from '../ui.js';

export function signInView(main, done) {
  const error = h('p', { class: 'error', role: 'alert' });
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true,
    'aria-describedby': 'token-help' });
  const form = h('form', { class: 'card narrow', onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      await api.signIn(input.value.trim());
      input.value = '';
      done();
    } catch (e) {
      error.textContent = e.status === 401 ? 'That token is unknown or was revoked.' : e.message;
    }
  } },
  h('h1', {}, 'Sign in'),
  h('label', { for: 'token' }, 'API token'),
  input,
  h('p', { id: 'token-help', class: 'muted' },
    'The token is exchanged for a session of this browser (12 hours, or until you sign out or the token is revoked).'),
  error,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  fill(main, form);
  input.focus();
  return null;
}
