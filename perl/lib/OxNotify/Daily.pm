package OxNotify::Daily;

use strict;
use warnings;

use POSIX ();

use OxNotify::Core;

our $VERSION = '0.2.0';

# Syslog level per refresh outcome: transient problems are retried tomorrow (warning);
# everything else needs the admin (err).
my %LEVEL = (refreshed => 'info', rotated => 'info', 'not-due' => 'info', transient => 'warning');
# a daily run that holds its lock for longer than this is stuck (seconds)
my $STALE_AFTER = 3600;

my %OK = (refreshed => 1, rotated => 1, 'not-due' => 1);    # not-due: another node refreshed it today

sub _when {
    my ($t) = @_;
    return defined $t ? POSIX::strftime('%Y-%m-%d', gmtime($t)) : 'unknown';
}

# Refresh every OAuth2 target; log nothing, return the report:
# { exit_code, lines => [[level, message], ...], locked, reports }.
sub refresh {
    my (%opts) = @_;
    my @lines;
    my $log = sub { push @lines, [@_] };
    # the whole run in one library call and one config read: refresh, warnings, outbox flush
    my $res = eval { OxNotify::Core::daily({ 'lock-timeout' => $opts{lock_timeout} // 60 }) };
    if (my $err = $@) {
        $log->('err', "refresh failed: $err");
        return { exit_code => 2, lines => \@lines, locked => 0, reports => [] };
    }
    if ($res->{locked}) {
        my $who = defined $res->{holder} ? " ($res->{holder})" : '';
        my $for = $res->{held_for_secs};
        my $since = defined $for ? ", for $for s" : '';
        # a run takes minutes at most: one that holds the lock for longer is stuck, and a job
        # that skips quietly every day would let every grant expire unnoticed
        if (defined $for && $for > ($opts{stale_after} // $STALE_AFTER)) {
            $log->('err', "the daily refresh is held by another instance$who$since, longer than "
                . "any run takes: it is stuck; stop it (or remove the lock if its holder is gone); "
                . "nothing was refreshed");
            return { exit_code => 1, lines => \@lines, locked => 1, reports => [] };
        }
        $log->('notice', "another instance of the daily refresh is running$who$since; nothing done");
        return { exit_code => 0, lines => \@lines, locked => 1, reports => [] };
    }
    # malformed lines outside any target do not stop the job, but the admin must see them
    $log->('warning', "WARNING config: $_") for @{ $res->{problems} // [] };
    my $failed = 0;
    for my $r (@{ $res->{reports} }) {
        my $s = $r->{status} // {};
        my $outcome = $r->{outcome} // 'failed';
        my $line = "target '$r->{target}': $outcome";
        $line .= ", refresh token expires about " . _when($s->{estimated_expiry})
            if $s->{estimated_expiry} && ($outcome eq 'refreshed' || $outcome eq 'rotated');
        $line .= " - $r->{error}" if $r->{error};
        $log->($LEVEL{$outcome} // 'err', $line);
        $failed++ if !$OK{$outcome};    # transient too: it did not refresh today
        $log->('warning', "WARNING target '$r->{target}': $s->{warning}") if $s->{warning};
    }
    # targets without OAuth2 are not refreshed, but may still need the admin (e.g. a password
    # sent without TLS by a config from before allow-insecure-auth)
    $log->('warning', "WARNING target '$_->[0]': $_->[1]") for @{ $res->{warnings} // [] };
    $log->('info', sprintf('%d target(s) refreshed, %d failed', @{ $res->{reports} } - $failed, $failed));
    # the outbox: deliver what waits, give up what is too old (the timer does this every minute;
    # here too, so a host without the timer still delivers and expires)
    my $flush = $res->{flush} // [];
    push @lines, @{ flush_lines($flush) };
    push @lines, @{ alert_lines($res->{alerts}) };
    $failed++ if grep { @{ $_->{failed} // [] } || @{ $_->{expired} // [] } } @$flush;
    return { exit_code => $failed ? 1 : 0, lines => \@lines, locked => 0, reports => $res->{reports} };
}

# One line per thing a flush did (also what the timer's journal and the daily job log).
sub flush_lines {
    my ($reports) = @_;
    my @lines;
    for my $r (@$reports) {
        my $t = "outbox of target '$r->{target}'";
        if ($r->{busy}) { push @lines, ['info', "$t: another flush is running"]; next }
        push @lines, ['err', "$t: GAVE UP message $_->[0] ('$_->[1]'): older than the outbox's maximum age"]
            for @{ $r->{expired} // [] };
        push @lines, ['err', "$t: GAVE UP message $_->[0]: refused for good: $_->[1]"] for @{ $r->{failed} // [] };
        push @lines, ['info', "$t: $r->{delivered} delivered in $r->{sessions} session(s)"] if $r->{delivered};
        push @lines, ['warning', "$t: $r->{remaining} still queued" . ($r->{error} ? " - $r->{error}" : '')]
            if $r->{remaining};
    }
    return \@lines;
}

# One line per alert check that did something: alerts sent through an alert-target, recovery
# notes, and alerts that could not be sent (tried again by the next run).
sub alert_lines {
    my ($reports) = @_;
    my @lines;
    for my $a (@{ $reports // [] }) {
        my $t = "alert about target '$a->{target}' via '$a->{via}'";
        push @lines, ['notice', "$t: sent (" . join(', ', @{ $a->{alerted} }) . ")"]
            if @{ $a->{alerted} // [] } && !$a->{error};
        push @lines, ['notice', "$t: recovery noted (" . join(', ', @{ $a->{recovered} }) . ")"]
            if @{ $a->{recovered} // [] } && !$a->{error};
        push @lines, ['err', "$t: NOT sent: $a->{error}"] if $a->{error};
    }
    return \@lines;
}

# refresh() and hand each line to the caller's logger: run(logger => sub { my ($level, $msg) = @_ }).
# Returns the exit code. Never opens, closes or changes the process's syslog connection.
sub run {
    my (%opts) = @_;
    my $logger = $opts{logger} // sub { print STDERR "oxnotify-daily: $_[1]\n" };
    my $report = refresh(%opts);
    $logger->(@$_) for @{ $report->{lines} };
    return $report->{exit_code};
}

1;

__END__

=head1 NAME

OxNotify::Daily - the daily OAuth2 refresh of all notification targets, as a library call

=head1 SYNOPSIS

    # inside a host's daily job (e.g. pveupdate), with the host's own syslog setup
    use PVE::SafeSyslog;
    use OxNotify::Daily;
    my $rc = OxNotify::Daily::run(logger => sub { my ($level, $msg) = @_; syslog($level, "oxnotify: %s", $msg) });

    # or take the report and log it yourself
    my $report = OxNotify::Daily::refresh();
    print "$_->[0]: $_->[1]\n" for @{ $report->{lines} };

=head1 DESCRIPTION

Refreshes every enabled OAuth2 SMTP target (one run at a time; the config lock is held only while
the config is read, never through token requests), so that unused
targets do not expire (Microsoft refresh tokens live 90 days from issue, Google's die after 6
months unused). Produces one line per target, warns when a refresh token is within 14 days of
its estimated expiry or needs re-authorization, warns about targets that authenticate without
TLS from an old config, and continues past failures. Then it flushes the outbox (see
C<oxnotify outbox>): one line per target that delivered, still holds, or gave up messages.
Last, targets with an C<alert-target> are checked: one line per alert sent (C<notice>), per
recovery note (C<notice>) and per alert that could not be sent (C<err>); see C<alert_lines>.

The library never touches the caller's syslog: no C<openlog>, C<closelog> or C<setlogsock>.
It hands lines to the caller's C<logger> (default: standard error) or returns them.
C<bin/oxnotify-daily> is the stand-alone job: it opens syslog as C<oxnotify-daily> (facility
daemon) itself and passes a logger writing there and to standard error.

Levels: C<info> for C<refreshed>/C<rotated>/C<not-due> (cluster store: another node refreshed
it within the refresh window), C<warning> for C<transient> (retried next run)
and for warnings, C<err> for C<needs-reauthorization>, C<needs-admin-fix>, C<failed> and
unknown outcomes.

Safe to run concurrently with sends and with itself: token refreshes take a per-target lock
and persist rotated refresh tokens immediately; a second daily run waits up to
C<lock_timeout> seconds for the first to end and then does nothing (exit code 0), saying who
holds the lock and for how long; a holder that has held it for longer than C<stale_after>
seconds (default 3600; a run takes minutes) is stuck, and the job says so and exits 1.

=head1 FUNCTIONS

=over

=item refresh(%opts)

Options: C<lock_timeout> (seconds, default 60), C<stale_after> (seconds, default 3600). Returns C<{ exit_code, lines =E<gt> [[level,
message], ...], locked, reports }>; logs nothing.

=item flush_lines($reports)

C<[[level, message], ...]> describing C<OxNotify::Core::outbox_flush> reports: C<err> for each
message given up (too old, or refused for good), C<info> for deliveries, C<warning> for what
is still queued.

=item alert_lines($reports)

C<[[level, message], ...]> describing the daily run's C<alerts> (one report per target whose
alert check sent an alert or a recovery note through its C<alert-target>): C<notice> for what
was sent, C<err> for an alert that could not be sent (the next run tries again).

=item run(%opts)

C<refresh(%opts)>, then C<logger-E<gt>($level, $message)> for each line. Returns the exit code:
0 all targets fine (or another instance busy), 1 at least one target was not refreshed
(transient failure, needs re-authorization or an admin fix), 2 the job could not run at all.

=back

=cut
