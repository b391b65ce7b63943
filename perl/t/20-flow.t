# From Perl: create a target, authorize at the real OAuth2 server, exchange, send, find the mail.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

need_rig();
setup_dirs();

OxNotify::Core::create_target(ms_target_params('m365', 'perl-flow@example.test'));

my $list = OxNotify::Core::list_targets();
is(scalar(@$list), 1, 'one target listed');
my $got = OxNotify::Core::get_target({ name => 'm365' });
is($got->{'auth-method'}, 'microsoft-oauth2', 'GET returns the config');
like($got->{digest}, qr/^[0-9a-f]{64}$/, 'with a digest');
unlike(Cpanel::JSON::XS->new->encode([$got, $list]), qr/rig-secret/, 'GET/list never contain the client secret');

my $st = OxNotify::Core::target_status({ name => 'm365' });
ok(!$st->{authorized}, 'not authorized yet');
like($st->{warning}, qr/not authorized yet/, 'status says what to do');

my $auth = OxNotify::Core::authorize_url({ name => 'm365', 'redirect-uri' => $RigTest::REDIRECT });
like($auth->{url}, qr/code_challenge_method=S256/, 'authorize URL uses PKCE');
my ($code, $state) = login_and_consent('perl-flow@example.test', $auth->{url});
is($state, $auth->{state}, 'state round-trips');

my $r = rig();
my $ex = OxNotify::Core::exchange_smtp_oauth2_code({
    'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
    'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
    'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $auth->{'pkce-verifier'},
    'token-url' => "$r->{issuer}/token", target => 'm365',
});
ok(length($ex->{'refresh-token'}) > 10, 'exchange returns the refresh token');
ok(OxNotify::Core::target_status({ name => 'm365' })->{authorized}, 'and stored it');

my $subject = uniq('perl-flow');
my $res = OxNotify::Core::send({ targets => ['m365'], title => $subject, body => "from perl\n", severity => 'warning',
    fields => { node => 'pve1' } });
ok($res->[0]{ok}, 'send ok') or diag explain $res;
my $mail = find_mail($subject);
ok($mail, 'mail delivered');
like($mail, qr/^From: "oxnotify perl test" <perl-flow\@example\.test>/m, 'From');
like($mail, qr/^To: ops\@example\.test/m, 'To');
like($mail, qr/^X-OxNotify-Severity: warning/m, 'severity header');

my $test_mails_before = mail_count("Test notification from oxnotify (target 'm365')");
ok(eval { OxNotify::Core::test_target({ name => 'm365' }); 1 }, 'test_target sends') or diag $@;
ok(new_mail("Test notification from oxnotify (target 'm365')", $test_mails_before), 'test mail delivered');

# update with a stale digest: 409; with the right one: ok; empty secret keeps the stored one
my $digest = OxNotify::Core::get_target({ name => 'm365' })->{digest};
OxNotify::Core::update_target({ name => 'm365', comment => 'first', digest => $digest });
eval { OxNotify::Core::update_target({ name => 'm365', comment => 'second', digest => $digest }) };
my $conflict = $@;
is(ref($conflict) && $conflict->code, 409, 'stale digest is a conflict');
OxNotify::Core::update_target({ name => 'm365', 'oauth2-client-secret' => '', 'oauth2-refresh-token' => '' });
ok(OxNotify::Core::send({ targets => ['m365'], title => uniq('after-update') })->[0]{ok}, 'empty secrets did not erase anything');
is(OxNotify::Core::get_target({ name => 'm365' })->{comment}, 'first', 'update applied');
OxNotify::Core::update_target({ name => 'm365', delete => ['comment'] });
ok(!exists OxNotify::Core::get_target({ name => 'm365' })->{comment}, 'delete removes a key');

# a failing target is reported per target, the others still send
my $both = OxNotify::Core::send({ targets => ['m365', 'missing'], title => uniq('two') });
ok($both->[0]{ok} && !$both->[1]{ok} && $both->[1]{code} == 404, 'per-target results');

OxNotify::Core::delete_target({ name => 'm365' });
ok(!-e "$ENV{OXNOTIFY_STATE_DIR}/oauth2/m365.json", 'delete removes the state');
eval { OxNotify::Core::get_target({ name => 'm365' }) };
my $gone = $@;
is(ref($gone) && $gone->code, 404, 'and the target');
done_testing();
