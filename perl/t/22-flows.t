# The OAuth2 modes without a browser, from the CLI, the API descriptors and the daily job,
# against the rig: Microsoft app-only (client credentials), Google service account (JSON key
# file), ROPC (password), private_key_jwt, the device flow (`oxnotify authorize` prints the
# code, the rig's browser stand-in approves it). No secret in any output.
use strict;
use warnings;
use Test::More;
use Cpanel::JSON::XS ();
use IPC::Open3 ();
use Symbol ();
use lib 'perl/t/lib';
use RigTest;

need_rig();
my $dir = setup_dirs();
my $r = rig();
my $J = Cpanel::JSON::XS->new;

sub shq { join(' ', map { "'" . s/'/'\\''/gr . "'" } @_) }
sub cli {
    my $out = `$^X bin/oxnotify @_ 2>&1`;
    return ($? >> 8, $out);
}
sub slurp { my ($f) = @_; open(my $fh, '<', $f) or die "$f: $!"; local $/; <$fh> }
sub private_cfg { my $f = "$ENV{OXNOTIFY_CONFIG_DIR}/priv/notifications.cfg"; -e $f ? slurp($f) : '' }

my @ms = ('--server', 'localhost', '--port', $r->{smtp_starttls_port}, '--mode', 'starttls',
    '--auth-method', 'microsoft-oauth2', '--oauth2-tenant-id', '12345678-90ab-cdef-1234-567890abcdef',
    '--oauth2-token-url', "$r->{issuer}/token", '--mailto', 'ops@example.test', '--author', 'oxnotify perl test');

sub sends_as {
    my ($name, $from) = @_;
    my $subject = uniq("flows-$name");
    my ($rc, $out) = cli("send $name --title $subject --body x");
    is($rc, 0, "$name: send") or diag $out;
    my $mail = find_mail($subject);
    ok($mail && $mail =~ /^From: "oxnotify perl test" <\Q$from\E>$/m, "$name: delivered with From $from");
}

# Microsoft app-only: the client secret from stdin
open(my $sf, '>', "$dir/app-secret") or die; print {$sf} "$r->{app_client_secret}\n"; close($sf);
my ($rc, $out) = cli('target create app', shq(@ms, '--from-address', $r->{app_mailbox}, '--oauth2-flow', 'client-credentials',
    '--oauth2-client-id', $r->{app_client_id}), "--oauth2-client-secret-file - < $dir/app-secret");
is($rc, 0, 'app-only target created') or diag $out;
sends_as('app', $r->{app_mailbox});
($rc, $out) = cli('authorize app');
isnt($rc, 0, 'authorize of an app-only target is refused');
like($out, qr/nothing to authorize/, '... saying tokens are minted');

# Google service account: the JSON key file as it comes from Google
my $key = $J->decode(slurp($r->{sa_key_file}));
($rc, $out) = cli('target create gsa', shq('--server', 'localhost', '--port', $r->{smtp_tls_port}, '--mode', 'tls',
    '--auth-method', 'google-oauth2', '--oauth2-flow', 'service-account', '--oauth2-token-url', "$r->{issuer}/token",
    '--from-address', 'perl-sa@example.test', '--mailto', 'ops@example.test', '--author', 'oxnotify perl test',
    '--oauth2-private-key-file', $r->{sa_key_file}));
is($rc, 0, 'service-account target created from the JSON key file') or diag $out;
($rc, $out) = cli('--output-format json target show gsa');
my $shown = $J->decode($out);
is($shown->{'oauth2-service-account'}, $key->{client_email}, 'the key file set the service account');
is($shown->{'oauth2-key-id'}, $key->{private_key_id}, '... and the key ID');
my ($body) = $key->{private_key} =~ /-----\n(.{40})/;
unlike($out, qr/\Q$body\E/, 'target show has no key');
like(private_cfg(), qr/^\toauth2-private-key -----BEGIN PRIVATE KEY----- .*\Q$body\E/m, 'the key is in the private file, on one line');
sends_as('gsa', 'perl-sa@example.test');

# ROPC: the password from a file
open(my $pf, '>', "$dir/ropc-pw") or die; print {$pf} "$r->{ropc_password}\n"; close($pf);
open($sf, '>', "$dir/ropc-secret") or die; print {$sf} "$r->{ropc_client_secret}\n"; close($sf);
($rc, $out) = cli('target create ropc', shq(@ms, '--from-address', $r->{ropc_user}, '--oauth2-flow', 'password',
    '--oauth2-client-id', $r->{ropc_client_id}), "--password-file $dir/ropc-pw --oauth2-client-secret-file $dir/ropc-secret");
is($rc, 0, 'ROPC target created') or diag $out;
sends_as('ropc', $r->{ropc_user});

# private_key_jwt (Microsoft certificate credential): the PEM key from a file
($rc, $out) = cli('target create cert', shq(@ms, '--from-address', $r->{app_mailbox}, '--oauth2-flow', 'client-credentials',
    '--oauth2-client-auth', 'private-key-jwt', '--oauth2-client-id', $r->{app_jwt_client_id},
    '--oauth2-key-id', $r->{app_jwt_key_id}, '--oauth2-private-key-file', $r->{app_jwt_key_file}));
is($rc, 0, 'private_key_jwt target created') or diag $out;
sends_as('cert', $r->{app_mailbox});

# the device flow: the CLI prints the URL and code and waits; the user approves elsewhere
($rc, $out) = cli('target create dev', shq(@ms, '--from-address', 'perl-device@example.test', '--oauth2-flow', 'device-code',
    '--oauth2-client-id', 'rig-post', '--oauth2-device-authorize-url', "$r->{issuer}/device/auth"),
    "--oauth2-client-secret-file $dir/ropc-secret");
is($rc, 0, 'device-code target created') or diag $out;
{
    my $err = Symbol::gensym;
    my $pid = IPC::Open3::open3(my $in, my $from, $err, $^X, 'bin/oxnotify', 'authorize', 'dev');
    close($in);
    my ($uri, $code, $seen) = ('', '', '');
    while (defined(my $line = <$from>)) {
        $seen .= $line;
        $uri = $1 if $line =~ /open (\S+)$/;
        if ($line =~ /enter the code: (\S+)/) { $code = $1; last }
    }
    ok($uri && $code, 'authorize prints the verification URL and the code') or diag $seen;
    my $approved = `python3 scripts/rig/oauth_driver.py '$r->{issuer}' approve perl-device\@example.test '$uri' '$code'`;
    is($approved, "approved\n", 'the rig approved the code as the user');
    my $rest = do { local $/; <$from> } // '';
    waitpid($pid, 0);
    is($? >> 8, 0, 'authorize ends once the code is approved') or diag "$seen$rest";
    like($rest, qr/target 'dev' is authorized/, '... and says so');
}
ok(state_of('dev')->{refresh_token}, 'the device flow stored a refresh token');
sends_as('dev', 'perl-device@example.test');

# the daily job: every mode gets a token; a broken credential is an error with its hint
open($sf, '>', "$dir/bad") or die; print {$sf} "not-the-app-secret-123456\n"; close($sf);
($rc, $out) = cli("target create appbad", shq(@ms, '--from-address', $r->{app_mailbox}, '--oauth2-flow', 'client-credentials',
    '--oauth2-client-id', $r->{app_client_id}), "--oauth2-client-secret-file $dir/bad");
is($rc, 0, 'a target with a wrong secret') or diag $out;
require OxNotify::Daily;
my $report = OxNotify::Daily::refresh();
my %outcome = map { ($_->{target} => $_->{outcome}) } @{ $report->{reports} };
is($outcome{$_}, 'refreshed', "daily job: $_ minted a token") for qw(app gsa ropc cert);
is($outcome{dev}, 'rotated', 'daily job: the device-flow target refreshed (rotating)');
is($outcome{appbad}, 'needs-admin-fix', 'daily job: the wrong secret needs an admin fix');
my $all = join("\n", map { "@$_" } @{ $report->{lines} });
like($all, qr/appbad.*invalid_client/, 'the daily job names the refusal');
unlike($all, qr/not-the-app-secret|\Q$body\E|\Q$r->{ropc_password}\E/, 'no secret in the daily job output');
is($report->{exit_code}, 1, 'exit code 1: a target needs attention');

done_testing();
