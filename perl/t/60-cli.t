# The oxnotify CLI: every command, text and JSON output, exit codes, the loopback authorize flow.
use strict;
use warnings;
use Test::More;
use Cpanel::JSON::XS ();
use HTTP::Tiny ();
use IPC::Open2 ();
use IO::Socket::IP ();
use lib 'perl/t/lib';
use RigTest;

need_rig();
my $dir = setup_dirs();
my $r = rig();
my $J = Cpanel::JSON::XS->new;

sub cli {
    my $out = `$^X bin/oxnotify @_ 2>&1`;
    return ($? >> 8, $out);
}
sub shq { join(' ', map { "'" . s/'/'\\''/gr . "'" } @_) }

my ($rc, $out) = cli('--help');
is($rc, 0, '--help');
like($out, qr/authorize NAME/, 'usage lists commands');
for my $c ('target list', 'target create', 'target update', 'target delete', 'target show', 'authorize', 'send', 'status', 'refresh') {
    ($rc, $out) = cli("$c --help");
    ok($rc == 0 && $out =~ /^oxnotify \Q$c\E/, "$c --help");
}
($rc, $out) = cli('frobnicate');
is($rc, 2, 'unknown command: exit 2');

sub private_cfg { open(my $fh, '<', "$ENV{OXNOTIFY_CONFIG_DIR}/priv/notifications.cfg") or return ''; local $/; <$fh> }

# secrets from a file, stdin or a prompt, never as process arguments
my $p = ms_target_params('m365', 'cli-test@example.test');
my @create = map { my $k = $_; my $v = $p->{$k}; ref $v ? (map { ("--$k", $_) } @$v) : ("--$k", $v) }
    grep { $_ ne 'name' && $_ ne 'oauth2-client-secret' } sort keys %$p;
open(my $sf, '>', "$dir/client-secret") or die; print {$sf} "rig-secret\n"; close($sf);
($rc, $out) = cli('target create m365', shq(@create), "--oauth2-client-secret-file $dir/client-secret");
is($rc, 0, 'target create, client secret from a file') or diag $out;
unlike($out, qr/warning/, 'no warning for a secret from a file');
like(private_cfg(), qr/^\toauth2-client-secret rig-secret$/m, 'the secret from the file is stored (without its newline)');
($rc, $out) = cli('target update m365 --oauth2-client-secret argv-secret');
is($rc, 0, 'a secret as an argument still works');
like($out, qr/warning: --oauth2-client-secret on the command line is visible to every user.*--oauth2-client-secret-file/,
    '... with a warning naming the safe form');
($rc, $out) = cli("target update m365 --oauth2-client-secret-file - < $dir/client-secret");
is($rc, 0, 'client secret from stdin') or diag $out;
like(private_cfg(), qr/^\toauth2-client-secret rig-secret$/m, 'the secret from stdin is stored');
($rc, $out) = cli('target update m365 --oauth2-client-secret --comment x < /dev/null');
is($rc, 2, 'secret option without a value and no terminal: exit 2');
like($out, qr/--oauth2-client-secret needs a value: give --oauth2-client-secret-file FILE/, 'says how to give it');
($rc, $out) = cli("target update m365 --password-file $dir/nope");
is($rc, 2, 'unreadable secret file: exit 2');
like($out, qr/--password-file: cannot read '\Q$dir\E\/nope'/, 'names the file');
{
    # on a terminal (script(1) provides one) the CLI asks without echo
    my $pid = IPC::Open2::open2(my $from, my $to, 'script', '-qec', "$^X bin/oxnotify target update m365 --oauth2-client-secret", '/dev/null');
    my $seen = '';
    while (sysread($from, my $buf, 1)) { $seen .= $buf; last if $seen =~ /oauth2-client-secret: $/ }
    print {$to} "prompt-secret\n";
    close($to);
    $seen .= do { local $/; <$from> } // '';
    waitpid($pid, 0);
    like($seen, qr/updated target 'm365'/, 'prompted secret accepted') or diag $seen;
    unlike($seen, qr/prompt-secret/, 'the typed secret is not echoed');
    like(private_cfg(), qr/^\toauth2-client-secret prompt-secret$/m, 'the prompted secret is stored');
}
($rc, $out) = cli("target update m365 --oauth2-client-secret-file $dir/client-secret");
is($rc, 0, 'back to the real secret') or diag $out;
($rc, $out) = cli('target create bad --server x --port 99999 --from-address a@example.test --mailto b@example.test');
is($rc, 2, 'invalid parameter: exit 2');
like($out, qr/port: 99999 > maximum/, 'names the parameter');
($rc, $out) = cli('target list');
like($out, qr/^m365\s+localhost\s+microsoft-oauth2\s+cli-test\@example\.test$/m, 'list as a table');
($rc, $out) = cli('--output-format json target show m365');
my $shown = $J->decode($out);
is($shown->{'oauth2-client-id'}, 'rig-post', 'show as JSON');
unlike($out, qr/rig-secret/, 'no secret shown');
($rc, $out) = cli('target show nope');
is($rc, 4, 'not found: exit 4');
($rc, $out) = cli('target update m365 --comment', shq('via cli'));
is($rc, 0, 'update');
like((cli('target show m365'))[1], qr/^comment\s+via cli$/m, 'updated');
($rc, $out) = cli('status m365');
is($rc, 1, 'status of an unauthorized target: exit 1');
like($out, qr/NOT authorized.*WARNING: +not authorized yet/s, 'status says what to do');

# loopback authorize: the CLI listens, the rig's browser stand-in logs in and follows the redirect
my $pid = open(my $cli, '-|', $^X, 'bin/oxnotify', 'authorize', 'm365', '--timeout', '60') // die;
my ($url, $who);
while (my $line = <$cli>) {
    $who = $line if $line =~ /^Authorizing target/;
    if ($line =~ m{^(http\S+/auth\?\S+)}) { $url = $1; last }
}
ok($url, 'authorize prints the provider URL') or BAIL_OUT('no URL');
like($who // '', qr/^Authorizing target 'm365': client ID \S+ asks for scope '[^']+'; log in at 127\.0\.0\.1:\d+, tokens from 127\.0\.0\.1:\d+/,
    'first says which app asks for what, and where');
like($url, qr/redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A\d+%2Fcallback/, 'loopback redirect URI');
my ($redirect) = $url =~ /redirect_uri=([^&]+)/;
$redirect =~ s/%([0-9A-F]{2})/chr hex $1/ge;
# anything without our state (another local user, a web page) is answered, and changes nothing
my $http = HTTP::Tiny->new(timeout => 30);
my $foreign = $http->get("$redirect?error=access_denied&error_description=forged");
is($foreign->{status}, 400, 'an error redirect without our state: 400');
like($foreign->{content}, qr/state mismatch/, '... says why');
$foreign = $http->get("$redirect?state=forged&code=x");
is($foreign->{status}, 400, 'a foreign state: 400');
open(my $drv, '-|', 'python3', 'scripts/rig/oauth_driver.py', $r->{issuer}, 'browse', 'cli-test@example.test', $url, $redirect) or die;
my $final = <$drv>;
close($drv);
chomp $final;
my $page = HTTP::Tiny->new(timeout => 30)->get($final);
like($page->{content}, qr/Done: target 'm365' is authorized/, 'the browser sees the result');
my $rest = do { local $/; <$cli> };
close($cli);
is($? >> 8, 0, 'authorize exits 0') or diag $rest;
($rc, $out) = cli('status m365');
is($rc, 0, 'authorized target: status exit 0') or diag $out;
like($out, qr/m365 \(microsoft-oauth2\): authorized/, 'status text');
# a login check that sends nothing, and its rate limit
($rc, $out) = cli('target verify m365');
is($rc, 0, 'target verify: exit 0') or diag $out;
like($out, qr/target 'm365': login OK \((?:cached|new) token; token \d+ ms, smtp \d+ ms\)/, 'says each step and its time');
($rc, $out) = cli('target verify m365');
is($rc, 75, 'a second check within 10 s: EX_TEMPFAIL') or diag $out;
like($out, qr/at most one per 10 s/, '... saying why');

my $subject = uniq('cli-send');
($rc, $out) = cli('send m365 --title', shq($subject), '--body', shq("hello\nfrom the cli"), '--severity warning');
is($rc, 0, 'send') or diag $out;
ok(find_mail($subject), 'mail delivered');
($rc, $out) = cli('--output-format json send m365 nope --title x');
is($rc, 1, 'a failing target: exit 1');
my $res = $J->decode($out);
ok($res->[0]{ok} && !$res->[1]{ok} && $res->[1]{code} == 404, 'JSON per-target results');
is($res->[1]{kind}, 'not-found', '... with the kind of the failure');

# a server that is down: only a temporary failure, EX_TEMPFAIL (75), so cron or an MTA retries
{
    my $closed = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 1) or die;
    my $port = $closed->sockport;
    close($closed);
    ($rc, $out) = cli("target create down --server 127.0.0.1 --port $port --mode insecure",
        '--auth-method none --from-address a@example.test --mailto b@example.test');
    is($rc, 0, 'target at a closed port created') or diag $out;
    local $ENV{OXNOTIFY_DELIVERY_DEADLINE} = 3;
    ($rc, $out) = cli('send down --title x');
    is($rc, 75, 'server down: exit 75') or diag $out;
    # the outbox keeps it (perl/t/65-outbox.t follows it to delivery)
    like($out, qr/down: QUEUED as \S+ \(will be retried\): .*temporary/, 'says it is queued, and why') or diag $out;
    cli('target delete down');
}

($rc, $out) = cli('refresh');
is($rc, 0, 'refresh') or diag $out;
like($out, qr/^m365: rotated$/m, 'refresh output');
($rc, $out) = cli('--output-format json status');
is($J->decode($out)->[0]{rotations}, 1, 'status JSON');

# the provider's error text is printed safe for a terminal: no escape sequences, no bidi
{
    my $pid = open(my $cli, '-|', "$^X bin/oxnotify authorize m365 --timeout 30 2>&1") // die;
    my $url;
    while (my $line = <$cli>) { if ($line =~ m{^(http\S+/auth\?\S+)}) { $url = $1; last } }
    my ($redirect) = $url =~ /redirect_uri=([^&]+)/;
    $redirect =~ s/%([0-9A-F]{2})/chr hex $1/ge;
    my ($state) = $url =~ /[?&]state=([^&]+)/;
    HTTP::Tiny->new(timeout => 30)->get("$redirect?state=$state&error=access_denied%1B%5B2J"
        . '&error_description=%1B%5D0%3Bpwned%07denied%1B%5B31m%E2%80%AEtxt.exe');
    my $rest = do { local $/; <$cli> };
    close($cli);
    isnt($? >> 8, 0, 'a refused authorization fails');
    like($rest, qr/the provider refused: access_denied .*denied/, 'says what the provider said') or diag $rest;
    unlike($rest, qr/[\x1b\x07]|\x{202e}|\xe2\x80\xae/, 'without escape or bidi characters');
}

# authorize timeout: nobody comes back
($rc, $out) = cli('authorize m365 --timeout 1');
is($rc, 2, 'authorize timeout: exit 2');
like($out, qr/no redirect arrived within 1 seconds/, 'clear timeout message');

# one idle connection cannot keep authorize past --timeout
{
    my $pid = open(my $slow, '-|', "$^X bin/oxnotify authorize m365 --timeout 2 2>&1") // die;
    my $port;
    while (my $line = <$slow>) { if ($line =~ /redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A(\d+)/) { $port = $1; last } }
    my $idle = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) or die "connect: $!";
    # a hang must fail the test, not stall it
    local $SIG{ALRM} = sub { kill 'KILL', $pid; die "authorize hangs on an idle connection\n" };
    alarm 60;
    my $rest = eval { local $/; <$slow> } // '';
    my $hung = $@;
    alarm 0;
    close($slow);
    is($hung, '', 'authorize ended while a connection stayed idle');
    is($? >> 8, 2, '... with exit 2');
    like($rest, qr/no redirect arrived within 2 seconds/, '... at its timeout');
    close($idle);
}

($rc, $out) = cli('target delete m365');
is($rc, 0, 'delete');
($rc, $out) = cli('--output-format json target show m365');
is($J->decode($out)->{error}{code}, 404, 'JSON error object');
done_testing();
