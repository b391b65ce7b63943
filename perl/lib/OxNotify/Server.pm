package OxNotify::Server;

use Mojo::Base 'Mojolicious', -signatures;

use OxNotify::API2::Notifications;
use OxNotify::API2::Schema;
use OxNotify::Core;
use OxNotify::Server::Tokens;

our $VERSION = '0.1.0';

sub startup ($self) {
    $self->secrets([OxNotify::Server::Tokens::random_token()]);
    $self->renderer->classes([__PACKAGE__]);
    $self->static->classes([__PACKAGE__]);
    $self->hook(after_dispatch => sub ($c) {
        my $h = $c->res->headers;
        # pages: our own scripts only; nothing may frame us
        $h->header('Content-Security-Policy' => "default-src 'self'; frame-ancestors 'none'; base-uri 'none'");
        $h->header('X-Content-Type-Options' => 'nosniff');
        $h->header('Referrer-Policy' => 'no-referrer');
        $h->header('Cache-Control' => 'no-store');
    });

    my $r = $self->routes;
    $r->get('/' => sub ($c) { $c->reply->static('index.html') });
    # the provider redirects here; the page hands code+state to the opener (same origin only)
    $r->get('/oauth2/callback' => sub ($c) { $c->reply->static('callback.html') });

    for my $m (OxNotify::API2::Notifications::methods()) {
        (my $path = $m->{path}) =~ s/\{(\w+)\}/:$1/g;
        $r->any([$m->{method}] => "/api2/json/$path" => sub ($c) { _handle($c, $m) });
    }
    $r->any('/api2/*any' => sub ($c) {
        $c->render(status => 404, json => { message => 'no such API path', data => undef });
    });
}

sub _params ($c, $m) {
    my %p;
    my $props = $m->{parameters}{properties} // {};
    my $body = $c->req->json;
    if (ref($body) eq 'HASH') {
        %p = %$body;
    } else {
        for my $k (@{ $c->req->params->names }) {
            my $all = $c->every_param($k);
            $p{$k} = ($props->{$k} && ($props->{$k}{type} // '') eq 'array') ? $all : $all->[-1];
        }
    }
    # path captures win over anything in the body
    for my $k (keys %{ $c->stash }) {
        next if $k =~ /^(?:mojo\.|cb$|controller$|action$|format$)/ || !exists $props->{$k};
        $p{$k} = $c->stash($k);
    }
    return \%p;
}

sub _handle ($c, $m) {
    my ($scheme, $token) = split(/\s+/, $c->req->headers->authorization // '', 2);
    my $role = ($scheme // '') eq 'Bearer' ? OxNotify::Server::Tokens::role_of($token) : undef;
    if (!$role) {
        $c->res->headers->header('WWW-Authenticate' => 'Bearer realm="oxnotify"');
        return $c->render(status => 401, json => { message => 'authentication required: send "Authorization: Bearer <API token>"', data => undef });
    }
    my $data = eval { OxNotify::API2::Schema::call($m, _params($c, $m), $role) };
    if (my $err = $@) {
        my ($code, $msg, $errors) = ref($err) && $err->isa('OxNotify::Core::Error')
            ? ($err->code, $err->message, $err->{errors}) : (500, "internal error: $err", undef);
        $c->app->log->warn("$m->{method} $m->{path}: $code $msg") if $code >= 500;
        return $c->render(status => $code, json => { message => $msg, ($errors ? (errors => $errors) : ()), data => undef });
    }
    return $c->render(json => { data => $data });
}

1;

=head1 NAME

OxNotify::Server - standalone HTTP API and web page for oxnotify

=head1 SYNOPSIS

    oxnotify-server                                  # http://127.0.0.1:8765
    oxnotify-server daemon -l http://127.0.0.1:9000

=head1 DESCRIPTION

Mounts every method of L<OxNotify::API2::Notifications> under C</api2/json/...>, validates
parameters against their schema (JSON body, form or query), enforces the declared permissions
for the caller's role (bearer token, see L<OxNotify::Server::Tokens>), and answers
C<{ data =E<gt> ... }> or C<{ message, errors? }> with the error's HTTP status. Also serves a
small page (C</>) to manage targets and run the OAuth2 Authorize flow, and C</oauth2/callback>,
the redirect target of that flow.

=cut

__DATA__

@@ index.html
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>oxnotify</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js" defer></script>
</head>
<body>
<h1>oxnotify notification targets</h1>
<section id="login">
  <label>API token <input id="token" type="password" autocomplete="off" size="50"></label>
  <button id="save-token">Use token</button>
  <span class="hint">(printed by oxnotify-server on first start; stored in priv/api-token.admin)</span>
</section>
<div id="message" role="status"></div>
<section>
  <h2>Targets</h2>
  <table id="targets"><thead><tr><th>Name</th><th>Server</th><th>Auth</th><th>From</th><th>OAuth2 status</th><th></th></tr></thead><tbody></tbody></table>
  <button id="reload">Reload</button>
</section>
<section>
  <h2 id="form-title">New SMTP target</h2>
  <form id="target-form">
    <input type="hidden" name="digest">
    <label>Name <input name="name" required pattern="[A-Za-z][A-Za-z0-9._\-]{0,63}"></label>
    <label>Server <input name="server" required></label>
    <label>Port <input name="port" type="number" min="1" max="65535"></label>
    <label>Mode <select name="mode"><option>tls</option><option>starttls</option><option>insecure</option></select></label>
    <label>Auth method <select name="auth-method"><option>microsoft-oauth2</option><option>google-oauth2</option><option>oauth2</option><option>plain</option><option>none</option></select></label>
    <label>From address <input name="from-address" required></label>
    <label>Author <input name="author"></label>
    <label>Mail to (comma-separated) <input name="mailto" required></label>
    <label>Username <input name="username"></label>
    <label>Password <input name="password" type="password" autocomplete="new-password" placeholder="unchanged if empty"></label>
    <label>OAuth2 client ID <input name="oauth2-client-id"></label>
    <label>OAuth2 client secret <input name="oauth2-client-secret" type="password" autocomplete="new-password" placeholder="unchanged if empty"></label>
    <label>OAuth2 tenant ID (Microsoft) <input name="oauth2-tenant-id"></label>
    <label>OAuth2 authorize URL (override) <input name="oauth2-authorize-url"></label>
    <label>OAuth2 token URL (override) <input name="oauth2-token-url"></label>
    <label>OAuth2 scope (override) <input name="oauth2-scope"></label>
    <label>Comment <input name="comment"></label>
    <button type="submit" id="save-target">Save</button>
    <button type="button" id="new-target">New</button>
  </form>
</section>
</body>
</html>

@@ callback.html
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>oxnotify authorization</title><script src="/callback.js" defer></script></head>
<body><p id="text">Finishing the authorization...</p></body>
</html>

@@ callback.js
'use strict';
// Hand the provider's answer to the page that opened this popup, and only to our own origin.
(function () {
  const q = new URLSearchParams(window.location.search);
  const msg = { type: 'oxnotify-oauth2', code: q.get('code'), state: q.get('state'),
                error: q.get('error'), error_description: q.get('error_description') };
  const text = document.getElementById('text');
  if (!window.opener) {
    text.textContent = 'This page must be opened by the oxnotify page\'s Authorize button. Close it and try again.';
    return;
  }
  window.opener.postMessage(msg, window.location.origin);
  text.textContent = 'Done. You can close this window.';
  window.close();
})();

@@ style.css
body { font-family: sans-serif; margin: 2em; max-width: 70em; }
label { display: block; margin: .3em 0; }
label input, label select { margin-left: .5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
#message { margin: 1em 0; padding: .5em; min-height: 1.2em; }
#message.error { background: #fdd; }
#message.ok { background: #dfd; }
.hint { color: #666; font-size: .9em; }

@@ app.js
'use strict';
// The oxnotify page: list/create/edit targets, Authorize (popup + backend code exchange), Send test.
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
    const status = cell(tr, '');
    const actions = cell(tr, '');
    button(actions, 'Edit', 'edit-' + t.name, () => edit(t));
    if (t['auth-method'] && t['auth-method'].endsWith('oauth2')) {
      button(actions, 'Authorize', 'authorize-' + t.name, () => authorize(t.name));
      api('GET', 'targets/' + encodeURIComponent(t.name) + '/oauth2-status').then((s) => {
        const when = (t) => new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
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
    if (el.name === 'port') p.port = Number(el.value);
    else if (el.name === 'mailto') p.mailto = el.value.split(/[,\s]+/).filter((s) => s);
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
    show('Log in at the provider in the popup window and grant access...', true);
  } catch (e) {
    popup.close();
    show('Could not start the authorization: ' + e.message);
  }
}

window.addEventListener('message', async (ev) => {
  if (ev.origin !== window.location.origin || !ev.data || ev.data.type !== 'oxnotify-oauth2') return;
  const d = ev.data;
  if (d.error) {
    show('The provider refused the authorization: ' + d.error + (d.error_description ? ' (' + d.error_description + ')' : ''));
    pending = null;
    return;
  }
  if (!pending || d.state !== pending.state) {
    show('State mismatch: this answer does not belong to the authorization started here. Click Authorize again.');
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
