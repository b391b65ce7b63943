# oxnotify-relay with real parts: a second Postfix instance stands for the host's MTA
# (scripts/rig/host-postfix.sh: relayhost = [127.0.0.1]:PORT, SASL PLAIN to the relay), the
# relay forwards through targets with XOAUTH2 to the rig's Dovecot submission (and, for a
# recipient the server refuses, to the rig's Postfix). Checked: the envelope sender picks the
# target; 100 messages queued at once arrive exactly once over few upstream sessions without a
# token request; an outage of the upstream server keeps them in Postfix's queue and all arrive
# once it is back; an expired token costs one refresh and keeps the grant; a 550 recipient
# bounces with the upstream reason; Proxmox VE's own sendmail call (PVE::Tools::sendmail, the
# real code) goes out; no secret in the relay's log, Postfix's log or a bounce.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use PVEStack ();
use OxNotify::Core;
use Cpanel::JSON::XS ();
use Digest::SHA ();
use IO::Socket::INET ();
use MIME::Base64 ();
use POSIX ();
use Time::HiRes ();

need_rig();
need($> == 0, 'needs root (a Postfix instance)');
need(-x '/usr/sbin/postfix', 'needs postfix (scripts/install-deps.sh)');
my $relay_bin = 'target/debug/oxnotify-relay';
need(-x $relay_bin, 'needs cargo build -p notify-relay');

my $dir = setup_dirs();
chmod(0755, $dir);
my $r = rig();
my $alice = 'alice-relay@example.test';    # target relay-main: the rig's Dovecot
my $bob = 'bob-relay@example.test';        # target relay-pf: the rig's Postfix (refuses one mailbox)


sub slurp { open(my $fh, '<', $_[0]) or return ''; local $/; return scalar <$fh> }

# token sets the rig's provider issued on a refresh grant
sub grants { return scalar(() = slurp("$r->{dir}/logs/oidc-provider.log") =~ /^grant\.success refresh_token rig-post/mg) }

# upstream sessions: Dovecot logs one login per AUTH
sub logins {
    my ($user) = @_;
    return scalar(() = slurp("$r->{dir}/logs/dovecot.log") =~ /submission-login: (?:Info: )?Login: user=<\Q$user\E>/g);
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die $!;
    return $s->sockport;
}

my $rt_main = authorize('relay-main', $alice);
my $rt_pf = authorize('relay-pf', $bob, port => $r->{pf_starttls_port});
ok($rt_main && $rt_pf, 'two targets authorized at the rig');

# ---- the host's Postfix, pointed at the relay by `oxnotify relay setup-postfix` ----
my $port = free_port();
my $conf = "$dir/relay.conf";
$ENV{OXNOTIFY_RELAY_CONF} = $conf;
my $pf = "$dir/pf";
sub pf { system('scripts/rig/host-postfix.sh', @_) == 0 or die "host-postfix.sh @_ failed\n" }
{
    local $ENV{HOLD} = 1;
    local $ENV{SETUP_BY_CLI} = 1;
    pf('start', $pf, $port, 'postfix');
}
my $relay_log = "$dir/relay.log";
my ($relay_pid, @dovecot_restart);
$SIG{TERM} = $SIG{INT} = sub { exit 1 };    # run END: nothing of this test stays behind
END {
    system("cp -r $dir/pf/postfix.log $relay_log $ENV{OXNOTIFY_RELAY_TEST_KEEP}/") if $ENV{OXNOTIFY_RELAY_TEST_KEEP};
    system('scripts/rig/host-postfix.sh', 'stop', $pf) if $pf;
    kill('TERM', $relay_pid) if $relay_pid;
    system(@dovecot_restart) if @dovecot_restart;    # never leave the rig's Dovecot down
}
my $setup = `$^X bin/oxnotify relay setup-postfix --postfix-config $pf --port $port --default-target relay-main --rewrite-from relay-main 2>&1`;
is($?, 0, 'oxnotify relay setup-postfix') or diag $setup;
is(`postconf -c $pf -h relayhost`, "[127.0.0.1]:$port\n", '... sets relayhost');
my ($password) = slurp("$pf/sasl_passwd_oxnotify_relay") =~ /postfix:(\S+)/;
ok($password && (stat($conf))[2] % 512 == 0600 && (stat("$pf/sasl_passwd_oxnotify_relay.db"))[2] % 512 == 0600,
    '... with a random client credential in root-only files');
unlike(slurp($conf), qr/\Q$password\E/, 'relay.conf keeps only the credential\'s hash');

# ---- the relay ----
sub start_relay {
    $relay_pid = fork() // die "fork: $!";
    if (!$relay_pid) {
        open(STDERR, '>>', $relay_log) or POSIX::_exit(1);
        open(STDOUT, '>&', \*STDERR);
        exec($relay_bin, '--config', $conf) or POSIX::_exit(1);
    }
    for (1 .. 100) {
        return 1 if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        Time::HiRes::sleep(0.05);
    }
    die "relay did not start: " . slurp($relay_log);
}
start_relay();
$ENV{MAIL_CONFIG} = $pf;

sub sendmail_t {
    my ($from_hdr, $to, $subject, @args) = @_;
    open(my $sm, '|-', '/usr/sbin/sendmail', @args, '-t') or die "sendmail: $!";
    print $sm "From: $from_hdr\nTo: $to\nSubject: $subject\n\nbody of $subject\n";
    close($sm) or die "sendmail failed: $?";
}

sub queued {
    my $out = `postqueue -c $pf -j 2>/dev/null`;
    return scalar(() = $out =~ /^\{/mg);
}

sub wait_until {
    my ($secs, $cond) = @_;
    my $until = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $until) { return 1 if $cond->(); Time::HiRes::sleep(0.2) }
    return $cond->();
}

# the delivered messages (sink Maildir) whose Subject contains $needle: count per subject
sub delivered {
    my ($needle) = @_;
    my %n;
    for my $f (glob("$r->{maildir}/new/*"), glob("$r->{maildir}/cur/*")) {
        my $t = slurp($f);
        $n{$1}++ if $t =~ /^Subject: (.*\Q$needle\E.*?)\r?$/m;
    }
    return \%n;
}

# ---- 1. the sender picks the target; sendmail -t as cron and admins use it ----
my $tag = uniq('relay');
sendmail_t("Alice <$alice>", 'ops@example.test', "$tag alice", '-f', $alice);
sendmail_t("cron daemon <root>", 'ops@example.test', "$tag cron");
pf('release', $pf);
ok(wait_until(30, sub { my $d = delivered($tag); $d->{"$tag alice"} && $d->{"$tag cron"} }),
    'sendmail -t: both messages arrived through the relay') or diag slurp($relay_log), slurp("$pf/postfix.log");
my $m = find_mail("$tag alice");
like($m, qr/^X-MailFrom: \Q$alice\E\r?$/m, 'alice: the envelope sender upstream is her target\'s address');
like($m, qr/^From: Alice <\Q$alice\E>/m, 'alice: her own From is kept (her target does not rewrite)')
    or diag $m;
# root@pve1.host.test is nobody's address: the default target, whose From is rewritten
$m = find_mail("$tag cron");
like($m, qr/^From: \Q$alice\E\r?$/m, 'cron mail: From rewritten to the default target\'s mailbox');
like($m, qr/^Reply-To: cron daemon <root\@pve1\.host\.test>/m, 'cron mail: the original From is the Reply-To');
like($m, qr/^X-MailFrom: \Q$alice\E\r?$/m, 'cron mail: the upstream envelope sender is the mailbox');
like(slurp($relay_log), qr/via target 'relay-main'/, 'the relay logs the target it used');

# ---- 2. 100 messages queued at once: exactly once, few sessions, no token request ----
pf('hold', $pf);
my $burst = uniq('burst');
for my $i (1 .. 100) {
    sendmail_t("root", 'ops@example.test', "$burst #$i");
}
ok(wait_until(20, sub { queued() == 100 }), '100 messages wait in the host\'s queue') or diag queued();
my ($g0, $l0) = (grants(), logins($alice));
my $t0 = Time::HiRes::time();
pf('release', $pf);
ok(wait_until(60, sub { keys(%{ delivered($burst) }) == 100 }), 'all 100 arrived')
    or diag scalar(keys %{ delivered($burst) });
my $secs = Time::HiRes::time() - $t0;
Time::HiRes::sleep(1);
my $d = delivered($burst);
is(scalar(grep { $_ != 1 } values %$d), 0, 'each exactly once (no duplicate)');
my $sessions = logins($alice) - $l0;
cmp_ok($sessions, '<=', 3, "over at most 3 upstream sessions ($sessions)");
cmp_ok(grants() - $g0, '<=', 1, 'at most one token request');
diag sprintf('100 messages via Postfix -> relay -> Dovecot: %.2f s (%.1f msg/s), %d upstream session(s)',
    $secs, 100 / $secs, $sessions);
ok(wait_until(10, sub { queued() == 0 }), 'the host\'s queue is empty');

# ---- 3. upstream down for a while: Postfix keeps them, all arrive once it is back ----
# the relay keeps an idle upstream session open for 3 s: let it end, or mail would still flow
# through it (Dovecot lets a session outlive its master)
sleep(4);
my $dovecot_pid = slurp("$r->{dir}/run/dovecot/master.pid") =~ s/\s+//gr;
# stdio away from the test's: a daemon holding it would keep prove waiting
@dovecot_restart = ('sh', '-c', "dovecot -c $r->{dir}/dovecot/dovecot.conf </dev/null >/dev/null 2>&1");
ok($dovecot_pid && kill('TERM', $dovecot_pid), 'the rig\'s Dovecot stopped');
wait_until(10, sub { !IO::Socket::INET->new(PeerAddr => "127.0.0.1:$r->{smtp_starttls_port}") });
my $outage = uniq('outage');
sendmail_t("root", 'ops@example.test', "$outage #$_") for 1 .. 10;
ok(wait_until(30, sub { queued() == 10 && `postqueue -c $pf -p` =~ /not relayed yet/ }),
    'upstream down: the relay answers 4xx and the 10 messages stay in Postfix\'s queue')
    or diag `postqueue -c $pf -p`;
system(@dovecot_restart) == 0 or die 'dovecot restart failed';
@dovecot_restart = ();
ok(wait_until(60, sub { keys(%{ delivered($outage) }) == 10 }), 'upstream back: all 10 arrived');
Time::HiRes::sleep(1);
is(scalar(grep { $_ != 1 } values %{ delivered($outage) }), 0, 'none twice');

# ---- 4. an expired access token in the middle of a queue run: one refresh, grant kept ----
pf('hold', $pf);
my $expired = uniq('expired');
sendmail_t("root", 'ops@example.test', "$expired #$_") for 1 .. 30;
wait_until(20, sub { queued() == 30 });
{
    my $f = "$ENV{OXNOTIFY_STATE_DIR}/oauth2/relay-main.json";
    my $s = state_of('relay-main');
    $s->{access_token_expires_at} = time() - 10;
    open(my $fh, '>', $f) or die "$f: $!";
    print $fh Cpanel::JSON::XS->new->encode($s);
    close($fh);
}
my $g1 = grants();
pf('release', $pf);
ok(wait_until(60, sub { keys(%{ delivered($expired) }) == 30 }), 'expired token: all 30 arrived');
is(grants() - $g1, 1, 'exactly one refresh for the whole run');
ok(state_of('relay-main')->{refresh_token}, 'the grant is kept (refresh token still stored)');

# ---- 5. a recipient the server refuses: a bounce with the upstream reason ----
my $bounce = uniq('bounce');
sendmail_t("Bob <$bob>", $r->{pf_rejected_rcpt}, "$bounce refused", '-f', $bob);
# the bounce goes to bob (null sender) through the relay's default target into the sink
my $dsn;
ok(wait_until(40, sub { $dsn = find_mail("Undelivered Mail Returned to Sender", qr/\Q$bounce\E/) }),
    'Postfix bounced the message') or diag slurp("$pf/postfix.log");
like($dsn // '', qr/no such mailbox/, 'the bounce carries the upstream server\'s reason');
like($dsn // '', qr/550/, '... and its 550');

# ---- 6. Proxmox VE's own path: PVE::Tools::sendmail (the real code) -> Postfix -> relay ----
SKIP: {
    my ($stack, $why) = PVEStack::stack_dir();
    skip $why, 2 if !$stack;
    my $pve = uniq('pve');
    local $ENV{PERL5LIB} = PVEStack::pve_perl5lib($stack);
    local $ENV{PATH} = "/usr/sbin:$ENV{PATH}";
    my $rc = system($^X, '-MPVE::Tools', '-e',
        'PVE::Tools::sendmail(["ops\@example.test"], $ARGV[0], "Backup of VM 100 failed\n", "<p>failed</p>", "root", "Proxmox VE")',
        "$pve vzdump");
    is($rc, 0, 'PVE::Tools::sendmail handed the message to sendmail');
    my $got = find_mail("$pve vzdump") // (wait_until(30, sub { find_mail("$pve vzdump") }) && find_mail("$pve vzdump"));
    like($got // '', qr/^From: \Q$alice\E\r?$/m, 'the Proxmox VE notification arrived, From rewritten to the mailbox')
        or diag slurp($relay_log);
}

# ---- 7. no open relaying, no secret anywhere ----
{
    my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die $!;
    my $greet = <$c>;
    print $c "EHLO x\r\n";
    while (defined(my $l = <$c>)) { last if $l =~ /^250 / }
    print $c "MAIL FROM:<$alice>\r\n";
    my $ans = <$c>;
    like($ans, qr/^5\d\d /, 'MAIL without AUTH is refused (no open relay)');
    print $c "AUTH PLAIN " . MIME::Base64::encode_base64("\0postfix\0wrong", '') . "\r\n";
    like(scalar(<$c>), qr/^535 /, 'a wrong password is refused');
    close($c);
}
my $all = join("\n", slurp($relay_log), slurp("$pf/postfix.log"), $dsn // '');
my $tokens = join('|', map { quotemeta } grep { $_ && length > 8 } (
    $rt_main, $rt_pf, $password, state_of('relay-main')->{access_token}, state_of('relay-pf')->{access_token},
    state_of('relay-main')->{refresh_token}));
unlike($all, qr/$tokens/, 'no token or password in the relay\'s log, Postfix\'s log or the bounce');

# ---- undo ----
my $undo = `$^X bin/oxnotify relay undo-postfix --postfix-config $pf 2>&1`;
is($?, 0, 'oxnotify relay undo-postfix') or diag $undo;
is(`postconf -c $pf -n relayhost smtp_sasl_password_maps smtp_sasl_auth_enable`, '', '... removes the relay lines');
ok(!-e "$pf/sasl_passwd_oxnotify_relay" && !-e "$pf/sasl_passwd_oxnotify_relay.db", '... and the password map');

done_testing();
