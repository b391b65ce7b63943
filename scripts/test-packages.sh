#!/usr/bin/env bash
# test-packages.sh — build the Debian packages, install them on this machine, use the installed
# daily job and Perl module against the rig (an OAuth2 target: authorize, send, refresh), upgrade
# to a rebuilt version with a bumped version and check config and state survive, purge the tool
# package (the library's data stays), remove and purge the library (data gone). Needs root and
# the rig's RIG_* variables (run-with-rig.sh). OXNOTIFY_KEEP_DEBS=DIR keeps a copy of the
# packages in DIR/<version>/ (scripts/realhost/nspawn-test.sh installs them). Refuses to touch an existing installation unless
# OXNOTIFY_PKG_TEST_FORCE=1. Whatever happens, it purges what it installed on exit, and it waits
# (up to 10 minutes) for another apt/dpkg holding the lock. OXNOTIFY_CARGO_LOCK=FILE serializes
# the package builds (cargo) through flock on FILE.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${RIG_ISSUER:?run via scripts/run-with-rig.sh}"
if [ -e /etc/oxnotify ] || [ -e /var/lib/oxnotify ] || dpkg -s oxnotify >/dev/null 2>&1 || dpkg -s liboxnotify-perl >/dev/null 2>&1; then
  [ "${OXNOTIFY_PKG_TEST_FORCE:-0}" = 1 ] || { echo "oxnotify is installed or configured here; refusing (OXNOTIFY_PKG_TEST_FORCE=1 overrides)" >&2; exit 1; }
fi
pass=0
ok() { pass=$((pass+1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
W=$(mktemp -d /tmp/oxpkg.XXXXXX)
installed=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$installed" = 1 ]; then
    # a failed step must not leave the packages (or their data) behind for the next run
    "${APT[@]}" purge oxnotify liboxnotify-perl >"$W/cleanup.log" 2>&1 \
      || { echo "cleanup: purge failed:" >&2; tail -20 "$W/cleanup.log" >&2; rc=1; }
    [ "$rc" = 0 ] || echo "cleanup: purged oxnotify and liboxnotify-perl after the failure" >&2
  fi
  rm -rf "$W"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

build() { # version -> debs in $W/<version>/ (and a copy in $OXNOTIFY_KEEP_DEBS/<version>/, for the
  # booted-systemd test, which installs the same packages)
  local v=$1
  "$ROOT/scripts/build-debs.sh" "$v" "$W/$v" || fail "dpkg-buildpackage $v"
  if [ -n "${OXNOTIFY_KEEP_DEBS:-}" ]; then mkdir -p "$OXNOTIFY_KEEP_DEBS/$v"; cp "$W/$v"/*.deb "$OXNOTIFY_KEEP_DEBS/$v/"; fi
}

V1=$(cd "$ROOT" && dpkg-parsechangelog -S Version)
build "$V1"
lintian_out=$(cd "$W/$V1" && lintian --tag-display-limit 0 ./*.changes 2>/dev/null || true)
if echo "$lintian_out" | grep -q '^E:'; then echo "$lintian_out"; fail "lintian errors"; fi
ok "built $V1; lintian: no errors ($(echo "$lintian_out" | grep -c '^W:' || true) warnings)"

installed=1
"${APT[@]}" install "$W/$V1"/liboxnotify-perl_*.deb "$W/$V1"/oxnotify_*.deb >"$W/install.log" 2>&1 \
  || { tail -20 "$W/install.log"; fail "install"; }
[ "$(stat -c %a /etc/oxnotify/priv)" = 700 ] && [ "$(stat -c %a /var/lib/oxnotify)" = 700 ] \
  && ok "directories created root-only (priv 0700, state 0700)" || fail "directory modes"
[ -L /etc/systemd/system/timers.target.wants/oxnotify-daily.timer ] && ok "daily timer enabled" || fail "timer not enabled"
[ -L /etc/systemd/system/timers.target.wants/oxnotify-outbox.timer ] && ok "outbox timer enabled" || fail "outbox timer not enabled"
[ -f /lib/systemd/system/oxnotify-server.service ] && [ ! -e /etc/systemd/system/multi-user.target.wants/oxnotify-server.service ] \
  && ok "oxnotify-server.service installed, not enabled" || fail "server unit"
[ -f /lib/systemd/system/oxnotify-broker.socket ] && [ -f /lib/systemd/system/oxnotify-broker.service ] \
  && [ ! -e /etc/systemd/system/sockets.target.wants/oxnotify-broker.socket ] \
  && ok "oxnotify-broker socket and service installed, not enabled" || fail "broker units"
[ -f /lib/systemd/system/oxnotify-relay.socket ] && [ -f /lib/systemd/system/oxnotify-relay.service ] \
  && [ ! -e /etc/systemd/system/sockets.target.wants/oxnotify-relay.socket ] && [ -x /usr/lib/oxnotify/oxnotify-relay ] \
  && ok "oxnotify-relay socket and service installed, not enabled" || fail "relay units"
for u in oxnotify-daily oxnotify-outbox oxnotify-server oxnotify-broker oxnotify-relay; do
  score=$(systemd-analyze security --offline=yes /lib/systemd/system/$u.service 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  awk -v s="${score:-99}" 'BEGIN { exit !(s <= 4.5) }' && ok "installed $u.service: exposure $score (<= 4.5)" || fail "$u.service exposure ${score:-?}"
done
/usr/bin/oxnotify-server routes >/dev/null && /usr/bin/oxnotify-server version >/dev/null
[ -z "$(ls -A /etc/oxnotify/priv)" ] && ok "oxnotify-server routes/version create no token files" || fail "server commands had side effects"

# everything below uses the installed files only: no checkout paths, no OXNOTIFY_* overrides
cd /
unset OXNOTIFY_LIB OXNOTIFY_CONFIG_DIR OXNOTIFY_STATE_DIR
P="env -u PERL5LIB perl -MOxNotify::Core"
$P -e 'OxNotify::Core::library_path() =~ m{^/usr/lib/.*/oxnotify/libnotify_perl\.so$} or die OxNotify::Core::library_path()' \
  && ok "installed module loads the installed library"
for f in index.html app.js style.css callback.html callback.js; do
  [ -f "/usr/share/oxnotify/www/$f" ] || fail "web page: /usr/share/oxnotify/www/$f not installed"
done
$P -MOxNotify::Server -MMojo::UserAgent -e '
  OxNotify::Server::www_dir() eq "/usr/share/oxnotify/www" or die "www_dir: ", OxNotify::Server::www_dir(), "\n";
  my $ua = Mojo::UserAgent->new; $ua->server->app(OxNotify::Server->new);
  for my $path ("/", "/app.js", "/oauth2/callback", "/callback.js", "/style.css") {
    my $res = $ua->get($path)->result;
    $res->code == 200 && $res->body =~ /\S/ or die "GET $path: ", $res->code, "\n";
  }' && ok "web page installed in /usr/share/oxnotify/www, and the installed server serves it" || fail "web page"
REDIRECT=http://127.0.0.1:47126/callback
USER=pkg-test@example.test
$P -e '
  my ($issuer, $port) = @ARGV;
  OxNotify::Core::create_target({ name => "pkg", server => "localhost", port => $port, mode => "starttls",
    "auth-method" => "microsoft-oauth2", "from-address" => "pkg-test\@example.test", mailto => ["ops\@example.test"],
    "oauth2-client-id" => "rig-post", "oauth2-client-secret" => "rig-secret",
    "oauth2-tenant-id" => "12345678-90ab-cdef-1234-567890abcdef",
    "oauth2-authorize-url" => "$issuer/auth", "oauth2-token-url" => "$issuer/token" });' "$RIG_ISSUER" "$RIG_SMTP_STARTTLS_PORT"
AUTH=$($P -MCpanel::JSON::XS -e 'print encode_json(OxNotify::Core::authorize_url({ name => "pkg", "redirect-uri" => $ARGV[0] }))' "$REDIRECT")
URL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$AUTH")
FINAL=$(python3 "$ROOT/scripts/rig/oauth_driver.py" "$RIG_ISSUER" browse "$USER" "$URL" "$REDIRECT")
$P -MCpanel::JSON::XS -MURI -e '
  my ($auth, $final, $issuer, $redirect) = @ARGV; $auth = decode_json($auth);
  my %q = URI->new($final)->query_form; $q{state} eq $auth->{state} or die "state mismatch\n";
  OxNotify::Core::exchange_smtp_oauth2_code({ "auth-method" => "microsoft-oauth2", "client-id" => "rig-post",
    "client-secret" => "rig-secret", "tenant-id" => "12345678-90ab-cdef-1234-567890abcdef",
    "authorization-code" => $q{code}, "redirect-uri" => $redirect, "pkce-verifier" => $auth->{"pkce-verifier"},
    "token-url" => "$issuer/token", target => "pkg" });' "$AUTH" "$FINAL" "$RIG_ISSUER" "$REDIRECT"
ok "target created and authorized through the installed module"
SUBJECT="package test $$"
$P -e 'my $r = OxNotify::Core::send({ targets => ["pkg"], title => $ARGV[0] }); $r->[0]{ok} or die $r->[0]{message}' "$SUBJECT"
grep -lq "Subject: $SUBJECT" "$RIG_MAILDIR"/new/* && ok "mail sent with the installed module arrived" || fail "mail not found"
out=$(/usr/bin/oxnotify status pkg 2>&1) && echo "$out" | grep -q "pkg (microsoft-oauth2): authorized" \
  && ok "installed oxnotify CLI reports the target authorized" || fail "cli: $out"
tok=$(/usr/bin/oxnotify token pkg 2>&1) && [ ${#tok} -gt 10 ] && ok "installed oxnotify token prints the access token" \
  || fail "oxnotify token: $(echo "$tok" | head -c 200)"
SUBJECT3="package cli send $$"
out=$(/usr/bin/oxnotify send pkg --title "$SUBJECT3" 2>&1) && [ "$out" = "pkg: sent" ] \
  && grep -lq "Subject: $SUBJECT3" "$RIG_MAILDIR"/new/* \
  && ok "installed oxnotify send (served without Perl) sends" || fail "oxnotify send: $out"
head -c 4 /usr/bin/oxnotify | grep -q ELF && ok "/usr/bin/oxnotify is the binary, not a Perl script" \
  || fail "/usr/bin/oxnotify is not an ELF binary"
# as the unit runs it: root without any capability, no new privileges
NOCAPS=(setpriv --bounding-set=-all --inh-caps=-all --no-new-privs --)
out=$("${NOCAPS[@]}" /usr/bin/oxnotify-daily --no-syslog 2>&1) || fail "installed oxnotify-daily: $out"
echo "$out" | grep -q "target 'pkg': rotated" && ok "installed oxnotify-daily rotated the token, without capabilities" || fail "daily: $out"
[ "$(stat -c %a /var/lib/oxnotify/oauth2/pkg.json)" = 600 ] && ok "state file 0600" || fail "state mode"

snapshot() { sha256sum /etc/oxnotify/notifications.cfg /etc/oxnotify/priv/notifications.cfg /var/lib/oxnotify/oauth2/pkg.json; }
before=$(snapshot)
V2="$V1+pkgtest1"
build "$V2"
"${APT[@]}" install "$W/$V2"/liboxnotify-perl_*.deb "$W/$V2"/oxnotify_*.deb >"$W/upgrade.log" 2>&1 \
  || { tail -20 "$W/upgrade.log"; fail "upgrade"; }
[ "$(dpkg-query -W -f '${Version}' oxnotify)" = "$V2" ] && ok "upgraded to $V2" || fail "version after upgrade"
[ "$(snapshot)" = "$before" ] && ok "config, secrets and state unchanged by the upgrade" || fail "upgrade changed data"
out=$(/usr/bin/oxnotify-daily --no-syslog 2>&1) && echo "$out" | grep -q rotated && ok "daily job works after the upgrade" || fail "$out"

# the tool package owns only the server's API tokens; the library owns targets, secrets, state
$P -MOxNotify::Server::Tokens -e 'OxNotify::Server::Tokens::ensure()'
before=$(snapshot)
[ -f /etc/oxnotify/priv/api-token.admin ] || fail "no server token to purge"
"${APT[@]}" purge oxnotify >"$W/purge-tool.log" 2>&1 || { tail -20 "$W/purge-tool.log"; fail "purge oxnotify"; }
[ "$(snapshot)" = "$before" ] && [ ! -e /etc/oxnotify/priv/api-token.admin ] \
  && ok "purging oxnotify keeps the library's config, secrets and state, removes the server tokens" || fail "purge oxnotify: data"
SUBJECT="package test after tool purge $$"
$P -e 'my $r = OxNotify::Core::send({ targets => ["pkg"], title => $ARGV[0] }); $r->[0]{ok} or die $r->[0]{message}' "$SUBJECT"
grep -lq "Subject: $SUBJECT" "$RIG_MAILDIR"/new/* && ok "a stack using only liboxnotify-perl still sends" || fail "send after tool purge"

"${APT[@]}" remove liboxnotify-perl >"$W/remove.log" 2>&1 || fail "remove"
[ -f /etc/oxnotify/priv/notifications.cfg ] && [ -f /var/lib/oxnotify/oauth2/pkg.json ] && ok "removing the library keeps config and state" || fail "remove deleted data"
"${APT[@]}" purge liboxnotify-perl >"$W/purge.log" 2>&1 || fail "purge"
[ ! -e /etc/oxnotify ] && [ ! -e /var/lib/oxnotify ] && ok "purging the library removes config and state" || fail "purge left data"
installed=0
echo "$pass package checks passed"
