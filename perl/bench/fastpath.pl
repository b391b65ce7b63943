#!/usr/bin/perl
# fastpath.pl — the fast paths as numbers, against the rig (scripts/run-with-rig.sh; `make bench`):
#   1. one notification in-process (Perl -> FFI -> core) against the minimal client (python
#      smtplib, one session per message), XOAUTH2 with a cached token and PLAIN, interleaved;
#   2. `oxnotify send` and `oxnotify token` as whole processes, against `cat` of a small file;
#   3. a burst of 100 notifications against the minimal client sending 100 over one session;
#   4. the resident size of this process over 1,000 sends (after the first 100 it must not grow).
# Medians; ratios are oxnotify / minimal client. A benchmark, not a test: it asserts nothing.
use strict;
use warnings;
use FindBin ();
use lib "$FindBin::RealBin/../lib", "$FindBin::RealBin/../t/lib";
use IPC::Open2 ();
use Time::HiRes qw(time);
use RigTest;
use OxNotify::Core;

my $N = $ENV{BENCH_N} // 40;
my $ROOT = "$FindBin::RealBin/../..";
need_rig();
my $dir = setup_dirs();
my $r = rig();

sub median { my @s = sort { $a <=> $b } @_; return $s[$#s / 2] }
sub rss_kib { open(my $f, '<', '/proc/self/status') or return 0; (map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$f>)[0] }
sub ms { my ($t0) = @_; return (time - $t0) * 1000 }

my $rss_loaded = do { OxNotify::Core::abi_version(); rss_kib() };

# the targets: XOAUTH2 (authorized at the rig, so the access token is cached after one send)
# and PLAIN, both STARTTLS to the rig's Dovecot
my $from = 'bench-fast@example.test';
OxNotify::Core::create_target(ms_target_params('bx', $from));
my $auth = OxNotify::Core::authorize_begin({ name => 'bx', 'redirect-uri' => $RigTest::REDIRECT });
my ($code, $state) = login_and_consent($from, $auth->{url});
OxNotify::Core::authorize_complete({ state => $state, 'authorization-code' => $code });
OxNotify::Core::create_target({
    name => 'bp', server => 'localhost', port => $r->{smtp_starttls_port}, mode => 'starttls',
    'auth-method' => 'plain', username => $r->{plain_user}, password => $r->{plain_password},
    'from-address' => $r->{plain_user}, mailto => ['ops@example.test'],
});
my $send = sub { my ($t) = @_; my $res = OxNotify::Core::send({ targets => [$t], title => 'bench', body => 'x' });
    die "send to $t: $res->[0]{message}\n" if !$res->[0]{ok} || $res->[0]{queued} };
$send->($_) for qw(bx bp);    # warm-up; bx gets its access token
my $rss_first = rss_kib();

my $cli = $ENV{OXNOTIFY_CLI} // "$ROOT/bin/oxnotify";
my $token = `$cli token bx`;
chomp $token;
die "oxnotify token bx failed\n" if $? || !$token;

local $ENV{HOST} = 'localhost';
local $ENV{PORT} = $r->{smtp_starttls_port};
my $py = IPC::Open2::open2(my $py_out, my $py_in, 'python3', "$FindBin::RealBin/minimal_client.py");
my $floor = sub { print $py_in "@_\n"; my $l = <$py_out> // die "minimal client died\n"; chomp $l; return $l };
$floor->('one', 'XOAUTH2', $from, $token);    # warm-up
$floor->('one', 'PLAIN', $r->{plain_user}, $r->{plain_password});

# 1. interleaved, one round = one of each
my (%t);
for (1 .. $N) {
    push @{ $t{py_x} }, $floor->('one', 'XOAUTH2', $from, $token);
    my $t0 = time; $send->('bx'); push @{ $t{ox_x} }, ms($t0);
    push @{ $t{py_p} }, $floor->('one', 'PLAIN', $r->{plain_user}, $r->{plain_password});
    $t0 = time; $send->('bp'); push @{ $t{ox_p} }, ms($t0);
}
printf "one notification, %d interleaved rounds (median ms; x minimal client):\n", $N;
for (['XOAUTH2, cached token', 'x'], ['PLAIN', 'p']) {
    my ($label, $k) = @$_;
    my ($floor_ms, $ox_ms) = (median(@{ $t{"py_$k"} }), median(@{ $t{"ox_$k"} }));
    printf "  %-22s minimal client %6.2f   oxnotify in-process %6.2f   %.2fx (+%.2f ms)\n",
        $label, $floor_ms, $ox_ms, $ox_ms / $floor_ms, $ox_ms - $floor_ms;
}

# 2. whole processes
my $small = "$dir/token.txt";
{ open(my $f, '>', $small) or die; print $f "$token\n"; close $f; chmod 0600, $small }
# fork + exec without a shell, output to /dev/null
my $run = sub {
    open(my $saved, '>&', \*STDOUT) or die;
    open(STDOUT, '>', '/dev/null') or die;
    my $t0 = time;
    my $rc = system { $_[0] } @_;
    my $took = ms($t0);
    open(STDOUT, '>&', $saved) or die;
    die "@_: exit $?\n" if $rc;
    return $took;
};
my %p;
for (1 .. 100) {
    push @{ $p{cat} }, $run->('cat', $small);
    push @{ $p{token} }, $run->($cli, 'token', 'bx');
}
for (1 .. ($N / 2 || 1)) {
    push @{ $p{send} }, $run->($cli, 'send', 'bx', '--title', 'bench process', '--body', 'x');
}
printf "whole processes (median ms over %d/%d runs; cli: %s):\n", 100, $N / 2 || 1, $cli;
printf "  cat of a small file %6.2f   oxnotify token %6.2f   oxnotify send %6.2f\n",
    median(@{ $p{cat} }), median(@{ $p{token} }), median(@{ $p{send} });

# 3. a burst of 100 against the minimal client's 100 over one session
my @burst = map { { title => "bench burst $_", body => 'x' } } 1 .. 100;
my (@ob, @pb);
for (1 .. 3) {
    push @pb, $floor->('burst', 'XOAUTH2', $from, $token, 100);
    my $t0 = time;
    my $res = OxNotify::Core::send_burst({ target => 'bx', notifications => \@burst });
    push @ob, ms($t0);
}
printf "burst of 100, XOAUTH2 (median of 3, ms): minimal client one session %.1f   oxnotify send_burst %.1f   %.2fx\n",
    median(@pb), median(@ob), median(@ob) / median(@pb);
close $py_in;
waitpid($py, 0);

# 4. memory: 1,000 more sends, XOAUTH2 with the cached token; the resident size after the
# first 100 of them and after all
my $rss_before = rss_kib();
my $rss_after_100;
for my $i (1 .. 1000) {
    $send->('bx');
    $rss_after_100 = rss_kib() if $i == 100;
}
my $rss_end = rss_kib();
printf "RSS KiB: binding loaded %d; after the first send %d; 1,000 sends: before %d, after 100 %d, after 1,000 %d (growth after the first 100: %+d)\n",
    $rss_loaded, $rss_first, $rss_before, $rss_after_100, $rss_end, $rss_end - $rss_after_100;
