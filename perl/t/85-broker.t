# The token broker with real MTAs: exim4 (a smarthost client whose plaintext authenticator
# reads oxnotify-broker's socket) and msmtp (passwordeval "oxnotify token NAME") relay through
# the rig's Dovecot submission (STARTTLS, XOAUTH2 checked by introspection). Peer credentials
# decide who gets a token; a burst of deliveries costs one token request; a revoked grant is an
# error line at once and exim keeps the message queued.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;
use Cpanel::JSON::XS ();
use Cwd ();
use IO::Socket::UNIX ();
use MIME::Base64 ();
use POSIX ();
use Time::HiRes ();

need_rig();
my $exim = $ENV{OXNOTIFY_EXIM} // 'scripts/rig/exim/usr/sbin/exim4';
need(-x $exim, "needs exim4 at $exim (scripts/install-deps.sh unpacks it)");
need(-x '/usr/bin/msmtp', 'needs msmtp (scripts/install-deps.sh)');
need(scalar(getpwnam('Debian-exim')), 'needs the Debian-exim user (scripts/install-deps.sh)');
need($> == 0, 'needs root (peer credentials of other users, exim)');
my $broker_bin = 'target/debug/oxnotify-broker';
need(-x $broker_bin && -x 'target/debug/oxnotify-token', 'needs cargo build -p notify-broker');

my $dir = setup_dirs();
chmod(0755, $dir);    # exim's delivery process (Debian-exim) reaches its spool and the socket below
my $r = rig();
my $user = 'perl-broker@example.test';
our $sock = "$dir/broker.sock";


# the cached access token expired: the next request must refresh
sub drop_cached_token {
    my ($name) = @_;
    my $f = "$ENV{OXNOTIFY_STATE_DIR}/oauth2/$name.json";
    my $s = state_of($name);
    delete @$s{qw(access_token access_token_expires_at)};
    open(my $fh, '>', $f) or die "$f: $!";
    print $fh Cpanel::JSON::XS->new->encode($s);
    close($fh);
}

# one token set issued by the rig's provider = one `grant.success` line in its log
sub grants {
    open(my $fh, '<', "$r->{dir}/logs/oidc-provider.log") or die "oidc log: $!";
    return scalar grep { /^grant\.success refresh_token rig-post/ } <$fh>;
}

sub ask {
    my ($line) = @_;
    my $c = IO::Socket::UNIX->new(Peer => $sock) or die "connect $sock: $!";
    print $c $line;
    shutdown($c, 1);
    local $/;
    return scalar <$c>;
}

sub slurp { open(my $fh, '<', $_[0]) or return ''; local $/; return scalar <$fh> }

authorize('relay', $user, 'broker-allow-group' => ['Debian-exim']);
is_deeply(OxNotify::Core::get_target({ name => 'relay' })->{'broker-allow-group'}, ['Debian-exim'],
    'broker-allow-group is a target key');

# ---- the broker, standalone ----
my $blog = "$dir/broker.log";
my $bpid = fork // die;
if (!$bpid) {
    open(STDERR, '>', $blog) or die;
    open(STDOUT, '>', '/dev/null') or die;
    exec($broker_bin, '--socket', $sock, '--deadline', '20') or die "exec: $!";
}
END { kill('TERM', $bpid) if $bpid }
for (1 .. 100) { last if -S $sock; Time::HiRes::sleep(0.05) }
ok(-S $sock, 'broker listens');

my $answer = ask("SMTP $user\n");
like($answer, qr/^user=\Q$user\E\x01auth=Bearer [^\x01\s]{10,}\x01\x01\z/, 'SMTP: the raw XOAUTH2 string');
my ($token) = $answer =~ /Bearer ([^\x01]+)/;
is(ask("TOKEN $user"), $token, 'TOKEN (no newline, as exim readsocket sends): the bare token');
like(ask("TOKEN nobody\@example.test\n"), qr/^ERR not-found no enabled OAuth2 target has nobody\@example\.test/,
    'unknown address: an error line');
like(ask("HELO\n"), qr/^ERR invalid-input /, 'garbage: an error line');

# another user (nobody) is refused and logged; exim's group is allowed
my $as = sub {
    my ($uid, $gid) = @_;
    # SIGPIPE ignored: the broker refuses a user no target allows at connect, maybe before the
    # request is written
    my $out = `setpriv --reuid=$uid --regid=$gid --clear-groups $^X -MIO::Socket::UNIX -e '
        \$SIG{PIPE} = "IGNORE";
        my \$c = IO::Socket::UNIX->new(Peer => shift) or die "connect: \$!"; print \$c "SMTP \$ARGV[0]\\n";
        shutdown(\$c, 1); local \$/; print scalar <\$c>' $sock $user`;
    return $out;
};
like($as->(65534, 65534), qr/^ERR denied this user may not fetch tokens from this broker/, "another user's request is refused");
my ($eu, $eg) = (getpwnam('Debian-exim'))[2, 3];
like($as->($eu, $eg), qr/^user=\Q$user\E\x01auth=Bearer /, "exim's user (group Debian-exim) gets the token");
like(slurp($blog), qr/uid 65534 \(nobody\) gid 65534 pid \d+: REFUSED at connect: not in broker-allow-user\/broker-allow-group of any target/,
    'the refusal is logged with the peer');

# other users: oxnotify token --broker ADDRESS asks the broker (the target must allow them)
my $via = sub {
    my ($uid, $gid, @args) = @_;
    my $out = `setpriv --reuid=$uid --regid=$gid --clear-groups $^X bin/oxnotify token --broker $user --socket $sock @args 2>&1`;
    return ($? >> 8, $out);
};
my ($vrc, $vout) = $via->($eu, $eg);
is($vrc, 0, 'oxnotify token --broker as Debian-exim: exit 0') or diag $vout;
is($vout, "$token\n", 'and the token');
($vrc, $vout) = $via->($eu, $eg, '--format', 'xoauth2-b64');
is(MIME::Base64::decode_base64($vout), "user=$user\x01auth=Bearer $token\x01\x01", '--broker with --format xoauth2-b64');
($vrc, $vout) = $via->(65534, 65534);
is($vrc, 77, 'oxnotify token --broker as nobody: exit 77');
like($vout, qr/may not fetch tokens from this broker.* \[denied\]$/, 'and says why') or diag $vout;
($vrc, $vout) = (sub { my $o = `env -u OXNOTIFY_CONFIG_DIR -u OXNOTIFY_STATE_DIR setpriv --reuid=65534 --regid=65534 --clear-groups $^X bin/oxnotify token relay 2>&1`; ($? >> 8, $o) })->();
is($vrc, 77, 'oxnotify token NAME as another user: exit 77');
like($vout, qr/only root may read the OAuth2 state.*--broker ADDRESS/, 'pointing to --broker');

# ---- oxnotify token ----
my $t = `$^X bin/oxnotify token relay`;
is($? >> 8, 0, 'oxnotify token: exit 0');
is($t, "$token\n", 'oxnotify token: the cached token');
my $b64 = `$^X bin/oxnotify token relay --format xoauth2-b64`;
is(MIME::Base64::decode_base64($b64), "user=$user\x01auth=Bearer $token\x01\x01", '--format xoauth2-b64');
OxNotify::Core::create_target({ name => 'pw', server => 'localhost', port => $r->{smtp_starttls_port},
    mode => 'starttls', 'auth-method' => 'plain', username => 'plain@example.test', password => 'plain-secret-pw',
    'from-address' => 'plain@example.test', mailto => ['ops@example.test'] });
my $err = `$^X bin/oxnotify token pw 2>&1`;
is($? >> 8, 2, 'a password target: exit 2');
like($err, qr/target 'pw' uses auth-method plain, not OAuth2/, 'and says why');
$err = `$^X bin/oxnotify token nosuch 2>&1`;
is($? >> 8, 4, 'no such target: exit 4');

# ---- exim as smarthost client ----
my $edir = "$dir/exim";
mkdir($edir) or die;
system('chown', 'Debian-exim:Debian-exim', $edir) == 0 or die;
# exim's configuration relaying to $port (the same spool for all)
sub exim_conf {
    my ($file, $port) = @_;
    open(my $ec, '>', $file) or die;
    print $ec <<"CONF";
primary_hostname = exim.rig.localhost
qualify_domain = example.test
spool_directory = $edir
log_file_path = $edir/%slog
keep_environment =
exim_path = ${\ Cwd::abs_path($exim)}
tls_advertise_hosts =

begin routers
smarthost:
  driver = manualroute
  route_list = * 127.0.0.1 byname
  transport = smarthost_smtp
  self = send
  no_more

begin transports
smarthost_smtp:
  driver = smtp
  port = $port
  hosts_require_tls = *
  # as Debian's remote_smtp_smarthost: AUTH when offered, no hosts_require_auth
  hosts_try_auth = *
  tls_verify_certificates = $r->{ca_file}
  tls_verify_hosts = *
  allow_localhost

begin retry
* * F,1h,10m

begin authenticators
xoauth2:
  driver = plaintext
  public_name = XOAUTH2
  client_ignore_invalid_base64 = true
  client_send = \${if match{\${readsocket{$sock}{SMTP $user}{30s}}}{\\N^(user=.*)\$\\N}{\$1}{\${lookup{x}lsearch{/dev/null/oxnotify-broker-error}}}}
CONF
    close($ec);
}
my $econf = "$dir/exim.conf";
exim_conf($econf, $r->{smtp_starttls_port});

sub exim_send {
    my ($subject, $conf) = @_;
    $conf //= $econf;
    # stderr: exim says it drops root for a -C configuration (it needs none as a client)
    open(my $p, '|-', "$exim -C $conf -odf -f $user ops\@example.test 2>/dev/null") or die "exim: $!";
    print $p "From: Broker test <$user>\nTo: ops\@example.test\nSubject: $subject\n\nrelayed by exim\n";
    close($p);
    return $? >> 8;
}
sub queued { my $n = `$exim -C $econf -bpc 2>/dev/null`; chomp $n; return $n }

my $subject = uniq('exim-broker');
is(exim_send($subject), 0, 'exim -odf: exit 0');
my $mail = find_mail($subject);
ok($mail, 'the message exim relayed arrived') or diag slurp("$edir/mainlog");
like($mail // '', qr/^From: Broker test <\Q$user\E>/m, 'from the right sender');
like(slurp("$edir/mainlog"), qr/A=xoauth2:\Q$user\E|\bC="250/, 'exim authenticated') or diag slurp("$edir/mainlog");
is(queued(), 0, 'nothing left in the queue');

# ---- 20 deliveries within the token's lifetime: one token request ----
drop_cached_token('relay');
my $before = grants();
my $burst = uniq('exim-burst');
my @kids;
for my $i (1 .. 20) {
    my $pid = fork // die;
    if (!$pid) { POSIX::_exit(exim_send("$burst #$i")) }
    push @kids, $pid;
}
my @rc = map { waitpid($_, 0); $? >> 8 } @kids;
is_deeply(\@rc, [(0) x 20], '20 parallel exim deliveries: all exit 0');
for (1 .. 50) { last if mail_count($burst) >= 20; Time::HiRes::sleep(0.1) }
is(mail_count($burst), 20, 'all 20 arrived') or diag join('', grep { /==|\*\*/ } split /^/m, slurp("$edir/mainlog"));
is(grants() - $before, 1, '20 MTA deliveries cost 1 token request');

# ---- msmtp: passwordeval "oxnotify token NAME" ----
my $mconf = "$dir/msmtprc";
open(my $mc, '>', $mconf) or die;
print $mc <<"CONF";
account relay
host 127.0.0.1
port $r->{smtp_starttls_port}
tls on
tls_starttls on
tls_trust_file $r->{ca_file}
auth xoauth2
user $user
from $user
passwordeval "$^X bin/oxnotify token relay"
logfile $dir/msmtp.log
account default : relay
CONF
close($mc);
chmod(0600, $mconf);
my $msub = uniq('msmtp-broker');
open(my $mp, '|-', 'msmtp', '-C', $mconf, 'ops@example.test') or die "msmtp: $!";
print $mp "From: $user\nTo: ops\@example.test\nSubject: $msub\n\nsent by msmtp\n";
close($mp);
is($? >> 8, 0, 'msmtp: exit 0') or diag slurp("$dir/msmtp.log");
ok(find_mail($msub), 'the message msmtp sent arrived');
is(grants() - $before, 1, 'msmtp used the cached token too');

# ---- a user no target allows holds 200 connections: exim and root still get the token at once ----
{
    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    my $parent = $$;
    my $idle = fork // die;
    if (!$idle) {
        close($ready_r);
        $) = '65534 65534';
        POSIX::setgid(65534) or POSIX::_exit(2);
        POSIX::setuid(65534) or POSIX::_exit(2);
        $SIG{PIPE} = 'IGNORE';
        require IO::Select;
        my @c = map { IO::Socket::UNIX->new(Peer => $sock) // POSIX::_exit(3) } 1 .. 200;
        syswrite($ready_w, 'r');
        close($ready_w);
        # never a byte sent; whatever the broker closes is opened again
        while (getppid() == $parent) {
            my @gone = IO::Select->new(@c)->can_read(1);
            Time::HiRes::sleep(0.1);
            my %gone = map { (fileno($_) => 1) } @gone;
            @c = grep { !$gone{fileno($_)} } @c;
            close($_) for @gone;
            while (@c < 200) { push(@c, IO::Socket::UNIX->new(Peer => $sock) // last) }
        }
        POSIX::_exit(0);
    }
    close($ready_w);
    my $got = '';
    sysread($ready_r, $got, 1);
    is($got, 'r', "nobody holds 200 connections to the broker") or die 'the idle client failed';
    my $logged = length(slurp($blog));
    my $cached = state_of('relay')->{access_token};
    my $t0 = Time::HiRes::time();
    is(ask("TOKEN $user\n"), $cached, 'root gets the token');
    my $took = Time::HiRes::time() - $t0;
    ok($took < 1, 'within 1 s') or diag "took $took s";
    note(sprintf('root served after %.1f ms', 1000 * $took));
    my $isub = uniq('exim-while-idle');
    my $q = queued();
    $t0 = Time::HiRes::time();
    is(exim_send($isub), 0, 'exim -odf while nobody holds connections: exit 0');
    note(sprintf('exim delivery (SMTP, STARTTLS, the broker, AUTH) took %.0f ms', 1000 * (Time::HiRes::time() - $t0)));
    is(queued(), $q, 'exim did not defer the message');
    for (1 .. 50) { last if mail_count($isub) >= 1; Time::HiRes::sleep(0.1) }
    is(mail_count($isub), 1, 'it arrived');
    like(substr(slurp($blog), $logged), qr/uid $eu \(Debian-exim\) gid \d+ pid \d+: SMTP \Q$user\E: served target 'relay'/,
        "the broker served exim's user");
    kill('KILL', $idle);
    waitpid($idle, 0);
}

# ---- socket activation (what oxnotify-broker.socket does): systemd-socket-activate passes fd 3 ----
SKIP: {
    skip 'no systemd-socket-activate', 1 if !-x '/usr/bin/systemd-socket-activate';
    my $sa = "$dir/activated.sock";
    my $pid = fork // die;
    if (!$pid) {
        open(STDERR, '>>', $blog) or die;
        exec('/usr/bin/systemd-socket-activate', '-l', $sa, '-E', 'OXNOTIFY_CONFIG_DIR', '-E', 'OXNOTIFY_STATE_DIR', $broker_bin) or die "exec: $!";
    }
    for (1 .. 100) { last if -S $sa; Time::HiRes::sleep(0.05) }
    local $sock = $sa;
    is(ask("TOKEN $user\n"), state_of('relay')->{access_token}, 'socket-activated broker answers');
    kill('TERM', $pid);
    waitpid($pid, 0);
}

# ---- a revoked grant: an error line at once, exim defers, nothing lost ----
my $rt = state_of('relay')->{refresh_token};
system("python3 scripts/rig/oauth_driver.py $r->{issuer} revoke $rt rig-post rig-secret >/dev/null") == 0
    or die 'revoke failed';
drop_cached_token('relay');
my $t0 = Time::HiRes::time();
like(ask("SMTP $user\n"), qr/^ERR needs-reauthorization .*relay/, 'revoked: the broker answers needs-reauthorization');
note(sprintf('error line after %.0f ms', 1000 * (Time::HiRes::time() - $t0)));
$err = `$^X bin/oxnotify token relay 2>&1`;
is($? >> 8, 5, 'oxnotify token: exit 5 (needs re-authorization)') or diag $err;
# through the rig's Postfix front end where there is one: it refuses an unauthenticated relay
# with a 5xx, so a client that went on without AUTH would bounce the message; Dovecot's answer
# to that varies (530, or 421 after pipelining)
my $dconf = $econf;
if ($r->{pf_starttls_port}) {
    $dconf = "$dir/exim-postfix.conf";
    exim_conf($dconf, $r->{pf_starttls_port});
}
my $dsub = uniq('exim-deferred');
my $queued = queued();
exim_send($dsub, $dconf);
is(queued(), $queued + 1, 'exim deferred the message: it stays queued');
like(slurp("$edir/mainlog"), qr/== ops\@example\.test .*(?:defer|authentication)/i, 'exim logged a deferral')
    or diag slurp("$edir/mainlog");
is(mail_count($dsub), 0, 'and did not deliver it');
unlike(slurp("$edir/mainlog"), qr/^\S+ \S+ \S+ \*\* /m, 'nothing bounced (no "**" line): an error answer defers even with hosts_try_auth');

# ---- no token in any log ----
for my $f ($blog, "$edir/mainlog", "$dir/msmtp.log") {
    unlike(slurp($f), qr/\Q$token\E/, "no token in $f");
}
done_testing();
