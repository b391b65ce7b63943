#!/usr/bin/env bash
# selftest-rig.sh RIG_DIR — end-to-end checks of a running rig with stock clients (python smtplib, curl).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
set -a; . "${1:?usage: selftest-rig.sh RIG_DIR}/rig.env"; set +a
D="python3 $HERE/oauth_driver.py $RIG_ISSUER"
S="python3 $HERE/send_xoauth2.py"
pass=0; fail=0
check() { # name expected-substring actual
  if [[ "$3" == *"$2"* ]]; then pass=$((pass+1)); echo "ok   $1"; else fail=$((fail+1)); echo "FAIL $1: wanted '$2', got: $3"; fi
}
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }
count() { ls "$1/new" 2>/dev/null | wc -l; }

TOK=$($D code alice@example.test); AT=$(jget "$TOK" access_token); RT=$(jget "$TOK" refresh_token)
check "authorization_code+PKCE issues access+refresh token" "refresh_token" "$TOK"
check "introspection says active" '"active": true' "$($D introspect "$AT")"

n0=$(count "$RIG_MAILDIR")
check "dovecot STARTTLS + XOAUTH2 accepted" "AUTH 235" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" alice@example.test "$AT" XOAUTH2 "$RIG_CA_FILE" 2>&1)"
check "dovecot implicit TLS + OAUTHBEARER accepted" "AUTH 235" "$($S tls localhost "$RIG_SMTP_TLS_PORT" alice@example.test "$AT" OAUTHBEARER "$RIG_CA_FILE" 2>&1)"
check "CA trusted via SSL_CERT_FILE (OpenSSL default paths)" "AUTH 235" "$(SSL_CERT_FILE=$RIG_CA_FILE $S tls localhost "$RIG_SMTP_TLS_PORT" alice@example.test "$AT" XOAUTH2 2>&1)"
check "TLS fails without the rig CA" "CERTIFICATE_VERIFY_FAILED" "$($S tls localhost "$RIG_SMTP_TLS_PORT" alice@example.test "$AT" XOAUTH2 2>&1)"
printf 'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: curl\r\n\r\nhi\r\n' > "$RIG_DIR/run/msg.eml"
check "curl smtps --oauth2-bearer (OAUTHBEARER)" "235 2.7.0" "$(curl -sv --url "smtps://localhost:$RIG_SMTP_TLS_PORT" --cacert "$RIG_CA_FILE" --mail-from alice@example.test --mail-rcpt bob@example.test --upload-file "$RIG_DIR/run/msg.eml" --user alice@example.test --oauth2-bearer "$AT" 2>&1)"
# note: curl 7.88 picks OAUTHBEARER whenever the server offers it, --login-options AUTH=XOAUTH2 notwithstanding
check "curl STARTTLS, CA via CURL_CA_BUNDLE" "235 2.7.0" "$(CURL_CA_BUNDLE=$RIG_CA_FILE curl -sv --url "smtp://localhost:$RIG_SMTP_STARTTLS_PORT" --ssl-reqd --mail-from alice@example.test --mail-rcpt bob@example.test --upload-file "$RIG_DIR/run/msg.eml" --user alice@example.test --oauth2-bearer "$AT" 2>&1)"
sleep 0.3
check "5 messages landed in the sink Maildir" "5" "$(( $(count "$RIG_MAILDIR") - n0 ))"

check "garbage token -> 535" "AUTH-FAILED 535" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" alice@example.test "garbage" XOAUTH2 "$RIG_CA_FILE" 2>&1)"
check "token of another user -> 535" "AUTH-FAILED 535" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" bob@example.test "$AT" XOAUTH2 "$RIG_CA_FILE" 2>&1)"
check "refresh token used as bearer -> 535" "AUTH-FAILED 535" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" alice@example.test "$RT" XOAUTH2 "$RIG_CA_FILE" 2>&1)"

SHORT=$($D code carol@example.test rig-short rig-secret); SAT=$(jget "$SHORT" access_token)
check "short-lived token works while fresh" "AUTH 235" "$($S tls localhost "$RIG_SMTP_TLS_PORT" carol@example.test "$SAT" XOAUTH2 "$RIG_CA_FILE" 2>&1)"
sleep $((RIG_SHORT_TTL + 1))
check "expired token -> 535" "AUTH-FAILED 535" "$($S tls localhost "$RIG_SMTP_TLS_PORT" carol@example.test "$SAT" XOAUTH2 "$RIG_CA_FILE" 2>&1)"
NEW=$($D refresh "$(jget "$SHORT" refresh_token)" rig-short rig-secret)
check "refresh_token grant after expiry" '"_http_status": 200' "$NEW"
check "refreshed token accepted" "AUTH 235" "$($S tls localhost "$RIG_SMTP_TLS_PORT" carol@example.test "$(jget "$NEW" access_token)" XOAUTH2 "$RIG_CA_FILE" 2>&1)"

R1=$($D refresh "$RT"); RT2=$(jget "$R1" refresh_token)
check "refresh rotates the refresh token" "yes" "$([ -n "$RT2" ] && [ "$RT2" != "$RT" ] && echo yes)"
check "reusing the old refresh token -> invalid_grant" "invalid_grant" "$($D refresh "$RT")"
check "reuse detection revoked the rotated one too" "invalid_grant" "$($D refresh "$RT2")"
check "...and its access token -> 535" "AUTH-FAILED 535" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" alice@example.test "$(jget "$R1" access_token)" XOAUTH2 "$RIG_CA_FILE" 2>&1)"

T3=$($D code dave@example.test); AT3=$(jget "$T3" access_token)
$D revoke "$AT3" >/dev/null
check "revoked access token -> 535" "AUTH-FAILED 535" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" dave@example.test "$AT3" XOAUTH2 "$RIG_CA_FILE" 2>&1)"

DEV=$(DEVICE_POLL_WAIT=0 $D device erin@example.test 2>/dev/null)
check "device authorization grant" '"_http_status": 200' "$DEV"
check "device-flow token accepted" "AUTH 235" "$($S starttls localhost "$RIG_SMTP_STARTTLS_PORT" erin@example.test "$(jget "$DEV" access_token)" OAUTHBEARER "$RIG_CA_FILE" 2>&1)"
PUB=$($D code frank@example.test rig-public)
check "public client (PKCE, no secret)" '"_http_status": 200' "$PUB"

if [ -n "${RIG_PF_STARTTLS_PORT:-}" ]; then
  p0=$(count "$RIG_PF_MAILDIR")
  check "postfix: no AUTH before STARTTLS" "AUTH-FAILED" "$($S plain 127.0.0.1 "$RIG_PF_STARTTLS_PORT" alice@example.test "$AT3" XOAUTH2 2>&1)"
  T4=$($D code alice@example.test); AT4=$(jget "$T4" access_token)
  check "postfix STARTTLS + XOAUTH2" "AUTH 235" "$($S starttls localhost "$RIG_PF_STARTTLS_PORT" alice@example.test "$AT4" XOAUTH2 "$RIG_CA_FILE" 2>&1)"
  check "postfix smtps + OAUTHBEARER" "AUTH 235" "$($S tls localhost "$RIG_PF_TLS_PORT" alice@example.test "$AT4" OAUTHBEARER "$RIG_CA_FILE" 2>&1)"
  check "postfix bad token -> 535" "AUTH-FAILED 535" "$($S starttls localhost "$RIG_PF_STARTTLS_PORT" alice@example.test bad XOAUTH2 "$RIG_CA_FILE" 2>&1)"
  for _ in $(seq 40); do [ $(( $(count "$RIG_PF_MAILDIR") - p0 )) -ge 2 ] && break; sleep 0.1; done
  check "postfix delivered 2 messages to its Maildir" "2" "$(( $(count "$RIG_PF_MAILDIR") - p0 ))"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
