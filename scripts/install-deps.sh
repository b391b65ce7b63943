#!/usr/bin/env bash
# install-deps.sh — everything a fresh Debian 12 machine needs for build and tests (idempotent):
# Debian packages for the rig (Dovecot, Postfix) and Perl, the rig's npm/PyPI packages.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
need=()
# Perl binding: FFI::Platypus loads the .so, Cpanel::JSON::XS encodes, URI for the tests;
# debhelper/dpkg-dev/lintian build and check the Debian packages
# Mojolicious/JSON::Validator run the API server; chromium is the real browser of the page test;
# systemd provides systemd-analyze, which rates the hardening of our units; strace tells the
# crash test whether a killed refresh had received the provider's answer;
# the lib*-perl packages of the last three lines are what the real Proxmox Perl modules in
# ../shared/pve-stack need to load (the PVE integration test, perl/t/80-pve-stack.t);
# the real-host tests: systemd-container, mmdebstrap and zstd boot the packages under systemd
# (scripts/realhost/nspawn-test.sh), socat forwards the rig into containers and namespaces,
# corosync, fuse and the lib*-dev/pkg-config/gcc/make of the next lines run a 3-node pmxcfs built
# from ../shared/real-host/pve-cluster (scripts/realhost/pmxcfs.sh, perl/t/90-pmxcfs.t)
for p in perl ca-certificates curl openssl libffi-platypus-perl libcpanel-json-xs-perl liburi-perl \
         libmojolicious-perl libjson-validator-perl chromium debhelper dpkg-dev lintian systemd strace \
         libclone-perl libhttp-message-perl libencode-locale-perl libdevel-cycle-perl libnet-ip-perl \
         libjson-perl libfilesys-df-perl liblinux-inotify2-perl libstring-shellquote-perl \
         libio-stringy-perl libyaml-libyaml-perl libanyevent-perl \
         msmtp libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libdb5.3 libpcre2-8-0 libnsl2 \
         systemd-container mmdebstrap zstd socat iproute2 \
         corosync fuse libcorosync-common-dev libcpg-dev libquorum-dev libcmap-dev libqb-dev libfuse-dev \
         libsqlite3-dev libglib2.0-dev librrd-dev pkg-config gcc make; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  # --no-install-recommends: systemd-container would otherwise pull libnss-mymachines, which edits
  # the host's nsswitch.conf
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
  # on a host booted with systemd the package starts corosync with its stock single-node
  # configuration; the tests run their own corosyncs in namespaces
  if printf '%s\n' "${need[@]}" | grep -qx corosync && [ -d /run/systemd/system ]; then
    systemctl disable --now corosync.service >/dev/null 2>&1 || true
  fi
fi
RIG_WITH_POSTFIX=1 "$HERE/rig/install-rig-deps.sh"
# the broker test (perl/t/85-broker.t) relays with exim4 and msmtp. msmtp is a plain client
# (above). exim4-daemon-light conflicts with postfix (each is "the" mail-transport-agent), so
# it is not installed: its binary is unpacked into scripts/rig/exim/ (libraries above) and the
# test runs it with a private configuration (-C) and spool; its compiled-in user Debian-exim
# is created as the package would create it
if [ ! -x "$HERE/rig/exim/usr/sbin/exim4" ]; then
  tmp=$(mktemp -d); chmod 755 "$tmp"
  (cd "$tmp" && apt-get download exim4-daemon-light >/dev/null 2>&1 \
     || { apt-get update -qq && apt-get download exim4-daemon-light; })
  dpkg-deb -x "$tmp"/exim4-daemon-light_*.deb "$HERE/rig/exim"
  rm -rf "$tmp"
fi
getent passwd Debian-exim >/dev/null || adduser --system --group --quiet --allow-bad-names --home /var/spool/exim4 \
  --no-create-home Debian-exim
# playwright-core (pinned in the lock file) drives Debian's chromium; it downloads no browser;
# eslint checks the page's scripts (perl/t/56-www.t)
if [ ! -d "$HERE/../tests/browser/node_modules/playwright-core" ] || [ ! -x "$HERE/../tests/browser/node_modules/.bin/eslint" ]; then
  (cd "$HERE/../tests/browser" && npm ci --no-audit --no-fund --silent)
fi
command -v cargo >/dev/null || { echo "cargo (Rust stable) is required" >&2; exit 1; }
