package OxNotify::Server;

use Mojo::Base 'Mojolicious', -signatures;

use Getopt::Long ();
use Mojo::IOLoop;
use Mojo::JSON ();
use Mojo::Server::Prefork;
use Mojolicious::Commands;

use OxNotify::API2::Notifications;
use OxNotify::API2::Schema;
use OxNotify::Core;
use OxNotify::Server::Tokens;

our $VERSION = '0.1.0';

our $DEFAULT_LISTEN = 'http://127.0.0.1:8765';
our $MAX_BODY = 64 * 1024;          # a target's parameters are a few hundred bytes
our $MAX_CONNS_PER_CLIENT = 8;      # open connections one address may hold in one worker

# Production, whatever MOJO_MODE says: development pages list the routes and echo the
# request, Authorization header included.
has mode => 'production';

sub startup ($self) {
    $self->secrets([OxNotify::Server::Tokens::random_token()]);
    $self->max_request_size($MAX_BODY);
    $self->renderer->classes([__PACKAGE__]);
    $self->static->classes([__PACKAGE__]);
    $self->hook(before_dispatch => \&_limit_per_client);
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
        # relaxed placeholders (#name): target names may contain '.', only '/' ends them
        (my $path = $m->{path}) =~ s/\{(\w+)\}/<#$1>/g;
        $r->any([$m->{method}] => "/api2/json/$path" => sub ($c) { _handle($c, $m) });
    }
    $r->any('/api2/*any' => sub ($c) {
        $c->render(status => 404, json => { message => 'no such API path', data => undef });
    });
    $r->any('/*any' => { any => '' } => sub ($c) { $c->render(status => 404, text => 'Not found') });
}

# One address may hold a few connections per worker; the rest are turned away with a 503
# instead of filling the worker (the inactivity timeout ends idle ones).
sub _limit_per_client ($c) {
    my $id = $c->tx->connection // return;
    my $stream = Mojo::IOLoop->singleton->stream($id) // return;
    my $addr = $c->tx->remote_address // '';
    my $app = $c->app;
    my $conns = $app->{oxn_conns}{$addr} //= {};
    return if $conns->{$id};
    if (keys(%$conns) >= $MAX_CONNS_PER_CLIENT) {
        $c->res->headers->connection('close');
        $c->res->headers->header('Retry-After' => 5);
        return $c->render(status => 503, json => {
            message => "too many connections from $addr (at most $MAX_CONNS_PER_CLIENT); close idle ones and retry",
            data => undef });
    }
    $conns->{$id} = 1;
    $stream->on(close => sub {
        delete $conns->{$id};
        delete $app->{oxn_conns}{$addr} if !%$conns;
    });
}

sub _bad_request ($msg) { die OxNotify::Core::Error->new($msg, 400) }

sub _params ($c, $m) {
    my %p;
    my $props = $m->{parameters}{properties} // {};
    my $req = $c->req;
    die OxNotify::Core::Error->new("request body too large (at most $MAX_BODY bytes)", 413)
        if ($req->error // {})->{message} && $req->is_limit_exceeded;
    my $type = $req->headers->content_type // '';
    my $has_body = $req->body_size > 0;
    if ($has_body && $type !~ m{^(?:application/x-www-form-urlencoded|multipart/form-data)}i) {
        # anything but a form is JSON, and must be one object: never silently ignored
        my $body = eval { Mojo::JSON::decode_json($req->body) };
        _bad_request('request body is not valid JSON: send a JSON object of parameters') if $@;
        _bad_request('request body must be a JSON object of parameters, not ' . (ref($body) eq 'ARRAY' ? 'an array' : 'a scalar'))
            if ref($body) ne 'HASH';
        %p = %$body;
    } else {
        for my $k (@{ $req->params->names }) {
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
    my $role = lc($scheme // '') eq 'bearer' ? OxNotify::Server::Tokens::role_of($token) : undef;
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

# Whether a command line serves (daemon, prefork, or only options) rather than running one of
# Mojolicious' commands (help, version, routes, ...).
sub serves (@args) {
    return !@args || $args[0] =~ /^(?:daemon|prefork)$/ || $args[0] =~ /^-(?:[lwci]|-listen|-workers|-clients|-inactivity-timeout)\b/;
}

# The options of a serving command line, defaults applied, or undef if it is not valid.
sub serve_options (@args) {
    shift @args if @args && $args[0] =~ /^(?:daemon|prefork)$/;
    my %o = (listen => [], workers => 4, clients => 20, 'inactivity-timeout' => 15);
    Getopt::Long::Configure('no_ignore_case', 'no_auto_abbrev');
    Getopt::Long::GetOptionsFromArray(\@args, \%o, 'listen|l=s@', 'workers|w=i', 'clients|c=i', 'inactivity-timeout|i=i')
        && !@args or return undef;
    $o{listen} = [$DEFAULT_LISTEN] if !@{ $o{listen} };
    return \%o;
}

# The command line of bin/oxnotify-server; returns the exit code. Only serving has side
# effects (token files); help, version, routes and the like do not.
sub main (@args) {
    if (!serves(@args)) {
        local @ARGV = @args;
        Mojolicious::Commands->start_app(__PACKAGE__);
        return 0;
    }
    my $o = serve_options(@args) // do {
        print STDERR "usage: oxnotify-server [daemon] [-l URL]... [-w WORKERS] [-c CONNECTIONS-PER-WORKER] [-i SECONDS]\n";
        return 2;
    };
    my %o = %$o;
    my @listen = @{ $o{listen} };
    my $ok = eval {
        my $new = OxNotify::Server::Tokens::ensure();
        # the journal keeps stdout: say where the token is, never the token
        print "oxnotify-server: created the $_ API token in " . OxNotify::Server::Tokens::token_file($_) . " (read it there)\n"
            for sort keys %$new;
        OxNotify::Server::Tokens::check();
        1;
    };
    if (!$ok) { print STDERR "oxnotify-server: not starting: $@"; return 2 }
    my $server = Mojo::Server::Prefork->new(
        app => __PACKAGE__->new, listen => \@listen, workers => $o{workers}, max_clients => $o{clients},
        inactivity_timeout => $o{'inactivity-timeout'}, keep_alive_timeout => 5,
        # a worker blocked in one slow send must not be killed before the core's own deadlines
        heartbeat_timeout => 180,
        # no PID file (systemd tracks us); cleanup 0: never remove someone else's /tmp/prefork.pid
        cleanup => 0);
    $server->run;
    return 0;
}

1;

=head1 NAME

OxNotify::Server - standalone HTTP API and web page for oxnotify

=head1 SYNOPSIS

    oxnotify-server                                  # http://127.0.0.1:8765, 4 workers
    oxnotify-server daemon -l http://127.0.0.1:9000 -w 8
    oxnotify-server routes                           # no side effects

=head1 DESCRIPTION

Mounts every method of L<OxNotify::API2::Notifications> under C</api2/json/...>, validates
parameters against their schema (JSON body, form or query), enforces the declared permissions
for the caller's role (bearer token, see L<OxNotify::Server::Tokens>), and answers
C<{ data =E<gt> ... }> or C<{ message, errors? }> with the error's HTTP status. Also serves a
small page (C</>) to manage targets and run the OAuth2 Authorize flow, and C</oauth2/callback>,
the redirect target of that flow.

Always in production mode (error pages show neither routes nor the request). A request body
is a form or one JSON object (at most 64 KiB); anything else is a 400 (413 if too large).
C<main(@ARGV)> serves with L<Mojo::Server::Prefork> (C<-w> workers, default 4, so one slow
send or client holds one worker only; C<-c> connections per worker, default 20; C<-i>
inactivity timeout, default 15 s; at most 8 connections per client address and worker) on
C<-l URL> (default C<http://127.0.0.1:8765>), after creating missing token files and refusing
to start if one is readable by others or too short. Other commands (C<help>, C<version>,
C<routes>) go to L<Mojolicious::Commands> and touch no file.

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
    <label>OAuth2 flow <select name="oauth2-flow"><option value="">authorization-code (default)</option><option>client-credentials</option><option>service-account</option><option>password</option><option>device-code</option></select></label>
    <label>OAuth2 client authentication <select name="oauth2-client-auth"><option value="">provider default</option><option>client-secret-post</option><option>client-secret-basic</option><option>private-key-jwt</option></select></label>
    <label>Service account e-mail <input name="oauth2-service-account"></label>
    <label>Key ID <input name="oauth2-key-id"></label>
    <label>Certificate thumbprint (hex, SHA-1 or SHA-256) <input name="oauth2-certificate-thumbprint"></label>
    <label>Device authorization URL (override) <input name="oauth2-device-authorize-url"></label>
    <label>Private key (PEM) or service-account JSON key file <textarea name="oauth2-private-key" rows="3" cols="50" autocomplete="off" placeholder="unchanged if empty"></textarea></label>
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
label input, label select, label textarea { margin-left: .5em; vertical-align: top; }
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
