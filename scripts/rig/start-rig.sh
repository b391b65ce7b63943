#!/usr/bin/env bash
# start-rig.sh [RIG_DIR] — start a throwaway OAuth2 + SMTP-submission rig on free 127.0.0.1 ports:
#   * panva/oidc-provider (npm)     authorization_code(+PKCE), refresh_token (rotating), device flow,
#                                   RFC 7662 introspection, RFC 7009 revocation, userinfo
#   * Dovecot 2.3 submission        AUTH XOAUTH2 + OAUTHBEARER, validated by introspection; STARTTLS + implicit TLS
#   * aiosmtpd (PyPI)               relay target of Dovecot, stores every message in a Maildir
#   * graph-standin.mjs (node)     a STAND-IN for Microsoft Graph sendMail (no open-source Graph exists),
#                                   tokens checked by introspection, delivering into the sink's Maildir
#   * Postfix 3.7 (optional)        second front end: smtpd with Dovecot SASL, STARTTLS required before AUTH,
#                                   virtual delivery into its own Maildir
# Prints sourceable KEY=VALUE lines (also written to $RIG_DIR/rig.env). Must run as root (Dovecot/Postfix
# masters drop privileges themselves). Stop with stop-rig.sh RIG_DIR.
# env: RIG_POSTFIX=auto|1|0  RIG_PF_LIMIT (connections the limited Postfix listener accepts per client, default 3)  AT_TTL SHORT_TTL RT_TTL OIDC_ROTATE  RIG_DEBUG=1 (Dovecot auth_debug)
#      RIG_NODE_DIR (dir with node_modules/oidc-provider + oidc-rig.mjs)  RIG_VENV (venv with aiosmtpd)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RIG_DIR=${1:-${RIG_DIR:-}}
[ -n "$RIG_DIR" ] || RIG_DIR=$(mktemp -d /tmp/rig.XXXXXX)
mkdir -p "$RIG_DIR"; RIG_DIR=$(cd "$RIG_DIR" && pwd)
chmod 755 "$RIG_DIR"   # mktemp -d gives 0700: the dovecot/postfix/nobody users must traverse it
RIG_NODE_DIR=${RIG_NODE_DIR:-$HERE/node}
RIG_VENV=${RIG_VENV:-$HERE/venv}
RIG_POSTFIX=${RIG_POSTFIX:-auto}
[ "$RIG_POSTFIX" = auto ] && { [ -x /usr/sbin/postfix ] && RIG_POSTFIX=1 || RIG_POSTFIX=0; }
RIG_DEBUG=${RIG_DEBUG:-0}
# unix socket paths (sun_path) are limited to 107 bytes; Dovecot puts sockets under $RIG_DIR/run/dovecot/
[ ${#RIG_DIR} -le 60 ] || { echo "RIG_DIR too long (${#RIG_DIR} chars); use a short path such as /tmp/rig.XXXX" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "start-rig.sh must run as root" >&2; exit 2; }

cd "$RIG_DIR"
rm -rf run/dovecot   # a stale anvil-auth-penalty socket would make every first AUTH wait ~5 s
mkdir -p tls dovecot run logs mail sink
chown nobody:nogroup mail
log() { echo "[start-rig] $*" >&2; }
t_start=$(date +%s.%N)

# ---- free ports (bound simultaneously so they are distinct; tiny race until the servers bind) ----
read -r OIDC_PORT SUB_PORT SUBS_PORT SINK_PORT PF_PORT PFS_PORT PFL_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(7)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# ---- TLS: throwaway CA + server cert (SAN localhost, 127.0.0.1, ::1) ----
if [ ! -s tls/server.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj "/CN=peer-rig test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout tls/ca.key -out tls/ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout tls/server.key -out tls/server.csr 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > tls/server.ext
  openssl x509 -req -in tls/server.csr -CA tls/ca.crt -CAkey tls/ca.key -CAcreateserial -days 7 \
    -extfile tls/server.ext -out tls/server.crt 2>/dev/null
fi

# ---- Google-style service-account key file (JWT-bearer rig extension) ----
if [ ! -s google-sa.json ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out tls/sa.key 2>/dev/null
  python3 - tls/sa.key google-sa.json "http://127.0.0.1:$OIDC_PORT/token" <<'PY'
import json, os, sys
key = open(sys.argv[1]).read()
doc = {"type": "service_account", "project_id": "rig-project", "private_key_id": os.urandom(20).hex(),
       "private_key": key, "client_email": "rig-sa@rig-project.iam.gserviceaccount.com",
       "client_id": "100000000000000000001", "token_uri": sys.argv[3]}
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps(doc, indent=2).encode())
os.close(fd)
PY
fi

# the certificate key of the private_key_jwt app
[ -s tls/app-jwt.key ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out tls/app-jwt.key 2>/dev/null
chmod 600 tls/app-jwt.key

# ---- OAuth2 authorization server ----
OIDC_APP_JWT_KEYFILE=$RIG_DIR/tls/app-jwt.key OIDC_SA_KEYFILE=$RIG_DIR/google-sa.json OIDC_PORT=$OIDC_PORT AT_TTL=${AT_TTL:-3600} SHORT_TTL=${SHORT_TTL:-3} RT_TTL=${RT_TTL:-86400} \
  OIDC_ROTATE=${OIDC_ROTATE:-1} node "$RIG_NODE_DIR/oidc-rig.mjs" </dev/null >logs/oidc-provider.log 2>&1 &
echo $! > run/oidc.pid

# ---- Microsoft Graph stand-in (sendMail; tokens checked by introspection at the oidc-provider) ----
GRAPH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p sink/Maildir
GRAPH_PORT=$GRAPH_PORT GRAPH_TLS_CERT=$RIG_DIR/tls/server.crt GRAPH_TLS_KEY=$RIG_DIR/tls/server.key \
  INTROSPECT_URL=http://127.0.0.1:$OIDC_PORT/token/introspection INTROSPECT_CLIENT_ID=graph-standin \
  INTROSPECT_CLIENT_SECRET=graph-standin-secret GRAPH_MAILDIR=$RIG_DIR/sink/Maildir \
  node "$HERE/graph-standin.mjs" </dev/null >logs/graph-standin.log 2>&1 &
echo $! > run/graph.pid

# ---- SMTP sink (relay target of Dovecot submission) ----
"$RIG_VENV/bin/aiosmtpd" -n -l "127.0.0.1:$SINK_PORT" -c aiosmtpd.handlers.Mailbox "$RIG_DIR/sink/Maildir" \
  </dev/null >logs/sink.log 2>&1 &
echo $! > run/sink.pid

# ---- Dovecot: submission front end, oauth2 passdb ----
cat > dovecot/dovecot-oauth2.conf.ext <<EOF
# RFC 7662 introspection: POST token=...&client_id=...&client_secret=... ; a 200 {"active":false} => 535
introspection_mode = post
introspection_url = http://127.0.0.1:$OIDC_PORT/token/introspection
client_id = dovecot
client_secret = dovecot-secret
username_attribute = sub
active_attribute = active
active_value = true
force_introspection = yes
timeout_msecs = 5000
debug = $( [ "$RIG_DEBUG" = 1 ] && echo yes || echo no )
EOF
printf '%s\n' 'plain@example.test:{PLAIN}plain-secret-pw' > dovecot/passwd
chmod 644 dovecot/passwd
cat > dovecot/dovecot.conf <<EOF
# throwaway Dovecot 2.3 instance: submission only, XOAUTH2/OAUTHBEARER via the oauth2 passdb
base_dir = $RIG_DIR/run/dovecot
state_dir = $RIG_DIR/run/state
instance_name = rig-$SUB_PORT
log_path = $RIG_DIR/logs/dovecot.log
info_log_path = $RIG_DIR/logs/dovecot.log
debug_log_path = $RIG_DIR/logs/dovecot.log
protocols = submission
listen = 127.0.0.1
hostname = rig.localhost
shutdown_clients = yes

ssl = yes
ssl_cert = <$RIG_DIR/tls/server.crt
ssl_key = <$RIG_DIR/tls/server.key
ssl_min_protocol = TLSv1.2

auth_mechanisms = plain login xoauth2 oauthbearer
auth_verbose = yes
auth_debug = $( [ "$RIG_DEBUG" = 1 ] && echo yes || echo no )
auth_failure_delay = 0
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $RIG_DIR/dovecot/dovecot-oauth2.conf.ext
}
# PLAIN/LOGIN for password-auth tests: one fixed user (RIG_PLAIN_USER / RIG_PLAIN_PASSWORD)
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN $RIG_DIR/dovecot/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$RIG_DIR/mail/%u
}
mail_location = maildir:~/Maildir

service submission-login {
  inet_listener submission {
    port = $SUB_PORT
  }
  inet_listener submissions {
    port = $SUBS_PORT
    ssl = yes
  }
}
service auth {
  # SASL socket used by the optional Postfix front end (smtpd_sasl_type = dovecot)
  unix_listener auth-postfix {
    mode = 0666
  }
}
# no auth-failure penalty (2,4,8..15 s per failing client IP, loopback included): with the socket
# disabled the auth process cannot reach anvil and skips the penalty
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service stats {
  inet_listener http {
    port = 0
  }
}
submission_relay_host = 127.0.0.1
submission_relay_port = $SINK_PORT
submission_max_mail_size = 10M
EOF
dovecot -c "$RIG_DIR/dovecot/dovecot.conf" </dev/null >>logs/dovecot.start.log 2>&1 || { cat logs/dovecot.start.log >&2; exit 1; }

# ---- optional Postfix front end ----
if [ "$RIG_POSTFIX" = 1 ]; then
  mkdir -p postfix/spool postfix/data pfmail
  chown postfix postfix/data; chown nobody:nogroup pfmail
  cat > postfix/main.cf <<EOF
compatibility_level = 3.6
queue_directory = $RIG_DIR/postfix/spool
data_directory = $RIG_DIR/postfix/data
maillog_file = $RIG_DIR/logs/postfix.log
maillog_file_prefixes = $RIG_DIR
myhostname = pf.rig.localhost
mydomain = rig.localhost
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
smtpd_banner = \$myhostname ESMTP peer-rig-postfix
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $RIG_DIR/run/dovecot/auth-postfix
smtpd_sasl_security_options = noanonymous
smtpd_sasl_authenticated_header = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
# one mailbox that does not exist (a permanent 550 for the outbox tests), everything else accepted
smtpd_recipient_restrictions = check_recipient_access texthash:$RIG_DIR/postfix/rcpt_access, permit_sasl_authenticated, reject
# like a real port-587 MSA: STARTTLS mandatory, AUTH only offered after it
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_cert_file = $RIG_DIR/tls/server.crt
smtpd_tls_key_file = $RIG_DIR/tls/server.key
virtual_mailbox_domains = example.test example.com example.org
virtual_mailbox_base = $RIG_DIR/pfmail
virtual_mailbox_maps = static:catchall/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
EOF
  echo "rejected@example.test 550 5.1.1 <rejected@example.test>: Recipient address rejected: no such mailbox" > postfix/rcpt_access
  # Debian's master.cf with chroot off and the public smtp listener replaced by loopback listeners;
  # the third one refuses more than RIG_PF_LIMIT simultaneous connections (421, like Microsoft 365's
  # 3 per mailbox), loopback included, and logs as postfix/limited so tests can count its sessions
  awk -v p="$PF_PORT" -v s="$PFS_PORT" -v l="$PFL_PORT" -v n="${RIG_PF_LIMIT:-3}" '
    /^smtp +inet/ { print "127.0.0.1:" p " inet n - n - - smtpd"
                    print "127.0.0.1:" s " inet n - n - - smtpd -o smtpd_tls_wrappermode=yes"
                    print "127.0.0.1:" l " inet n - n - - smtpd -o syslog_name=postfix/limited" \
                          " -o smtpd_client_connection_count_limit=" n " -o smtpd_client_event_limit_exceptions="; next }
    /^[a-z]/ && NF >= 8 { $5 = "n" } { print }' /etc/postfix/master.cf > postfix/master.cf
  postfix -c "$RIG_DIR/postfix" start </dev/null >>logs/postfix.start.log 2>&1 \
    || { cat logs/postfix.start.log logs/postfix.log >&2 2>/dev/null; exit 1; }
fi

# ---- wait until everything listens ----
wait_port() { # port name
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  log "$2 did not come up on port $1"; tail -20 logs/* >&2; exit 1
}
wait_port "$OIDC_PORT" oidc-provider; wait_port "$SINK_PORT" aiosmtpd; wait_port "$GRAPH_PORT" graph-standin
wait_port "$SUB_PORT" dovecot-submission; wait_port "$SUBS_PORT" dovecot-submissions
if [ "$RIG_POSTFIX" = 1 ]; then
  wait_port "$PF_PORT" postfix; wait_port "$PFS_PORT" postfix-smtps; wait_port "$PFL_PORT" postfix-limited
fi

ISSUER=http://127.0.0.1:$OIDC_PORT
{
  echo "RIG_DIR=$RIG_DIR"
  echo "RIG_ISSUER=$ISSUER"
  # the rig stands in for Microsoft and Google on loopback: root's setting that lets the
  # named providers' endpoints point there (they are pinned to the providers' hosts otherwise)
  echo "OXNOTIFY_ALLOW_PROVIDER_HOSTS=127.0.0.1,localhost"
  echo "RIG_AUTHORIZE_URL=$ISSUER/auth"
  echo "RIG_TOKEN_URL=$ISSUER/token"
  echo "RIG_DEVICE_AUTH_URL=$ISSUER/device/auth"
  echo "RIG_INTROSPECT_URL=$ISSUER/token/introspection"
  echo "RIG_REVOKE_URL=$ISSUER/token/revocation"
  echo "RIG_USERINFO_URL=$ISSUER/me"
  echo "RIG_REDIRECT_URI=http://127.0.0.1/callback"
  echo "RIG_CLIENT_ID=rig-client"
  echo "RIG_CLIENT_SECRET=rig-secret"
  echo "RIG_PUBLIC_CLIENT_ID=rig-public"
  echo "RIG_SHORT_CLIENT_ID=rig-short"
  echo "RIG_SHORT_TTL=${SHORT_TTL:-3}"
  echo "RIG_APP_CLIENT_ID=rig-app"
  echo "RIG_APP_CLIENT_SECRET=rig-app-secret"
  echo "RIG_APP_MAILBOX=app-mailbox@example.test"
  echo "RIG_APP_SCOPE=https://outlook.office365.com/.default"
  echo "RIG_SA_KEY_FILE=$RIG_DIR/google-sa.json"
  echo "RIG_APP_JWT_CLIENT_ID=rig-app-jwt"
  echo "RIG_APP_JWT_KEY_FILE=$RIG_DIR/tls/app-jwt.key"
  echo "RIG_APP_JWT_KEY_ID=rig-app-jwt-key"
  echo "RIG_ROPC_CLIENT_ID=rig-ropc"
  echo "RIG_ROPC_CLIENT_SECRET=rig-secret"
  echo "RIG_ROPC_USER=ropc-user@example.test"
  echo "RIG_ROPC_PASSWORD=ropc-pass-123"
  echo "RIG_ROPC_MFA_USER=ropc-mfa@example.test"
  echo "RIG_SMTP_HOST=127.0.0.1"
  echo "RIG_TLS_SERVER_NAME=localhost"
  echo "RIG_SMTP_STARTTLS_PORT=$SUB_PORT"
  echo "RIG_SMTP_TLS_PORT=$SUBS_PORT"
  echo "RIG_MAILDIR=$RIG_DIR/sink/Maildir"
  echo "RIG_SINK_PORT=$SINK_PORT"
  echo "RIG_PLAIN_USER=plain@example.test"
  echo "RIG_PLAIN_PASSWORD=plain-secret-pw"
  if [ "$RIG_POSTFIX" = 1 ]; then
    echo "RIG_PF_STARTTLS_PORT=$PF_PORT"
    echo "RIG_PF_TLS_PORT=$PFS_PORT"
    echo "RIG_PF_LIMITED_PORT=$PFL_PORT"
    echo "RIG_PF_LIMIT=${RIG_PF_LIMIT:-3}"
    echo "RIG_PF_LOG=$RIG_DIR/logs/postfix.log"
    echo "RIG_PF_REJECTED_RCPT=rejected@example.test"
    echo "RIG_PF_MAILDIR=$RIG_DIR/pfmail/catchall"
  fi
  echo "RIG_CA_FILE=$RIG_DIR/tls/ca.crt"
  # the Graph stand-in (not Graph: scripts/rig/graph-standin.mjs), delivering into RIG_MAILDIR
  echo "RIG_GRAPH_HOST=127.0.0.1"
  echo "RIG_GRAPH_PORT=$GRAPH_PORT"
  echo "RIG_GRAPH_URL=https://127.0.0.1:$GRAPH_PORT/v1.0"
  echo "RIG_GRAPH_LOG=$RIG_DIR/logs/graph-standin.log"
  echo "RIG_GRAPH_APP_SCOPE=https://graph.microsoft.com/.default"
} > rig.env
cat rig.env
log "up in $(python3 -c "import time;print(round(time.time()-$t_start,2))") s; logs in $RIG_DIR/logs"
