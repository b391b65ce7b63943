#!/usr/bin/env bash
# test-all.sh — every test, with the rig already running (see run-with-rig.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== rig self-test (stock clients against the real servers)"
# with the system trust store: one of its checks is that TLS fails without the rig CA
out=$(env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt scripts/rig/selftest-rig.sh "$RIG_DIR") \
  || { echo "$out" | grep -v '^ok'; exit 1; }
echo "$out" | tail -1
echo "== Rust tests (including the rig tests, which plain \`cargo test\` skips as ignored)"
cargo test --workspace -- --include-ignored
if [ -d perl/t ] && ls perl/t/*.t >/dev/null 2>&1; then
  echo "== Perl tests"
  # a missing rig is a failure here, not a skip; the cluster store on a real 3-node pmxcfs
  # (perl/t/90-pmxcfs.t, about 7 minutes) runs too
  OXNOTIFY_REQUIRE_RIG=1 OXNOTIFY_PMXCFS_TEST=1 prove -r -Iperl/lib perl/t
fi
echo "== Debian packages (build, install, use against the rig, upgrade, remove, purge)"
DEBS=$(mktemp -d /tmp/oxdebs.XXXXXX)
trap 'rm -rf "$DEBS"' EXIT
OXNOTIFY_KEEP_DEBS=$DEBS scripts/test-packages.sh
echo "== the same packages under a booted systemd (systemd-nspawn, Debian 12)"
OXNOTIFY_NSPAWN_DEBS=$DEBS scripts/realhost/nspawn-test.sh
