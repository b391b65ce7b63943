#!/usr/bin/env bash
# host-postfix.sh start DIR RELAY_PORT SASL_USER | hold DIR | release DIR | stop DIR   (SASL_PASSWORD from the environment)
# A second Postfix instance standing for the host's own MTA (as Proxmox VE / PMG / Debian ship
# it) in DIR (config DIR/main.cf, queue DIR/spool, log DIR/postfix.log): no listener of its
# own, everything non-local goes to relayhost [127.0.0.1]:RELAY_PORT with SASL PLAIN (the
# oxnotify-relay, or another local relay for comparison). Mail enters through
# `MAIL_CONFIG=DIR sendmail ...`. Retries are quick (2-4 s backoff) so tests of an upstream
# outage stay short. The queue starts held (defer_transports = smtp) when HOLD=1 (or later:
# `host-postfix.sh hold DIR`); `host-postfix.sh release DIR` sends what waits. SETUP_BY_CLI=1
# leaves the relay lines out (`oxnotify relay setup-postfix --postfix-config DIR` writes them).
# Must run as root.
set -euo pipefail
cmd=${1:?usage: host-postfix.sh start|stop|release DIR ...}
DIR=${2:?DIR}
case "$cmd" in
start)
  PORT=${3:?RELAY_PORT}; USER=${4:?SASL_USER}
  [ "${SETUP_BY_CLI:-0}" = 1 ] && PASS=unused || PASS=${SASL_PASSWORD:?SASL_PASSWORD must be set}
  mkdir -p "$DIR/spool" "$DIR/data"
  chown postfix "$DIR/data"
  chmod 755 "$DIR"
  cat > "$DIR/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
maillog_file = $DIR/postfix.log
maillog_file_prefixes = $DIR
myhostname = pve1.host.test
mydomain = host.test
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
smtp_tls_security_level = none
$( [ "${SETUP_BY_CLI:-0}" = 1 ] || printf '%s\n' "# the relay (the lines oxnotify relay setup-postfix writes on a real host)" \
  "relayhost = [127.0.0.1]:$PORT" "smtp_sasl_auth_enable = yes" \
  "smtp_sasl_password_maps = texthash:$DIR/sasl_passwd" "smtp_sasl_security_options = noanonymous" )
# short retries for outage tests
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
defer_transports = $( [ "${HOLD:-0}" = 1 ] && echo smtp )
CF
  ( umask 077; echo "[127.0.0.1]:$PORT $USER:$PASS" > "$DIR/sasl_passwd" )
  # Debian's master.cf, chroot off, no smtpd listener (this MTA only sends)
  awk '/^smtp +inet/ { next } /^[a-z]/ && NF >= 8 { $5 = "n" } { print }' /etc/postfix/master.cf > "$DIR/master.cf"
  postfix -c "$DIR" start </dev/null >>"$DIR/start.log" 2>&1 || { cat "$DIR/start.log" "$DIR/postfix.log" >&2 2>/dev/null; exit 1; }
  ;;
hold)
  postconf -c "$DIR" -e 'defer_transports = smtp' && postfix -c "$DIR" reload >/dev/null 2>&1
  ;;
release)
  postconf -c "$DIR" -e 'defer_transports =' && postfix -c "$DIR" reload >/dev/null 2>&1 && postqueue -c "$DIR" -f
  ;;
stop)
  postfix -c "$DIR" stop >/dev/null 2>&1 || true
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
