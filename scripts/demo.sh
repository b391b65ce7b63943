#!/usr/bin/env bash
# demo.sh — the main job, against the loopback rig (run by `make demo` via run-with-rig.sh):
# start oxnotify-server, create a Microsoft-style OAuth2 target through the API, authorize it at
# the rig's real OAuth2 server (a scripted browser logs in and consents), exchange the code on
# the backend, send a notification through Dovecot (XOAUTH2), show the delivered mail and the
# target's OAuth2 status, and say how to open the web page.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
: "${RIG_ISSUER:?run via scripts/run-with-rig.sh (make demo)}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

DEMO=$(mktemp -d /tmp/oxdemo.XXXXXX)
export OXNOTIFY_CONFIG_DIR=$DEMO/etc OXNOTIFY_STATE_DIR=$DEMO/var
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
step "starting oxnotify-server on $BASE (config in $DEMO)"
bin/oxnotify-server daemon -l "$BASE" >"$DEMO/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DEMO"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "$BASE/" && break; sleep 0.1; done
grep 'API token' "$DEMO/server.log" | sed 's/: oxn_.*/: (see the file)/' || true
TOKEN=$(cat "$OXNOTIFY_CONFIG_DIR/priv/api-token.admin")
api() { # METHOD PATH [JSON]
  curl -sS -X "$1" -H "Authorization: Bearer $TOKEN" ${3:+-H 'Content-Type: application/json' --data "$3"} "$BASE/api2/json/$2"
}

step "creating SMTP target 'demo' (microsoft-oauth2, STARTTLS to the rig's Dovecot) through the API"
USER=demo-admin@example.test
api POST endpoints/smtp "$(python3 -c 'import json,sys; i,p=sys.argv[1:]; print(json.dumps({
  "name":"demo","server":"localhost","port":int(p),"mode":"starttls","auth-method":"microsoft-oauth2",
  "from-address":"demo-admin@example.test","author":"oxnotify demo","mailto":["ops@example.test"],
  "oauth2-client-id":"rig-post","oauth2-client-secret":"rig-secret",
  "oauth2-tenant-id":"12345678-90ab-cdef-1234-567890abcdef",
  "oauth2-authorize-url":i+"/auth","oauth2-token-url":i+"/token"}))' "$RIG_ISSUER" "$RIG_SMTP_STARTTLS_PORT")"
echo
api GET endpoints/smtp/demo | python3 -m json.tool

step "authorizing: provider URL with state + PKCE (the verifier stays on the server)"
BEGIN=$(api POST smtp-oauth2-authorize-url "{\"name\":\"demo\",\"redirect-uri\":\"$BASE/oauth2/callback\"}")
URL=$(echo "$BEGIN" | json '["data"]["url"]')
echo "$URL"
step "logging in as $USER and consenting at the OAuth2 server (scripted browser)"
FINAL=$(python3 scripts/rig/oauth_driver.py "$RIG_ISSUER" browse "$USER" "$URL" "$BASE/oauth2/callback")
echo "redirected to ${FINAL%%code=*}code=..."
CODE=$(python3 -c 'import sys,urllib.parse as u; q=u.parse_qs(u.urlparse(sys.argv[1]).query); print(q["code"][0])' "$FINAL")
STATE=$(python3 -c 'import sys,urllib.parse as u; q=u.parse_qs(u.urlparse(sys.argv[1]).query); print(q["state"][0])' "$FINAL")
step "backend code exchange (what the page's callback triggers)"
api POST smtp-oauth2-token "{\"state\":\"$STATE\",\"authorization-code\":\"$CODE\",\"target\":\"demo\"}"; echo

step "sending a notification (XOAUTH2)"
api POST targets/demo/test; echo
sleep 0.3
MAIL=$(grep -l "Subject: Test notification from oxnotify (target 'demo')" "$RIG_MAILDIR"/new/* | xargs ls -t | head -1)
step "delivered to $MAIL"
sed -n '/^From:/p;/^To:/p;/^Subject:/p;/^X-OxNotify/p' "$MAIL"; echo; sed -n '/^$/,$p' "$MAIL" | head -5

step "OAuth2 status of 'demo'"
api GET targets/demo/oauth2-status | python3 -m json.tool

step "the web page"
echo "Open $BASE/ in a browser on this machine and paste the admin API token from"
echo "  $OXNOTIFY_CONFIG_DIR/priv/api-token.admin"
echo "(ssh -L $PORT:127.0.0.1:$PORT to reach it from elsewhere). There: edit targets, Authorize, Send test."
if [ -t 0 ]; then
  read -r -p "Press Enter to stop the demo server and the rig... " _
else
  echo "(not a terminal: stopping now)"
fi
