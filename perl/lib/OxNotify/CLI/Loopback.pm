package OxNotify::CLI::Loopback;

use strict;
use warnings;

use IO::Select ();
use IO::Socket::IP ();
use List::Util ();
use URI ();

use OxNotify::Core::Error;

our $VERSION = '0.1.0';

our $CONN_TIMEOUT = 10;    # seconds one client may take to send its request line

# Listen on 127.0.0.1:PORT (a free port if none is given).
sub new {
    my ($class, %opts) = @_;
    my $port = $opts{port} // 0;
    my $srv = IO::Socket::IP->new(
        LocalHost => '127.0.0.1',
        LocalPort => $port,
        Listen => 5,
        ReuseAddr => 1,
    ) or die OxNotify::Core::Error->new("cannot listen on 127.0.0.1:$port: $@", 500);
    return bless { srv => $srv }, $class;
}

sub redirect_uri {
    my ($self) = @_;
    return 'http://127.0.0.1:' . $self->{srv}->sockport . '/callback';
}

# Wait until $opts{deadline} (Unix time) for a GET /callback whose query carries $opts{state};
# hand its query (a hash) to $opts{finish}, answer the browser with what that returns (or dies
# with), and return 1 (or die with the same error). Undef if none came in time.
sub wait_for_redirect {
    my ($self, %opts) = @_;
    my ($state, $deadline, $finish) = @opts{qw(state deadline finish)};
    my $sel = IO::Select->new($self->{srv});
    while (time < $deadline) {
        next if !$sel->can_read($deadline - time);
        my $c = $self->{srv}->accept or next;
        $c->autoflush(1);
        # one client gets a few seconds for its request line, never the whole wait
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
        if (!defined $q{state} || $q{state} ne $state) {
            _reply($c, '400 Bad Request', 'Failed: state mismatch: this redirect does not belong '
                . 'to this authorization. Still waiting for the right one.');
            next;
        }
        my $done = eval { $finish->(\%q) };
        my $err = $@;
        my $outcome = defined $done ? "Done: $done" : "Failed: $err";
        _reply($c, '200 OK', "$outcome. You can close this tab.");
        die $err if !defined $done;
        return 1;
    }
    return undef;
}

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

1;

__END__

=head1 NAME

OxNotify::CLI::Loopback - the loopback redirect listener of C<oxnotify authorize>

=head1 SYNOPSIS

    my $listener = OxNotify::CLI::Loopback->new(port => $port);    # or a free port
    my $begin = ...;    # start the authorization with $listener->redirect_uri
    my $ok = $listener->wait_for_redirect(
        state => $begin->{state},
        deadline => time + 300,
        finish => sub { my ($query) = @_; ...; return "target 'x' is authorized" },  # or die
    );
    die "no redirect arrived\n" if !$ok;

=head1 DESCRIPTION

A minimal HTTP listener on 127.0.0.1 for the redirect of an OAuth2 authorization code flow
(RFC 8252 loopback redirect). Only C<GET /callback> with the authorization's own C<state>
reaches C<finish>; any other path is a 404, any other state (another local user, a web page)
a 400, and the listener keeps waiting: nobody else can abort or complete the authorization.
Each connection has 10 seconds (C<$CONN_TIMEOUT>) to send its request line, so an idle
connection cannot hold the listener past the deadline. The browser is told the outcome
("Done: ..." or "Failed: ...").

=head1 METHODS

=over

=item new(port =E<gt> $port) - listen (dies with a 500 L<OxNotify::Core::Error> if it cannot)

=item redirect_uri() - C<http://127.0.0.1:PORT/callback>

=item wait_for_redirect(state =E<gt> $state, deadline =E<gt> $unix_time, finish =E<gt> sub { ... })

1 once C<finish> returned a text for the browser; dies with C<finish>'s error; undef if no
matching redirect arrived before the deadline.

=back

=cut
