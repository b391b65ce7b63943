# The oxnotify CLI: every command, text and JSON output, exit codes, the loopback authorize flow.
use strict;
use warnings;
use Test::More;
use Cpanel::JSON::XS ();
use HTTP::Tiny ();
use lib 'perl/t/lib';
use RigTest;

need_rig();
setup_dirs();
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

my $p = ms_target_params('m365', 'cli-test@example.test');
my @create = map { my $k = $_; my $v = $p->{$k}; ref $v ? (map { ("--$k", $_) } @$v) : ("--$k", $v) }
    grep { $_ ne 'name' } sort keys %$p;
($rc, $out) = cli('target create m365', shq(@create));
is($rc, 0, 'target create') or diag $out;
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
my $url;
while (my $line = <$cli>) { if ($line =~ m{^(http\S+/auth\?\S+)}) { $url = $1; last } }
ok($url, 'authorize prints the provider URL') or BAIL_OUT('no URL');
like($url, qr/redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A\d+%2Fcallback/, 'loopback redirect URI');
my ($redirect) = $url =~ /redirect_uri=([^&]+)/;
$redirect =~ s/%([0-9A-F]{2})/chr hex $1/ge;
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

my $subject = uniq('cli-send');
($rc, $out) = cli('send m365 --title', shq($subject), '--body', shq("hello\nfrom the cli"), '--severity warning');
is($rc, 0, 'send') or diag $out;
ok(find_mail($subject), 'mail delivered');
($rc, $out) = cli('--output-format json send m365 nope --title x');
is($rc, 1, 'a failing target: exit 1');
my $res = $J->decode($out);
ok($res->[0]{ok} && !$res->[1]{ok} && $res->[1]{code} == 404, 'JSON per-target results');

($rc, $out) = cli('refresh');
is($rc, 0, 'refresh') or diag $out;
like($out, qr/^m365: rotated$/m, 'refresh output');
($rc, $out) = cli('--output-format json status');
is($J->decode($out)->[0]{rotations}, 1, 'status JSON');

# authorize timeout: nobody comes back
($rc, $out) = cli('authorize m365 --timeout 1');
is($rc, 2, 'authorize timeout: exit 2');
like($out, qr/no redirect arrived within 1 seconds/, 'clear timeout message');

($rc, $out) = cli('target delete m365');
is($rc, 0, 'delete');
($rc, $out) = cli('--output-format json target show m365');
is($J->decode($out)->{error}{code}, 404, 'JSON error object');
done_testing();
