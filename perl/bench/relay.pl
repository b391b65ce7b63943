# Benchmark (not a test): the host's Postfix relaying a queue of N messages (default 100)
# through oxnotify-relay, and side by side through email-oauth2-proxy (PyPI `emailproxy`, in
# its own venv) in the same Postfix setup (scripts/rig/host-postfix.sh: relayhost with SASL
# PLAIN to the local relay), upstream the rig's Dovecot with XOAUTH2. Each run: N messages
# queued while the queue is held, then released; measured: messages/second from release to the
# last arrival, token requests (the provider's refresh grants), upstream sessions (Dovecot
# logins), lost and duplicated messages; with a valid cached access token and with an expired
# one.
#   scripts/run-with-rig.sh perl -Iperl/lib perl/bench/relay.pl [N]
# The emailproxy venv: $EMAILPROXY_VENV (default scripts/bench/emailproxy-venv, created with
# pip on first use).
use strict;
use warnings;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;
use Cpanel::JSON::XS ();
use Digest::SHA ();
use IO::Socket::INET ();
use IPC::Open2 ();
use POSIX ();
use Time::HiRes ();

my $N = shift // 100;
die "needs the rig (scripts/run-with-rig.sh)\n" if !$ENV{RIG_ISSUER};
die "needs root\n" if $> != 0;
my $relay_bin = 'target/release/oxnotify-relay';
$relay_bin = 'target/debug/oxnotify-relay' if !-x $relay_bin;
my $dir = setup_dirs();
chmod(0755, $dir);
my $r = rig();
my $alice = 'alice-bench@example.test';
my $JSON = Cpanel::JSON::XS->new;
my (@pids, @pf);
$SIG{TERM} = $SIG{INT} = sub { exit 1 };
END {
    system('scripts/rig/host-postfix.sh', 'stop', $_) for @pf;
    kill('TERM', $_) for @pids;
}

sub slurp { open(my $fh, '<', $_[0]) or return ''; local $/; return scalar <$fh> }
sub grants { return scalar(() = slurp("$r->{dir}/logs/oidc-provider.log") =~ /^grant\.success refresh_token rig-post/mg) }
sub logins { return scalar(() = slurp("$r->{dir}/logs/dovecot.log") =~ /submission-login: (?:Info: )?Login: user=<\Q$alice\E>/g) }
sub free_port { IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)->sockport }

sub wait_until {
    my ($secs, $cond) = @_;
    my $until = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $until) { return 1 if $cond->(); Time::HiRes::sleep(0.05) }
    return $cond->();
}

sub delivered {
    my ($needle) = @_;
    my %n;
    for my $f (glob("$r->{maildir}/new/*")) {
        $n{$1}++ if slurp($f) =~ /^Subject: (\Q$needle\E #\d+)\r?$/m;
    }
    return \%n;
}


sub start_bg {
    my ($log, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDERR, '>>', $log) or POSIX::_exit(1);
        open(STDOUT, '>&', \*STDERR);
        exec(@cmd) or POSIX::_exit(1);
    }
    push @pids, $pid;
    return $pid;
}

sub wait_port { my ($p) = @_; wait_until(20, sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$p") }) or die "nothing listens on $p\n" }

# one run: N messages queued, released, counted
sub run_case {
    my ($label, $port, $user, $password) = @_;
    my $pf = "$dir/pf-" . scalar(@pf);
    push @pf, $pf;
    { local $ENV{HOLD} = 1; local $ENV{SASL_PASSWORD} = $password;
      system('scripts/rig/host-postfix.sh', 'start', $pf, $port, $user) == 0 or die "host postfix\n"; }
    my $tag = uniq('bench');
    local $ENV{MAIL_CONFIG} = $pf;
    for my $i (1 .. $N) {
        open(my $sm, '|-', '/usr/sbin/sendmail', '-t') or die $!;
        print $sm "From: root\nTo: ops\@example.test\nSubject: $tag #$i\n\nmessage $i of the benchmark\n";
        close($sm) or die "sendmail: $?";
    }
    wait_until(60, sub { scalar(() = `postqueue -c $pf -j` =~ /^\{/mg) == $N }) or die "not all queued\n";
    my ($g0, $l0) = (grants(), logins());
    my $t0 = Time::HiRes::time();
    system('scripts/rig/host-postfix.sh', 'release', $pf) == 0 or die "release\n";
    my $done = wait_until(120, sub { keys(%{ delivered($tag) }) >= $N });
    my $secs = Time::HiRes::time() - $t0;
    Time::HiRes::sleep(2);    # late duplicates
    my $d = delivered($tag);
    my $dups = 0;
    $dups += $_ - 1 for values %$d;
    my $queued = () = `postqueue -c $pf -j` =~ /^\{/mg;
    my $log = slurp("$pf/postfix.log");
    my $bounced = () = $log =~ /status=bounced/g;
    my ($why) = $log =~ /status=deferred \((?!deferred transport)(.{0,160})/;
    my $row = { label => $label, secs => $secs, rate => ($done ? $N / $secs : 0), tokens => grants() - $g0,
        sessions => logins() - $l0, delivered => scalar(keys %$d), queued => $queued, bounced => $bounced,
        dups => $dups, complete => $done };
    printf "%-40s %7.2f s %6.1f msg/s  token requests %d  upstream sessions %d  delivered %d  still queued %d  bounced %d  duplicated %d%s\n",
        @$row{qw(label secs rate tokens sessions delivered queued bounced dups)}, $done ? '' : '  (not all delivered in time)';
    print "    a deferral: $why\n" if $why;
    if (!$done) {
        my ($reason) = `postqueue -c $pf -p` =~ /^\s+\((.{0,200})/m;
        print "    still queued because: ", $reason // '?', "\n";
    }
    system('scripts/rig/host-postfix.sh', 'stop', $pf);
    return $row;
}

# ---- oxnotify-relay ----
authorize('bench', $alice);
my $port = free_port();
my $pw = unpack('H*', join('', map { chr(int(rand(256))) } 1 .. 16));
{
    open(my $fh, '>', "$dir/relay.conf") or die $!;
    print $fh "listen = 127.0.0.1:$port\ndefault-target = bench\nclient-password-sha256 = ",
        Digest::SHA::sha256_hex($pw), "\n";
    close($fh);
}
start_bg("$dir/relay.log", $relay_bin, '--config', "$dir/relay.conf");
wait_port($port);
print "N = $N messages, Postfix 3.7 -> local relay -> Dovecot (XOAUTH2, introspection) on this machine\n";
run_case('oxnotify-relay, valid token', $port, 'postfix', $pw);
{
    my $f = "$ENV{OXNOTIFY_STATE_DIR}/oauth2/bench.json";
    my $s = state_of('bench');
    $s->{access_token_expires_at} = time() - 10;
    open(my $fh, '>', $f) or die $!;
    print $fh $JSON->encode($s);
    close($fh);
}
run_case('oxnotify-relay, expired token', $port, 'postfix', $pw);

# ---- email-oauth2-proxy ----
my $venv = $ENV{EMAILPROXY_VENV} // 'scripts/bench/emailproxy-venv';
if (!-x "$venv/bin/emailproxy") {
    system("python3 -m venv $venv && $venv/bin/pip install -q emailproxy") == 0 or die "cannot install emailproxy\n";
}
my $version = `$venv/bin/pip show emailproxy 2>/dev/null` =~ /^Version: (\S+)/m ? $1 : '?';
my $ep_pw = 'bench-proxy-password';
for my $case (['valid token', 1], ['expired token', 0]) {
    my ($label, $with_access) = @$case;
    my $rt = authorize('bench-ep-' . ($with_access ? 'v' : 'e'), $alice);
    my $at;
    if ($with_access) {
        # one refresh by hand (the rig's driver) for a valid access token and the rotated refresh token
        open(my $d, '-|', 'python3', 'scripts/rig/oauth_driver.py', $r->{issuer}, 'refresh', $rt, 'rig-post', 'rig-secret') or die $!;
        my $set = $JSON->decode(do { local $/; <$d> });
        close($d);
        ($rt, $at) = @$set{qw(refresh_token access_token)};
    }
    my $ep_port = free_port();
    my $conf = "$dir/emailproxy-$ep_port.config";
    my $pid = IPC::Open2::open2(my $out, my $in, "$venv/bin/python3", 'scripts/bench/emailproxy-seed.py', $conf,
        $ep_port, $r->{smtp_starttls_port}, $alice, $ep_pw, $r->{issuer}, 'rig-post', 'rig-secret');
    print $in join("\n", $rt, $at // ()), "\n";
    close($in);
    waitpid($pid, 0);
    $? == 0 or die "emailproxy-seed.py failed\n";
    my $ep = start_bg("$dir/emailproxy.log", "$venv/bin/emailproxy", '--no-gui', '--config-file', $conf);
    wait_port($ep_port);
    run_case("email-oauth2-proxy $version, $label", $ep_port, $alice, $ep_pw);
    kill('TERM', $ep);
    waitpid($ep, 0);
}
