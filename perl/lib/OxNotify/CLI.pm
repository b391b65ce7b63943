package OxNotify::CLI;

use strict;
use warnings;

use Cpanel::JSON::XS ();
use POSIX ();
use Scalar::Util ();

use OxNotify::API2::Notifications;
use OxNotify::API2::Schema;
use OxNotify::CLI::Loopback;
use OxNotify::CLI::Relay;
use OxNotify::Core;
use OxNotify::Daily;

our $VERSION = '0.2.0';

my $JSON = Cpanel::JSON::XS->new->utf8->canonical->pretty;

# sysexits.h: a temporary failure, worth retrying later
my $EX_TEMPFAIL = 75;

# The commands. Each runs one of:
#   method  an API method descriptor (OxNotify::API2::Notifications): parameters validated
#           against its schema, as the API server does
#   core    an OxNotify::Core function (send, refresh and the outbox have no descriptor)
#   run     a sub of its own, over descriptors (authorize, status)
# with its arguments read as
#   args     positional: [parameter, message if missing (undef: optional), 'list' for all]
#   options  'method': the method's parameters as --KEY VALUE; or { KEY => schema }
#   required options that must be given
# and its result
#   result  reshaped first (what JSON output prints, and what printer and exit see)
#   print   sub ($result, $params): the text output
#   batch   sub ($item): 'failed', 'later' or false for each item of the result (exit code:
#           see _batch_exit); without it the exit code is 0
#   help    the text of `oxnotify help COMMAND` (the first line goes into the usage)
my %COMMANDS = (
    OxNotify::CLI::Relay::commands(),
    'target list' => {
        method => 'get_smtp_endpoints',
        print => \&_print_targets,
        help => <<~'EOF',
            oxnotify target list
              List the SMTP targets.
            EOF
    },
    'target show' => {
        method => 'get_smtp_endpoint',
        args => [[name => 'missing target name']],
        print => \&_print_keys,
        help => <<~'EOF',
            oxnotify target show NAME
              Show a target's configuration (never secrets).
            EOF
    },
    'target create' => {
        method => 'create_smtp_endpoint',
        args => [[name => 'missing target name']],
        options => 'method',
        print => sub { print "created target '$_[1]{name}'\n" },
        help => <<~'EOF',
            oxnotify target create NAME --server HOST --from-address ADDR --mailto ADDR [--KEY VALUE ...]
              Create an SMTP target. Keys as in the config: --mode, --port, --auth-method,
              --username, --author, --oauth2-client-id, --oauth2-tenant-id, ... Repeat --mailto
              (or separate addresses by commas).
              Secrets (--password, --oauth2-client-secret, --oauth2-refresh-token): --KEY-file
              FILE reads the first line of FILE ("-": stdin); --KEY without a value asks on the
              terminal. A value on the command line works but is visible to every user in ps.
              --oauth2-private-key-file FILE reads a whole PEM key or a Google service account's
              JSON key file (which also sets --oauth2-service-account, --oauth2-key-id,
              --oauth2-client-id).
              OAuth2 modes: --oauth2-flow authorization-code|client-credentials|service-account|
              password|device-code, --oauth2-client-auth client-secret-post|client-secret-basic|
              private-key-jwt.
              --transport graph (microsoft-oauth2 only) sends through Microsoft Graph sendMail
              instead of SMTP, for tenants or mailboxes with SMTP AUTH disabled: --server
              graph.microsoft.com (or a national cloud's Graph host); the app needs Mail.Send.
            EOF
    },
    'target update' => {
        method => 'update_smtp_endpoint',
        args => [[name => 'missing target name']],
        options => 'method',
        print => sub { print "updated target '$_[1]{name}'\n" },
        help => <<~'EOF',
            oxnotify target update NAME [--KEY VALUE ...] [--delete KEY ...] [--digest DIGEST]
              Change keys (secrets as for create: --KEY-file FILE, "-" for stdin, or asked);
              empty secrets keep the stored ones.
            EOF
    },
    'target delete' => {
        method => 'delete_smtp_endpoint',
        args => [[name => 'missing target name']],
        print => sub { print "deleted target '$_[1]{name}'\n" },
        help => <<~'EOF',
            oxnotify target delete NAME
              Remove a target with its secrets and OAuth2 state.
            EOF
    },
    'target verify' => {
        method => 'verify_target',
        args => [[name => 'missing target name']],
        print => \&_print_verified,
        batch => sub { $_[0]{ok} ? '' : ($_[0]{kind} // '') eq 'transient' ? 'later' : 'failed' },
        help => <<~'EOF',
            oxnotify target verify NAME
              Check that the target can log in, sending nothing: an access token (cached or
              new), then connect, EHLO, TLS, AUTH and QUIT; each step with its time. With
              transport graph: the token, then a sendMail without recipients, which Graph
              refuses after checking the token, Mail.Send, the mailbox and From. Exit 1 if
              the login failed for good, 75 if it failed for a temporary reason. At most once
              per target every 10 seconds.
            EOF
    },
    authorize => {
        run => \&_authorize,
        args => [[name => 'missing target name']],
        options => { port => { type => 'integer' }, timeout => { type => 'integer' } },
        print => sub { print "target '$_[1]{name}' is authorized\n" },
        help => <<~'EOF',
            oxnotify authorize NAME [--port PORT] [--timeout SECONDS]
              Authorize an OAuth2 target: listens on http://127.0.0.1:PORT/callback (a free port
              unless given), prints the provider URL to open in a browser, waits for the
              redirect, exchanges the code and stores the authorization. Register that redirect
              URI with the provider (Microsoft and Google ignore the port for loopback addresses).
              A target with oauth2-flow device-code instead prints a URL and a code to enter on
              any device, and waits (polling at the provider's interval) until it is approved.
              Targets whose tokens are minted (client-credentials, service-account, password)
              need no authorization.
            EOF
    },
    send => {
        core => 'send',
        args => [[targets => 'name at least one target', 'list']],
        options => { map { $_ => { type => 'string' } } qw(title body severity) },
        required => ['title'],
        print => \&_print_sent,
        # nothing failed for good, but something waits (queued) or may work later: EX_TEMPFAIL,
        # so a caller (cron, an MTA) knows
        batch => sub {
            my ($r) = @_;
            return !$r->{ok} ? ($r->{transient} ? 'later' : 'failed') : $r->{queued} ? 'later' : '';
        },
        help => <<~'EOF',
            oxnotify send NAME... --title TITLE [--body TEXT] [--severity info|notice|warning|error]
              Send a notification; exit 1 if a target failed for good, 75 (EX_TEMPFAIL) if
              nothing failed for good but a notification was queued (the outbox delivers it
              later) or failed temporarily.
            EOF
    },
    'outbox list' => {
        core => 'outbox_list',
        args => [[target => undef]],
        print => \&_print_outbox,
        help => <<~'EOF',
            oxnotify outbox list [TARGET]
              Messages waiting in the outbox, oldest first.
            EOF
    },
    'outbox flush' => {
        core => 'outbox_flush',
        args => [[target => undef]],
        print => \&_print_flushed,
        # a message given up (refused for good, or too old); still queued
        batch => sub {
            my ($r) = @_;
            return 'failed' if @{ $r->{failed} // [] } || @{ $r->{expired} // [] };
            return $r->{remaining} ? 'later' : '';
        },
        help => <<~'EOF',
            oxnotify outbox flush [TARGET]
              Deliver what waits now (one SMTP session per target; the timer does this every
              minute). Messages older than the maximum age (OXNOTIFY_OUTBOX_MAX_AGE, default 2
              days) are given up.
            EOF
    },
    'outbox drop' => {
        core => 'outbox_drop',
        args => [[id => 'missing outbox id (see `oxnotify outbox list`)']],
        print => sub { print "dropped $_[0]{id} ('$_[0]{title}') of target '$_[0]{target}'\n" },
        help => <<~'EOF',
            oxnotify outbox drop ID
              Remove a waiting message without sending it.
            EOF
    },
    status => {
        run => \&_status,
        args => [[names => undef, 'list']],
        print => \&_print_statuses,
        batch => sub { $_[0]{warning} ? 'failed' : '' },    # needs attention
        help => <<~'EOF',
            oxnotify status [NAME]
              OAuth2 health of one or all OAuth2 targets, and the outbox of each (queue depth,
              oldest age, messages given up); other targets are listed when their outbox needs
              attention.
            EOF
    },
    refresh => {
        core => 'refresh_targets',
        result => sub { $_[0]{reports} },
        print => \&_print_refreshed,
        batch => sub {
            my ($r) = @_;
            return 'later' if $r->{outcome} eq 'transient';
            return $r->{outcome} =~ /failed|needs/ ? 'failed' : '';
        },
        help => <<~'EOF',
            oxnotify refresh
              Refresh all OAuth2 targets now (what the daily job does).
            EOF
    },
    # the oxnotify binary (crates/notify-cli) serves `token` itself; only its help is here
    token => {
        help => <<~'EOF',
            oxnotify token NAME [--format bearer|xoauth2|xoauth2-b64]
              Print target NAME's access token (cached, or refreshed as a send would) for msmtp's
              passwordeval and scripts; root only. Served by the oxnotify binary itself, without
              starting Perl.
            EOF
    },
);

sub usage {
    return "usage: oxnotify [--output-format text|json] COMMAND ...\n\ncommands:\n"
        . join('', map { "  " . (split(/\n/, $COMMANDS{$_}{help}))[0] . "\n" } sort keys %COMMANDS)
        . "\n`oxnotify help COMMAND` or `oxnotify COMMAND --help` for details.\n";
}

sub _die { die OxNotify::Core::Error->new($_[0], $_[1] // 400) }

# Secrets (OxNotify::API2::Notifications::secret_keys) never need to be process arguments
# (visible to every user in ps): each also takes --KEY-file FILE ("-" for stdin) or, without a
# value on a terminal, a prompt without echo. These secrets are whole files (a PEM key, a JSON
# key file), not one line:
my %WHOLE_FILE = map { $_ => 1 } qw(oauth2-private-key);

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
    _die("--$k-file: '$file' is empty; it must hold the secret on its first line")
        if !defined $v || $v eq '';
    return $v if $WHOLE_FILE{$k};
    $v =~ s/\r?\n\z//;
    _die("--$k-file: the first line of '$file' is empty") if $v eq '';
    return $v;
}

sub _prompt_secret {
    my ($k) = @_;
    _die("--$k is a file: give --$k-file FILE (\"-\" reads stdin)") if $WHOLE_FILE{$k};
    _die("--$k needs a value: give --$k-file FILE (\"-\" reads stdin), or run on a terminal to be "
        . 'asked') if !-t STDIN;
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

# --key value / --key=value pairs for the parameters $props (name => schema); list keys accumulate.
sub _options {
    my ($args, $props) = @_;
    my %secret = map { $_ => 1 } OxNotify::API2::Notifications::secret_keys();
    my %p;
    my $stdin_used = 0;
    while (@$args) {
        my $a = shift @$args;
        _die("unexpected argument '$a'") if $a !~ /^--([a-z0-9-]+)(?:=(.*))?$/s;
        my ($k, $v) = ($1, $2);
        if ($k =~ /^(.+)-file$/ && $secret{$1} && $props->{$1}) {
            my $file = $v // shift(@$args)
                // _die("option --$k needs a file name (\"-\" for stdin)");
            $p{$1} = _read_secret_file($1, $file, \$stdin_used);
            next;
        }
        my $schema = $props->{$k};
        _die("unknown option --$k (see --help)") if !$schema;
        if ($secret{$k} && !defined $v) {
            if (!@$args || $args->[0] =~ /^--/) {
                $p{$k} = _prompt_secret($k);
                next;
            }
            print STDERR "oxnotify: warning: --$k on the command line is visible to every user",
                " (ps); use --$k-file FILE, \"-\" for stdin, or leave the value out to be asked\n";
        }
        $v //= shift(@$args) // _die("option --$k needs a value");
        if (($schema->{type} // '') eq 'array') { push @{ $p{$k} }, $v } else { $p{$k} = $v }
    }
    return \%p;
}

# A command's parameters from its arguments: the positional ones, then --options.
sub _params {
    my ($cmd, $args) = @_;
    my %p;
    for my $spec (@{ $cmd->{args} // [] }) {
        my ($name, $missing, $list) = @$spec;
        my @v;
        push @v, shift(@$args) while @$args && $args->[0] !~ /^--/ && (!@v || $list);
        _die($missing) if !@v && defined $missing;
        $p{$name} = $list ? \@v : $v[0] if @v;
    }
    my $props = $cmd->{options} // {};
    $props = OxNotify::API2::Notifications::method($cmd->{method})->{parameters}{properties}
        if $props eq 'method';
    my $o = _options($args, $props);
    _die("--$_ is required") for grep { !defined $o->{$_} } @{ $cmd->{required} // [] };
    return { %$o, %p };
}

# Run a descriptor as the local (root) user: validated, no permission check.
sub _call {
    my ($name, $param) = @_;
    my $method = OxNotify::API2::Notifications::method($name);
    return OxNotify::API2::Schema::call($method, $param, undef);
}

# What the command does with its parameters; returns its result.
sub _execute {
    my ($cmd, $p) = @_;
    return $cmd->{run}->($p) if $cmd->{run};
    return _call($cmd->{method}, $p) if $cmd->{method};
    return OxNotify::Core->can($cmd->{core})->($p);
}

# The exit code of a batch (send, refresh, status, outbox flush): 1 if an item failed for good,
# else 75 (EX_TEMPFAIL) if one failed only for now or waits in the outbox, else 0.
sub _batch_exit {
    my ($judge, $items) = @_;
    my %seen = map { ($judge->($_) || 'ok') => 1 } ref($items) eq 'ARRAY' ? @$items : ($items);
    return $seen{failed} ? 1 : $seen{later} ? $EX_TEMPFAIL : 0;
}

# The exit code of a failed command: the error's, which the library gives with its kind (the
# map `oxnotify token` uses); 3 for anything that is not an OxNotify::Core::Error.
sub _error_exit {
    my ($err) = @_;
    return Scalar::Util::blessed($err) && $err->isa('OxNotify::Core::Error') ? $err->exit_code : 3;
}

sub _when { defined $_[0] ? POSIX::strftime('%Y-%m-%d %H:%M:%S UTC', gmtime($_[0])) : 'never' }

sub _age {
    my ($s) = @_;
    return $s < 120 ? "$s s"
        : $s < 7200 ? int($s / 60) . " min"
        : $s < 172800 ? int($s / 3600) . " h"
        : int($s / 86400) . " d";
}

sub _print_targets {
    my ($list) = @_;
    printf "%-20s %-28s %-17s %s\n", qw(NAME SERVER AUTH FROM);
    for my $t (@$list) {
        my $server = $t->{error} ? "INVALID: $t->{error}" : $t->{server};
        printf "%-20s %-28s %-17s %s\n", $t->{name}, $server, $t->{'auth-method'} // '',
            $t->{'from-address'} // '';
        print "  ", ($_->{alert} ? '!' : '-'), " $_->{text}\n" for @{ $t->{forecast} // [] };
    }
}

sub _print_keys {
    my ($target) = @_;
    for my $k (sort keys %$target) {
        my $v = $target->{$k};
        # a list of forecasts shows their sentences
        $v = ref($v) eq 'ARRAY' && grep({ ref($_) eq 'HASH' } @$v) ? join('; ', map { $_->{text} } @$v)
            : ref($v) eq 'ARRAY' ? join(', ', @$v) : ref($v) ? ($v ? 1 : 0) : $v;
        printf "%-22s %s\n", $k, $v;
    }
}

sub _print_verified {
    my ($v) = @_;
    my $steps = join(', ', map { "$_->{step} $_->{ms} ms" } @{ $v->{steps} // [] });
    print $v->{ok} ? "target '$v->{target}': login OK ($v->{credential}; $steps)\n"
        : "target '$v->{target}': login FAILED ($v->{kind}; $steps): $v->{error}\n";
}

sub _print_sent {
    my ($results) = @_;
    print !$_->{ok} ? "$_->{target}: FAILED ($_->{code}, $_->{kind}): $_->{message}\n"
        : $_->{queued} ? "$_->{target}: QUEUED as $_->{id} (will be retried): $_->{message}\n"
        : "$_->{target}: sent\n" for @$results;
}

sub _print_outbox {
    my ($list) = @_;
    print "outbox is empty\n" if !@$list;
    printf "%-34s %-14s %-7s %-8s %s\n  last error: %s\n", $_->{id}, $_->{target},
        _age($_->{age_secs}), "$_->{attempts}x", $_->{title}, $_->{last_error} for @$list;
}

sub _print_flushed {
    my ($reports) = @_;
    my $lines = OxNotify::Daily::flush_lines($reports);
    print "$_->[1]\n" for @$lines;
    print "nothing queued\n" if !@$lines;
}

sub _print_refreshed {
    my ($reports) = @_;
    print "$_->{target}: $_->{outcome}", ($_->{error} ? " - $_->{error}" : ''), "\n" for @$reports;
}

sub _print_statuses {
    my ($statuses) = @_;
    print "no OAuth2 targets\n" if !@$statuses;
    _print_status($_) for @$statuses;
}

sub _print_status {
    my ($s) = @_;
    if ($s->{no_oauth2}) {
        print "$s->{target} ($s->{auth_method}):\n";
    } else {
        my $e = $s->{last_error};
        my $not = $s->{authorized} ? '' : 'NOT ';
        print "$s->{target} ($s->{auth_method}): ${not}authorized\n";
        print "  authorized at:       ", _when($s->{authorized_at}), "\n";
        print "  last refresh:        ", _when($s->{last_refresh}), "\n";
        print "  refresh token age:   ", ($s->{refresh_token_age_days} // '-'), " day(s), ",
            "$s->{rotations} rotation(s)\n";
        my $expiry = $s->{estimated_expiry};
        print "  estimated expiry:    ", _when($expiry), "\n" if $expiry;
        print "  last error:          $e->{message} (", _when($e->{time}), ")\n" if $e;
    }
    my $o = $s->{outbox};
    print "  outbox:              $o->{queued} queued",
        (defined $o->{oldest_age_secs} ? ", oldest " . _age($o->{oldest_age_secs}) : ''),
        ($o->{given_up}{count} ? ", $o->{given_up}{count} given up" : ''), "\n" if $o;
    print "  WARNING:             $s->{warning}\n" if $s->{warning};
    print "  forecast:            ", ($_->{alert} ? 'ALERT ' : ''), "$_->{text}\n"
        for @{ $s->{forecast} // [] };
    print "  alerts go to:        $s->{alert_target}\n" if $s->{alert_target};
}

# The OAuth2 targets' health (all, or those named), and any other target whose outbox holds or
# lost something (named ones always).
sub _status {
    my ($p) = @_;
    my $all = _call('get_smtp_endpoints', {});
    my %method = map { ($_->{name} => $_->{'auth-method'} // '') } @$all;
    my @names = @{ $p->{names} // [] };
    my $named = @names;
    @names = map { $_->{name} } grep { !$_->{error} } @$all if !$named;
    my @status = map {
        ($method{$_} // 'oauth2') =~ /oauth2$/
            ? _call('oauth2_status', { name => $_ })
            : _outbox_only($_, $method{$_})
    } @names;
    return [grep { $_->{auth_method} =~ /oauth2$/ || $named || $_->{warning} } @status];
}

# The status of a target without OAuth2: its outbox (and the outbox's warning).
sub _outbox_only {
    my ($name, $method) = @_;
    my $o = OxNotify::Core::outbox_status({ name => $name });
    return { target => $name, auth_method => $method, no_oauth2 => 1, outbox => $o,
        ($o->{warning} ? (warning => $o->{warning}) : ()) };
}

# Authorize in a browser through a loopback redirect (or, for device-code targets, on any device).
sub _authorize {
    my ($p) = @_;
    my $name = $p->{name};
    my $target = _call('get_smtp_endpoint', { name => $name });
    return _authorize_device($name) if ($target->{'oauth2-flow'} // '') eq 'device-code';
    my $timeout = $p->{timeout} // 300;
    my $listener = OxNotify::CLI::Loopback->new(port => $p->{port});
    my $redirect = $listener->redirect_uri;
    my $begin = _call('smtp_oauth2_authorize_url', { name => $name, 'redirect-uri' => $redirect });
    local $| = 1;
    _print_who_is_asked($begin);
    print STDERR "Waiting for the provider to redirect to $redirect ...\n";
    print "Open this URL in a browser and grant access:\n$begin->{url}\n";
    my $finish = sub {
        my ($q) = @_;
        my $why = $q->{error_description} ? ' (' . _peer_text($q->{error_description}) . ')' : '';
        _die('the provider refused: ' . _peer_text($q->{error}) . $why) if $q->{error};
        _call('smtp_oauth2_token',
            { state => $q->{state}, 'authorization-code' => $q->{code} // '', target => $name });
        return "target '$name' is authorized";
    };
    my $deadline = time + $timeout;
    $listener->wait_for_redirect(state => $begin->{state}, deadline => $deadline, finish => $finish)
        or _die("no redirect arrived within $timeout seconds; run `oxnotify authorize $name` again",
            408);
    return { target => $name, authorized => 1 };
}

# Before the admin grants anything: which app asks, for what, and at which hosts.
sub _print_who_is_asked {
    my ($b) = @_;
    printf "Authorizing target '%s': client ID %s asks for scope '%s'; log in at %s, tokens from %s\n",
        map { $_ // '?' } @$b{qw(target client-id scope authorize-host token-host)};
}

# Text a peer chose (a provider's device answer, a redirect's error), made safe for a terminal
# as the core does with every peer text: one line, no control characters (escape sequences
# could rewrite the screen or the window title), no bidi overrides, at most 300 characters.
sub _peer_text {
    my ($text) = @_;
    $text //= '';
    $text =~ s/[\x00-\x1f\x7f-\x9f\x{200e}\x{200f}\x{202a}-\x{202e}\x{2066}-\x{2069}]+/ /g;
    $text =~ s/\A\s+|\s+\z//g;
    return length($text) > 300 ? substr($text, 0, 300) . '...' : $text;
}

# RFC 8628: show the URL and code, then wait (the library polls at the provider's interval)
sub _authorize_device {
    my ($name) = @_;
    my $start = _call('smtp_oauth2_device', { name => $name });
    local $| = 1;
    _print_who_is_asked($start);
    print 'On any device, open ' . _peer_text($start->{verification_uri}) . "\n";
    print 'and enter the code: ' . _peer_text($start->{user_code}) . "\n";
    print '(or open ' . _peer_text($start->{verification_uri_complete}) . ")\n"
        if $start->{verification_uri_complete};
    print STDERR "Waiting up to $start->{expires_in} seconds for the sign-in ...\n";
    # each call waits a few seconds; an error (declined, expired) ends the loop
    while (1) {
        my $r = _call('smtp_oauth2_device', { name => $name, handle => $start->{handle} });
        return { target => $name, authorized => 1 } if $r->{authorized};
    }
}

# Run a command line; returns the exit code.
sub run {
    my (@args) = @_;
    my $format = 'text';
    if (@args && $args[0] =~ /^--output-format(?:=(.*))?$/) {
        shift @args;
        $format = $1 // shift(@args) // '';
    }
    if (!@args || $args[0] =~ /^(?:--help|-h)$/) { print usage(); return 0 }
    if ($format ne 'text' && $format ne 'json') {
        print STDERR "--output-format must be text or json\n";
        return 2;
    }
    my $name = shift @args;
    if ($name eq 'help') {
        my $cmd = $COMMANDS{ join(' ', @args) };
        print($cmd ? $cmd->{help} : usage() . "\n");
        return 0;
    }
    $name .= ' ' . shift(@args) if $name =~ /^(?:target|outbox|relay)$/ && @args;
    my $cmd = $COMMANDS{$name};
    if (!$cmd) { print STDERR "unknown command '$name'\n" . usage(); return 2 }
    if (grep { $_ eq '--help' || $_ eq '-h' } @args) { print $cmd->{help}; return 0 }
    if ($name eq 'token') {
        print STDERR "oxnotify: `oxnotify token` is served by the oxnotify binary (crates/notify-cli)\n";
        return 2;
    }

    my ($p, $result);
    my $ok = eval {
        $p = _params($cmd, \@args);
        $result = _execute($cmd, $p);
        $result = $cmd->{result}->($result) if $cmd->{result};
        1;
    };
    if (!$ok) {
        my $err = $@;
        my $core = Scalar::Util::blessed($err) && $err->isa('OxNotify::Core::Error');
        if ($format eq 'json') {
            my $kind = $core ? $err->kind : undef;
            print $JSON->encode({ error => { message => "$err", code => $core ? $err->code : 500,
                (defined $kind ? (kind => $kind) : ()) } });
        } else {
            print STDERR "oxnotify: $err" . ("$err" =~ /\n$/ ? '' : "\n");
        }
        return _error_exit($err);
    }
    if ($format eq 'json') {
        print $JSON->encode($result // { ok => Cpanel::JSON::XS::true() });
    } else {
        $cmd->{print}->($result, $p);
    }
    return $cmd->{batch} ? _batch_exit($cmd->{batch}, $result) : 0;
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

One table of commands: each runs an API method descriptor (L<OxNotify::API2::Notifications>,
with the same parameter validation as the API server, as the local root user), or, where no
descriptor exists (C<send>, C<refresh>, C<outbox>), the L<OxNotify::Core> function; C<status>
and C<authorize> combine descriptors (C<authorize> receives the provider's redirect through
L<OxNotify::CLI::Loopback>). Each command has a printer for text output and its help text.
C<--output-format json> prints the result (or C<{ error: { message, code, kind } }>) for scripts.

Secrets (C<--password>, C<--oauth2-client-secret>, C<--oauth2-refresh-token>) need not be
process arguments, which every local user can read with ps: C<--KEY-file FILE> reads the first
line of FILE (C<-> reads stdin, once per command), and C<--KEY> without a value asks on the
terminal without echo. A value on the command line still works, with a warning.

Exit codes: 0 ok; 1 a send failed for good or a target needs attention (status, refresh), or
a flush gave a message up; 75 (EX_TEMPFAIL) nothing failed for good, but a notification was
queued in the outbox or failed only temporarily (send), is still queued (outbox flush), or a
refresh failed only temporarily. A command that fails as a whole exits with its error's code,
the map C<oxnotify token> uses too (L<OxNotify::Core::Error>'s C<exit_code>): 2 bad usage,
invalid parameters or a conflict; 3 internal failure; 4 not found; 5 the target must be
authorized again; 75 a temporary failure (it may work later); 78 an admin must fix the target
or its app registration.

=head1 FUNCTIONS

=over

=item run(@ARGV) - run a command line, return the exit code

=item usage() - the usage text

=back

=cut
