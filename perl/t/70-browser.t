# Real browser: headless Chromium (Debian) driven by playwright-core clicks through the web
# page's Authorize flow against the rig's OAuth2 server; then the test mail must be in the Maildir.
# It checks each target's health and the Verify button, and (forms.mjs) each provider's and
# flow's form, with screenshots at desktop and phone widths in a temp directory
# ($OXNOTIFY_SHOTS keeps them elsewhere; they are never committed).
use strict;
use warnings;
use Test::More;
use IO::Socket::IP ();
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Server::Tokens;

need_rig();
need(-x '/usr/bin/chromium', 'needs chromium (scripts/install-deps.sh installs it)');
need(-d 'tests/browser/node_modules/playwright-core', 'needs playwright-core (scripts/install-deps.sh)');
my $dir = setup_dirs();
my $token = OxNotify::Server::Tokens::ensure()->{admin};

my $port = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 1)->sockport;
my $pid = fork() // die;
if (!$pid) {
    open(STDOUT, '>', "$dir/server.log"); open(STDERR, '>&', \*STDOUT); open(STDIN, '<', '/dev/null');
    exec($^X, 'bin/oxnotify-server', 'daemon', '-l', "http://127.0.0.1:$port") or die;
}
for (1 .. 100) { last if IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port); select(undef, undef, undef, 0.1) }

my $user = 'browser-' . $$ . '@example.test';
mkdir "$dir/shots";
local $ENV{SERVER_URL} = "http://127.0.0.1:$port";
local $ENV{TOKEN} = $token;
local $ENV{USER_EMAIL} = $user;
local $ENV{SHOTS} = $ENV{OXNOTIFY_SHOTS} // "$dir/shots";
my $forms = `node tests/browser/forms.mjs 2>&1`;
my $forms_rc = $? >> 8;
my $out = `node tests/browser/authorize.mjs 2>&1`;
my $rc = $? >> 8;
kill 'TERM', $pid;
waitpid($pid, 0);
note("screenshots in $ENV{SHOTS}");
is($forms_rc, 0, 'the form of every provider and flow shows what it needs') or diag $forms;
for my $mode (qw(microsoft-code microsoft-app-only microsoft-app-only-certificate microsoft-device-code
    microsoft-password google-code google-service-account generic-code generic-device-code plain
    plain-insecure none)) {
    like($forms, qr/^ok   form \Q$mode\E: /m, "form of mode $mode");
    ok(-s "$ENV{SHOTS}/form-$mode-$_.png", "screenshot of mode $mode, $_ width") for qw(desktop phone);
}
like($forms, qr/^ok   the guide of the chosen provider is shown/m, 'the provider guide is the page\'s help');
like($forms, qr/^ok   phone \(390 px\): no sideways scrolling/m, 'the page fits a phone');
like($forms, qr/^ok   a key the table gains later is shown where the table says/m, 'keys added to the table later need no page change');
is($rc, 0, 'the browser completed create -> Authorize -> consent -> Send test') or diag $out, `cat $dir/server.log`;
like($out, qr/ok   provider refusal is reported/, 'a provider refusal is shown to the user');
like($out, qr/ok   authorize through the popup/, 'authorized via popup + postMessage + backend exchange');
like($out, qr/ok   device code shown: \S+ at http/, 'the page shows the device code and where to enter it');
like($out, qr/ok   device code approved/, 'the device-code target is authorized once the code is approved');
like($out, qr/ok   send test \(app-only\)/, 'an app-only target sends from the page without authorization');
like($out, qr/ok   edit an app-only target/, 'editing a target shows its mode and saves a change');
like($out, qr/ok   send test after the edit/, 'the edited target still sends');
like($out, qr/ok   health shown: /, 'a target shows authorized since, expiry, access token, last refresh, queue, last error');
like($out, qr/ok   verify shows each step: Login OK/, 'Verify shows each step with its time');
like($out, qr/ok   verify failure names step, kind and hint: Login failed at step token: needs an admin fix/,
    'a failed Verify names the step, the kind and the hint');
like($out, qr/ok   last error with its kind: needs an admin fix/, 'the status keeps the last error with its kind');
like($out, qr/ok   forecast, alert target and the 5.7.139 hint are shown as given/, 'forecast, alert target and a 5.7.139 hint are shown');
ok(-s "$ENV{SHOTS}/7-health-$_.png", "screenshot of the health at $_ width") for qw(desktop phone);
ok(find_mail("Test notification from oxnotify (target 'web3')", qr/^From: .*\Q$ENV{RIG_APP_MAILBOX}\E/m),
    'the app-only test mail is in the Maildir');
my $mail = find_mail("Test notification from oxnotify (target 'web1')", qr/^From: .*\Q$user\E/m);
ok($mail, 'the test mail is in the Maildir');
like($mail // '', qr/^From: <?\Q$user\E>?/m, 'sent as the authorized user');
done_testing();
