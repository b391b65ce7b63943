# The standalone server over every endpoint (Test::Mojo), against the real rig.
use strict;
use warnings;
use Test::More;
use Test::Mojo;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Server;
use OxNotify::Server::Tokens;

need_rig();
setup_dirs();
my $new = OxNotify::Server::Tokens::ensure();
my ($admin, $audit) = @$new{qw(admin audit)};
ok($admin && $audit, 'tokens generated on first start');
is((stat(OxNotify::Server::Tokens::token_file('admin')))[2] & 07777, 0600, 'token file 0600');
is(scalar(keys %{ OxNotify::Server::Tokens::ensure() }), 0, 'existing tokens are kept');

my $t = Test::Mojo->new('OxNotify::Server');
my %A = (Authorization => "Bearer $admin");
my %R = (Authorization => "Bearer $audit");
my $api = '/api2/json';

# authentication
$t->get_ok("$api/endpoints/smtp")->status_is(401)->header_like('WWW-Authenticate' => qr/Bearer/);
$t->get_ok("$api/endpoints/smtp" => { Authorization => 'Bearer wrong' })->status_is(401);
$t->get_ok("$api/endpoints/smtp" => { Authorization => "Basic $admin" })->status_is(401);
$t->get_ok("$api/endpoints/smtp" => \%A)->status_is(200)->json_is('/data' => []);
$t->get_ok("$api/endpoints/smtp" => { Authorization => "bearer $admin" })->status_is(200, 'scheme is case-insensitive');
$t->get_ok("$api/endpoints/smtp" => { Authorization => "BEARER $audit" })->status_is(200);

# token files others can read, or with a short token, authenticate nobody
{
    my $file = OxNotify::Server::Tokens::token_file('admin');
    chmod(0644, $file);
    $t->get_ok("$api/endpoints/smtp" => \%A)->status_is(401, 'world-readable token file: refused');
    like(eval { OxNotify::Server::Tokens::check() } // $@, qr/\Q$file\E is accessible to group or others \(mode 0644\); run chmod 600/,
        'check() names the file and the fix');
    chmod(0600, $file);
    $t->get_ok("$api/endpoints/smtp" => \%A)->status_is(200);
    my $afile = OxNotify::Server::Tokens::token_file('audit');
    rename($afile, "$afile.keep") or die;
    open(my $fh, '>', $afile) or die; print {$fh} "short\n"; close($fh); chmod(0600, $afile);
    $t->get_ok("$api/endpoints/smtp" => { Authorization => 'Bearer short' })->status_is(401, 'short token: refused');
    like(eval { OxNotify::Server::Tokens::check() } // $@, qr/shorter than 32 characters/, 'check() says why');
    rename("$afile.keep", $afile) or die;
    ok(OxNotify::Server::Tokens::check(), 'good token files pass the check');
}

# production mode: a 404 shows neither the routes nor the request (with its Authorization)
for my $path ('/no/such/page', '/api2/json/no/such/path', '/api2/json/endpoints/smtp/a/b') {
    $t->get_ok($path => \%A)->status_is(404);
    my $body = $t->tx->res->body;
    unlike($body, qr/\Q$admin\E/, "$path: 404 does not echo the Authorization header");
    unlike($body, qr/oauth2-status|api2jsonendpoints|smtp-oauth2-token/, "$path: 404 does not list routes");
}

# validation: 400 naming the parameter, nothing written
my $p = ms_target_params('m365', 'api-test@example.test');
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, port => 70000 })
  ->status_is(400)->json_like('/message' => qr/port/)->json_has('/errors/port');
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, colour => 'blue' })
  ->status_is(400)->json_is('/errors/colour' => 'unknown parameter');
$t->post_ok("$api/endpoints/smtp" => \%A => json => { name => 'x' })
  ->status_is(400)->json_has('/errors/server')->json_has('/errors/from-address')->json_has('/errors/name');
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, name => '../etc' })->status_is(400)->json_has('/errors/name');
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, 'oauth2-tenant-id' => 'evil/../x' })
  ->status_is(400)->json_like('/message' => qr/tenant/);
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, author => "x\r\nBcc: y\@example.test" })
  ->status_is(400)->json_like('/message' => qr/carriage return/);
$t->get_ok("$api/endpoints/smtp" => \%A)->json_is('/data' => []);

# permissions: the audit role reads, never writes or exchanges
$t->post_ok("$api/endpoints/smtp" => \%R => json => $p)->status_is(403)->json_like('/message' => qr/Mapping\.Modify/);
$t->post_ok("$api/endpoints/smtp" => \%A => json => $p)->status_is(200);
$t->get_ok("$api/endpoints/smtp" => \%R)->status_is(200)->json_is('/data/0/name' => 'm365');
$t->post_ok("$api/smtp-oauth2-authorize-url" => \%R => json => { name => 'm365', 'redirect-uri' => $RigTest::REDIRECT })
  ->status_is(403)->json_like('/message' => qr/needs Mapping\.Modify/);
$t->post_ok("$api/smtp-oauth2-token" => \%R => json => { state => 'x', 'authorization-code' => 'y' })->status_is(403);
# pve-manager lets Mapping.Audit send a test; the standalone audit role only reads (a test is
# mail, and load on the SMTP server and the provider, without limit)
$t->post_ok("$api/targets/m365/test" => \%R)->status_is(403)->json_like('/message' => qr/audit role may only read/);
$t->post_ok("$api/targets/m365/test" => \%A)->status_is(400)->json_like('/message' => qr/authoriz/);
$t->put_ok("$api/endpoints/smtp/m365" => \%R => json => { comment => 'x' })->status_is(403);
$t->delete_ok("$api/endpoints/smtp/m365" => \%R)->status_is(403);

# request bodies: a form or one JSON object; anything else is refused, nothing changes
my $cfg_before = $t->get_ok("$api/endpoints/smtp/m365" => \%A)->tx->res->json('/data');
$t->put_ok("$api/endpoints/smtp/m365" => { %A, 'Content-Type' => 'application/json' } => '{"comment": "x"')
  ->status_is(400)->json_like('/message' => qr/not valid JSON/);
$t->put_ok("$api/endpoints/smtp/m365" => \%A => json => [{ comment => 'x' }])
  ->status_is(400)->json_like('/message' => qr/must be a JSON object.*not an array/);
$t->put_ok("$api/endpoints/smtp/m365" => \%A => '{"comment": "no content type"}')->status_is(200, 'JSON without a content type is still JSON');
$t->put_ok("$api/endpoints/smtp/m365" => \%A => 'comment=garbage')->status_is(400, 'a body that is neither a form nor JSON: 400');
$t->put_ok("$api/endpoints/smtp/m365" => \%A => json => { comment => 'y' x (70 * 1024) })
  ->status_is(413)->json_like('/message' => qr/too large/);
is($t->get_ok("$api/endpoints/smtp/m365" => \%A)->tx->res->json('/data/comment'), 'no content type', 'refused bodies changed nothing');

# names with a '.' (new ones are refused, as pve-configid does; older configs may hold them)
# reach every route
$t->post_ok("$api/endpoints/smtp" => \%A => json => { %$p, name => 'm365.backup' })->status_is(400);
{
    open(my $fh, '>>', "$ENV{OXNOTIFY_CONFIG_DIR}/notifications.cfg") or die $!;
    print $fh "\nsmtp: m365.backup\n\tserver smtp.example.com\n\tfrom-address a\@example.com\n"
        . "\tmailto ops\@example.com\n\tauth-method microsoft-oauth2\n\toauth2-client-id cid\n"
        . "\toauth2-tenant-id contoso.com\n";
    close($fh) or die $!;
}
$t->get_ok("$api/endpoints/smtp/m365.backup" => \%A)->status_is(200)->json_is('/data/name' => 'm365.backup');
$t->put_ok("$api/endpoints/smtp/m365.backup" => \%A => json => { comment => 'dotted' })->status_is(200);
$t->get_ok("$api/targets/m365.backup/oauth2-status" => \%A)->status_is(200)->json_is('/data/target' => 'm365.backup');
$t->delete_ok("$api/endpoints/smtp/m365.backup" => \%A)->status_is(200);
$t->get_ok("$api/endpoints/smtp/m365.backup" => \%A)->status_is(404);

# reads: no secret anywhere
$t->get_ok("$api/endpoints/smtp/m365" => \%A)->status_is(200)
  ->json_is('/data/auth-method' => 'microsoft-oauth2')->json_like('/data/digest' => qr/^[0-9a-f]{64}$/);
unlike($t->tx->res->body, qr/rig-secret|client-secret/, 'GET has no client secret');
$t->get_ok("$api/endpoints/smtp/nope" => \%A)->status_is(404)->json_like('/message' => qr/'nope' does not exist/);
$t->get_ok("$api/targets" => \%A)->status_is(200)->json_is('/data/0/type' => 'smtp');
$t->get_ok("$api/targets/m365/oauth2-status" => \%A)->status_is(200)->json_is('/data/authorized' => 0);
$t->get_ok("$api/no/such/path" => \%A)->status_is(404);

# digest conflict
my $digest = $t->get_ok("$api/endpoints/smtp/m365" => \%A)->tx->res->json('/data/digest');
$t->put_ok("$api/endpoints/smtp/m365" => \%A => json => { comment => 'one', digest => $digest })->status_is(200);
$t->put_ok("$api/endpoints/smtp/m365" => \%A => json => { comment => 'two', digest => $digest })
  ->status_is(409)->json_like('/message' => qr/modified/);
# form-encoded, list as one string, boolean as 0/1
$t->put_ok("$api/endpoints/smtp/m365" => \%A => form => { mailto => 'ops@example.test, oncall@example.test', disable => 0 })
  ->status_is(200);
$t->get_ok("$api/endpoints/smtp/m365" => \%A)->json_is('/data/mailto/1' => 'oncall@example.test');

# the authorize flow: server keeps the verifier, state is single use and bound to the target
$t->post_ok("$api/endpoints/smtp" => \%A => json => ms_target_params('other', 'api-test@example.test'))->status_is(200);
my $begin = $t->post_ok("$api/smtp-oauth2-authorize-url" => \%A => json => { name => 'm365', 'redirect-uri' => $RigTest::REDIRECT })
  ->status_is(200)->json_has('/data/url')->tx->res->json('/data');
unlike($t->tx->res->body, qr/verifier/, 'the PKCE verifier stays on the server');
my ($code, $state) = login_and_consent('api-test@example.test', $begin->{url});
is($state, $begin->{state}, 'state round-trips');
$t->post_ok("$api/smtp-oauth2-token" => \%A => json => { state => $state, 'authorization-code' => $code, target => 'other' })
  ->status_is(400)->json_like('/message' => qr/started for target 'm365'/);
$t->post_ok("$api/smtp-oauth2-token" => \%A => json => { state => 'forged', 'authorization-code' => $code })
  ->status_is(400)->json_like('/message' => qr/unknown or already used/);
$begin = $t->post_ok("$api/smtp-oauth2-authorize-url" => \%A => json => { name => 'm365', 'redirect-uri' => $RigTest::REDIRECT })
  ->tx->res->json('/data');
($code, $state) = login_and_consent('api-test@example.test', $begin->{url});
$t->post_ok("$api/smtp-oauth2-token" => \%A => json => { state => $state, 'authorization-code' => $code, target => 'm365' })
  ->status_is(200)->json_is('/data/target' => 'm365');
unlike($t->tx->res->body, qr/refresh/i, 'no token in the answer');
$t->post_ok("$api/smtp-oauth2-token" => \%A => json => { state => $state, 'authorization-code' => $code })
  ->status_is(400)->json_like('/message' => qr/already used/);
$t->get_ok("$api/targets/m365/oauth2-status" => \%A)->json_is('/data/authorized' => 1);
$t->post_ok("$api/smtp-oauth2-token" => \%A => json => { 'authorization-code' => 'c' })
  ->status_is(400)->json_like('/message' => qr/auth-method/);

# test send
my $test_mails_before = mail_count("Test notification from oxnotify (target 'm365')");
$t->post_ok("$api/targets/m365/test" => \%A)->status_is(200);
ok(new_mail("Test notification from oxnotify (target 'm365')", $test_mails_before), 'test mail delivered');
$t->post_ok("$api/targets/nope/test" => \%A)->status_is(404);

# pages
$t->get_ok('/')->status_is(200)->content_like(qr/Authorize|targets/)
  ->header_like('Content-Security-Policy' => qr/default-src 'self'/);
$t->get_ok('/oauth2/callback?code=x&state=y')->status_is(200)->content_like(qr/callback\.js/);
$t->get_ok('/callback.js')->status_is(200)->content_like(qr/postMessage\(msg, window\.location\.origin\)/);

$t->delete_ok("$api/endpoints/smtp/m365" => \%A)->status_is(200);
$t->get_ok("$api/endpoints/smtp/m365" => \%A)->status_is(404);
done_testing();
