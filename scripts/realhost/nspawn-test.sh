#!/usr/bin/env bash
# nspawn-test.sh — the Debian packages under a real, booted systemd: a Debian 12 tree (mmdebstrap,
# cached as a tarball) booted with systemd-nspawn (systemd 252 as PID 1, private network), the
# freshly built .debs installed in it, the rig reachable inside on its own 127.0.0.1 ports
# (socat forwarders between the host's loopback and the container's), and checked for real:
#   - every shipped unit in its intended state after install (timers active, the rest inactive);
#   - the daily timer (shortened by a drop-in) fires, its hardened service rotates a token at the
#     rig; the journal shows the run and no secret;
#   - a send while the SMTP server is away is queued; the outbox timer delivers it once it is back;
#   - oxnotify-broker.socket activates the broker on the first request; root gets a token,
#     `nobody` (outside the allow-list) is refused;
#   - oxnotify-server.service starts, answers on 127.0.0.1:8765, and again after a restart;
#   - no unit failed, no seccomp/permission error in the journal, `systemd-analyze security`
#     inside equals the offline figure of the source unit;
#   - upgrade to a rebuilt, bumped version keeps config, state and queued mail (and delivers it);
#   - purging oxnotify stops everything it started (server, broker socket and service, timers),
#     removes the server's tokens and keeps the library's data; purging liboxnotify-perl removes it.
# Resource limits are not asserted: on a cgroup v1 (hybrid) host they are not enforced in nspawn.
#
# Needs root, systemd-container, mmdebstrap (or debootstrap), socat, zstd, and the rig (RIG_*
# variables: run via scripts/run-with-rig.sh). Packages: OXNOTIFY_NSPAWN_DEBS=DIR with two
# subdirectories, the installed version and the upgrade (sorted by version; what
# test-packages.sh leaves with OXNOTIFY_KEEP_DEBS=DIR), else it builds both with build-debs.sh.
# The tree is cached in OXNOTIFY_TEST_CACHE (default /var/cache/oxnotify-test), keyed on its
# package list; `nspawn-test.sh tree` only builds the cache. Everything it starts (container,
# forwarders, cgroups, work dir) is removed on every exit path; it never touches the host's dpkg.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${OXNOTIFY_TEST_CACHE:-/var/cache/oxnotify-test}
SUITE=bookworm
# what the packages need (Depends), the test's tools (ca-certificates for the rig CA, procps for
# pgrep), and systemd as PID 1; the tree is rebuilt when this list changes
TREE_PKGS=systemd,systemd-sysv,dbus,ca-certificates,procps,iproute2,perl,libffi-platypus-perl,libcpanel-json-xs-perl,libmojolicious-perl,libjson-validator-perl,liburi-perl
TREE_KEY=$(printf '%s %s v1' "$SUITE" "$TREE_PKGS" | sha256sum | cut -c1-12)
TARBALL=$CACHE/debian-$SUITE-$TREE_KEY.tar.zst
CPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[nspawn-test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

mirror() {
  local m=
  [ -f /etc/apt/sources.list.d/debian.sources ] \
    && m=$(awk '/^URIs:/ { print $2 }' /etc/apt/sources.list.d/debian.sources | grep -v security | head -n1)
  [ -z "$m" ] && [ -f /etc/apt/sources.list ] \
    && m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
  echo "${m:-http://deb.debian.org/debian}"
}

# the cached tree: built once per package list, under a lock (two runs may start at once)
ensure_tree() {
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock"
  flock 8
  if [ ! -s "$TARBALL" ]; then
    local t0=$SECONDS builder=mmdebstrap tmp=$CACHE/.build-$$
    command -v mmdebstrap >/dev/null || builder=debootstrap
    log "building the Debian $SUITE tree with $builder (cached as $TARBALL)"
    rm -rf "$tmp"; mkdir -p "$tmp/root"
    "$builder" --variant=minbase --include="$TREE_PKGS" "$SUITE" "$tmp/root" "$(mirror)" >"$tmp/build.log" 2>&1 \
      || { tail -30 "$tmp/build.log" >&2; rm -rf "$tmp"; die "$builder failed"; }
    # nothing may grab the dpkg lock or wait for a console in the middle of a test
    for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
             console-getty.service; do
      ln -sf /dev/null "$tmp/root/etc/systemd/system/$u"
    done
    mkdir -p "$tmp/root/var/log/journal"
    rm -f "$tmp/root"/var/cache/apt/archives/*.deb
    tar --numeric-owner --xattrs -C "$tmp/root" -I 'zstd -T0 -3' -cf "$tmp/tree.tar.zst" .
    mv "$tmp/tree.tar.zst" "$TARBALL"
    rm -rf "$tmp"
    log "tree built in $((SECONDS - t0)) s ($(du -h "$TARBALL" | cut -f1))"
  fi
  flock -u 8
}

if [ "${1:-}" = tree ]; then ensure_tree; exit 0; fi
: "${RIG_ISSUER:?run via scripts/run-with-rig.sh}"

pass=0
bad=0
ok() { pass=$((pass+1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }
fail_on() { bad=$((bad+1)); echo "FAIL $*" >&2; }   # a failed check after which the run goes on
T0=$SECONDS
W=$(mktemp -d /tmp/oxns.XXXXXX)
M=oxns-$$
NSPAWN_PID=
LEADER=
FWD_PIDS=()
CGS=()
for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do [ -f "$h/cgroup.procs" ] && CGS+=("$h/$M"); done
[ -f /sys/fs/cgroup/cgroup.controllers ] && CGS=("/sys/fs/cgroup/$M")   # a pure cgroup v2 host

cleanup() {
  local rc=$? p i
  trap - EXIT INT TERM
  set +e
  for p in "${FWD_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    [ -n "$LEADER" ] && inside journalctl -b --no-pager -o short-precise >"$W/journal.txt" 2>&1
    # nspawn turns SIGTERM into SIGRTMIN+3 for the container's PID 1: a clean halt
    kill -TERM "$NSPAWN_PID"
    for i in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$NSPAWN_PID" 2>/dev/null && { log "halt timed out: SIGKILL nspawn $NSPAWN_PID"; kill -KILL "$NSPAWN_PID"; sleep 1; }
  fi
  for p in "${FWD_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  for p in "${CGS[@]}"; do [ -d "$p" ] && find "$p" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  for p in "${CGS[@]}"; do [ -d "$p" ] && { log "cleanup: cgroup $p still busy"; rc=1; }; done
  rm -rf "/run/systemd/nspawn/propagate/$M" "$CACHE/.build-$$"
  if [ "$rc" != 0 ] && [ -f "$W/journal.txt" ]; then
    mkdir -p "$CACHE/logs" && cp "$W/journal.txt" "$CACHE/logs/journal-last-failure.txt" \
      && log "the container's journal: $CACHE/logs/journal-last-failure.txt"
  fi
  rm -rf "$W"
  [ "$rc" = 0 ] && log "done in $((SECONDS - T0)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# a command inside the booted container: all its namespaces, its root; a clean environment
inside() {
  nsenter -t "$LEADER" -a -r -w env -i PATH=$CPATH LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 \
    DEBIAN_FRONTEND=noninteractive OXNOTIFY_ALLOW_PROVIDER_HOSTS="$ALLOW_HOSTS" "$@"
}
# the rig stands in for Microsoft at 127.0.0.1 (forwarded into the container): the root-only
# setting that allows other provider hosts, for the commands and (a drop-in) the units
ALLOW_HOSTS=${OXNOTIFY_ALLOW_PROVIDER_HOSTS:-127.0.0.1,localhost}
wait_for_ok() { # seconds command...: like wait_for, but returns 1 instead of failing
  local n=$(( $1 * 2 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}
wait_for() { # seconds description command... : poll every 0.5 s
  local n=$(( $1 * 2 )) what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  fail "timed out after $((n / 2)) s: $what"
}

# ---- the packages: the installed version and the upgrade ----
DEBS=${OXNOTIFY_NSPAWN_DEBS:-}
if [ -z "$DEBS" ]; then
  DEBS=$W/debs
  V1=$(cd "$ROOT" && dpkg-parsechangelog -S Version)
  "$ROOT/scripts/build-debs.sh" "$V1" "$DEBS/$V1" || fail "build $V1"
  "$ROOT/scripts/build-debs.sh" "$V1+nspawn1" "$DEBS/$V1+nspawn1" || fail "build $V1+nspawn1"
  ok "built $V1 and $V1+nspawn1 ($((SECONDS - T0)) s)"
fi
mapfile -t VERS < <(cd "$DEBS" && ls -d -- */ | tr -d / | sort -V)
[ "${#VERS[@]}" = 2 ] || fail "$DEBS must hold two version directories, found: ${VERS[*]}"
V1=${VERS[0]} V2=${VERS[1]}
mkdir -p "$W/debs-ro"; cp -r "$DEBS/$V1" "$DEBS/$V2" "$W/debs-ro/"

# ---- the tree, unpacked afresh for this run ----
ensure_tree
t=$SECONDS
mkdir -p "$W/root"
tar --numeric-owner --xattrs -C "$W/root" -I zstd -xf "$TARBALL"
echo "$M" >"$W/root/etc/hostname"
# a Debian installation has /etc/hosts (the installer writes it); the bootstrapped tree has none,
# and without it "localhost" does not resolve on a machine without DNS
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n' "$M" >"$W/root/etc/hosts"
# the rig's CA, trusted inside like any system CA (update-ca-certificates runs after boot)
install -D -m 0644 "$RIG_CA_FILE" "$W/root/usr/local/share/ca-certificates/oxnotify-rig.crt"
log "tree unpacked in $((SECONDS - t)) s"

# ---- boot ----
# No host systemd: no D-Bus, no machined (--register=no --keep-unit); nspawn splits its own
# cgroup into payload/supervisor, so it runs in a cgroup of its own on every hierarchy.
# bpf() allowed: the container's systemd needs it for IPAddressDeny= and friends.
t=$SECONDS
(
  for c in "${CGS[@]}"; do mkdir -p "$c"; echo "$BASHPID" >"$c/cgroup.procs"; done
  exec systemd-nspawn --quiet --register=no --keep-unit --link-journal=no -D "$W/root" -M "$M" \
    --boot --console=read-only --private-network --system-call-filter=bpf --bind-ro="$W/debs-ro:/debs" \
    </dev/null >"$W/console.log" 2>&1
) &
NSPAWN_PID=$!
for _ in $(seq 300); do
  kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$W/console.log" >&2; fail "systemd-nspawn exited"; }
  for c in $(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null); do
    [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { LEADER=$c; break 2; }
  done
  sleep 0.1
done
[ -n "$LEADER" ] || fail "no systemd in the container"
st=
for _ in $(seq 120); do
  st=$(inside timeout 5 systemctl is-system-running --wait 2>/dev/null) && break
  case "$st" in running|degraded) break ;; esac
  sleep 1
done
[ "$st" = running ] || { inside systemctl --failed --no-pager >&2 || true; fail "container: is-system-running = $st"; }
ok "Debian $SUITE booted with systemd $(inside systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p') as PID 1 ($((SECONDS - t)) s)"
inside update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates"

# ---- the rig inside: the container's 127.0.0.1:PORT -> a unix socket -> the host's 127.0.0.1:PORT ----
FWD_IN=()
forward() { # port: the host half (stays), the container half (started by forward_in)
  local port=$1
  socat "UNIX-LISTEN:$W/fwd-$port.sock,fork,unlink-early" "TCP:127.0.0.1:$port" </dev/null >>"$W/socat.log" 2>&1 &
  FWD_PIDS+=($!)
  wait_for 5 "forwarder socket $port" test -S "$W/fwd-$port.sock"
  forward_in "$port"
}
declare -A FWD_IN_PID
forward_in() { # port: listen on 127.0.0.1:port in the container's network namespace only
  local port=$1
  nsenter --net="/proc/$LEADER/ns/net" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" \
    "UNIX-CONNECT:$W/fwd-$port.sock" </dev/null >>"$W/socat.log" 2>&1 &
  FWD_PIDS+=($!)
  FWD_IN_PID[$port]=$!
  wait_for 5 "forwarder $port inside" inside bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
}
forward_stop() { # port: the SMTP server is away (connection refused inside)
  kill "${FWD_IN_PID[$1]}"; wait "${FWD_IN_PID[$1]}" 2>/dev/null || true
}
OIDC_PORT=${RIG_ISSUER##*:}
SMTP_PORT=$RIG_SMTP_STARTTLS_PORT
forward "$OIDC_PORT"
forward "$SMTP_PORT"
ok "the rig's token endpoint and SMTP server are reachable inside on 127.0.0.1:$OIDC_PORT and :$SMTP_PORT"

APT=(apt-get -o DPkg::Lock::Timeout=120 -y -q)
snapshot() { # config, secrets, state and the queued mail, by checksum
  inside sh -c 'cd / && find etc/oxnotify var/lib/oxnotify -type f ! -path "*/slots/*" ! -name "*.lock" | sort | xargs sha256sum'
}
debs_of() { # version: the two packages, as the container sees them
  local f
  for f in "$W/debs-ro/$1"/liboxnotify-perl_*.deb "$W/debs-ro/$1"/oxnotify_*.deb; do echo "/debs/$1/${f##*/}"; done
}
unit_state() { inside systemctl show -p ActiveState --value "$1"; }
expect_state() { # unit state
  local s; s=$(unit_state "$1")
  [ "$s" = "$2" ] || { inside systemctl status --no-pager "$1" >&2 || true; fail "$1 is $s, expected $2"; }
}

# ---- install ----
t=$SECONDS
inside "${APT[@]}" install $(debs_of "$V1") >"$W/install.log" 2>&1 \
  || { tail -20 "$W/install.log"; fail "install $V1 (the tree must hold every dependency: TREE_PKGS)"; }
ok "installed $V1 in the container ($((SECONDS - t)) s)"
for u in oxnotify-daily.timer oxnotify-outbox.timer; do expect_state "$u" active; done
for u in oxnotify-daily.service oxnotify-outbox.service oxnotify-server.service oxnotify-broker.socket oxnotify-broker.service; do
  expect_state "$u" inactive
done
ok "after install: both timers active; daily, outbox, server, broker socket and service inactive"
for u in oxnotify-daily oxnotify-outbox oxnotify-server oxnotify-broker; do
  inside mkdir -p "/etc/systemd/system/$u.service.d"
  inside sh -c "printf '%s\\n' '[Service]' 'Environment=OXNOTIFY_ALLOW_PROVIDER_HOSTS=$ALLOW_HOSTS' \
    >/etc/systemd/system/$u.service.d/rig-hosts.conf"
done
inside systemctl daemon-reload

# ---- a target at the rig, authorized (the browser part runs on the host, against the real rig) ----
FROM=nspawn-test@example.test
P=(perl -MOxNotify::Core)
inside "${P[@]}" -e '
  my ($issuer, $port) = @ARGV;
  OxNotify::Core::create_target({ name => "ns", server => "localhost", port => $port, mode => "starttls",
    "auth-method" => "microsoft-oauth2", "from-address" => "nspawn-test\@example.test", mailto => ["ops\@example.test"],
    "oauth2-client-id" => "rig-post", "oauth2-client-secret" => "rig-secret",
    "oauth2-tenant-id" => "12345678-90ab-cdef-1234-567890abcdef",
    "oauth2-authorize-url" => "$issuer/auth", "oauth2-token-url" => "$issuer/token" });' "$RIG_ISSUER" "$SMTP_PORT" \
  || fail "create target"
REDIRECT=http://127.0.0.1:47127/callback
AUTH=$(inside "${P[@]}" -MCpanel::JSON::XS -e 'print encode_json(OxNotify::Core::authorize_url({ name => "ns", "redirect-uri" => $ARGV[0] }))' "$REDIRECT")
URL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$AUTH")
FINAL=$(python3 "$ROOT/scripts/rig/oauth_driver.py" "$RIG_ISSUER" browse "$FROM" "$URL" "$REDIRECT")
# the code and the PKCE verifier go in on stdin, not as arguments
printf '%s\n%s\n' "$AUTH" "$FINAL" | inside "${P[@]}" -MCpanel::JSON::XS -MURI -e '
  my ($issuer, $redirect) = @ARGV; chomp(my $auth = <STDIN>); chomp(my $final = <STDIN>); $auth = decode_json($auth);
  my %q = URI->new($final)->query_form; $q{state} eq $auth->{state} or die "state mismatch\n";
  OxNotify::Core::exchange_smtp_oauth2_code({ "auth-method" => "microsoft-oauth2", "client-id" => "rig-post",
    "client-secret" => "rig-secret", "tenant-id" => "12345678-90ab-cdef-1234-567890abcdef",
    "authorization-code" => $q{code}, "redirect-uri" => $redirect, "pkce-verifier" => $auth->{"pkce-verifier"},
    "token-url" => "$issuer/token", target => "ns" });' "$RIG_ISSUER" "$REDIRECT" || fail "authorize"
ok "target created and authorized inside (token endpoint through the forwarder)"

# ---- the daily timer, shortened; RandomizedDelaySec reset (else it applies to the drop-in too) ----
t=$SECONDS
inside mkdir -p /etc/systemd/system/oxnotify-daily.timer.d
inside sh -c 'printf "%s\n" "[Timer]" "OnCalendar=" "OnCalendar=*-*-* *:*:0/5" "RandomizedDelaySec=0" \
  "AccuracySec=100ms" "Persistent=false" >/etc/systemd/system/oxnotify-daily.timer.d/test.conf'
since=$(inside date '+%Y-%m-%d %H:%M:%S')
inside systemctl daemon-reload
inside systemctl restart oxnotify-daily.timer
daily_rotated() { inside journalctl -b --since "$since" -u oxnotify-daily.service -o cat | grep -q "target 'ns': rotated"; }
wait_for 30 "the daily timer's run rotating the token" daily_rotated
ok "the shortened daily timer fired; oxnotify-daily.service rotated the token at the rig ($((SECONDS - t)) s)"
inside systemctl stop oxnotify-daily.timer
inside rm -r /etc/systemd/system/oxnotify-daily.timer.d
inside systemctl daemon-reload
inside systemctl start oxnotify-daily.timer
daily_idle() { [ "$(unit_state oxnotify-daily.service)" = inactive ]; }
wait_for 30 "oxnotify-daily.service to finish" daily_idle
[ "$(inside systemctl show -p Result --value oxnotify-daily.service)" = success ] \
  && [ "$(inside systemctl show -p ExecMainStatus --value oxnotify-daily.service)" = 0 ] \
  && ok "oxnotify-daily.service: result success, exit 0, under the shipped hardening" \
  || fail "oxnotify-daily.service: $(inside systemctl show -p Result -p ExecMainStatus oxnotify-daily.service | tr '\n' ' ')"
# the secrets as stored now: none may appear in the journal
SECRETS=$(inside perl -MCpanel::JSON::XS -e '
  local $/; open(my $fh, "<", "/var/lib/oxnotify/oauth2/ns.json") or die $!; my $s = decode_json(<$fh>);
  my @v; my $walk; $walk = sub { my $x = shift; if (ref $x eq "HASH") { $walk->($_) for values %$x }
    elsif (ref $x eq "ARRAY") { $walk->($_) for @$x } elsif (defined $x && length($x) >= 20 && $x !~ /\s/) { push @v, $x } };
  $walk->($s); print "$_\n" for @v, "rig-secret";')
[ "$(echo "$SECRETS" | wc -l)" -ge 2 ] || fail "no secrets found in the state file"
JOURNAL=$(inside journalctl -b --no-pager -o cat)
leaked=0
while read -r s; do [ -n "$s" ] && case "$JOURNAL" in *"$s"*) leaked=$((leaked+1)) ;; esac; done <<<"$SECRETS"
[ "$leaked" = 0 ] && ok "the journal holds no token or client secret ($(echo "$SECRETS" | wc -l) checked)" \
  || fail "$leaked secrets in the journal"

# ---- the outbox timer: a message queued while the SMTP server is away, delivered when it is back ----
t=$SECONDS
forward_stop "$SMTP_PORT"
SUBJECT="nspawn outbox $$"
rc=0; out=$(inside env OXNOTIFY_DELIVERY_DEADLINE=3 oxnotify send ns --title "$SUBJECT" 2>&1) || rc=$?
[ "$rc" = 75 ] && echo "$out" | grep -q QUEUED || fail "send while SMTP is away: rc $rc: $out"
# the timer every 5 s; each flush gives up after 4 s instead of the delivery deadline's 120 s
# (a flush started while SMTP is away would otherwise retry, with backoff, for 2 minutes)
inside mkdir -p /etc/systemd/system/oxnotify-outbox.timer.d /etc/systemd/system/oxnotify-outbox.service.d
inside sh -c 'printf "%s\n" "[Timer]" "OnBootSec=" "OnUnitActiveSec=" "OnCalendar=*-*-* *:*:0/5" "AccuracySec=100ms" \
  >/etc/systemd/system/oxnotify-outbox.timer.d/test.conf'
inside sh -c 'printf "%s\n" "[Service]" "Environment=OXNOTIFY_DELIVERY_DEADLINE=4" \
  >/etc/systemd/system/oxnotify-outbox.service.d/test.conf'
since=$(inside date '+%Y-%m-%d %H:%M:%S')
inside systemctl daemon-reload
inside systemctl restart oxnotify-outbox.timer
outbox_ran() { inside journalctl -b --since "$since" -u oxnotify-outbox.service -o cat | grep -q .; }
wait_for 20 "the outbox timer's first run while SMTP is away" outbox_ran
[ -n "$(inside ls -A /var/lib/oxnotify/outbox/ns 2>/dev/null)" ] || fail "the queued message is gone while SMTP is away"
forward_in "$SMTP_PORT"
mail_arrived() { grep -lq "Subject: $SUBJECT" "$RIG_MAILDIR"/new/* 2>/dev/null; }
wait_for 30 "the outbox timer delivering the queued message" mail_arrived
spool_empty() { ! inside test -d /var/lib/oxnotify/outbox/ns; }
wait_for 10 "the outbox spool to be empty" spool_empty
ok "queued while SMTP was away; the outbox timer delivered it once it was back ($((SECONDS - t)) s)"
[ "$(inside systemctl show -p Result --value oxnotify-outbox.service)" = success ] \
  && ok "oxnotify-outbox.service: result success" || fail "oxnotify-outbox.service failed"
inside systemctl stop oxnotify-outbox.timer
inside rm -r /etc/systemd/system/oxnotify-outbox.timer.d /etc/systemd/system/oxnotify-outbox.service.d
inside systemctl daemon-reload
inside systemctl start oxnotify-outbox.timer

# ---- the broker: socket activation, root served, nobody refused ----
inside systemctl enable --now oxnotify-broker.socket >/dev/null 2>&1 || fail "enable oxnotify-broker.socket"
expect_state oxnotify-broker.socket active
expect_state oxnotify-broker.service inactive
ask_broker() { # user line
  inside setpriv --reuid="$1" --regid="$(inside id -g "$1")" --clear-groups perl -MIO::Socket::UNIX -e '
    my $s = IO::Socket::UNIX->new(Peer => "/run/oxnotify/broker.sock") or die "connect: $!\n";
    print $s "$ARGV[0]\n"; my $a = <$s>; defined $a or die "no answer\n"; print $a;' "$2"
}
ans=$(ask_broker root "TOKEN $FROM") || fail "broker request as root: $ans"
[ "${#ans}" -gt 20 ] && [ "${ans#ERR}" = "$ans" ] && ok "the broker socket activated oxnotify-broker.service on the first request; root got a token" \
  || fail "broker answer to root: $(echo "$ans" | cut -c1-80)"
expect_state oxnotify-broker.service active
ans=$(ask_broker nobody "TOKEN $FROM") || true
case "$ans" in "ERR denied"*) ok "nobody (outside the allow-list) is refused: $(echo "$ans" | cut -c1-60)" ;;
  *) fail "broker answer to nobody: $(echo "$ans" | cut -c1-80)" ;; esac

# ---- the server ----
inside systemctl start oxnotify-server.service
api() { # GET /api2/json/targets with the admin token, inside
  inside perl -MHTTP::Tiny -e '
    open(my $fh, "<", "/etc/oxnotify/priv/api-token.admin") or die "token: $!\n"; chomp(my $t = <$fh>);
    my $r = HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:8765/api2/json/targets", { headers => { Authorization => "Bearer $t" } });
    $r->{status} == 200 && $r->{content} =~ /"ns"/ or die "$r->{status}\n";'
}
wait_for 30 "oxnotify-server to answer on 127.0.0.1:8765" api
pid1=$(inside systemctl show -p MainPID --value oxnotify-server.service)
ok "oxnotify-server.service answers on 127.0.0.1:8765 (authenticated target list)"
inside systemctl restart oxnotify-server.service
wait_for 30 "oxnotify-server to answer after restart" api
pid2=$(inside systemctl show -p MainPID --value oxnotify-server.service)
[ "$pid1" != "$pid2" ] && expect_state oxnotify-server.service active \
  && ok "oxnotify-server.service survives systemctl restart (pid $pid1 -> $pid2)" || fail "server restart"

# ---- hardening in force: no failures, no seccomp or permission errors, the same exposure ----
failed=$(inside systemctl list-units --failed --plain --no-legend 'oxnotify*')
[ -z "$failed" ] && ok "no oxnotify unit failed" || fail "failed units: $failed"
errs=$(inside journalctl -b --no-pager -o cat -u 'oxnotify*' \
  | grep -Ei 'seccomp|SIGSYS|status=31|Bad system call|Permission denied|Operation not permitted|Read-only file system' || true)
[ -z "$errs" ] && ok "no seccomp, permission or read-only errors in the oxnotify units' journal" || fail "journal: $errs"
for u in oxnotify-daily oxnotify-outbox oxnotify-server oxnotify-broker; do
  off=$(systemd-analyze security --offline=yes "$ROOT/debian/oxnotify.$u.service" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  on=$(inside systemd-analyze security "$u.service" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  [ -n "$on" ] && [ "$on" = "$off" ] && ok "$u.service: exposure inside the booted system $on = offline $off" \
    || fail "$u.service: exposure inside '$on', offline '$off'"
done

# ---- upgrade: config, state and queued mail kept ----
forward_stop "$SMTP_PORT"
SUBJECT2="nspawn across the upgrade $$"
inside systemctl stop oxnotify-outbox.timer   # the message must wait through the upgrade
rc=0; out=$(inside env OXNOTIFY_DELIVERY_DEADLINE=3 oxnotify send ns --title "$SUBJECT2" 2>&1) || rc=$?
[ "$rc" = 75 ] || fail "send before the upgrade: rc $rc: $out"
before=$(snapshot)
echo "$before" | grep -q 'outbox/ns/' || fail "nothing queued before the upgrade"
t=$SECONDS
inside "${APT[@]}" install $(debs_of "$V2") >"$W/upgrade.log" 2>&1 \
  || { tail -20 "$W/upgrade.log"; fail "upgrade to $V2"; }
[ "$(inside dpkg-query -W -f '${Version}' oxnotify)" = "$V2" ] || fail "version after the upgrade"
[ "$(snapshot)" = "$before" ] && ok "upgraded $V1 -> $V2 ($((SECONDS - t)) s): config, secrets, state and the queued message unchanged" \
  || { diff <(echo "$before") <(snapshot) >&2; fail "the upgrade changed data"; }
down=()
for u in oxnotify-server.service oxnotify-broker.socket oxnotify-daily.timer oxnotify-outbox.timer; do
  s=$(unit_state "$u"); [ "$s" = active ] || down+=("$u=$s")
done
server_up() { api; }
if [ ${#down[@]} -eq 0 ] && wait_for_ok 30 server_up; then
  ok "after the upgrade: server (restarted), broker socket and both timers active"
else
  fail_on "after the upgrade, not running any more: ${down[*]:-none} (the server answers: $(server_up >/dev/null 2>&1 && echo yes || echo no))"
  inside systemctl start oxnotify-server.service oxnotify-broker.socket oxnotify-outbox.timer 2>/dev/null || true
fi
forward_in "$SMTP_PORT"
out=$(inside oxnotify outbox flush 2>&1) || fail "flush after the upgrade: $out"
wait_for 10 "the message queued before the upgrade" grep -lq "Subject: $SUBJECT2" -r "$RIG_MAILDIR/new"
ok "the message queued before the upgrade is delivered after it"

# ---- purge: stops what it started, removes what the README says ----
inside "${APT[@]}" purge oxnotify >"$W/purge.log" 2>&1 || { tail -20 "$W/purge.log"; fail "purge oxnotify"; }
still=()
for u in oxnotify-server.service oxnotify-broker.socket oxnotify-broker.service oxnotify-daily.timer \
         oxnotify-outbox.timer oxnotify-daily.service oxnotify-outbox.service; do
  s=$(unit_state "$u"); [ "$s" = inactive ] || still+=("$u=$s")
done
procs=$(inside pgrep -a -f '/usr/bin/oxnotify-server|/usr/lib/oxnotify/oxnotify-broker|oxnotify-daily' || true)
answers=no; inside bash -c 'exec 3<>/dev/tcp/127.0.0.1/8765' 2>/dev/null && answers=yes
sock=no; inside test -S /run/oxnotify/broker.sock && ask_broker root "TOKEN $FROM" >/dev/null 2>&1 && sock=yes
if [ ${#still[@]} -eq 0 ] && [ -z "$procs" ] && [ "$answers" = no ] && [ "$sock" = no ]; then
  ok "purging oxnotify stopped every unit it ships: no server on :8765, no broker on its socket, no process left"
else
  fail_on "after purging oxnotify: still running: ${still[*]:-none}; processes: ${procs:-none}; server answers: $answers; broker answers: $sock"
fi
inside test ! -e /etc/oxnotify/priv/api-token.admin && inside test -f /etc/oxnotify/priv/notifications.cfg \
  && inside test -f /var/lib/oxnotify/oauth2/ns.json \
  && ok "purging oxnotify removed the server's tokens and kept the library's config and state" || fail "purge oxnotify: files"
inside "${APT[@]}" purge liboxnotify-perl >"$W/purge-lib.log" 2>&1 || fail "purge liboxnotify-perl"
inside test ! -e /etc/oxnotify && inside test ! -e /var/lib/oxnotify \
  && ok "purging liboxnotify-perl removed /etc/oxnotify and /var/lib/oxnotify" || fail "purge liboxnotify-perl left data"
[ "$bad" = 0 ] || fail "$bad checks failed, $pass passed"
echo "$pass booted-systemd package checks passed ($((SECONDS - T0)) s)"
