# Alerts through a second channel, from the daily job and the CLI: a target whose grant was
# revoked at the rig alerts once through a working target (real delivery to the rig's sink),
# however often the job runs; the status, the list and the CLI show the same forecast; a loop of
# alert targets is refused when it is written.
use strict;
use warnings;
use Test::More;
use Cpanel::JSON::XS ();
use POSIX ();
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

need_rig();
setup_dirs();
my $r = rig();
my $J = Cpanel::JSON::XS->new;

sub cli {
    my $out = `$^X bin/oxnotify @_ 2>&1`;
    return ($? >> 8, $out);
}

# a working channel: a password login on the rig's Dovecot
my $pager = uniq('pager');
OxNotify::Core::create_target({
    name => $pager, server => 'localhost', port => $r->{smtp_starttls_port}, mode => 'starttls',
    'auth-method' => 'plain', username => $r->{plain_user}, password => $r->{plain_password},
    'from-address' => 'pager-perl@example.test', mailto => ['ops@example.test'],
});

# the target that breaks: authorized, then its grant revoked at the rig; its client secret
# expires in 12 days
my $name = uniq('broken');
my $expires = POSIX::strftime('%Y-%m-%d', gmtime(time + 12 * 86400));
OxNotify::Core::create_target({
    %{ ms_target_params($name, 'perl-alert@example.test') },
    'alert-target' => $pager, 'oauth2-credential-expires' => $expires,
});
my $a = OxNotify::Core::authorize_url({ name => $name, 'redirect-uri' => $RigTest::REDIRECT });
my ($code) = login_and_consent('perl-alert@example.test', $a->{url});
my $rt = OxNotify::Core::exchange_smtp_oauth2_code({
    'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
    'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
    'redirect-uri' => $RigTest::REDIRECT, 'pkce-verifier' => $a->{'pkce-verifier'},
    'token-url' => "$r->{issuer}/token", target => $name,
})->{'refresh-token'};
system('python3', 'scripts/rig/oauth_driver.py', $r->{issuer}, 'revoke', $rt, 'rig-post', 'rig-secret') == 0
    or die 'revoke failed';

my $subject = "oxnotify alert: target '$name'";
my $out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
like($out, qr/alert about target '\Q$name\E' via '\Q$pager\E': sent \(needs-reauthorization, credential-expires\)/,
    'the daily job says it alerted, through which target, about what') or diag $out;
ok(new_mail($subject, 0), 'the alert arrived through the working target');
my $mail = find_mail($subject);
$mail =~ s/=\r?\n//g;    # quoted-printable soft breaks
like($mail, qr/client secret expires in 12 day\(s\) \(\Q$expires\E\)/, 'the alert names the problem ...');
like($mail, qr/oxnotify authorize \Q$name\E/, '... and what to do');
unlike($mail, qr/\Q$rt\E|rig-secret/, 'no secret in the alert');
for (1 .. 2) {
    $out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
    unlike($out, qr/alert about target/, "run $_ again on the same day: no alert") or diag $out;
}
sleep 1;
is(mail_count($subject), 1, 'exactly one alert mail');

# the same forecast in the status, the list and the CLI
my ($rc, $text) = cli("status $name");
like($text, qr/^  forecast:\s+ALERT client secret expires in 12 day\(s\)/m, 'CLI status: the forecast');
like($text, qr/^  forecast:\s+ALERT re-authorize/m, 'CLI status: re-authorization');
like($text, qr/^  alerts go to:\s+\Q$pager\E$/m, 'CLI status: where alerts go');
($rc, $text) = cli('target list');
like($text, qr/^\Q$name\E .*\n(?:  [!-] .*\n)*  ! client secret expires in 12 day\(s\)/m, 'CLI list: the forecast');
($rc, $text) = cli("target show $name");
like($text, qr/^forecast\s+.*client secret expires in 12 day\(s\)/m, 'CLI show: the forecast');
like($text, qr/^alert-target\s+\Q$pager\E$/m, 'CLI show: the alert target');
($rc, $text) = cli("--output-format json status $name");
my ($st) = @{ $J->decode($text) };
my ($f) = grep { $_->{kind} eq 'credential-expires' } @{ $st->{forecast} };
is($f->{days_left}, 12, 'JSON: days left');
ok($f->{alert}, 'JSON: an alert');
like($f->{text}, qr/^client secret expires in 12 day\(s\)/, 'JSON: the sentence');
is($st->{alert_target}, $pager, 'JSON: alert_target');
my ($listed) = grep { $_->{name} eq $name } @{ OxNotify::Core::list_targets({}) };
is_deeply([map { $_->{kind} } @{ $listed->{forecast} }], [map { $_->{kind} } @{ $st->{forecast} }],
    'the list carries the same forecast as the status');

# loops and self-alerts are refused when written
($rc, $text) = cli("target update $pager --alert-target $name");
is($rc, 2, 'a loop of alert targets: refused');
like($text, qr/alert targets form a loop \(\Q$pager\E -> \Q$name\E -> \Q$pager\E\)/, '... naming the loop');
($rc, $text) = cli("target update $name --alert-target $name");
like($text, qr/cannot alert through itself/, 'a target alerting through itself: refused');
($rc, $text) = cli("target update $name --oauth2-credential-expires 2027-02-30");
like($text, qr/is not a date: use YYYY-MM-DD/, 'an impossible date: refused');

done_testing();
