package OxNotify::CLI;

use strict;
use warnings;

use Cpanel::JSON::XS ();
use IO::Select ();
use IO::Socket::IP ();
use List::Util ();
use POSIX ();
use URI ();

use OxNotify::API2::Notifications;
use OxNotify::API2::Schema;
use OxNotify::Core;
use OxNotify::Daily;

our $VERSION = '0.1.0';

my $JSON = Cpanel::JSON::XS->new->utf8->canonical->pretty;

my %HELP = (
    'target list' => "oxnotify target list\n  List the SMTP targets.",
    'target show' => "oxnotify target show NAME\n  Show a target's configuration (never secrets).",
    'target create' => "oxnotify target create NAME --server HOST --from-address ADDR --mailto ADDR [--KEY VALUE ...]\n"
        . "  Create an SMTP target. Keys as in the config: --mode, --port, --auth-method, --username,\n"
        . "  --author, --oauth2-client-id, --oauth2-tenant-id, ... Repeat --mailto (or separate\n"
        . "  addresses by commas).\n"
        . "  Secrets (--password, --oauth2-client-secret, --oauth2-refresh-token): --KEY-file FILE reads\n"
        . "  the first line of FILE (\"-\": stdin); --KEY without a value asks on the terminal. A value on\n"
        . "  the command line works but is visible to every user in ps.\n"
        . "  --oauth2-private-key-file FILE reads a whole PEM key or a Google service account's JSON key\n"
        . "  file (which also sets --oauth2-service-account, --oauth2-key-id, --oauth2-client-id).\n"
        . "  OAuth2 modes: --oauth2-flow authorization-code|client-credentials|service-account|password|\n"
        . "  device-code, --oauth2-client-auth client-secret-post|client-secret-basic|private-key-jwt.",
    'target update' => "oxnotify target update NAME [--KEY VALUE ...] [--delete KEY ...] [--digest DIGEST]\n"
        . "  Change keys (secrets as for create: --KEY-file FILE, \"-\" for stdin, or asked); empty\n"
        . "  secrets keep the stored ones.",
    'target delete' => "oxnotify target delete NAME\n  Remove a target with its secrets and OAuth2 state.",
    authorize => "oxnotify authorize NAME [--port PORT] [--timeout SECONDS]\n"
        . "  Authorize an OAuth2 target: listens on http://127.0.0.1:PORT/callback (a free port unless\n"
        . "  given), prints the provider URL to open in a browser, waits for the redirect, exchanges\n"
        . "  the code and stores the authorization. Register that redirect URI with the provider\n"
        . "  (Microsoft and Google ignore the port for loopback addresses).\n"
        . "  A target with oauth2-flow device-code instead prints a URL and a code to enter on any\n"
        . "  device, and waits (polling at the provider's interval) until it is approved. Targets whose\n"
        . "  tokens are minted (client-credentials, service-account, password) need no authorization.",
    send => "oxnotify send NAME... --title TITLE [--body TEXT] [--severity info|notice|warning|error]\n"
        . "  Send a notification; exit 1 if a target failed for good, 75 (EX_TEMPFAIL) if nothing failed\n"
        . "  for good but a notification was queued (the outbox delivers it later) or failed temporarily.",
    'outbox list' => "oxnotify outbox list [TARGET]\n  Messages waiting in the outbox, oldest first.",
    'outbox flush' => "oxnotify outbox flush [TARGET]\n"
        . "  Deliver what waits now (one SMTP session per target; the timer does this every minute).\n"
        . "  Messages older than the maximum age (OXNOTIFY_OUTBOX_MAX_AGE, default 2 days) are given up.",
    'outbox drop' => "oxnotify outbox drop ID\n  Remove a waiting message without sending it.",
    status => "oxnotify status [NAME]\n  OAuth2 health of one or all OAuth2 targets, and the outbox of each (queue depth,\n"
        . "  oldest age, messages given up); other targets are listed when their outbox needs attention.",
    refresh => "oxnotify refresh\n  Refresh all OAuth2 targets now (what the daily job does).",
    token => "oxnotify token NAME [--format bearer|xoauth2|xoauth2-b64]\n"
        . "  Print target NAME's access token (cached, or refreshed as a send would) for msmtp's\n"
        . "  passwordeval and scripts; root only. Served by oxnotify-token without loading Perl modules.",
);

sub usage {
    return "usage: oxnotify [--output-format text|json] COMMAND ...\n\ncommands:\n"
        . join('', map { "  " . (split(/\n/, $HELP{$_}))[0] . "\n" } sort keys %HELP)
        . "\n`oxnotify help COMMAND` or `oxnotify COMMAND --help` for details.\n";
}

sub _die { die OxNotify::Core::Error->new($_[0], $_[1] // 400) }

# Secrets never need to be process arguments (visible to every user in ps): each also takes
# --KEY-file FILE ("-" for stdin) or, without a value on a terminal, a prompt without echo.
our %SECRET = map { $_ => 1 } qw(password oauth2-client-secret oauth2-refresh-token oauth2-private-key);
# secrets that are whole files (a PEM key, a JSON key file), not one line
our %WHOLE_FILE = map { $_ => 1 } qw(oauth2-private-key);

sub _read_secret_file {
    my ($k, $file, $stdin_used) = @_;
    my $fh;
    if ($file eq '-') {
        _die("only one secret can come from stdin (--$k-file -)") if $$stdin_used++;
        $fh = \*STDIN;
    } else {
        open($fh, '<', $file) or _die("--$k-file: cannot read '$file': $!");
    }
    my $v = $WHOLE_FILE{$k} ? do { local $/; <$fh> } : <$fh>;
    close($fh) if $file ne '-';
    _die("--$k-file: '$file' is empty; it must hold the secret on its first line") if !defined $v || $v eq '';
    return $v if $WHOLE_FILE{$k};
    $v =~ s/\r?\n\z//;
    _die("--$k-file: the first line of '$file' is empty") if $v eq '';
    return $v;
}

sub _prompt_secret {
    my ($k) = @_;
    _die("--$k is a file: give --$k-file FILE (\"-\" reads stdin)") if $WHOLE_FILE{$k};
    _die("--$k needs a value: give --$k-file FILE (\"-\" reads stdin), or run on a terminal to be asked")
        if !-t STDIN;
    my $term = POSIX::Termios->new;
    $term->getattr(fileno(STDIN));
    my $lflag = $term->getlflag;
    my $restore = sub { $term->setlflag($lflag); $term->setattr(fileno(STDIN), POSIX::TCSANOW()) };
    # Ctrl-C must not leave the terminal without echo
    local $SIG{INT} = sub { $restore->(); print STDERR "\n"; exit 130 };
    $term->setlflag($lflag & ~POSIX::ECHO());
    $term->setattr(fileno(STDIN), POSIX::TCSANOW());
    print STDERR "$k: ";    # after echo is off, so nothing typed from now on shows
    my $v = <STDIN>;
    $restore->();
    print STDERR "\n";
    $v //= '';
    $v =~ s/\r?\n\z//;
    _die("no value entered for --$k") if $v eq '';
    return $v;
}

# --key value / --key=value pairs for a method's parameters; list keys accumulate.
sub _options {
    my ($args, $method, %extra) = @_;
    my $props = $method ? $method->{parameters}{properties} : {};
    my %p;
    my $stdin_used = 0;
    while (@$args) {
        my $a = shift @$args;
        _die("unexpected argument '$a'") if $a !~ /^--([a-z0-9-]+)(?:=(.*))?$/s;
        my ($k, $v) = ($1, $2);
        if ($k =~ /^(.+)-file$/ && $SECRET{$1} && $props->{$1}) {
            my $file = $v // shift(@$args) // _die("option --$k needs a file name (\"-\" for stdin)");
            $p{$1} = _read_secret_file($1, $file, \$stdin_used);
            next;
        }
        my $schema = $props->{$k} // $extra{$k};
        _die("unknown option --$k (see --help)") if !$schema;
        if ($SECRET{$k} && !defined $v) {
            if (!@$args || $args->[0] =~ /^--/) {
                $p{$k} = _prompt_secret($k);
                next;
            }
            print STDERR "oxnotify: warning: --$k on the command line is visible to every user (ps);"
                . " use --$k-file FILE, \"-\" for stdin, or leave the value out to be asked\n";
        }
        $v //= shift(@$args) // _die("option --$k needs a value");
        if (($schema->{type} // '') eq 'array') { push @{ $p{$k} }, $v } else { $p{$k} = $v }
    }
    return \%p;
}

sub _call {
    my ($name, $param) = @_;
    return OxNotify::API2::Schema::call(OxNotify::API2::Notifications::method($name), $param, undef);
}

sub _when { defined $_[0] ? POSIX::strftime('%Y-%m-%d %H:%M:%S UTC', gmtime($_[0])) : 'never' }

sub _print_status {
    my ($s) = @_;
    if ($s->{no_oauth2}) {
        print "$s->{target} ($s->{auth_method}):\n";
    } else {
        print "$s->{target} ($s->{auth_method}): ", ($s->{authorized} ? 'authorized' : 'NOT authorized'), "\n";
        print "  authorized at:       ", _when($s->{authorized_at}), "\n";
        print "  last refresh:        ", _when($s->{last_refresh}), "\n";
        print "  refresh token age:   ", ($s->{refresh_token_age_days} // '-'), " day(s), $s->{rotations} rotation(s)\n";
        print "  estimated expiry:    ", _when($s->{estimated_expiry}), "\n" if $s->{estimated_expiry};
        print "  last error:          $s->{last_error}{message} (", _when($s->{last_error}{time}), ")\n" if $s->{last_error};
    }
    my $o = $s->{outbox};
    print "  outbox:              $o->{queued} queued",
        (defined $o->{oldest_age_secs} ? ", oldest " . _age($o->{oldest_age_secs}) : ''),
        ($o->{given_up}{count} ? ", $o->{given_up}{count} given up" : ''), "\n" if $o;
    print "  WARNING:             $s->{warning}\n" if $s->{warning};
}

# The status of a target without OAuth2: its outbox (and the outbox's warning).
sub _outbox_only {
    my ($name, $method) = @_;
    my $o = OxNotify::Core::outbox_status({ name => $name });
    return { target => $name, auth_method => $method, no_oauth2 => 1, outbox => $o,
        ($o->{warning} ? (warning => $o->{warning}) : ()) };
}

sub _age {
    my ($s) = @_;
    return $s < 120 ? "$s s" : $s < 7200 ? int($s / 60) . " min" : $s < 172800 ? int($s / 3600) . " h" : int($s / 86400) . " d";
}

sub _outbox {
    my ($what, @args) = @_;
    if ($what eq 'list') {
        my $list = OxNotify::Core::outbox_list({ (@args ? (target => $args[0]) : ()) });
        return ($list, sub {
            print "outbox is empty\n" if !@$list;
            printf "%-34s %-14s %-7s %-8s %s\n  last error: %s\n", $_->{id}, $_->{target}, _age($_->{age_secs}),
                "$_->{attempts}x", $_->{title}, $_->{last_error} for @$list;
        }, 0);
    } elsif ($what eq 'flush') {
        my $reports = OxNotify::Core::outbox_flush({ (@args ? (target => $args[0]) : ()) });
        my $lines = OxNotify::Daily::flush_lines($reports);
        my $bad = grep { @{ $_->{failed} // [] } || @{ $_->{expired} // [] } } @$reports;
        my $left = grep { $_->{remaining} } @$reports;
        return ($reports, sub { print "$_->[1]\n" for @$lines; print "nothing queued\n" if !@$lines },
            $bad ? 1 : $left ? 75 : 0);
    }
    my $id = shift(@args) // _die('missing outbox id (see `oxnotify outbox list`)');
    my $e = OxNotify::Core::outbox_drop({ id => $id });
    return ($e, sub { print "dropped $e->{id} ('$e->{title}') of target '$e->{target}'\n" }, 0);
}

our $CONN_TIMEOUT = 10;    # seconds one loopback client may take to send its request line

# The request line of one HTTP request (headers are read up to 8 KiB and ignored), or undef
# if the client sends nothing usable before $until.
sub _request_line {
    my ($c, $until) = @_;
    my $sel = IO::Select->new($c);
    my $buf = '';
    while ($buf !~ /\r?\n\r?\n/ && length($buf) < 8192) {
        my $left = $until - time;
        return undef if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($c, $buf, 8192 - length($buf), length($buf));
        last if !$n;
    }
    return $buf =~ /\A([^\r\n]*)\r?\n/ ? $1 : undef;
}

sub _reply {
    my ($c, $status, $text) = @_;
    my $body = "<!DOCTYPE html><title>oxnotify</title><p>" . ($text =~ s/[<>&]/ /gr) . "</p>\n";
    print {$c} "HTTP/1.0 $status\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: "
        . length($body) . "\r\nConnection: close\r\n\r\n$body";
    close($c);
}

# RFC 8628: show the URL and code, then wait (the library polls at the provider's interval)
sub _authorize_device {
    my ($name) = @_;
    my $start = _call('smtp_oauth2_device', { name => $name });
    local $| = 1;
    print "On any device, open $start->{verification_uri}\nand enter the code: $start->{user_code}\n";
    print "(or open $start->{verification_uri_complete})\n" if $start->{verification_uri_complete};
    print STDERR "Waiting up to $start->{expires_in} seconds for the sign-in ...\n";
    # each call waits a few seconds; an error (declined, expired) ends the loop
    while (1) {
        my $r = _call('smtp_oauth2_device', { name => $name, handle => $start->{handle} });
        return { target => $name, authorized => 1 } if $r->{authorized};
    }
}

sub _authorize {
    my ($name, $opts, $out) = @_;
    my $target = _call('get_smtp_endpoint', { name => $name });
    return _authorize_device($name) if ($target->{'oauth2-flow'} // '') eq 'device-code';
    my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $opts->{port} // 0, Listen => 5, ReuseAddr => 1)
        or _die("cannot listen on 127.0.0.1:" . ($opts->{port} // 0) . ": $@", 500);
    my $redirect = 'http://127.0.0.1:' . $srv->sockport . '/callback';
    my $begin = _call('smtp_oauth2_authorize_url', { name => $name, 'redirect-uri' => $redirect });
    local $| = 1;
    print STDERR "Waiting for the provider to redirect to $redirect ...\n";
    print "Open this URL in a browser and grant access:\n$begin->{url}\n";
    my $deadline = time + ($opts->{timeout} // 300);
    my $sel = IO::Select->new($srv);
    while (time < $deadline) {
        next if !$sel->can_read($deadline - time);
        my $c = $srv->accept or next;
        $c->autoflush(1);
        # one client gets a few seconds for its request line, never the whole --timeout
        my $line = _request_line($c, List::Util::min($deadline, time + $CONN_TIMEOUT));
        if (!defined $line) { close($c); next }
        my ($path) = $line =~ m{^GET (\S+) HTTP/};
        my $uri = URI->new($path // '/');
        if (($uri->path // '') ne '/callback') {
            _reply($c, '404 Not Found', 'Not found');
            next;
        }
        my %q = $uri->query_form;
        # the state first: whatever does not carry ours (another local user, a web page) is
        # answered and ignored, it can neither abort nor complete this authorization
        if (!defined $q{state} || $q{state} ne $begin->{state}) {
            _reply($c, '400 Bad Request', 'Failed: state mismatch: this redirect does not belong to this authorization. '
                . 'Still waiting for the right one.');
            next;
        }
        my ($ok, $msg);
        if ($q{error}) {
            $msg = "the provider refused: $q{error}" . ($q{error_description} ? " ($q{error_description})" : '');
        } else {
            $ok = eval { _call('smtp_oauth2_token', { state => $q{state}, 'authorization-code' => $q{code} // '', target => $name }); 1 };
            $msg = $ok ? "target '$name' is authorized" : "$@";
        }
        _reply($c, '200 OK', ($ok ? 'Done: ' : 'Failed: ') . $msg . '. You can close this tab.');
        _die($msg) if !$ok;
        return { target => $name, authorized => 1 };
    }
    _die("no redirect arrived within " . ($opts->{timeout} // 300) . " seconds; run `oxnotify authorize $name` again", 408);
}

# sysexits.h: a temporary failure, worth retrying later
my $EX_TEMPFAIL = 75;

# Run a command line; returns the exit code.
sub run {
    my (@args) = @_;
    my $format = 'text';
    if (@args && $args[0] =~ /^--output-format(?:=(.*))?$/) {
        shift @args;
        $format = $1 // shift(@args) // '';
    }
    if (!@args || $args[0] =~ /^(?:--help|-h)$/) { print usage(); return 0 }
    if ($format ne 'text' && $format ne 'json') { print STDERR "--output-format must be text or json\n"; return 2 }
    my $cmd = shift @args;
    if ($cmd eq 'help') {
        my $which = join(' ', @args);
        print(($HELP{$which} // usage()) . "\n");
        return 0;
    }
    $cmd .= ' ' . shift(@args) if ($cmd eq 'target' || $cmd eq 'outbox') && @args;
    if (!$HELP{$cmd}) { print STDERR "unknown command '$cmd'\n" . usage(); return 2 }
    if (grep { $_ eq '--help' || $_ eq '-h' } @args) { print "$HELP{$cmd}\n"; return 0 }

    # bin/oxnotify hands `token` to oxnotify-token before loading this module
    if ($cmd eq 'token') { print STDERR "oxnotify: run `oxnotify token` through bin/oxnotify\n"; return 2 }

    my ($result, $text, $exit) = (undef, undef, 0);
    my $ok = eval {
        if ($cmd eq 'target list') {
            $result = _call('get_smtp_endpoints', {});
            $text = sub { printf "%-20s %-28s %-17s %s\n", qw(NAME SERVER AUTH FROM);
                printf "%-20s %-28s %-17s %s\n", $_->{name}, $_->{error} ? "INVALID: $_->{error}" : "$_->{server}",
                    $_->{'auth-method'} // '', $_->{'from-address'} // '' for @$result };
        } elsif ($cmd eq 'target show') {
            my $name = shift(@args) // _die('missing target name');
            $result = _call('get_smtp_endpoint', { name => $name });
            $text = sub { for my $k (sort keys %$result) { my $v = $result->{$k};
                printf "%-22s %s\n", $k, ref($v) eq 'ARRAY' ? join(', ', @$v) : (ref($v) ? ($v ? 1 : 0) : $v) } };
        } elsif ($cmd eq 'target create') {
            my $name = shift(@args) // _die('missing target name');
            my $m = OxNotify::API2::Notifications::method('create_smtp_endpoint');
            _call('create_smtp_endpoint', { %{ _options(\@args, $m) }, name => $name });
            $text = sub { print "created target '$name'\n" };
        } elsif ($cmd eq 'target update') {
            my $name = shift(@args) // _die('missing target name');
            my $m = OxNotify::API2::Notifications::method('update_smtp_endpoint');
            _call('update_smtp_endpoint', { %{ _options(\@args, $m) }, name => $name });
            $text = sub { print "updated target '$name'\n" };
        } elsif ($cmd eq 'target delete') {
            my $name = shift(@args) // _die('missing target name');
            _call('delete_smtp_endpoint', { name => $name });
            $text = sub { print "deleted target '$name'\n" };
        } elsif ($cmd eq 'authorize') {
            my $name = shift(@args) // _die('missing target name');
            my $o = _options(\@args, undef, port => { type => 'integer' }, timeout => { type => 'integer' });
            $result = _authorize($name, $o);
            $text = sub { print "target '$name' is authorized\n" };
        } elsif ($cmd eq 'send') {
            my @targets;
            push @targets, shift(@args) while @args && $args[0] !~ /^--/;
            _die('name at least one target') if !@targets;
            my $o = _options(\@args, undef, map { $_ => { type => 'string' } } qw(title body severity));
            _die('--title is required') if !defined $o->{title};
            $result = OxNotify::Core::send({ targets => \@targets, %$o });
            my @failed = grep { !$_->{ok} } @$result;
            # nothing failed for good, but something waits (queued) or may work later:
            # EX_TEMPFAIL, so a caller (cron, an MTA) knows
            $exit = (grep { !$_->{transient} } @failed) ? 1
                : (@failed || grep { $_->{queued} } @$result) ? $EX_TEMPFAIL : 0;
            $text = sub { print !$_->{ok} ? "$_->{target}: FAILED ($_->{code}, $_->{kind}): $_->{message}\n"
                : $_->{queued} ? "$_->{target}: QUEUED as $_->{id} (will be retried): $_->{message}\n"
                : "$_->{target}: sent\n" for @$result };
        } elsif ($cmd =~ /^outbox (list|flush|drop)$/) {
            ($result, $text, $exit) = _outbox($1, @args);
        } elsif ($cmd eq 'status') {
            my $all = _call('get_smtp_endpoints', {});
            my %method = map { ($_->{name} => $_->{'auth-method'} // '') } @$all;
            # OAuth2 targets, and any other target whose outbox holds or lost something
            my @names = @args ? @args : map { $_->{name} } grep { !$_->{error} } @$all;
            $result = [ grep { $_->{auth_method} =~ /oauth2$/ || @args || $_->{warning} }
                map { ($method{$_} // 'oauth2') =~ /oauth2$/ ? _call('oauth2_status', { name => $_ })
                : _outbox_only($_, $method{$_}) } @names ];
            $exit = (grep { $_->{warning} } @$result) ? 1 : 0;
            $text = sub { print "no OAuth2 targets\n" if !@$result; _print_status($_) for @$result };
        } elsif ($cmd eq 'refresh') {
            my $res = OxNotify::Core::refresh_targets({});
            $result = $res->{reports};
            my @bad = grep { $_->{outcome} =~ /failed|needs|transient/ } @$result;
            $exit = !@bad ? 0 : (grep { $_->{outcome} ne 'transient' } @bad) ? 1 : $EX_TEMPFAIL;
            $text = sub { print "$_->{target}: $_->{outcome}" . ($_->{error} ? " - $_->{error}" : '') . "\n" for @$result };
        }
        1;
    };
    if (!$ok) {
        my $err = $@;
        my $core = ref($err) && $err->isa('OxNotify::Core::Error');
        my $code = $core ? $err->code : 500;
        my $kind = $core ? $err->kind : undef;
        if ($format eq 'json') {
            print $JSON->encode({ error => { message => "$err", code => $code, (defined $kind ? (kind => $kind) : ()) } });
        } else {
            print STDERR "oxnotify: $err" . ("$err" =~ /\n$/ ? '' : "\n");
        }
        return $EX_TEMPFAIL if ($kind // '') eq 'transient';
        return $code == 404 ? 4 : ($code >= 500 ? 3 : 2);
    }
    if ($format eq 'json') {
        print $JSON->encode($result // { ok => Cpanel::JSON::XS::true() });
    } else {
        $text->();
    }
    return $exit;
}

1;

__END__

=head1 NAME

OxNotify::CLI - the oxnotify command line

=head1 SYNOPSIS

    oxnotify target list
    oxnotify target create m365 --server smtp.office365.com --mode starttls \
        --auth-method microsoft-oauth2 --from-address alerts@example.com --mailto ops@example.com \
        --oauth2-client-id ID --oauth2-tenant-id contoso.onmicrosoft.com \
        --oauth2-client-secret-file /root/m365.secret
    oxnotify authorize m365
    oxnotify send m365 --title "Backup failed" --body "job 42"
    oxnotify --output-format json status

=head1 DESCRIPTION

Runs the same method descriptors as the API server (L<OxNotify::API2::Notifications>), with the
same parameter validation, as the local (root) user. C<--output-format json> prints the
method's result (or C<{ error: { message, code } }>) for scripts.

Secrets (C<--password>, C<--oauth2-client-secret>, C<--oauth2-refresh-token>) need not be
process arguments, which every local user can read with ps: C<--KEY-file FILE> reads the first
line of FILE (C<-> reads stdin, once per command), and C<--KEY> without a value asks on the
terminal without echo. A value on the command line still works, with a warning.

Exit codes: 0 ok; 1 a send failed for good or a target needs attention (status, refresh), or
a flush gave a message up; 2 bad usage or invalid parameters; 3 server/network side failure;
4 not found; 75 (EX_TEMPFAIL) nothing failed for good, but a notification was queued in the
outbox or failed only temporarily (send), is still queued (outbox flush), a refresh failed
only temporarily, or the command failed for a temporary reason: it may work later.

=head1 FUNCTIONS

=over

=item run(@ARGV) - run a command line, return the exit code

=item usage() - the usage text

=back

=cut
