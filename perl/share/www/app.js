// The oxnotify page: list targets with their health, create/edit them, Authorize (popup +
// backend code exchange, or device code), Verify (login check), Send test, and the provider
// guide. The form is built from the core's key table (/form.json): each key says which auth
// methods and flows it applies to and which need it, so keys the table gains later show up
// without a change here.
// A module (index.html loads it with type="module"): strict, and nothing leaks into window.
let token = sessionStorage.getItem('oxnotify-token') || '';
let pending = null; // { state, target } of the authorization in progress
let keys = [];      // the key table
let providers = {}; // auth-method -> registration values
let editing = null; // the target being edited (as loaded), or null for a new one
let shownGuide = null; // the guide shown as the help

// What the page calls the keys it knows; a key it does not know is shown by its name.
const LABELS = {
  server: ['SMTP server', 'host name'],
  port: ['Port', 'default: 465 for tls, 587 for starttls, 25 for insecure'],
  mode: ['Connection security'],
  'auth-method': ['Provider / authentication'],
  username: ['Username', 'plain: the login; OAuth2: the mailbox to log in as, if not the from address'],
  'from-address': ['From address', 'OAuth2: the mailbox the token is for'],
  author: ['Author (display name)'],
  mailto: ['Mail to', 'comma-separated addresses'],
  'mailto-user': ['Mail to users', 'user@realm of the host stack, comma-separated'],
  'oauth2-client-id': ['Client (application) ID'],
  'oauth2-tenant-id': ['Directory (tenant) ID'],
  'oauth2-authorize-url': ['Authorize URL', 'empty: the provider\'s own'],
  'oauth2-token-url': ['Token URL', 'empty: the provider\'s own'],
  'oauth2-scope': ['Scopes', 'space-separated; empty: the provider\'s own'],
  'max-connections': ['Connections at most', 'simultaneous SMTP sessions from this host'],
  'broker-allow-user': ['Broker: local users', 'may fetch the access token from oxnotify-broker'],
  'broker-allow-group': ['Broker: local groups', 'members may fetch the access token'],
  'oauth2-flow': ['OAuth2 flow'],
  'oauth2-client-auth': ['Client authentication', 'empty: the provider\'s default'],
  'oauth2-service-account': ['Service account e-mail', 'client_email of its JSON key file'],
  'oauth2-key-id': ['Key ID', 'private_key_id, or the kid of the key'],
  'oauth2-certificate-thumbprint': ['Certificate thumbprint', 'hex, as Entra shows it'],
  'oauth2-device-authorize-url': ['Device authorization URL', 'empty: the provider\'s own'],
  comment: ['Comment'],
  disable: ['Disabled'],
  'allow-insecure-auth': ['Allow authentication without TLS'],
  password: ['Password'],
  'oauth2-client-secret': ['Client secret (value)'],
  'oauth2-private-key': ['Private key (PEM) or service-account JSON key file'],
  transport: ['Transport', 'graph: Microsoft Graph sendMail where SMTP AUTH is off'],
  'alert-target': ['Alert target', 'another target that is told before this one fails'],
  'oauth2-credential-expires': ['Credential expires', 'when the client secret or certificate runs out'],
};
const MULTILINE = new Set(['oauth2-private-key']);
const KIND_TEXT = {
  'needs-reauthorization': 'needs re-authorization',
  'needs-admin-fix': 'needs an admin fix',
  transient: 'transient (retried)',
  'invalid-input': 'invalid setting',
  'not-found': 'not found',
  conflict: 'conflict',
  internal: 'internal',
};

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

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const when = (t) => new Date(t * 1000).toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');

function ago(secs) {
  if (secs < 120) return Math.round(secs) + ' s';
  if (secs < 7200) return Math.round(secs / 60) + ' min';
  if (secs < 172800) return Math.round(secs / 3600) + ' h';
  return Math.round(secs / 86400) + ' days';
}

function inDays(t) {
  const d = Math.floor((t - Date.now() / 1000) / 86400);
  return d < 0 ? 'passed' : (d === 0 ? 'today' : 'in ' + d + ' day' + (d === 1 ? '' : 's'));
}

// ---- the form, built from the key table ----

function fieldOf(name) {
  return document.getElementById('f-' + name);
}

// The value a key has in the form ('' unset); a hidden field is unset (it is not sent).
function valueOf(name) {
  const f = fieldOf(name);
  if (!f || f.closest('.field').hidden) return '';
  if (f.type === 'checkbox') return f.checked ? '1' : '';
  return f.value;
}

// A condition of the table: one alternative whose every {key, values} holds.
function holds(cond) {
  return cond.some((alt) => alt.every((w) => w.values.includes(valueOf(w.key))));
}

function buildField(k) {
  const [label, hint] = LABELS[k.name] || [k.name];
  const id = 'f-' + k.name;
  const div = el('div', { class: 'field', 'data-key': k.name });
  const lab = el('label', { for: id }, label);
  let input;
  if (k.kind === 'choice') {
    input = el('select', { id, name: k.name });
    // a choice no target needs may stay unset (the provider's or the core's default)
    if (k.deletable && k.needed.length === 0) {
      input.appendChild(el('option', { value: '' }, '(default)'));
    }
    for (const c of k.choices) input.appendChild(el('option', { value: c.value }, c.value));
  } else if (MULTILINE.has(k.name)) {
    input = el('textarea', { id, name: k.name, rows: 4, cols: 50, autocomplete: 'off' });
  } else {
    input = el('input', { id, name: k.name });
    if (k.kind === 'bool') input.type = 'checkbox';
    else if (k.kind === 'number') input.type = 'number';
    else if (k.kind === 'secret') {
      input.type = 'password';
      input.autocomplete = 'new-password';
    }
  }
  if (k.kind === 'secret') input.placeholder = 'unchanged if empty';
  if (k.multi) input.dataset.list = '';
  if (hint) {
    input.setAttribute('aria-describedby', id + '-hint');
    div.append(lab, input, el('span', { id: id + '-hint', class: 'hint' }, hint));
  } else {
    div.append(lab, input);
  }
  input.addEventListener('change', refreshForm);
  return div;
}

function buildForm() {
  const needed = document.getElementById('needed-fields');
  const optional = document.getElementById('optional-fields');
  needed.textContent = '';
  optional.textContent = '';
  for (const k of keys) needed.appendChild(buildField(k));
  refreshForm();
}

// Show what the chosen provider and flow need, the optional rest under "More settings",
// hide what does not apply; then the registration values.
function refreshForm() {
  const needed = document.getElementById('needed-fields');
  const optional = document.getElementById('optional-fields');
  // a key's visibility depends on other keys' values, which depend on their visibility:
  // repeat until nothing changes (the table's conditions are shallow)
  for (let pass = 0; pass < 4; pass += 1) {
    let changed = false;
    for (const k of keys) {
      const div = fieldOf(k.name).closest('.field');
      const applies = holds(k.applies);
      const home = holds(k.needed) ? needed : optional;
      if (div.hidden === applies) { div.hidden = !applies; changed = true; }
      if (div.parentElement !== home) { home.appendChild(div); changed = true; }
      const f = fieldOf(k.name);
      if (f.tagName === 'SELECT') {
        for (const o of f.options) {
          const c = k.choices.find((x) => x.value === o.value);
          o.hidden = Boolean(c) && !holds(c.applies);
        }
        if (f.selectedOptions.length === 0 || f.selectedOptions[0].hidden) {
          const first = [...f.options].find((o) => !o.hidden);
          if (first && f.value !== first.value) { f.value = first.value; changed = true; }
        }
      }
    }
    if (!changed) break;
  }
  // keep the table's order within each group
  for (const group of [needed, optional]) {
    for (const k of keys) {
      const div = fieldOf(k.name).closest('.field');
      if (div.parentElement === group) group.appendChild(div);
    }
  }
  document.getElementById('more').hidden = ![...optional.children].some((d) => !d.hidden);
  showRegistration();
  // the help follows the chosen provider
  const guide = guideFor(valueOf('auth-method'));
  if (guide && guide !== shownGuide) loadGuide(guide);
}

// What the admin pastes into the app registration at the provider for this target.
function showRegistration() {
  const box = document.getElementById('registration');
  const dl = document.getElementById('registration-values');
  const method = valueOf('auth-method');
  const p = providers[method];
  dl.textContent = '';
  box.hidden = !p;
  if (!p) return;
  const flow = valueOf('oauth2-flow') || 'authorization-code';
  const add = (term, value, id) => {
    dl.append(el('dt', {}, term));
    const dd = el('dd');
    dd.appendChild(el('code', { id }, value));
    dl.append(dd);
  };
  const scope = valueOf('oauth2-scope') || (flow === 'client-credentials' && p['app-only-scope']) || p.scope;
  if (flow === 'authorization-code') {
    add(method === 'microsoft-oauth2' ? 'Redirect URI (platform "Web", not SPA)' : 'Redirect URI',
      window.location.origin + '/oauth2/callback', 'reg-redirect');
  }
  const permission = {
    'microsoft-oauth2': {
      'client-credentials': 'Application permission SMTP.SendAsApp (Office 365 Exchange Online), admin consent; Exchange service principal with mailbox access',
      'device-code': 'Delegated permissions SMTP.Send and offline_access (under Microsoft Graph); "Allow public client flows": Yes',
    },
    'google-oauth2': {
      'service-account': 'Domain-wide delegation: the service account\'s client ID with this scope (Workspace admin console)',
    },
  }[method] || {};
  add(flow === 'client-credentials' ? 'Token scope (app-only)' : 'Scopes', scope || '(set Scopes above)', 'reg-scope');
  const what = permission[flow] || (method === 'microsoft-oauth2'
    ? 'Delegated permissions SMTP.Send and offline_access (listed under Microsoft Graph)'
    : '');
  if (what) add('Permission', what, 'reg-permission');
  if (p['refresh-token-lifetime-days'] || p['refresh-token-idle-days']) {
    add('Keeps working', p['refresh-token-lifetime-days']
      ? 'refresh tokens last ' + p['refresh-token-lifetime-days'] + ' days from issue; the daily job renews them'
      : 'refresh tokens die after ' + p['refresh-token-idle-days'] + ' days unused; the daily job uses them', 'reg-lifetime');
  }
}

function fillForm(t) {
  const f = document.getElementById('target-form');
  f.reset();
  editing = t;
  for (const k of keys) {
    const input = fieldOf(k.name);
    const v = t ? t[k.name] : undefined;
    if (input.type === 'checkbox') input.checked = Boolean(v && String(v) !== '0');
    else if (v !== undefined && v !== null) input.value = Array.isArray(v) ? v.join(', ') : v;
  }
  f.elements.name.value = t ? t.name : '';
  f.elements.name.readOnly = Boolean(t);
  f.elements.digest.value = t && t.digest ? t.digest : '';
  document.getElementById('form-title').textContent = t ? 'Edit target ' + t.name : 'New SMTP target';
  refreshForm();
}

async function saveTarget(ev) {
  ev.preventDefault();
  const f = ev.target;
  const p = {};
  const remove = [];
  for (const k of keys) {
    const input = fieldOf(k.name);
    const shown = !input.closest('.field').hidden;
    const v = shown ? valueOf(k.name) : '';
    const had = editing && editing[k.name] !== undefined && editing[k.name] !== '';
    if (v === '') {
      // a key that no longer applies (or was emptied) goes; an empty secret stays as it is
      if (had && k.deletable && k.kind !== 'secret') remove.push(k.name);
      continue;
    }
    if (k.kind === 'number') p[k.name] = Number(v);
    else if (k.kind === 'bool') p[k.name] = 1;
    else if (k.multi) p[k.name] = v.split(/[,\s]+/).filter((s) => s);
    else p[k.name] = v;
  }
  const name = f.elements.name.value;
  try {
    if (editing) {
      if (f.elements.digest.value) p.digest = f.elements.digest.value;
      if (remove.length) p.delete = remove;
      await api('PUT', 'endpoints/smtp/' + encodeURIComponent(name), p);
    } else {
      p.name = name;
      await api('POST', 'endpoints/smtp', p);
    }
    show('Saved target ' + name + '.', true);
    fillForm(null);
    loadTargets();
  } catch (e) {
    show('Saving failed: ' + e.message);
  }
}

// ---- the targets and their health ----

function row(dl, term, value, key) {
  const dt = el('dt', {}, term);
  const dd = el('dd', { 'data-health': key });
  if (value instanceof Node) dd.appendChild(value);
  else dd.textContent = value;
  dl.append(dt, dd);
  return dd;
}

function button(parent, label, id, fn) {
  const b = el('button', { type: 'button', id }, label);
  b.addEventListener('click', fn);
  parent.appendChild(b);
  return b;
}

function errorText(kind, message) {
  return (kind ? (KIND_TEXT[kind] || kind) + ': ' : '') + message;
}

// The health an admin looks for, from the target's status (OAuth2) and its list entry.
function showHealth(dl, t, s) {
  dl.textContent = '';
  const mints = ['client-credentials', 'service-account', 'password'].includes(t['oauth2-flow']);
  if (s) {
    row(dl, 'Authorized since', s.authorized_at ? when(s.authorized_at)
      : (mints ? 'not needed (the token is minted)' : 'not authorized'), 'authorized');
    row(dl, 'Refresh token expires', s.estimated_expiry
      ? 'about ' + when(s.estimated_expiry) + ' (' + inDays(s.estimated_expiry) + ', unless refreshed)'
      : (mints ? 'no refresh token (minted when needed)' : 'no fixed expiry known'), 'expiry');
    if (Array.isArray(s.forecast) && s.forecast.length) {
      const ul = el('ul', { class: 'forecast' });
      for (const f of s.forecast) ul.appendChild(el('li', {}, f.text));
      row(dl, 'Forecast', ul, 'forecast');
    }
    row(dl, 'Access token valid until', s.access_token_valid_until ? when(s.access_token_valid_until)
      : 'none cached', 'access-token');
    row(dl, 'Last refresh', s.last_refresh
      ? when(s.last_refresh) + (s.last_refresh_by ? ' by node ' + s.last_refresh_by : '')
      : 'never', 'last-refresh');
    if (s.store_writable !== undefined) {
      row(dl, 'Cluster store', s.store_writable ? 'writable' : 'not writable (no quorum?)', 'store');
    }
  }
  const o = (s && s.outbox) || { queued: t['outbox-queued'] || 0, oldest_age_secs: t['outbox-oldest-age'] };
  row(dl, 'Queue', o.queued ? o.queued + ' waiting, oldest ' + ago(o.oldest_age_secs || 0)
    + (o.last_error ? ' (last try: ' + o.last_error + ')' : '') : 'empty', 'queue');
  if (o.given_up && o.given_up.count) {
    row(dl, 'Given up', o.given_up.count + (o.given_up.last_reason ? ', last: ' + o.given_up.last_reason : ''), 'given-up');
  }
  if (s && s.last_error) {
    // the message as the core wrote it: it carries the hint (e.g. 5.7.139: SMTP AUTH is off)
    row(dl, 'Last error', errorText(s.last_error.kind, s.last_error.message)
      + (s.last_error.time ? ' (' + when(s.last_error.time) + ')' : ''), 'last-error');
  } else if (s) {
    row(dl, 'Last error', 'none', 'last-error');
  }
  const alert = (s && s.alert_target) || t['alert-target'];
  if (alert !== undefined || keys.some((k) => k.name === 'alert-target')) {
    row(dl, 'Alerts go to', alert || 'not set', 'alert-target');
  }
  const warning = (s && s.warning) || t.warning;
  row(dl, 'Status', warning ? 'Action needed: ' + warning : 'OK', 'status');
}

// The login check: each step with its time; on failure the step, kind and hint.
async function verify(name, out) {
  out.textContent = 'Checking the login...';
  try {
    const v = await api('POST', 'targets/' + encodeURIComponent(name) + '/verify', {});
    out.textContent = '';
    const ol = el('ol', { class: 'steps' });
    (v.steps || []).forEach((st, i) => {
      const failed = !v.ok && i === v.steps.length - 1;
      ol.appendChild(el('li', { 'data-step': st.step },
        (st.step === 'token' ? 'access token' : 'SMTP login (connect, EHLO, TLS, AUTH, QUIT)')
        + ': ' + st.ms + ' ms' + (failed ? ' - failed' : ' - ok')));
    });
    out.appendChild(el('p', { class: 'verdict' }, v.ok
      ? 'Login OK (' + v.credential + ').'
      : 'Login failed at step ' + ((v.steps || []).slice(-1)[0] || { step: '?' }).step + ': '
        + errorText(v.kind, v.error || '')));
    out.appendChild(ol);
  } catch (e) {
    out.textContent = 'Verify failed: ' + e.message;
  }
}

async function loadTargets() {
  const box = document.getElementById('targets');
  box.textContent = '';
  let targets;
  try {
    targets = await api('GET', 'endpoints/smtp');
  } catch (e) {
    show('Could not load targets: ' + e.message);
    return;
  }
  if (!targets.length) box.appendChild(el('p', {}, 'No targets yet: create one below.'));
  for (const t of targets) {
    const art = el('article', { class: 'target', 'data-name': t.name, 'aria-labelledby': 'title-' + t.name });
    art.appendChild(el('h3', { id: 'title-' + t.name }, t.name));
    art.appendChild(el('p', { class: 'summary' }, t.error ? 'invalid: ' + t.error
      : [t['auth-method'], t['oauth2-flow'], t.server, t['from-address']].filter((x) => x).join(' \u00b7 ')));
    const dl = el('dl', { class: 'health', id: 'health-' + t.name });
    art.appendChild(dl);
    const actions = el('div', { class: 'actions' });
    art.appendChild(actions);
    const result = el('div', { class: 'verify', id: 'verify-' + t.name, role: 'status' });
    button(actions, 'Edit', 'edit-' + t.name, () => fillForm(t));
    const oauth2 = t['auth-method'] && t['auth-method'].endsWith('oauth2');
    if (oauth2) {
      const flow = t['oauth2-flow'] || 'authorization-code';
      // client-credentials, service-account and password mint their tokens: nothing to authorize
      if (flow === 'device-code') button(actions, 'Authorize', 'authorize-' + t.name, () => authorizeDevice(t.name));
      else if (flow === 'authorization-code') button(actions, 'Authorize', 'authorize-' + t.name, () => authorize(t.name));
    }
    if (!t.error) {
      button(actions, 'Verify login', 'verify-button-' + t.name, () => verify(t.name, result));
      button(actions, 'Send test', 'test-' + t.name, () => sendTest(t.name));
    }
    art.appendChild(result);
    box.appendChild(art);
    if (oauth2 && !t.error) {
      api('GET', 'targets/' + encodeURIComponent(t.name) + '/oauth2-status').then((s) => {
        showHealth(dl, t, s);
        art.dataset.authorized = s.authorized ? '1' : '0';
      }).catch((e) => { dl.textContent = 'Status: ' + e.message; });
    } else if (!t.error) {
      showHealth(dl, t, null);
    }
  }
}

// ---- authorization ----

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
    const a = el('a', { target: '_blank', rel: 'noopener' }, r.verification_uri);
    if (/^https?:\/\//.test(r.verification_uri)) a.href = r.verification_uri;
    m.appendChild(a);
    m.appendChild(document.createTextNode(' and enter the code '));
    m.appendChild(el('strong', { id: 'device-code' }, r.user_code));
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

// ---- the guide ----

// The guide of an OAuth2 auth method (none for plain and none).
function guideFor(method) {
  return { 'microsoft-oauth2': 'microsoft', 'google-oauth2': 'google', oauth2: 'generic' }[method];
}

async function loadGuide(name) {
  const sel = document.getElementById('guide');
  const text = document.getElementById('guide-text');
  sel.value = name;
  shownGuide = name;
  let shown;
  try {
    const res = await fetch('/guides/' + name + '.md');
    shown = res.ok ? await res.text() : 'The guide is not installed (HTTP ' + res.status + ').';
  } catch (e) {
    shown = 'Could not load the guide: ' + e.message;
  }
  // a guide asked for later wins over this one if it arrived first
  if (shownGuide === name) text.textContent = shown;
}

document.addEventListener('DOMContentLoaded', async () => {
  document.getElementById('token').value = token;
  document.getElementById('save-token').addEventListener('click', () => {
    token = document.getElementById('token').value.trim();
    sessionStorage.setItem('oxnotify-token', token);
    loadTargets();
  });
  document.getElementById('reload').addEventListener('click', loadTargets);
  document.getElementById('target-form').addEventListener('submit', saveTarget);
  document.getElementById('new-target').addEventListener('click', () => fillForm(null));
  document.getElementById('guide').addEventListener('change', (ev) => loadGuide(ev.target.value));
  document.getElementById('show-guide').addEventListener('click', () => {
    loadGuide(guideFor(valueOf('auth-method')) || shownGuide || 'generic');
    document.getElementById('help').scrollIntoView();
    document.getElementById('guide-text').focus();
  });
  document.getElementById('f-name').addEventListener('input', showRegistration);
  try {
    const res = await fetch('/form.json');
    const form = await res.json();
    keys = form.keys;
    providers = Object.fromEntries(form.providers.map((p) => [p['auth-method'], p]));
  } catch (e) {
    show('Could not load the form: ' + e.message);
    return;
  }
  buildForm();
  fillForm(null);
  document.body.dataset.ready = '1';
  if (token) loadTargets();
});
