#!/usr/bin/env bash
# install-rig-deps.sh — one-time (idempotent) install of the third-party servers used by the rig.
# Debian 12: dovecot 2.3.19.1, postfix 3.7.11 (optional), curl/openssl/python3/node already present.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
need=()
# libsasl2-modules: PLAIN for the SASL client of the host-MTA Postfix in perl/t/86-relay.t (a
# Recommends of postfix, which --no-install-recommends leaves out)
for p in dovecot-core dovecot-submissiond ${RIG_WITH_POSTFIX:+postfix libsasl2-modules} openssl curl; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  # keep postfix's postinst from writing/starting a system-wide MTA; services never auto-start here
  # in containers that ship /usr/sbin/policy-rc.d (exit 101); elsewhere they may: stop them after install.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# OAuth2/OIDC authorization server (panva/oidc-provider) — pinned in package.json
if [ ! -d "$HERE/node/node_modules/oidc-provider" ]; then
  mkdir -p "$HERE/node" && cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/oidc-rig.mjs" "$HERE/node/"
  (cd "$HERE/node" && npm ci --no-audit --no-fund --silent)
fi
cp "$HERE/oidc-rig.mjs" "$HERE/node/"   # keep the launcher in sync
# SMTP sink that writes every relayed message into a Maildir (aiosmtpd's stock Mailbox handler)
if [ ! -x "$HERE/venv/bin/aiosmtpd" ]; then
  python3 -m venv "$HERE/venv"
  "$HERE/venv/bin/pip" install -q -r "$HERE/requirements.txt"
fi
echo "rig deps ready"
