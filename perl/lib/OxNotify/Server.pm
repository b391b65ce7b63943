package OxNotify::Server;

use Mojo::Base 'Mojolicious', -signatures;

use Getopt::Long ();
use Mojo::File ();
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
our $WWW_INSTALLED = '/usr/share/oxnotify/www';    # where debian/rules installs the page

# Where the page's files are: $OXNOTIFY_WWW, else this checkout's perl/share/www, else the
# installed copy.
sub www_dir {
    return $ENV{OXNOTIFY_WWW} if $ENV{OXNOTIFY_WWW};
    my $checkout = Mojo::File::curfile()->dirname->dirname->dirname->child('share', 'www');
    return -f $checkout->child('index.html') ? "$checkout" : $WWW_INSTALLED;
}

our $GUIDES_INSTALLED = '/usr/share/oxnotify/guides';

# Where the provider guides (Markdown, the page's help) are: $OXNOTIFY_GUIDES, else this
# checkout's docs/guides, else the installed copy.
sub guides_dir {
    return $ENV{OXNOTIFY_GUIDES} if $ENV{OXNOTIFY_GUIDES};
    my $checkout = Mojo::File::curfile()->dirname->dirname->dirname->dirname->child('docs', 'guides');
    return -d $checkout ? "$checkout" : $GUIDES_INSTALLED;
}

# The directory the page is served from (www_dir() unless given to new()).
has www => sub { www_dir() };

# The directory the guides are served from (guides_dir() unless given to new()).
has guides => sub { guides_dir() };

# Production, whatever MOJO_MODE says: development pages list the routes and echo the
# request, Authorization header included.
has mode => 'production';

sub startup ($self) {
    $self->secrets([OxNotify::Server::Tokens::random_token()]);
    $self->max_request_size($MAX_BODY);
    $self->static->paths([$self->www]);
    $self->static->classes([]);
    $self->hook(before_dispatch => \&_limit_per_client);
    $self->hook(after_dispatch => sub ($c) {
        my $h = $c->res->headers;
        # pages: our own scripts only; nothing may frame us
        $h->header('Content-Security-Policy' =>
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'");
        $h->header('X-Content-Type-Options' => 'nosniff');
        $h->header('Referrer-Policy' => 'no-referrer');
        $h->header('Cache-Control' => 'no-store');
    });

    my $r = $self->routes;
    $r->get('/' => sub ($c) { $c->reply->static('index.html') });
    # the provider redirects here; the page hands code+state to the opener (same origin only)
    $r->get('/oauth2/callback' => sub ($c) { $c->reply->static('callback.html') });
    # what the form is built from: the core's key table (which keys apply to which auth
    # method and flow) and the providers' registration values; no secret, no target
    $r->get('/form.json' => sub ($c) {
        $c->render(json => { keys => OxNotify::Core::config_keys(),
            providers => OxNotify::Core::providers() });
    });
    # the provider guides, as the Markdown text they are written in (the page shows it)
    $r->get('/guides/#file' => [file => qr/[a-z0-9-]+\.md/] => sub ($c) {
        my $file = Mojo::File->new($c->app->guides, $c->stash('file'));
        return $c->render(status => 404, text => 'Not found') if !-f $file;
        $c->res->headers->content_type('text/markdown; charset=utf-8');
        $c->render(data => $file->slurp);
    });

    for my $m (OxNotify::API2::Notifications::methods()) {
        # relaxed placeholders (#name): target names may contain '.', only '/' ends them
        (my $path = $m->{path}) =~ s/\{(\w+)\}/<#$1>/g;
        $r->any([$m->{method}] => "/api2/json/$path" => sub ($c) { _handle($c, $m) });
    }
    $r->any('/api2/*any' => sub ($c) { _error($c, 404, 'no such API path') });
    $r->any('/*any' => { any => '' } => sub ($c) {
        $c->render(status => 404, text => 'Not found');
    });
}

# One client may hold a few connections per worker; the rest are turned away with a 503
# instead of filling the worker (the inactivity timeout ends idle ones). Every local user
# comes from 127.0.0.1, so there a client is a local user (the uid that owns the peer's
# socket), not the address: one user's idle connections do not turn away the others.
sub _limit_per_client ($c) {
    my $id = $c->tx->connection // return;
    my $stream = Mojo::IOLoop->singleton->stream($id) // return;
    my $addr = _client($c->tx);
    my $app = $c->app;
    my $conns = $app->{oxn_conns}{$addr} //= {};
    return if $conns->{$id};
    if (keys(%$conns) >= $MAX_CONNS_PER_CLIENT) {
        $c->res->headers->connection('close');
        $c->res->headers->header('Retry-After' => 5);
        return _error($c, 503, "too many connections from $addr (at most $MAX_CONNS_PER_CLIENT); "
            . 'close idle ones and retry');
    }
    $conns->{$id} = 1;
    $stream->on(close => sub {
        delete $conns->{$id};
        delete $app->{oxn_conns}{$addr} if !%$conns;
    });
}

# The client of a connection: its address, and for a loopback peer also the local user that
# owns the peer's socket (from /proc/net/tcp, as identd finds it).
sub _client ($tx) {
    my $addr = $tx->remote_address // '';
    return $addr if $addr !~ /^(?:127\.|::1$|::ffff:127\.)/;
    my ($peer, $local) = map { _proc_net_addr($_->[0], $_->[1]) }
        [$addr, $tx->remote_port], [$tx->local_address, $tx->local_port];
    for my $table ('/proc/net/tcp', '/proc/net/tcp6') {
        open(my $fh, '<', $table) or next;
        while (my $line = <$fh>) {
            my @f = split ' ', $line;
            return "$addr uid $f[7]" if @f > 7 && $f[1] eq $peer && $f[2] eq $local;
        }
    }
    return $addr;
}

# An address and port as /proc/net/tcp(6) writes them (the address in host byte order).
sub _proc_net_addr ($ip, $port) {
    my $p = sprintf('%04X', $port // 0);
    if ($ip =~ /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/) {
        my $hex = sprintf('%02X%02X%02X%02X', $4, $3, $2, $1);
        # an IPv4-mapped peer of a dual-stack socket is listed in tcp6
        return $ip =~ /^::ffff:/ ? '0000000000000000FFFF0000' . $hex . ":$p" : "$hex:$p";
    }
    return '00000000000000000000000001000000' . ":$p" if $ip eq '::1';
    return "?:$p";
}

# An API error answer: the message, per-parameter errors if any, no data.
sub _error ($c, $status, $message, $errors = undef) {
    return $c->render(status => $status,
        json => { message => $message, ($errors ? (errors => $errors) : ()), data => undef });
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
        _bad_request('request body must be a JSON object of parameters, not '
            . (ref($body) eq 'ARRAY' ? 'an array' : 'a scalar')) if ref($body) ne 'HASH';
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
        return _error($c, 401, 'authentication required: send "Authorization: Bearer <API token>"');
    }
    my $data = eval { OxNotify::API2::Schema::call($m, _params($c, $m), $role) };
    if (my $err = $@) {
        my ($code, $msg, $errors) = ref($err) && $err->isa('OxNotify::Core::Error')
            ? ($err->code, $err->message, $err->{errors}) : (500, "internal error: $err", undef);
        $c->app->log->warn("$m->{method} $m->{path}: $code $msg") if $code >= 500;
        return _error($c, $code, $msg, $errors);
    }
    return $c->render(json => { data => $data });
}

# Whether a command line serves (daemon, prefork, or only options) rather than running one of
# Mojolicious' commands (help, version, routes, ...).
sub serves (@args) {
    return !@args || $args[0] =~ /^(?:daemon|prefork)$/
        || $args[0] =~ /^-(?:[lwci]|-listen|-workers|-clients|-inactivity-timeout|-www)\b/;
}

# The options of a serving command line, defaults applied, or undef if it is not valid.
sub serve_options (@args) {
    shift @args if @args && $args[0] =~ /^(?:daemon|prefork)$/;
    my %o = (listen => [], workers => 4, clients => 20, 'inactivity-timeout' => 15);
    $o{www} = www_dir();
    Getopt::Long::Configure('no_ignore_case', 'no_auto_abbrev');
    Getopt::Long::GetOptionsFromArray(\@args, \%o,
        'listen|l=s@', 'workers|w=i', 'clients|c=i', 'inactivity-timeout|i=i', 'www=s') && !@args
        or return undef;
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
        print STDERR "usage: oxnotify-server [daemon] [-l URL]... [-w WORKERS]"
            . " [-c CONNECTIONS-PER-WORKER] [-i SECONDS] [--www DIR]\n";
        return 2;
    };
    my %o = %$o;
    my @listen = @{ $o{listen} };
    # before any side effect: a server without its page is a broken installation
    if (!-f "$o{www}/index.html") {
        print STDERR "oxnotify-server: not starting: no web page in $o{www} (index.html missing);"
            . " give --www DIR or set OXNOTIFY_WWW\n";
        return 2;
    }
    my $ok = eval {
        my $new = OxNotify::Server::Tokens::ensure();
        # the journal keeps stdout: say where the token is, never the token
        for my $role (sort keys %$new) {
            my $file = OxNotify::Server::Tokens::token_file($role);
            print "oxnotify-server: created the $role API token in $file (read it there)\n";
        }
        OxNotify::Server::Tokens::check();
        1;
    };
    if (!$ok) { print STDERR "oxnotify-server: not starting: $@"; return 2 }
    my $server = Mojo::Server::Prefork->new(
        app => __PACKAGE__->new(www => $o{www}),
        listen => \@listen, workers => $o{workers}, max_clients => $o{clients},
        inactivity_timeout => $o{'inactivity-timeout'}, keep_alive_timeout => 5,
        # a worker blocked in one slow send must not be killed before the core's own deadlines
        heartbeat_timeout => 180,
        # Prefork always writes a PID file, by default $TMPDIR/prefork.pid: as root that
        # follows whatever symlink a local user put there. Ours goes to a directory only we
        # can write: systemd's RuntimeDirectory (/run/oxnotify), else a fresh private one.
        pid_file => _pid_file(), cleanup => 1);
    $server->run;
    return 0;
}

# Where the server's PID file goes: never a directory others may write to.
sub _pid_file {
    my $run = $ENV{RUNTIME_DIRECTORY};
    if (defined $run && $run =~ m{^(/[^:]+)} && -d $1 && !-l $1 && !((stat $1)[2] & 0o022)) {
        return "$1/server.pid";
    }
    require File::Temp;
    return File::Temp::tempdir('oxnotify-server.XXXXXXXX', TMPDIR => 1, CLEANUP => 1) . '/server.pid';
}

1;

__END__

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

The page is files (C<index.html>, C<app.js>, C<callback.html>, C<callback.js>,
C<style.css>), served from C<--www DIR>, else C<$OXNOTIFY_WWW>, else the source checkout's
F<perl/share/www>, else the installed F</usr/share/oxnotify/www> (see C<www_dir()>); the server
does not start without them. Embedded: C<< OxNotify::Server->new(www =E<gt> $dir) >>.

Always in production mode (error pages show neither routes nor the request). A request body
is a form or one JSON object (at most 64 KiB); anything else is a 400 (413 if too large).
C<main(@ARGV)> serves with L<Mojo::Server::Prefork> (C<-w> workers, default 4, so one slow
send or client holds one worker only; C<-c> connections per worker, default 20; C<-i>
inactivity timeout, default 15 s; at most 8 connections per client address and worker) on
C<-l URL> (default C<http://127.0.0.1:8765>), after creating missing token files and refusing
to start if one is readable by others or too short. Other commands (C<help>, C<version>,
C<routes>) go to L<Mojolicious::Commands> and touch no file.

C</form.json> is what the page builds its form from: the core's key table with each key's
applicability (C<OxNotify::Core::config_keys>) and the providers' registration values
(C<OxNotify::Core::providers>); it holds no secret and no target. C</guides/NAME.md> serves
the provider guides (Markdown, shown as the page's help) from C<$OXNOTIFY_GUIDES>, else the
checkout's F<docs/guides>, else the installed F</usr/share/oxnotify/guides> (C<guides_dir()>).

=head1 FUNCTIONS

=over

=item main(@args) - the command line of C<oxnotify-server>; returns the exit code

=item serves(@args) - whether the command line serves (rather than a Mojolicious command)

=item serve_options(@args) - the serving options with defaults, or undef if invalid

=item www_dir() - where the page's files are, as above

=item guides_dir() - where the provider guides are, as above

=back

=cut
