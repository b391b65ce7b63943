#!/usr/bin/perl
# broker.pl — latency of the token paths with a cached token (needs the rig: RIG_* variables,
# SSL_CERT_FILE; run as root from the checkout after `cargo build --release -p notify-broker`):
#   - one oxnotify-broker request (connect, `SMTP <address>`, read the answer) from this process;
#   - `oxnotify token NAME` as a whole process (bin/oxnotify execs oxnotify-token), and
#     oxnotify-token alone; the full Perl CLI (`oxnotify status NAME`) for comparison;
#   - `cat` of a small file as a whole process: the floor of any command.
# Prints median and p90 of each. Not a test: numbers depend on the machine and its load.
use strict;
use warnings;
use FindBin ();
use lib "$FindBin::RealBin/../lib", "$FindBin::RealBin/../t/lib";
use IO::Socket::UNIX ();
use POSIX ();
use Time::HiRes qw(time);
use RigTest;
use OxNotify::Core;

my $N = shift // 200;
my $root = "$FindBin::RealBin/../..";
my $release = "$root/target/release";
-x "$release/oxnotify-broker" && -x "$release/oxnotify-token" or die "build first: cargo build --release -p notify-broker\n";
$ENV{RIG_ISSUER} or die "needs the rig's RIG_* variables\n";
my $dir = setup_dirs();
my $user = 'bench-broker@example.test';

OxNotify::Core::create_target(ms_target_params('bench', $user));
my $auth = OxNotify::Core::authorize_url({ name => 'bench', 'redirect-uri' => $RigTest::REDIRECT });
my ($code) = login_and_consent($user, $auth->{url});
OxNotify::Core::exchange_smtp_oauth2_code({
    'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
    'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
    'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $auth->{"pkce-verifier"},
    'token-url' => rig()->{issuer} . '/token', target => 'bench',
});    # stores the access token: every request below is served from the cache

my $sock = "$dir/broker.sock";
my $bpid = fork // die;
if (!$bpid) {
    open(STDERR, '>', '/dev/null');
    exec("$release/oxnotify-broker", '--socket', $sock) or die;
}
END { kill('TERM', $bpid) if $bpid }
for (1 .. 100) { last if -S $sock; Time::HiRes::sleep(0.05) }

sub stats {
    my ($name, $n, $sub) = @_;
    $sub->() for 1 .. 3;    # warm caches
    my @t;
    for (1 .. $n) { my $s = time; $sub->(); push @t, time - $s }
    @t = sort { $a <=> $b } @t;
    my ($med, $p90) = map { $t[int($_ * $#t)] * 1000 } 0.5, 0.9;
    printf "%-44s median %8.3f ms   p90 %8.3f ms   (n=%d)\n", $name, $med, $p90, $n;
}

sub run {
    my @cmd = @_;
    my $pid = fork // die;
    if (!$pid) {
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>', '/dev/null');
        exec { $cmd[0] } @cmd or POSIX::_exit(127);
    }
    waitpid($pid, 0);
    die "@cmd failed\n" if $?;
}

my $answer = '';
stats('broker request (SMTP, cached token)', $N * 5, sub {
    my $c = IO::Socket::UNIX->new(Peer => $sock) or die "connect: $!";
    print $c "SMTP $user\n";
    shutdown($c, 1);
    local $/;
    $answer = <$c>;
});
$answer =~ /^user=/ or die "broker answered: $answer\n";
# the socket round trip alone: a trivial server that reads the line and answers fixed bytes
my $echo = "$dir/echo.sock";
my $epid = fork // die;
if (!$epid) {
    my $l = IO::Socket::UNIX->new(Local => $echo, Listen => 128) or die "echo: $!";
    while (my $c = $l->accept) { my $line = <$c>; print $c 'x' x length($answer); close($c) }
    POSIX::_exit(0);
}
END { kill('TERM', $epid) if $epid }
for (1 .. 100) { last if -S $echo; Time::HiRes::sleep(0.05) }
stats('trivial socket server (round-trip floor)', $N * 5, sub {
    my $c = IO::Socket::UNIX->new(Peer => $echo) or die "connect: $!";
    print $c "SMTP $user\n";
    shutdown($c, 1);
    local $/;
    my $x = <$c>;
});
my $file = "$dir/token.txt";
{ open(my $fh, '>', $file) or die; print $fh "x" x 2000, "\n"; }
stats('cat FILE (process floor)', $N, sub { run('/bin/cat', $file) });
stats('oxnotify-token bench (process)', $N, sub { run("$release/oxnotify-token", 'bench') });
$ENV{OXNOTIFY_TOKEN_BIN} = "$release/oxnotify-token";
stats('oxnotify token bench (bin/oxnotify, process)', $N, sub { run($^X, "$root/bin/oxnotify", 'token', 'bench') });
stats('oxnotify status bench (full Perl CLI)', 20, sub { run($^X, "$root/bin/oxnotify", 'status', 'bench') });
