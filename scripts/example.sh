#!/usr/bin/env bash
# example.sh — the end-to-end example against the rig: create a Microsoft-style OAuth2 target,
# build the authorize URL (state + PKCE), log in and consent at the real OAuth2 server, exchange
# the code, send a notification through Dovecot (XOAUTH2 over STARTTLS), show the delivered mail.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q -p notify-core --test rig_oauth2 full_flow_code_exchange_send_delivers_mail -- --nocapture
f=$(ls -t "$RIG_MAILDIR"/new/* | head -1)
echo "== delivered: $f"
sed -n '1,40p' "$f"
