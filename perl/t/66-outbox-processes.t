# A cluster's bad night: 30 processes send to one OAuth2 target at once, through the rig's
# Postfix listener that accepts only 3 connections per client (a real 421 beyond that). The
# per-target connection slots keep oxnotify below the limit: every notification arrives
# exactly once, none is reported failed, the server refuses no connection, and the cached
# access token serves all 30 (no token request).
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;
use POSIX ();

need_rig();
need($ENV{RIG_PF_LIMITED_PORT}, 'needs the rig with Postfix (RIG_PF_LIMITED_PORT)');
setup_dirs();
my $r = rig();

my $p = ms_target_params('night', 'perl-night@example.test');
$p->{port} = $r->{pf_limited_port};
OxNotify::Core::create_target($p);
my $a = OxNotify::Core::authorize_url({ name => 'night', 'redirect-uri' => $RigTest::REDIRECT });
my ($code) = login_and_consent('perl-night@example.test', $a->{url});
OxNotify::Core::exchange_smtp_oauth2_code({
    'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
    'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
    'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $a->{'pkce-verifier'},
    'token-url' => "$r->{issuer}/token", target => 'night',
});
my $before = state_of('night');

sub log_size { -s $r->{pf_log} // 0 }
sub settle { my $last = -1; for (1 .. 20) { select(undef, undef, undef, 0.15); my $n = log_size(); last if $n == $last; $last = $n } }
settle();
my $mark = log_size();

my $tag = uniq('night');
my @pids;
for my $i (1 .. 30) {
    push @pids, fork() // die "fork: $!";
    next if $pids[-1];
    my $res = eval { OxNotify::Core::send({ targets => ['night'], title => sprintf('%s #%02d', $tag, $i) }) };
    POSIX::_exit(!$res ? 3 : !$res->[0]{ok} ? 1 : $res->[0]{queued} ? 2 : 0);
}
my %exit;
for my $pid (@pids) { waitpid($pid, 0); $exit{ $? >> 8 }++ }
is_deeply(\%exit, { 0 => 30 }, 'all 30 sends: sent (none failed, none queued)') or diag explain \%exit;

# count by unique subject in Postfix's Maildir (delivery there is asynchronous)
my %copies;
for (1 .. 100) {
    %copies = ();
    for my $f (glob("$r->{pf_maildir}/new/*"), glob("$r->{pf_maildir}/cur/*")) {
        open(my $fh, '<', $f) or next;
        while (<$fh>) { if (/^Subject: (\Q$tag\E #\d\d)\r?$/) { $copies{$1}++; last } }
    }
    last if keys(%copies) >= 30;
    select(undef, undef, undef, 0.1);
}
select(undef, undef, undef, 0.5);
is(scalar(keys %copies), 30, '30 distinct notifications arrived');
is(scalar(grep { $_ != 1 } values %copies), 0, 'each exactly once') or diag explain \%copies;

settle();
open(my $lf, '<', $r->{pf_log}) or die;
seek($lf, $mark, 0);
my @lines = grep { m{postfix/limited/smtpd\[} } <$lf>;
is(scalar(grep { /Connection concurrency limit exceeded/ } @lines), 0, 'the server refused no connection');
is(scalar(grep { /\]: connect from/ } @lines), 30, 'one connection per send');

my $after = state_of('night');
is($after->{last_refresh} // 0, $before->{last_refresh} // 0, 'no token refresh: the cached access token served all 30');
is_deeply(OxNotify::Core::outbox_list({}), [], 'nothing queued');
done_testing();
