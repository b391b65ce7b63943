# The web page as files (perl/share/www): what the HTML loads exists, nothing inline that the
# CSP would block, the server serves the directory it is given (option, environment, checkout)
# and refuses to start without a page, the form's data (/form.json) and the provider guides
# (/guides/NAME.md) are served, and eslint finds nothing in the scripts. Needs no rig.
use strict;
use warnings;
use Test::More;
use File::Temp ();
use Mojo::File ();
use Mojo::Util ();
use Test::Mojo;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;
use OxNotify::Server;

my $dir = setup_dirs();
my $www = Mojo::File->new('perl/share/www')->to_abs;

is(Mojo::File->new(OxNotify::Server::www_dir())->realpath, $www->realpath, 'a checkout serves its own perl/share/www');

for my $html (qw(index.html callback.html)) {
    my $text = $www->child($html)->slurp;
    my @refs = $text =~ /<(?:script|link)\b[^>]*?\b(?:src|href)="\/([^"]+)"/g;
    ok(@refs, "$html loads scripts or styles");
    ok(-f $www->child($_), "$html: /$_ is in the directory") for @refs;
    # the server's CSP (default-src 'self') blocks anything inline
    unlike($text, qr/<script\b(?![^>]*\bsrc=)/, "$html: no inline script");
    unlike($text, qr/\son[a-z]+\s*=/i, "$html: no inline event handler");
    unlike($text, qr/\sstyle\s*=|<style\b/i, "$html: no inline style");
    unlike($text, qr/javascript:/i, "$html: no javascript: URL");
}

my $t = Test::Mojo->new('OxNotify::Server');
$t->get_ok('/')->status_is(200)->content_is($www->child('index.html')->slurp)
  ->header_like('Content-Security-Policy' => qr/default-src 'self'/);
$t->get_ok('/app.js')->status_is(200)->content_type_like(qr/javascript/)->content_is($www->child('app.js')->slurp);
$t->get_ok('/oauth2/callback?code=x&state=y')->status_is(200)->content_is($www->child('callback.html')->slurp);
$t->get_ok('/style.css')->status_is(200)->content_type_like(qr/css/);
$t->get_ok('/Server.pm')->status_is(404);

# what the form is built from: the key table with where each key applies, and the providers'
# registration values; public (no token needed), and never a secret or a target
$t->get_ok('/form.json')->status_is(200)->json_has('/keys/0/applies')->json_has('/keys/0/needed')
  ->json_is('/keys/0/name' => 'server')
  ->json_like('/providers/0/scope' => qr{^https://outlook\.office\.com/SMTP\.Send offline_access$});
my $form = $t->tx->res->json;
is_deeply([map { $_->{name} } @{ $form->{keys} }], [map { $_->{name} } @{ OxNotify::Core::config_keys() }],
    'form.json has every key of the table, in its order');
is_deeply([sort map { $_->{'auth-method'} } @{ $form->{providers} }], [qw(google-oauth2 microsoft-oauth2 oauth2)],
    'form.json has every OAuth2 provider');
my ($client_credentials) = map { $_->{'app-only-scope'} } grep { $_->{'auth-method'} eq 'microsoft-oauth2' } @{ $form->{providers} };
is($client_credentials, 'https://outlook.office365.com/.default', 'the app-only scope is the one the core asks for');

# the provider guides: served as Markdown from docs/guides (the page's help), linked from the
# README, each with the date it was written; the Microsoft one with Microsoft's dated statement
my $guides = Mojo::File->new('docs/guides')->to_abs;
is(Mojo::File->new(OxNotify::Server::guides_dir())->realpath, $guides->realpath, 'a checkout serves its own docs/guides');
my $readme = Mojo::File->new('README.md')->slurp;
for my $g (qw(microsoft google generic)) {
    $t->get_ok("/guides/$g.md")->status_is(200)->content_type_like(qr{^text/markdown})
      ->content_is(Mojo::Util::decode("UTF-8", $guides->child("$g.md")->slurp));
    like($readme, qr{\(docs/guides/\Q$g\E\.md\)}, "README links the $g guide");
    like($guides->child("$g.md")->slurp, qr/written on \d{4}-\d\d-\d\d/, "the $g guide says when it was written");
}
like($guides->child('microsoft.md')->slurp, qr/statement of \*\*2026-01-27\*\*.*end of December 2026/s,
    'the Microsoft guide gives the basic-auth timeline with the date Microsoft stated it');
like($t->get_ok('/app.js')->tx->res->body, qr{'/guides/' \+ name \+ '\.md'}, 'the page loads the guides from there');
$t->get_ok('/guides/../README.md')->status_is(404);
$t->get_ok('/guides/none.md')->status_is(404);
$t->get_ok('/guides/microsoft.txt')->status_is(404);
{
    my $elsewhere = File::Temp::tempdir(CLEANUP => 1);
    Mojo::File->new($elsewhere, 'microsoft.md')->spurt("# elsewhere\n");
    local $ENV{OXNOTIFY_GUIDES} = $elsewhere;
    Test::Mojo->new('OxNotify::Server')->get_ok('/guides/microsoft.md')->content_is("# elsewhere\n");
}

# another directory: from the environment, or given to new() (what --www does)
my $other = File::Temp::tempdir(CLEANUP => 1);
Mojo::File->new($other, 'index.html')->spurt("<!DOCTYPE html><title>elsewhere</title>\n");
{
    local $ENV{OXNOTIFY_WWW} = $other;
    is(OxNotify::Server::www_dir(), $other, 'OXNOTIFY_WWW wins');
    Test::Mojo->new('OxNotify::Server')->get_ok('/')->status_is(200)->content_like(qr/elsewhere/);
    is(OxNotify::Server::serve_options('daemon', '--www', $www)->{www}, $www, '--www wins over OXNOTIFY_WWW');
}
Test::Mojo->new(OxNotify::Server->new(www => $other))->get_ok('/')->content_like(qr/elsewhere/, 'www given to new()');

# no page, no server: refused before any side effect (no token files)
{
    my $empty = File::Temp::tempdir(CLEANUP => 1);
    my $out = `$^X bin/oxnotify-server daemon -l http://127.0.0.1:9 --www $empty 2>&1`;
    is($? >> 8, 2, 'a directory without index.html: exit 2');
    like($out, qr/not starting: no web page in \Q$empty\E/, '... naming the directory');
    ok(!-e $ENV{OXNOTIFY_CONFIG_DIR}, '... before creating anything');
}

# the scripts pass eslint (tests/browser/eslint.config.mjs; installed by scripts/install-deps.sh)
my $eslint = 'tests/browser/node_modules/.bin/eslint';
SKIP: {
    if (!-x $eslint) {
        my $why = "needs eslint ($eslint): run scripts/install-deps.sh";
        # the full suite (OXNOTIFY_REQUIRE_RIG=1) fails without it, as without the rig
        $ENV{OXNOTIFY_REQUIRE_RIG} ? fail($why) : skip($why, 1);
        last SKIP;
    }
    my $out = `$eslint --max-warnings 0 -c tests/browser/eslint.config.mjs perl/share/www tests/browser 2>&1`;
    is($? >> 8, 0, 'eslint: the page\'s scripts and the browser test are clean') or diag $out;
}
done_testing();
