# The same request gives the same status through the standalone server (OxNotify::Server,
# bearer token roles) and through the real PVE request path (perl/t/lib/PVEStack.pm: pve-manager's
# rest_handler steps with the real RPCEnvironment; users with the same privileges as the roles).
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use PVEStack;
use Storable ();
BEGIN { $ENV{MOJO_LOG_LEVEL} ||= "warn" }

my ($STACK, $why) = stack_dir();
plan skip_all => $why if !$STACK;

use RigTest;
use Test::Mojo;
use OxNotify::Server;
use OxNotify::Server::Tokens;

need_rig();
setup_dirs();
load_stack($STACK);
my $tokens = OxNotify::Server::Tokens::ensure();
my $t = Test::Mojo->new('OxNotify::Server');
my %user = (admin => 'admin@pve', audit => 'audit@pve');
my $r = rig();

my $base = { server => '127.0.0.1', port => $r->{sink_port}, mode => 'insecure',
    'from-address' => 'parity@example.test', mailto => ['ops@example.test'] };
OxNotify::Core::create_target({ %$base, name => 'p1' });
OxNotify::Core::create_target(ms_target_params('p2', 'parity-ms@example.test'));
my $digest = OxNotify::Core::get_target({ name => 'p1' })->{digest};
my $stale = 'a' x 64;

# [role, method, path, params, expected status, undo (run between the two paths)]
my @cases = (
    [admin => GET => 'endpoints/smtp', {}, 200],
    [audit => GET => 'endpoints/smtp', {}, 200],
    [admin => GET => 'endpoints/smtp/p1', {}, 200],
    [admin => GET => 'endpoints/smtp/nope', {}, 404],
    [admin => GET => 'targets', {}, 200],
    [audit => GET => 'targets', {}, 200],
    [admin => GET => 'targets/p2/oauth2-status', {}, 200],
    [admin => GET => 'targets/p1/oauth2-status', {}, 400],
    [admin => GET => 'targets/nope/oauth2-status', {}, 404],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3' }, 200, sub { OxNotify::Core::delete_target({ name => 'p3' }) }],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p1' }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', port => 70000 }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', port => 'abc' }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', colour => 'blue' }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p.3' }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p' }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p' . ('x' x 64) }, 400],
    [admin => POST => 'endpoints/smtp', { name => 'p3', mailto => ['ops@example.test'] }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', mode => 'ssl' }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', disable => 2 }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', 'mailto-user' => ['root'] }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', mailto => ['not an address'] }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', author => "x\r\nBcc: y\@example.test" }, 400],
    [admin => POST => 'endpoints/smtp', { %$base, name => 'p3', username => 'u', password => 'pw' }, 400],
    [admin => POST => 'endpoints/smtp', { %{ ms_target_params('p3', 'x@example.test') }, 'oauth2-tenant-id' => 'evil/../x' }, 400],
    [audit => POST => 'endpoints/smtp', { %$base, name => 'p3' }, 403],
    [admin => PUT => 'endpoints/smtp/p1', { comment => 'same' }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { disable => 1 }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { disable => 0 }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { disable => '1', port => '25' }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { disable => '0', port => $r->{sink_port} }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { disable => 'true' }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { disable => 'yes' }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { port => '25x' }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { mailto => 'ops@example.test' }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { mailto => 'ops@example.test, oncall@example.test' }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { 'mailto-user' => 'root@pam' }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { delete => 'mailto-user,comment' }, 200],
    [admin => PUT => 'endpoints/smtp/p1', { delete => 'mailto-user,bogus' }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { 'mailto-user' => 'root' }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { comment => 'x', digest => $stale }, 409],
    [admin => PUT => 'endpoints/smtp/p1', { comment => 'x', digest => 'short' }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { delete => ['bogus'] }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { delete => ['server'] }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { delete => ['mailto'] }, 400],
    [admin => PUT => 'endpoints/smtp/p1', { delete => ['comment', 'port'], port => 25 }, 400],
    [admin => PUT => 'endpoints/smtp/nope', { comment => 'x' }, 404],
    [audit => PUT => 'endpoints/smtp/p1', { comment => 'x' }, 403],
    [admin => DELETE => 'endpoints/smtp/nope', {}, 404],
    [admin => DELETE => 'endpoints/smtp/p1', { digest => $stale }, 409],
    [audit => DELETE => 'endpoints/smtp/p1', {}, 403],
    [admin => POST => 'targets/p1/test', {}, 200],
    # deliberately not the same: the standalone audit role only reads (no test mail)
    [audit => POST => 'targets/p1/test', {}, [403, 200]],
    [admin => POST => 'targets/nope/test', {}, 404],
    [admin => POST => 'targets/p2/test', {}, 400],
    [admin => POST => 'smtp-oauth2-authorize-url', { name => 'p2', 'redirect-uri' => $RigTest::REDIRECT }, 200],
    [admin => POST => 'smtp-oauth2-authorize-url', { name => 'p1', 'redirect-uri' => $RigTest::REDIRECT }, 400],
    [admin => POST => 'smtp-oauth2-authorize-url', { name => 'nope', 'redirect-uri' => $RigTest::REDIRECT }, 404],
    [audit => POST => 'smtp-oauth2-authorize-url', { name => 'p2', 'redirect-uri' => $RigTest::REDIRECT }, 403],
    [admin => POST => 'smtp-oauth2-token', { state => 'forged', 'authorization-code' => 'c' }, 400],
    [admin => POST => 'smtp-oauth2-token', { 'authorization-code' => 'c' }, 400],
    [audit => POST => 'smtp-oauth2-token', { state => 'forged', 'authorization-code' => 'c' }, 403],
);

for my $c (@cases) {
    my ($role, $method, $path, $params, $expect, $undo) = @$c;
    my $what = "$role $method $path " . Mojo::JSON::encode_json($params);
    my $tx = $t->ua->build_tx($method => "/api2/json/$path" => { Authorization => "Bearer $tokens->{$role}" } => json => $params);
    my $standalone = $t->request_ok($tx)->tx->res;
    $undo->() if $undo;
    my $pve = pve_request($user{$role}, $method, "/oxnotify/$path", Storable::dclone($params));
    my @expect = ref $expect ? @$expect : ($expect, $expect);
    is_deeply([$standalone->code, $pve->{status}], \@expect,
        (ref $expect ? 'the expected statuses' : 'same status') . ": $what")
        or diag 'standalone: ' . $standalone->body . "\npve: " . Mojo::JSON::encode_json($pve->{body});
    if ($expect[0] == 400 && $standalone->json('/errors')) {
        my @a = sort keys %{ $standalone->json('/errors') };
        my @b = sort map { s/\[\d+\]$//r } keys %{ $pve->{body}{errors} // {} };
        is_deeply(\@b, \@a, "same parameters named: $what") if @b;
    }
}

done_testing();
