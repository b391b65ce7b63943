# The cluster store on a real pmxcfs: 3 nodes (scripts/realhost/pmxcfs.sh: pmxcfs built from the
# pve-cluster source, Debian's corosync, each node in its own network, mount and UTS namespace),
# config, secrets and OAuth2 state under /etc/pve as the README's "Cluster" section says, the
# rig's oidc-provider (rotating refresh tokens, reuse detection) as token endpoint and its
# Dovecot as SMTP server, reachable in every node on the rig's own 127.0.0.1 ports. Each node
# runs the checkout's bin/oxnotify and bin/oxnotify-daily in its namespaces (hostname pveN).
# Token requests are counted at the provider (its grant log), reuse at the provider too.
#
# Scenarios (each on a target of its own; what a scenario leaves behind is reported, then
# cleared, so the next one starts clean):
#   files      create + authorize on pve1: files where and as pmxcfs keeps them, every node
#              lists the target, no lock left
#   daily      3 daily jobs on 3 nodes at once: 1 rotation, 1 token request, the others
#              not-due, no lock left; the grant survives (a send after expiry refreshes)
#   burst      3 nodes x 10 senders after expiry: 30 delivered, 1 token request, no lock left
#   killed     a sender on pve1 holding the target's lock (its token endpoint hangs) is killed
#              with SIGKILL: pve2's send takes the lock over after pmxcfs's lock expiry (120 s,
#              by unlock requests) and sends; 1 token request; no lock left
#   daily-lock a daily job killed while it holds the daily lock: the next daily job on that
#              node does not exit 0 with "nothing done" for ever: it names the holder and the
#              lock's age, and fails once the lock is stale
#   quorum     pve3 without quorum (its corosync stopped): sends with the cached token; refresh
#              and status say "not writable (no quorum?)"; nothing changes; quorum back: the
#              next refresh rotates without re-authorization
#   partition  pve3 cut off the network while its refresh is in flight, pve1 refreshing too:
#              never a reuse of a rotated refresh token at the provider, the grant survives
#
# Slow (the lock expiry alone is 2 minutes; about 7 minutes in all on 2 cores): it runs with
# OXNOTIFY_PMXCFS_TEST=1 (scripts/test-all.sh sets it); OXNOTIFY_PMXCFS_ONLY="partition quorum"
# picks scenarios. With the store as changed for it (store/cluster.rs: empty lock directories,
# never renamed, pmxcfs's priv/lock with unlock requests; store/local.rs: one read(), ENOENT
# retried, a refused write recognised by its kind; state.rs: a save without quorum keeps
# trying, then goes to a node-local recovery file) all 7 scenarios pass.
#
# Recorded with the store before (3d48872, lock/cluster.rs), 3 runs, the same every time; 7 of 7
# scenarios failed:
#   every scenario: the lock taken to create/authorize is never released: releasing renames the
#     lock directory (holding its `owner` file) away, pmxcfs answers ENOTEMPTY
#     (create: "mkdir EEXIST x3, rename ENOTEMPTY x1"), `lock/config` (create) or
#     `lock/oauth2-<target>` (exchange) stays
#   files: modes/groups/listing on all nodes pass; only the leaked lock fails
#   daily: 1 of 3 jobs rotates (grant kept, later send works, no reuse), the other two wait 30 s
#     for the leaked `lock/config` and exit 2 ("the configuration is busy: ... held by node pveN
#     pid P, taken 30 s ago"; each: mkdir EEXIST x1185, rename ENOTEMPTY x1); 6 locks left
#     (config, daily-pve1..3, oauth2-<both targets>)
#   burst: 30 of 30 delivered with 1 token request (passes) but oauth2-pmx-burst is left
#   killed: pve2's send never takes the lock of the SIGKILLed holder over: after 224 s it queues
#     (exit 75, "held by another process (node pve1 pid P, taken 225 s ago)"); strace: mkdir
#     EEXIST x6741, rename ENOTEMPTY x1890 (the take-over renames the stale lock directory)
#   daily-lock: with its daily lock leaked, the daily job says only "another instance of the daily
#     refresh is running; nothing done" (no holder, no age) and exits 0, also after 125 s
#   quorum: all of it passes (cached token sends, "not writable (no quorum?)", status, nothing
#     changed, 0 token requests; quorum back: rotates, 1 token request) except the leaked lock
#   partition: pve3's refresh got the rotated token after the partition began; the state write
#     failed (EACCES, "kept in this process's memory only") and the process ended: the grant is
#     lost (pve2's next refresh: invalid_grant, needs-reauthorization); pve1 queued (75) on the
#     lock pve3 leaked
# Needs root, /dev/fuse, corosync and pmxcfs's build dependencies (scripts/install-deps.sh),
# the pve-cluster source (../shared/real-host/pve-cluster or PVE_CLUSTER_SRC) and the rig.
use strict;
use warnings;
use Test::More;
use Cpanel::JSON::XS ();
use Cwd ();
use POSIX ();
use Time::HiRes ();
use lib 'perl/t/lib';
use RigTest;

plan(skip_all => 'the cluster store on a real 3-node pmxcfs: set OXNOTIFY_PMXCFS_TEST=1 to run it (about 7 minutes)')
    if !$ENV{OXNOTIFY_PMXCFS_TEST};
need_rig();
my $ROOT = Cwd::abs_path('.');
my $H = "$ROOT/scripts/realhost/pmxcfs.sh";
my $src = $ENV{PVE_CLUSTER_SRC} // "$ROOT/../shared/real-host/pve-cluster";
need($> == 0, 'needs root (namespaces, FUSE)');
need(-c '/dev/fuse', 'needs /dev/fuse');
need(-x '/usr/sbin/corosync' && -x '/usr/bin/socat', 'needs corosync and socat (scripts/install-deps.sh)');
need(-d "$src/src/pmxcfs", "needs the pmxcfs source at $src");

require OxNotify::Core;
my $LIB = OxNotify::Core::library_path();
my $JSON = Cpanel::JSON::XS->new->utf8->canonical;
my $rig = rig();
my ($OIDC_PORT) = $rig->{issuer} =~ /:(\d+)$/;
my $OIDC_LOG = "$rig->{dir}/logs/oidc-provider.log";

# ---- the cluster: up, and down again whatever happens ----
$ENV{PMX_STATE} = "/tmp/oxpmx-t$$";
my $parent = $$;
my $up = 0;
sub teardown { system($H, 'teardown') if $up && $$ == $parent; $up = 0 }
END { my $rc = $?; teardown(); $? = $rc }
$SIG{INT} = $SIG{TERM} = sub { teardown(); exit 130 };
my $t0 = Time::HiRes::time();
$up = 1;   # a cluster that came up halfway is torn down too
system("$H up 3 >/dev/null") == 0 or BAIL_OUT('the 3-node pmxcfs cluster did not come up');
system($H, 'forward', $OIDC_PORT, $rig->{smtp_starttls_port}) == 0 or BAIL_OUT('forwarding the rig into the nodes');
note(sprintf('3-node pmxcfs up and quorate in %.1f s', Time::HiRes::time() - $t0));

my %ROOTS;
sub root_of { my ($i) = @_; $ROOTS{$i} //= do { my $r = `$H root $i`; chomp $r; $r } }
my $PVE = root_of(1) . '/etc/pve';                    # node 1's /etc/pve, from the host
my $STATE = "$PVE/priv/oxnotify-state";
mkdir($_) or die "$_: $!" for "$PVE/oxnotify", "$PVE/priv/oxnotify", $STATE;

my %NODE_ENV = (
    OXNOTIFY_LIB => $LIB, PERL5LIB => "$ROOT/perl/lib", SSL_CERT_FILE => $rig->{ca_file},
    OXNOTIFY_STATE_STORE => 'cluster', OXNOTIFY_CONFIG_DIR => '/etc/pve/oxnotify',
    OXNOTIFY_PRIVATE_CONFIG_DIR => '/etc/pve/priv/oxnotify', OXNOTIFY_STATE_DIR => '/etc/pve/priv/oxnotify-state',
    OXNOTIFY_LOCAL_STATE_DIR => '/var/lib/oxnotify', OXNOTIFY_HTTP_TIMEOUT => 20, OXNOTIFY_DELIVERY_DEADLINE => 30,
);

# A command in node $i (environment: the node's, plus %$env); returns a handle for finish().
my $seq = 0;
# Secrets (codes, client secrets) go in on stdin: '_stdin' in %$env.
sub start {
    my ($i, $env, @cmd) = @_;
    my %e = (%NODE_ENV, OXNOTIFY_NODE_NAME => "pve$i", %{ $env // {} });
    my $stdin = delete $e{_stdin};
    # _strace => FILE: the command under strace, failed directory and rename syscalls only
    my $st = delete $e{_strace};
    my $all = delete $e{_strace_all};
    unshift(@cmd, 'strace', '-f', '-qq', ($all ? () : '-Z'), '-tt', '-e', 'trace=rename,renameat,renameat2,mkdir,mkdirat,rmdir,unlinkat,utimensat,openat' . ($all ? ',write,nanosleep,clock_nanosleep' : ''),
        '-o', $st) if $st && -x '/usr/bin/strace';
    my $pidfile = "$ENV{PMX_STATE}/cmd." . ++$seq . '.pid';
    my $out = "$ENV{PMX_STATE}/cmd.$seq.out";
    my $in = "$ENV{PMX_STATE}/cmd.$seq.in";
    sysopen(my $ih, $in, POSIX::O_WRONLY() | POSIX::O_CREAT() | POSIX::O_EXCL(), 0600) or die "$in: $!";
    print $ih $stdin // '';
    close($ih) or die "$in: $!";
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        open(STDOUT, '>', $out) or POSIX::_exit(126);
        open(STDERR, '>&', \*STDOUT) or POSIX::_exit(126);
        open(STDIN, '<', $in) or POSIX::_exit(126);
        unlink($in);
        exec($H, 'x', $i, 'sh', '-c', 'echo $$ >"$0"; exec "$@"', $pidfile,
            'env', (map { "$_=$e{$_}" } sort keys %e), @cmd) or POSIX::_exit(127);
    }
    return { pid => $pid, pidfile => $pidfile, out => $out, node => $i, t0 => Time::HiRes::time() };
}
sub finish { # -> (exit code, output, seconds)
    my ($h) = @_;
    waitpid($h->{pid}, 0);
    my $rc = $? >> 8;
    open(my $fh, '<', $h->{out}) or die "$h->{out}: $!";
    my $out = do { local $/; <$fh> };
    return ($rc, $out, Time::HiRes::time() - $h->{t0});
}
sub run_in { my ($i, $env, @cmd) = @_; return finish(start($i, $env, @cmd)) }
sub cli { my ($i, $env, @args) = @_; return run_in($i, $env, 'perl', "$ROOT/bin/oxnotify", @args) }
sub daily { my ($i, $env) = @_; return start($i, $env, 'perl', "$ROOT/bin/oxnotify-daily", '--no-syslog') }
# "renameat2 ENOTEMPTY x3, rmdir EACCES x1" from a strace -Z output file
sub failed_syscalls {
    my ($file) = @_;
    open(my $fh, '<', $file) or return 'no strace output';
    my (%n, %first, %last);
    while (<$fh>) {
        next if !/^(?:\d+\s+)?([\d:.]+)\s+(\w+)\((.*)= -1 (E[A-Z]+)/;
        my ($t, $k) = ($1, "$2 $4");
        next if $k eq 'openat ENOENT' && $3 !~ m{/etc/pve};   # the library and module search
        $n{$k}++; $first{$k} //= $t; $last{$k} = $t;
    }
    return join(', ', map { "$_ x$n{$_} ($first{$_}..$last{$_})" } sort keys %n) || 'none';
}
sub inner_pid { my ($h) = @_; open(my $fh, '<', $h->{pidfile}) or return; my $p = <$fh>; chomp $p; return $p }

# ---- what the provider saw ----
sub oidc_lines { open(my $fh, '<', $OIDC_LOG) or die "$OIDC_LOG: $!"; return grep { /^grant\./ } <$fh> }
# token sets issued for the scenario's target (its account, the last field of the rig's line)
sub token_requests { my ($t) = @_; return scalar grep { /^grant\.success (?:refresh_token|authorization_code) rig-post \Q$t\E\@example\.test$/ } oidc_lines() }
sub grant_errors { return grep { /^grant\.error/ } oidc_lines() }

# ---- the files, read from the host as a node sees them: one read() into a large buffer ----
sub read_whole {
    my ($f) = @_;
    for (1 .. 20) {   # ENOENT can be transient on pmxcfs while the file is replaced
        if (sysopen(my $fh, $f, POSIX::O_RDONLY())) {
            my $n = sysread($fh, my $buf, 4 << 20);
            return $buf if defined $n;
        }
        select(undef, undef, undef, 0.05);
    }
    return undef;
}
sub state_of_t { my ($t) = @_; my $s = read_whole("$STATE/oauth2/$t.json"); return $s ? $JSON->decode($s) : undef }
sub expire_token { # as an hour without sends would: temp file + rename (pmxcfs has no other atomic write)
    my ($t) = @_;
    my $s = state_of_t($t) or die "no state for $t";
    $s->{access_token_expires_at} = 0;
    my $tmp = "$STATE/oauth2/.$t.test-tmp";
    open(my $fh, '>', $tmp) or die "$tmp: $!";
    print $fh $JSON->encode($s);
    close($fh) or die "$tmp: $!";
    rename($tmp, "$STATE/oauth2/$t.json") or die "rename: $!";
}
sub snapshot { # the target's shared files, by content
    my (@t) = @_;
    return join("\n", map { ($_ // '<missing>') } read_whole("$PVE/oxnotify/notifications.cfg"),
        read_whole("$PVE/priv/oxnotify/notifications.cfg"), map { read_whole("$STATE/oauth2/$_.json") } @t);
}
# lock directories left: oxnotify's own and any under pmxcfs's /etc/pve/priv/lock
sub locks_left {
    my @l;
    for my $d ("$STATE/lock", "$PVE/priv/lock") {
        opendir(my $dh, $d) or next;
        push @l, map { "$d/$_" =~ s{^\Q$PVE\E/}{}r } grep { !/^\.\.?$/ && !/^\.fuse_hidden/ } readdir($dh);
    }
    return @l;
}
# What a scenario left is reported (by the assertion) and then removed, so the next scenario
# measures its own behaviour. rmdir is allowed to any node on pmxcfs.
sub clear_locks {
    for my $l (locks_left()) {
        my $d = "$PVE/$l";
        unlink($d), next if -f $d;   # an owner file beside a lock
        opendir(my $dh, $d) or next;
        unlink("$d/$_") for grep { !/^\.\.?$/ } readdir($dh);
        rmdir($d) or diag("clearing $l: $!");
    }
}
sub wait_until { my ($secs, $cond) = @_; my $end = time() + $secs; while (time() < $end) { return 1 if $cond->(); select(undef, undef, undef, 0.2) } return $cond->() }
sub quorate { my ($i) = @_; my $m = read_whole(root_of($i) . '/etc/pve/.members') // ''; return $m =~ /"quorate": 1/ }

# ---- a target, created on pve1 and authorized (the browser part on the host) ----
sub make_target {
    my ($t) = @_;
    my $user = "$t\@example.test";
    my $p = ms_target_params($t, $user);
    my $in = 'my $p = decode_json(do { local $/; <STDIN> });';
    my ($rc, $out) = run_in(1, { _stdin => $JSON->encode($p), _strace => "$ENV{PMX_STATE}/strace-create-$t" }, 'perl', '-MOxNotify::Core', '-MCpanel::JSON::XS', '-e',
        "$in OxNotify::Core::create_target(\$p)");
    return "create: rc $rc: $out" if $rc;
    ($rc, $out) = run_in(1, {}, 'perl', '-MOxNotify::Core', '-MCpanel::JSON::XS', '-e',
        'print encode_json(OxNotify::Core::authorize_url({ name => $ARGV[0], "redirect-uri" => $ARGV[1] }))', $t, $RigTest::REDIRECT);
    return "authorize_url: rc $rc: $out" if $rc;
    my $a = eval { $JSON->decode($out) } or return "authorize_url: $out";
    my ($code) = login_and_consent($user, $a->{url});
    my $x = { 'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
        'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
        'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $a->{'pkce-verifier'},
        'token-url' => "$rig->{issuer}/token", target => $t };
    ($rc, $out) = run_in(1, { _stdin => $JSON->encode($x) }, 'perl', '-MOxNotify::Core', '-MCpanel::JSON::XS', '-e',
        "$in OxNotify::Core::exchange_smtp_oauth2_code(\$p)");
    return "exchange: rc $rc: $out" if $rc;
    return '';
}
sub setup_target { # a scenario's target; what creating it left is reported, then cleared
    my ($t) = @_;
    my $err = make_target($t);
    is($err, '', "$t: created and authorized on pve1") or return 0;
    my @left = locks_left();
    is_deeply(\@left, [], "$t: no lock left after create + authorize")
        or do { diag("failed syscalls of the create: " . failed_syscalls("$ENV{PMX_STATE}/strace-create-$t")); clear_locks() };
    return 1;
}

# OXNOTIFY_PMXCFS_ONLY="partition quorum" runs only those scenarios
sub scenario {
    my ($key, $title, $code) = @_;
    return if $ENV{OXNOTIFY_PMXCFS_ONLY} && !grep { $_ eq $key } split ' ', $ENV{OXNOTIFY_PMXCFS_ONLY};
    subtest($title, $code);
}

# ======================================================================= files
scenario 'files', 'files as pmxcfs keeps them; every node sees the target' => sub {
    setup_target('pmx-files') or return;
    my %want = ("$PVE/oxnotify/notifications.cfg" => '0640', "$PVE/priv/oxnotify/notifications.cfg" => '0600',
        "$STATE/oauth2/pmx-files.json" => '0600');
    for my $f (sort keys %want) {
        my @st = stat($f);
        ok(@st, "$f exists") or next;
        is(sprintf('%04o', $st[2] & 07777), $want{$f}, "mode of $f (pmxcfs's fixed mode)");
        is(getgrgid($st[5]) // $st[5], 'www-data', "group of $f");
    }
    opendir(my $dh, "$STATE/oauth2") or die $!;
    is_deeply([sort grep { !/^\.\.?$/ } readdir($dh)], ['pmx-files.json'], 'no temp file or .fuse_hidden left beside the state');
    for my $i (2, 3) {
        my ($rc, $out) = cli($i, {}, 'target', 'list');
        ok(!$rc && $out =~ /^pmx-files\s/m, "pve$i lists the target created on pve1") or diag $out;
    }
    clear_locks();
};

# ======================================================================= daily
scenario 'daily', '3 daily jobs on 3 nodes at once: 1 rotation, the grant survives' => sub {
    setup_target('pmx-daily') or return;
    my $rt = state_of_t('pmx-daily')->{refresh_token};
    my ($req, $gerr) = (token_requests("pmx-daily"), scalar grant_errors());
    my @h = map { daily($_, { _strace => "$ENV{PMX_STATE}/strace-daily-pve$_" }) } 1 .. 3;
    my @r = map { [finish($_)] } @h;
    my $all = join("\n", map { "pve$_: rc $r[$_ - 1][0]: $r[$_ - 1][1]failed syscalls: "
        . failed_syscalls("$ENV{PMX_STATE}/strace-daily-pve$_") } 1 .. 3);
    my @rotated = grep { $_->[1] =~ /target 'pmx-daily': rotated/ } @r;
    my @notdue = grep { $_->[1] =~ /target 'pmx-daily': not-due/ } @r;
    is(scalar(@rotated), 1, 'one daily job rotated') or diag $all;
    is(scalar(@notdue), 2, 'the other two: not-due') or diag $all;
    is_deeply([map { $_->[0] } @r], [0, 0, 0], 'all three exit 0') or diag $all;
    is(token_requests("pmx-daily") - $req, 1, 'one token request at the provider');
    my $s = state_of_t('pmx-daily');
    is($s->{rotations}, 1, 'the state says one rotation');
    isnt($s->{refresh_token}, $rt, 'the rotated refresh token is stored');
    is_deeply([locks_left()], [], 'no lock left') or do { diag("left: @{[locks_left()]}"); clear_locks() };
    expire_token('pmx-daily');
    my $subject = uniq('pmx-daily-after');
    my ($rc, $out) = cli(2, {}, 'send', 'pmx-daily', '--title', $subject);
    is($rc, 0, 'the grant survives: a send on pve2 after expiry refreshes and sends') or diag $out;
    ok(find_mail($subject), 'the mail arrived') if !$rc;
    is(scalar(grant_errors()) - $gerr, 0, 'no refresh token reused (the provider saw no invalid grant)');
    clear_locks();
};

# ======================================================================= burst
scenario 'burst', '3 nodes x 10 senders after expiry: 1 token request' => sub {
    setup_target('pmx-burst') or return;
    expire_token('pmx-burst');
    my $req = token_requests("pmx-burst");
    my $subject = uniq('pmx-burst');
    my $prog = '$| = 1; my ($t, $s) = @ARGV; my @k; for my $i (1 .. 10) { my $p = fork() // die; if (!$p) { '
        . 'my $r = eval { OxNotify::Core::send({ targets => [$t], title => "$s-$i" }) }; '
        . 'print $r && $r->[0]{ok} && !$r->[0]{queued} ? "RESULT sent\n" : "RESULT failed " . ($r ? $r->[0]{message} // "queued" : $@) . "\n"; '
        . 'POSIX::_exit(0) } push @k, $p } waitpid($_, 0) for @k;';
    my @h = map { start($_, {}, 'perl', '-MPOSIX', '-MOxNotify::Core', '-e', $prog, 'pmx-burst', "$subject-n$_") } 1 .. 3;
    my @lines = map { my ($rc, $out) = finish($_); grep { /^RESULT/ } split /\n/, $out } @h;
    my $sent = grep { /^RESULT sent$/ } @lines;
    is($sent, 30, '30 of 30 senders delivered') or diag join("\n", grep { !/sent$/ } @lines);
    is(token_requests("pmx-burst") - $req, 1, 'one token request for the whole cluster');
    is_deeply([locks_left()], [], 'no lock left') or do { diag("left: @{[locks_left()]}"); clear_locks() };
    clear_locks();
};

# ======================================================================= killed
scenario 'killed', 'a lock holder killed: the others take over after pmxcfs lock expiry' => sub {
    setup_target('pmx-kill') or return;
    expire_token('pmx-kill');
    # pve1's token endpoint hangs: its send takes the target's lock and waits for the answer
    system($H, 'port-mode', 1, $OIDC_PORT, 'hang') == 0 or die 'port-mode';
    my $h = start(1, { OXNOTIFY_HTTP_TIMEOUT => 600, OXNOTIFY_DELIVERY_DEADLINE => 600 }, 'perl', "$ROOT/bin/oxnotify",
        'send', 'pmx-kill', '--title', uniq('pmx-kill-holder'));
    my $held = wait_until(30, sub { grep { /pmx-kill/ } locks_left() });
    ok($held, 'pve1 holds the lock of the target') or diag("locks: @{[locks_left()]}");
    my $pid = inner_pid($h);
    kill('KILL', $pid) if $pid;
    my ($rc) = finish($h);
    system($H, 'port-mode', 1, $OIDC_PORT, 'normal') == 0 or die 'port-mode';
    ok(scalar(grep { /pmx-kill/ } locks_left()), 'the killed holder left its lock directory');
    my $req = token_requests("pmx-kill");
    my $subject = uniq('pmx-kill');
    # the send itself waits (not only the outbox after it): the take-over is what is tested
    my ($rc2, $out, $secs) = cli(2, { OXNOTIFY_DELIVERY_DEADLINE => 240, OXNOTIFY_LOCK_TIMEOUT => 240, OXNOTIFY_CALLER_WAIT => 240,
        _strace => "$ENV{PMX_STATE}/strace-kill" }, 'send', 'pmx-kill', '--title', $subject);
    is($rc2, 0, sprintf('pve2 took the lock over and sent (after %.0f s)', $secs))
        or diag("$out\nfailed syscalls: " . failed_syscalls("$ENV{PMX_STATE}/strace-kill"));
    cmp_ok($secs, '<', 200, 'within the lock expiry plus a margin');
    ok(find_mail($subject), 'the mail arrived') if !$rc2;
    is(token_requests("pmx-kill") - $req, $rc2 ? 0 : 1, 'one token request');
    is_deeply([locks_left()], [], 'no lock left') or do { diag("left: @{[locks_left()]}"); clear_locks() };
    clear_locks();
};

# ======================================================================= daily-lock
scenario 'daily-lock', 'a daily job that cannot get its lock says who holds it and fails when stale' => sub {
    setup_target('pmx-dlock') or return;
    system($H, 'port-mode', 3, $OIDC_PORT, 'hang') == 0 or die 'port-mode';
    my $h = daily(3, { OXNOTIFY_HTTP_TIMEOUT => 600, OXNOTIFY_REFRESH_WINDOW => 0 });
    my $held = wait_until(30, sub { grep { /daily/ } locks_left() });
    ok($held, 'the daily job on pve3 holds its daily lock') or diag("locks: @{[locks_left()]}");
    my $pid = inner_pid($h);
    kill('KILL', $pid) if $pid;
    finish($h);
    system($H, 'port-mode', 3, $OIDC_PORT, 'normal') == 0 or die 'port-mode';
    # the target lock may be left too: only the daily lock is this scenario's subject
    clear_locks_matching(qr/oauth2/);
    my ($rc, $out) = finish(daily(3, { OXNOTIFY_REFRESH_WINDOW => 0 }));
    like($out, qr/pve3/, 'while the lock is fresh the daily job names the holder node') or diag $out;
    # after pmxcfs's expiry (120 s) the lock is stale: the job must not report success
    sleep(125);
    ($rc, $out) = finish(daily(3, { OXNOTIFY_REFRESH_WINDOW => 0 }));
    ok($rc != 0 || $out =~ /target 'pmx-dlock': rotated/, "a stale daily lock: the job fails or takes it over, never 'nothing done' with exit 0")
        or diag "rc $rc: $out";
    clear_locks();
};
sub clear_locks_matching {
    my ($re) = @_;
    for my $l (grep { $_ =~ $re } locks_left()) {
        my $d = "$PVE/$l";
        unlink($d), next if -f $d;
        opendir(my $dh, $d) or next;
        unlink("$d/$_") for grep { !/^\.\.?$/ } readdir($dh);
        rmdir($d);
    }
}

# ======================================================================= quorum
scenario 'quorum', 'quorum lost: cached token still sends, refresh says not writable, quorum back: refresh works' => sub {
    setup_target('pmx-quorum') or return;
    system($H, 'stop-corosync', 3) == 0 or die 'stop-corosync';
    ok(wait_until(20, sub { !quorate(3) }), 'pve3 lost quorum');
    my $before = snapshot('pmx-quorum');
    my $req = token_requests("pmx-quorum");
    my $subject = uniq('pmx-noquorum');
    my ($rc, $out) = cli(3, {}, 'send', 'pmx-quorum', '--title', $subject);
    is($rc, 0, 'pve3 without quorum sends with the cached token') or diag $out;
    ok(find_mail($subject), 'the mail arrived') if !$rc;
    ($rc, $out) = cli(3, { OXNOTIFY_REFRESH_WINDOW => 0 }, 'refresh');
    isnt($rc, 0, 'refresh on pve3 fails');
    like($out, qr/not writable \(no quorum\?\)/, 'and says the cluster file system is not writable (no quorum?)') or diag $out;
    ($rc, $out) = cli(3, {}, '--output-format', 'json', 'status', 'pmx-quorum');
    like($out, qr/"store_writable"\s*:\s*(?:false|0)/, 'status: store not writable') or diag $out;
    is(token_requests("pmx-quorum") - $req, 0, 'no token request without quorum');
    is(snapshot('pmx-quorum'), $before, 'nothing stored changed');
    system($H, 'start-corosync', 3) == 0 or die 'start-corosync';
    ok(wait_until(30, sub { quorate(3) }), 'pve3 quorate again');
    sleep(2);   # quorate is not yet resynced (pmxcfs notes)
    ($rc, $out) = cli(3, { OXNOTIFY_REFRESH_WINDOW => 0 }, 'refresh');
    ok(!$rc && $out =~ /pmx-quorum: rotated/, 'quorum back: refresh on pve3 rotates without re-authorization') or diag "rc $rc: $out";
    is(token_requests("pmx-quorum") - $req, 1, 'one token request');
    is_deeply([locks_left()], [], 'no lock left') or do { diag("left: @{[locks_left()]}"); clear_locks() };
    clear_locks();
};

# ======================================================================= partition
scenario 'partition', 'partition while a refresh runs: no reuse, no lost grant' => sub {
    setup_target('pmx-part') or return;
    expire_token('pmx-part');
    my $gerr = scalar grant_errors();
    # pve3's token requests take 4 s: the partition comes while its refresh is in flight
    system($H, 'port-mode', 3, $OIDC_PORT, 'delay:4') == 0 or die 'port-mode';
    my $h3 = start(3, { OXNOTIFY_DELIVERY_DEADLINE => 60, _strace => "$ENV{PMX_STATE}/strace-part", _strace_all => $ENV{OXNOTIFY_PMXCFS_STRACE_ALL} }, 'perl', "$ROOT/bin/oxnotify",
        'send', 'pmx-part', '--title', uniq('pmx-part-3'));
    ok(wait_until(20, sub { grep { /pmx-part/ } locks_left() }), 'pve3 holds the lock, its token request in flight');
    system($H, 'link-down', 3) == 0 or die 'link-down';
    my $t_down = Time::HiRes::time();
    sleep(2);
    my $h1 = start(1, { OXNOTIFY_DELIVERY_DEADLINE => 60 }, 'perl', "$ROOT/bin/oxnotify", 'send', 'pmx-part', '--title', uniq('pmx-part-1'));
    sleep(15);
    system($H, 'link-up', 3) == 0 or die 'link-up';
    my $t_up = Time::HiRes::time();
    ok(wait_until(40, sub { quorate(3) }), 'pve3 quorate again after the partition');
    my $t_quorate = Time::HiRes::time();
    my ($rc3, $out3) = finish($h3);
    my ($rc1, $out1) = finish($h1);
    note("pve3 (partitioned): rc $rc3: $out3");
    note("pve3's failed syscalls: " . failed_syscalls("$ENV{PMX_STATE}/strace-part"));
    system('cp', "$ENV{PMX_STATE}/strace-part", $ENV{OXNOTIFY_PMXCFS_STRACE_ALL}) if $ENV{OXNOTIFY_PMXCFS_STRACE_ALL};
    note(sprintf('partition: link down at +%.1f s, up at +%.1f s, pve3 quorate at +%.1f s, pve3 done at +%.1f s',
        map { $_ - $h3->{t0} } $t_down, $t_up, $t_quorate, Time::HiRes::time()));
    note("pve1 (quorate side): rc $rc1: $out1");
    system($H, 'port-mode', 3, $OIDC_PORT, 'normal') == 0 or die 'port-mode';
    is(scalar(grant_errors()) - $gerr, 0, 'the provider saw no reuse of a rotated refresh token')
        or diag join('', (grant_errors())[$gerr .. scalar(grant_errors()) - 1]);
    sleep(3);
    clear_locks_matching(qr/pmx-part/) if grep { /pmx-part/ } locks_left();
    expire_token('pmx-part');
    my $subject = uniq('pmx-part-after');
    my ($rc, $out) = cli(2, {}, 'send', 'pmx-part', '--title', $subject);
    is($rc, 0, 'the grant survives: a send on pve2 refreshes and sends') or diag $out;
    clear_locks();
};

done_testing();
