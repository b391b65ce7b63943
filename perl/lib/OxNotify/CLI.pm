package OxNotify::CLI;

use strict;
use warnings;

use Cpanel::JSON::XS ();
use IO::Select ();
use IO::Socket::IP ();
use POSIX ();
use URI ();

use OxNotify::API2::Notifications;
use OxNotify::API2::Schema;
use OxNotify::Core;

our $VERSION = '0.1.0';

my $JSON = Cpanel::JSON::XS->new->utf8->canonical->pretty;

my %HELP = (
    'target list' => "oxnotify target list\n  List the SMTP targets.",
    'target show' => "oxnotify target show NAME\n  Show a target's configuration (never secrets).",
    'target create' => "oxnotify target create NAME --server HOST --from-address ADDR --mailto ADDR [--KEY VALUE ...]\n"
        . "  Create an SMTP target. Keys as in the config: --mode, --port, --auth-method, --username,\n"
        . "  --password, --author, --oauth2-client-id, --oauth2-client-secret, --oauth2-tenant-id, ...\n"
        . "  Repeat --mailto (or separate addresses by commas).",
    'target update' => "oxnotify target update NAME [--KEY VALUE ...] [--delete KEY ...] [--digest DIGEST]\n"
        . "  Change keys; empty secrets keep the stored ones.",
    'target delete' => "oxnotify target delete NAME\n  Remove a target with its secrets and OAuth2 state.",
    authorize => "oxnotify authorize NAME [--port PORT] [--timeout SECONDS]\n"
        . "  Authorize an OAuth2 target: listens on http://127.0.0.1:PORT/callback (a free port unless\n"
        . "  given), prints the provider URL to open in a browser, waits for the redirect, exchanges\n"
        . "  the code and stores the authorization. Register that redirect URI with the provider\n"
        . "  (Microsoft and Google ignore the port for loopback addresses).",
    send => "oxnotify send NAME... --title TITLE [--body TEXT] [--severity info|notice|warning|error]\n"
        . "  Send a notification; exit 1 if a target failed.",
    status => "oxnotify status [NAME]\n  OAuth2 health of one or all OAuth2 targets.",
    refresh => "oxnotify refresh\n  Refresh all OAuth2 targets now (what the daily job does).",
);

sub usage {
    return "usage: oxnotify [--output-format text|json] COMMAND ...\n\ncommands:\n"
        . join('', map { "  " . (split(/\n/, $HELP{$_}))[0] . "\n" } sort keys %HELP)
        . "\n`oxnotify help COMMAND` or `oxnotify COMMAND --help` for details.\n";
}

sub _die { die OxNotify::Core::Error->new($_[0], $_[1] // 400) }

# --key value / --key=value pairs for a method's parameters; list keys accumulate.
sub _options {
    my ($args, $method, %extra) = @_;
    my $props = $method ? $method->{parameters}{properties} : {};
    my %p;
    while (@$args) {
        my $a = shift @$args;
        _die("unexpected argument '$a'") if $a !~ /^--([a-z0-9-]+)(?:=(.*))?$/s;
        my ($k, $v) = ($1, $2);
        my $schema = $props->{$k} // $extra{$k};
        _die("unknown option --$k (see --help)") if !$schema;
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
    print "$s->{target} ($s->{auth_method}): ", ($s->{authorized} ? 'authorized' : 'NOT authorized'), "\n";
    print "  authorized at:       ", _when($s->{authorized_at}), "\n";
    print "  last refresh:        ", _when($s->{last_refresh}), "\n";
    print "  refresh token age:   ", ($s->{refresh_token_age_days} // '-'), " day(s), $s->{rotations} rotation(s)\n";
    print "  estimated expiry:    ", _when($s->{estimated_expiry}), "\n" if $s->{estimated_expiry};
    print "  last error:          $s->{last_error}{message} (", _when($s->{last_error}{time}), ")\n" if $s->{last_error};
    print "  WARNING:             $s->{warning}\n" if $s->{warning};
}

sub _authorize {
    my ($name, $opts, $out) = @_;
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
        my $line = <$c> // '';
        while (defined(my $h = <$c>)) { last if $h !~ /\S/ }    # skip the headers
        my ($path) = $line =~ m{^GET (\S+) HTTP/};
        my $uri = URI->new($path // '/');
        if (($uri->path // '') ne '/callback') {
            print {$c} "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
            next;
        }
        my %q = $uri->query_form;
        my ($ok, $msg);
        if ($q{error}) {
            $msg = "the provider refused: $q{error}" . ($q{error_description} ? " ($q{error_description})" : '');
        } elsif (!$q{state} || $q{state} ne $begin->{state}) {
            $msg = 'state mismatch: this redirect does not belong to this authorization';
        } else {
            $ok = eval { _call('smtp_oauth2_token', { state => $q{state}, 'authorization-code' => $q{code} // '', target => $name }); 1 };
            $msg = $ok ? "target '$name' is authorized" : "$@";
        }
        my $body = "<!DOCTYPE html><title>oxnotify</title><p>" . ($ok ? 'Done: ' : 'Failed: ')
            . ($msg =~ s/[<>&]/ /gr) . ". You can close this tab.</p>\n";
        print {$c} "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
        close($c);
        _die($msg) if !$ok;
        return { target => $name, authorized => 1 };
    }
    _die("no redirect arrived within " . ($opts->{timeout} // 300) . " seconds; run `oxnotify authorize $name` again", 408);
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
    if ($format ne 'text' && $format ne 'json') { print STDERR "--output-format must be text or json\n"; return 2 }
    my $cmd = shift @args;
    if ($cmd eq 'help') {
        my $which = join(' ', @args);
        print(($HELP{$which} // usage()) . "\n");
        return 0;
    }
    $cmd .= ' ' . shift(@args) if $cmd eq 'target' && @args;
    if (!$HELP{$cmd}) { print STDERR "unknown command '$cmd'\n" . usage(); return 2 }
    if (grep { $_ eq '--help' || $_ eq '-h' } @args) { print "$HELP{$cmd}\n"; return 0 }

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
            $exit = (grep { !$_->{ok} } @$result) ? 1 : 0;
            $text = sub { print $_->{ok} ? "$_->{target}: sent\n" : "$_->{target}: FAILED ($_->{code}): $_->{message}\n" for @$result };
        } elsif ($cmd eq 'status') {
            my @names = @args ? @args : map { $_->{name} } grep { ($_->{'auth-method'} // '') =~ /oauth2$/ }
                @{ _call('get_smtp_endpoints', {}) };
            $result = [ map { _call('oauth2_status', { name => $_ }) } @names ];
            $exit = (grep { $_->{warning} } @$result) ? 1 : 0;
            $text = sub { print "no OAuth2 targets\n" if !@$result; _print_status($_) for @$result };
        } elsif ($cmd eq 'refresh') {
            my $res = OxNotify::Core::refresh_targets({});
            $result = $res->{reports};
            $exit = (grep { $_->{outcome} =~ /failed|needs/ } @$result) ? 1 : 0;
            $text = sub { print "$_->{target}: $_->{outcome}" . ($_->{error} ? " - $_->{error}" : '') . "\n" for @$result };
        }
        1;
    };
    if (!$ok) {
        my $err = $@;
        my $code = ref($err) && $err->isa('OxNotify::Core::Error') ? $err->code : 500;
        if ($format eq 'json') {
            print $JSON->encode({ error => { message => "$err", code => $code } });
        } else {
            print STDERR "oxnotify: $err" . ("$err" =~ /\n$/ ? '' : "\n");
        }
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
        --oauth2-client-id ID --oauth2-tenant-id contoso.onmicrosoft.com --oauth2-client-secret S
    oxnotify authorize m365
    oxnotify send m365 --title "Backup failed" --body "job 42"
    oxnotify --output-format json status

=head1 DESCRIPTION

Runs the same method descriptors as the API server (L<OxNotify::API2::Notifications>), with the
same parameter validation, as the local (root) user. C<--output-format json> prints the
method's result (or C<{ error: { message, code } }>) for scripts.

Exit codes: 0 ok; 1 a send failed or a target needs attention (status, refresh); 2 bad usage
or invalid parameters; 3 server/network side failure; 4 not found.

=head1 FUNCTIONS

=over

=item run(@ARGV) - run a command line, return the exit code

=item usage() - the usage text

=back

=cut
