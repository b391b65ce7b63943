package OxNotify::Daily;

use strict;
use warnings;

use POSIX ();
use Sys::Syslog ();

use OxNotify::Core;

our $VERSION = '0.1.0';

my %LEVEL = (refreshed => 'info', rotated => 'info', 'needs-reauthorization' => 'err', failed => 'err');

sub _log {
    my ($opts, $level, $msg) = @_;
    print STDERR "oxnotify-daily: $msg\n" unless $opts->{quiet};
    if ($opts->{syslog}) {
        eval { Sys::Syslog::syslog($level, '%s', $msg); 1 };
    }
}

sub _when {
    my ($t) = @_;
    return defined $t ? POSIX::strftime('%Y-%m-%d', gmtime($t)) : 'unknown';
}

# Refresh every OAuth2 target; returns the exit code (0 all fine, 1 a target failed, 2 the job
# could not run). Options: syslog (default 1), quiet, lock_timeout (seconds).
sub run {
    my (%opts) = @_;
    $opts{syslog} //= 1;
    Sys::Syslog::openlog('oxnotify-daily', 'pid', 'daemon') if $opts{syslog};
    my $res = eval { OxNotify::Core::refresh_targets({ 'lock-timeout' => $opts{lock_timeout} // 60 }) };
    if (my $err = $@) {
        _log(\%opts, 'err', "refresh failed: $err");
        return 2;
    }
    if ($res->{locked}) {
        _log(\%opts, 'notice', 'another instance holds the notification config lock; nothing done');
        return 0;
    }
    my $failed = 0;
    for my $r (@{ $res->{reports} }) {
        my $s = $r->{status} // {};
        my $outcome = $r->{outcome};
        my $line = "target '$r->{target}': $outcome";
        $line .= ", refresh token expires about " . _when($s->{estimated_expiry})
            if $s->{estimated_expiry} && ($outcome eq 'refreshed' || $outcome eq 'rotated');
        $line .= " - $r->{error}" if $r->{error};
        _log(\%opts, $LEVEL{$outcome} // 'err', $line);
        $failed++ if $outcome eq 'failed' || $outcome eq 'needs-reauthorization';
        if (my $w = $s->{warning}) {
            _log(\%opts, 'warning', "WARNING target '$r->{target}': $w");
        }
    }
    _log(\%opts, 'info', sprintf('%d target(s) refreshed, %d failed', @{ $res->{reports} } - $failed, $failed));
    Sys::Syslog::closelog() if $opts{syslog};
    return $failed ? 1 : 0;
}

1;

__END__

=head1 NAME

OxNotify::Daily - the daily OAuth2 refresh of all notification targets

=head1 SYNOPSIS

    use OxNotify::Daily;
    exit OxNotify::Daily::run(syslog => 1);

=head1 DESCRIPTION

Refreshes every enabled OAuth2 SMTP target under the notification config lock, so that unused
targets do not expire (Microsoft refresh tokens live 90 days from issue, Google's die after 6
months unused). Logs one line per target to syslog (facility daemon) and stderr, warns when a
refresh token is within 14 days of its estimated expiry or needs re-authorization, and
continues past failures.

Safe to run concurrently with sends and with itself: token refreshes take a per-target lock
and persist rotated refresh tokens immediately; a second daily run waits up to
C<lock_timeout> seconds for the config lock and then exits cleanly without doing anything.

=head1 FUNCTIONS

=over

=item run(%opts)

Options: C<syslog> (default 1), C<quiet> (no stderr), C<lock_timeout> (seconds, default 60).
Returns the exit code: 0 all targets fine (or another instance busy), 1 at least one target
failed or needs re-authorization, 2 the job could not run at all.

=back

=cut
