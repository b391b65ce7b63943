# The daily job with the cluster store (issue 13): two "nodes" (OXNOTIFY_NODE_NAME) share the
# config and state dirs; the first run rotates, the second node's run the same day reports
# not-due (info, exit 0) and makes no token request; the status names the node and says the
# shared file system is writable.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

need_rig();
setup_dirs();
$ENV{OXNOTIFY_STATE_STORE} = 'cluster';
$ENV{OXNOTIFY_NODE_NAME} = 'pve1';
# this node's outbox and connection slots (never on the shared file system)
$ENV{OXNOTIFY_LOCAL_STATE_DIR} = "$ENV{OXNOTIFY_STATE_DIR}-local-pve1";

my $user = 'perl-cluster@example.test';
OxNotify::Core::create_target(ms_target_params('cl', $user));
my $a = OxNotify::Core::authorize_url({ name => 'cl', 'redirect-uri' => $RigTest::REDIRECT });
my ($code) = login_and_consent($user, $a->{url});
OxNotify::Core::exchange_smtp_oauth2_code({
    'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
    'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
    'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $a->{'pkce-verifier'},
    'token-url' => rig()->{issuer} . '/token', target => 'cl',
});

my $out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
is($? >> 8, 0, 'node pve1: exit 0') or diag $out;
like($out, qr/target 'cl': rotated/, 'node pve1 rotates');
my $state = state_of('cl');
is($state->{rotations}, 1, 'one rotation');
is($state->{refreshed_by}, 'pve1', 'the state names the node');

{
    local $ENV{OXNOTIFY_NODE_NAME} = 'pve2';
    $out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
}
is($? >> 8, 0, 'node pve2: exit 0') or diag $out;
like($out, qr/target 'cl': not-due/, 'node pve2 leaves it alone the same day');
unlike($out, qr/\berr\b|WARNING/, 'no error or warning');
is(state_of('cl')->{rotations}, 1, 'still one rotation');
is(state_of('cl')->{refresh_token}, $state->{refresh_token}, 'refresh token unchanged');

my $s = OxNotify::Core::target_status({ name => 'cl' });
is($s->{last_refresh_by}, 'pve1', 'status: last refresh by pve1');
ok($s->{store_writable}, 'status: the shared file system is writable');
ok(-d "$ENV{OXNOTIFY_STATE_DIR}/lock", 'lock directories live in the shared state dir');

done_testing();
