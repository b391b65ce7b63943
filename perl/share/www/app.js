// The oxnotify page: list/create/edit targets, Authorize (popup + backend code exchange), Send test.
// A module (index.html loads it with type="module"): strict, and nothing leaks into window.
let token = sessionStorage.getItem('oxnotify-token') || '';
let pending = null; // { state, target } of the authorization in progress

function show(text, ok) {
  const m = document.getElementById('message');
  m.textContent = text;
  m.className = ok ? 'ok' : 'error';
}

async function api(method, path, params) {
  const opts = { method, headers: { Authorization: 'Bearer ' + token } };
  if (params) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(params);
  }
  const res = await fetch('/api2/json/' + path, opts);
  const body = await res.json().catch(() => ({ message: 'HTTP ' + res.status }));
  if (!res.ok) {
    throw new Error(body.message || ('HTTP ' + res.status));
  }
  return body.data;
}

function cell(tr, text) {
  const td = document.createElement('td');
  td.textContent = text === undefined || text === null ? '' : String(text);
  tr.appendChild(td);
  return td;
}

function button(td, label, id, fn) {
  const b = document.createElement('button');
  b.textContent = label;
  b.id = id;
  b.addEventListener('click', fn);
  td.appendChild(b);
}

async function loadTargets() {
  const tbody = document.querySelector('#targets tbody');
  tbody.textContent = '';
  let targets;
  try {
    targets = await api('GET', 'endpoints/smtp');
  } catch (e) {
    show('Could not load targets: ' + e.message);
    return;
  }
  for (const t of targets) {
    const tr = document.createElement('tr');
    tr.dataset.name = t.name;
    cell(tr, t.name);
    cell(tr, t.error ? 'invalid: ' + t.error : t.server);
    cell(tr, t['auth-method']);
    cell(tr, t['from-address']);
    const status = cell(tr, t['outbox-queued'] ? t['outbox-queued'] + ' queued (oldest ' +
      Math.round((t['outbox-oldest-age'] || 0) / 60) + ' min)' + (t.warning ? ': ' + t.warning : '') : '');
    const actions = cell(tr, '');
    button(actions, 'Edit', 'edit-' + t.name, () => edit(t));
    if (t['auth-method'] && t['auth-method'].endsWith('oauth2')) {
      const flow = t['oauth2-flow'] || 'authorization-code';
      // client-credentials, service-account and password mint their tokens: nothing to authorize
      if (flow === 'device-code') button(actions, 'Authorize', 'authorize-' + t.name, () => authorizeDevice(t.name));
      else if (flow === 'authorization-code') button(actions, 'Authorize', 'authorize-' + t.name, () => authorize(t.name));
      api('GET', 'targets/' + encodeURIComponent(t.name) + '/oauth2-status').then((s) => {
        const when = (t) => new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
        if (t['outbox-queued']) return;  // the queue says more than the token's health
        status.textContent = s.warning ? s.warning : ('authorized ' + when(s.authorized_at) +
          (s.last_refresh ? ', last refresh ' + when(s.last_refresh) : ''));
        status.dataset.authorized = s.authorized ? '1' : '0';
      }).catch((e) => { status.textContent = e.message; });
    }
    button(actions, 'Send test', 'test-' + t.name, () => sendTest(t.name));
    tbody.appendChild(tr);
  }
}

function edit(t) {
  const f = document.getElementById('target-form');
  f.reset();
  for (const el of f.elements) {
    if (!el.name) continue;
    const v = t[el.name];
    if (v !== undefined) el.value = Array.isArray(v) ? v.join(', ') : v;
  }
  f.elements.name.readOnly = true;
  document.getElementById('form-title').textContent = 'Edit target ' + t.name;
}

async function saveTarget(ev) {
  ev.preventDefault();
  const f = ev.target;
  const editing = f.elements.name.readOnly;
  const p = {};
  for (const el of f.elements) {
    if (!el.name || el.value === '') continue;
    // number inputs are integers, data-list inputs lists (comma or blank separated)
    if (el.type === 'number') p[el.name] = Number(el.value);
    else if (el.dataset.list !== undefined) p[el.name] = el.value.split(/[,\s]+/).filter((s) => s);
    else p[el.name] = el.value;
  }
  try {
    if (editing) {
      const name = p.name;
      delete p.name;
      await api('PUT', 'endpoints/smtp/' + encodeURIComponent(name), p);
    } else {
      await api('POST', 'endpoints/smtp', p);
    }
    show('Saved target ' + f.elements.name.value + '.', true);
    newTarget();
    loadTargets();
  } catch (e) {
    show('Saving failed: ' + e.message);
  }
}

function newTarget() {
  const f = document.getElementById('target-form');
  f.reset();
  f.elements.name.readOnly = false;
  document.getElementById('form-title').textContent = 'New SMTP target';
}

async function authorize(name) {
  // open the popup in the click handler itself, or popup blockers stop it
  const popup = window.open('about:blank', 'oxnotify-authorize', 'width=640,height=760');
  if (!popup) {
    show('The popup was blocked: allow popups for this page and click Authorize again.');
    return;
  }
  try {
    const r = await api('POST', 'smtp-oauth2-authorize-url',
      { name, 'redirect-uri': window.location.origin + '/oauth2/callback' });
    pending = { state: r.state, target: name };
    popup.location = r.url;
    show('Log in at ' + r['authorize-host'] + ' in the popup window: client ID ' + r['client-id']
      + ' asks for scope "' + r.scope + '" (tokens from ' + r['token-host'] + ')...', true);
  } catch (e) {
    popup.close();
    show('Could not start the authorization: ' + e.message);
  }
}

// RFC 8628: show the code and where to enter it, then wait while the backend polls
async function authorizeDevice(name) {
  try {
    const r = await api('POST', 'smtp-oauth2-device', { name });
    const m = document.getElementById('message');
    m.className = 'ok';
    m.textContent = 'On any device, open ';
    const a = document.createElement('a');
    if (/^https?:\/\//.test(r.verification_uri)) a.href = r.verification_uri;
    a.target = '_blank';
    a.rel = 'noopener';
    a.textContent = r.verification_uri;
    m.appendChild(a);
    m.appendChild(document.createTextNode(' and enter the code '));
    const code = document.createElement('strong');
    code.id = 'device-code';
    code.textContent = r.user_code;
    m.appendChild(code);
    m.appendChild(document.createTextNode(' (valid ' + r.expires_in + ' s). Waiting for the sign-in...'));
    // each call waits a few seconds at the backend; an error (declined, expired) ends it
    while (!(await api('POST', 'smtp-oauth2-device', { name, handle: r.handle })).authorized) { /* poll */ }
    show('Target ' + name + ' is authorized.', true);
    loadTargets();
  } catch (e) {
    show('Device authorization failed: ' + e.message);
  }
}

window.addEventListener('message', async (ev) => {
  if (ev.origin !== window.location.origin || !ev.data || ev.data.type !== 'oxnotify-oauth2') return;
  const d = ev.data;
  // the state first: an answer (error or code) that does not belong to the authorization
  // started here is not shown as the provider's and does not end it
  if (!pending || d.state !== pending.state) {
    show('State mismatch: this answer does not belong to the authorization started here. Click Authorize again.');
    return;
  }
  if (d.error) {
    show('The provider refused the authorization: ' + d.error + (d.error_description ? ' (' + d.error_description + ')' : ''));
    pending = null;
    return;
  }
  const p = pending;
  pending = null;
  try {
    await api('POST', 'smtp-oauth2-token', { state: d.state, 'authorization-code': d.code, target: p.target });
    show('Target ' + p.target + ' is authorized.', true);
    loadTargets();
  } catch (e) {
    show('Exchanging the authorization code failed: ' + e.message);
  }
});

async function sendTest(name) {
  try {
    await api('POST', 'targets/' + encodeURIComponent(name) + '/test', {});
    show('Test notification sent through ' + name + '.', true);
  } catch (e) {
    show('Sending failed: ' + e.message);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('token').value = token;
  document.getElementById('save-token').addEventListener('click', () => {
    token = document.getElementById('token').value.trim();
    sessionStorage.setItem('oxnotify-token', token);
    loadTargets();
  });
  document.getElementById('reload').addEventListener('click', loadTargets);
  document.getElementById('target-form').addEventListener('submit', saveTarget);
  document.getElementById('new-target').addEventListener('click', newTarget);
  if (token) loadTargets();
});
