# transport graph from the CLI and the API, against the rig's Graph STAND-IN
# (scripts/rig/graph-standin.mjs: not Graph, which has no open-source server; it checks each token
# by introspection at the rig's oidc-provider and delivers into the rig's Maildir).
use strict;
use warnings;
use Test::More;
use Test::Mojo;
use Cpanel::JSON::XS ();
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Server;
use OxNotify::Server::Tokens;

need_rig();
my $dir = setup_dirs();
my $r = rig();
plan skip_all => 'the rig has no Graph stand-in (RIG_GRAPH_PORT)' if !$r->{graph_port};
my $J = Cpanel::JSON::XS->new;

sub cli {
    my $out = `$^X bin/oxnotify @_ 2>&1`;
    return ($? >> 8, $out);
}
sub shq { join(' ', map { "'" . s/'/'\\''/gr . "'" } @_) }

# app-only (client credentials with the app's secret) from the CLI
open(my $sf, '>', "$dir/app-secret") or die;
print {$sf} "$r->{app_client_secret}\n";
close($sf);
my ($rc, $out) = cli('target create gapp', shq(
    '--transport', 'graph', '--server', $r->{graph_host}, '--port', $r->{graph_port}, '--mode', 'tls',
    '--auth-method', 'microsoft-oauth2', '--oauth2-flow', 'client-credentials',
    '--oauth2-tenant-id', '12345678-90ab-cdef-1234-567890abcdef', '--oauth2-token-url', "$r->{issuer}/token",
    '--oauth2-client-id', $r->{app_client_id}, '--from-address', $r->{app_mailbox}, '--author', 'oxnotify perl test',
    '--mailto', 'ops@example.test'), "--oauth2-client-secret-file $dir/app-secret");
is($rc, 0, 'CLI: create a Graph target') or diag $out;
($rc, $out) = cli('target show gapp');
like($out, qr/^transport\s+graph$/m, 'CLI: show says the transport');
($rc, $out) = cli('target verify gapp');
is($rc, 0, 'CLI: verify a Graph target') or diag $out;
like($out, qr/target 'gapp': login OK \(new token; token \d+ ms, graph \d+ ms\)/, '... token, then the Graph probe');
my $subject = uniq('graph-cli');
($rc, $out) = cli('send gapp --title', shq($subject), '--body', shq("hello\nthrough Graph"));
is($rc, 0, 'CLI: send through Graph') or diag $out;
my $mail = find_mail($subject);
ok($mail, 'delivered by the Graph stand-in');
like($mail // '', qr/^X-Graph-Standin-Mailbox: \Q$r->{app_mailbox}\E$/m, '... for the app\'s mailbox');
like($mail // '', qr/^X-Graph-Standin-SaveToSentItems: false/m, '... not saved to Sent Items');
# a mailbox outside the app's RBAC scope: an admin must grant it, exit 1 with the way
($rc, $out) = cli('target update gapp --username someone-else@example.test', "--oauth2-client-secret-file $dir/app-secret");
is($rc, 0, 'CLI: another mailbox (the secret confirms the new destination)') or diag $out;
($rc, $out) = cli('send gapp --title', shq(uniq('graph-denied')));
is($rc, 1, 'CLI: refused for good: exit 1') or diag $out;
like($out, qr/ErrorAccessDenied.*Application Mail\.Send/, '... naming the permission to grant');
unlike($out, qr/\Q$r->{app_client_secret}\E/, '... and no secret');

# delegated (authorization code) through the API of the standalone server
my $new = OxNotify::Server::Tokens::ensure();
my $t = Test::Mojo->new('OxNotify::Server');
my %A = (Authorization => "Bearer $new->{admin}");
my $api = '/api2/json';
my $user = uniq('graph-api') . '@example.test';
my $p = { %{ ms_target_params('gdel', $user) }, transport => 'graph', server => $r->{graph_host},
    port => $r->{graph_port}, mode => 'tls' };
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, mode => 'starttls', name => 'gbad' })->status_is(400)
    ->json_like('/message' => qr/HTTPS only/);
$t->post_ok("$api/endpoints/smtp" => \%A => json => $p)->status_is(200);
$t->get_ok("$api/endpoints/smtp/gdel" => \%A)->status_is(200)->json_is('/data/transport' => 'graph');
my $auth = $t->post_ok("$api/smtp-oauth2-authorize-url" => \%A => json => { name => 'gdel',
    'redirect-uri' => $RigTest::REDIRECT })->status_is(200)->tx->res->json('/data');
like($auth->{url}, qr/scope=https%3A%2F%2Fgraph\.microsoft\.com%2FMail\.Send\+offline_access/,
    'the authorization asks for Graph\'s Mail.Send');
my ($code, $state) = login_and_consent($user, $auth->{url});
$t->post_ok("$api/smtp-oauth2-token" => \%A => json => { state => $state, 'authorization-code' => $code,
    target => 'gdel' })->status_is(200);
$t->post_ok("$api/targets/gdel/verify" => \%A)->status_is(200)->json_is('/data/ok' => 1)
    ->json_is('/data/steps/1/step' => 'graph');
$t->post_ok("$api/targets/gdel/test" => \%A)->status_is(200);
ok(find_mail('oxnotify', qr/^X-Graph-Standin-Mailbox: \Q$user\E$/m), 'the test notification went through Graph');
done_testing();
