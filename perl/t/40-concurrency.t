# Several processes run the daily job and send at the same time against a server with
# refresh-token reuse detection: no rotated token is lost, the state stays valid JSON.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

need_rig();
setup_dirs();

OxNotify::Core::create_target(ms_target_params('race', 'perl-race@example.test'));
my $a = OxNotify::Core::authorize_url({ name => 'race', 'redirect-uri' => $RigTest::REDIRECT });
my ($code) = login_and_consent('perl-race@example.test', $a->{url});
OxNotify::Core::exchange_smtp_oauth2_code({
    'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
    'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
    'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $a->{'pkce-verifier'},
    'token-url' => rig()->{issuer} . '/token', target => 'race',
});

my $subject = uniq('race');
my @pids;
for my $w (1 .. 3) {    # daily jobs
    push @pids, fork() // die;
    if (!$pids[-1]) {
        my $bad = 0;
        for (1 .. 3) { $bad += system($^X, 'bin/oxnotify-daily', '--no-syslog', '--quiet') != 0 }
        exit($bad ? 1 : 0);
    }
}
for my $w (1 .. 3) {    # senders, forcing refreshes by dropping the cached token
    push @pids, fork() // die;
    if (!$pids[-1]) {
        my $bad = 0;
        for my $i (1 .. 4) {
            my $r = OxNotify::Core::send({ targets => ['race'], title => "$subject $w-$i" });
            $bad++ if !$r->[0]{ok};
        }
        exit($bad ? 1 : 0);
    }
}
my $failed = 0;
for my $p (@pids) { waitpid($p, 0); $failed++ if $? != 0 }
is($failed, 0, 'all daily runs and sends succeeded');

my $state = state_of('race');
ok($state, 'state is valid JSON');
is($state->{rotations}, 9, '9 daily refreshes, 9 rotations persisted');
my $res = OxNotify::Core::refresh_targets({});
is($res->{reports}[0]{outcome}, 'rotated', 'grant still alive afterwards (no reuse detected)')
    or diag explain $res;
ok(find_mail("$subject 3-4"), 'mails delivered');
done_testing();
