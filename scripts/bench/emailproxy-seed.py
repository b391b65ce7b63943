#!/usr/bin/env python3
"""emailproxy-seed.py CONFIG LOCAL_PORT SERVER_PORT USER PASSWORD ISSUER CLIENT_ID CLIENT_SECRET
Write an email-oauth2-proxy (PyPI `emailproxy`) config for the relay benchmark: one SMTP
listener on 127.0.0.1:LOCAL_PORT to the rig's Dovecot (STARTTLS), one account USER whose
tokens are stored the way the proxy stores them after its own first login (encrypted with
PASSWORD, through the proxy's own Cryptographer). The refresh token comes on stdin (never an
argument); with a second stdin line, an access token valid for an hour is stored too, else the
proxy must refresh on its first login (the "expired token" case). Run with the proxy's venv
python (it imports `emailproxy`)."""
import configparser
import sys
import time

import emailproxy

config_path, local_port, server_port, user, password, issuer, client_id, client_secret = sys.argv[1:9]
lines = sys.stdin.read().split()
refresh_token = lines[0]
access_token = lines[1] if len(lines) > 1 else None

config = configparser.ConfigParser()
config[f"SMTP-{local_port}"] = {
    "server_address": "localhost",
    "server_port": server_port,
    "server_starttls": "True",
    "local_address": "127.0.0.1",
}
config[user] = {
    "permission_url": f"{issuer}/auth",
    "token_url": f"{issuer}/token",
    "oauth2_scope": "https://outlook.office.com/SMTP.Send offline_access",
    "redirect_uri": "http://127.0.0.1/callback",
    "client_id": client_id,
    "client_secret": client_secret,
}
crypt = emailproxy.Cryptographer(config, user, password)
config[user]["token_salt"] = crypt.salt
config[user]["token_iterations"] = str(crypt.iterations)
config[user]["refresh_token"] = crypt.encrypt(refresh_token)
if access_token:
    config[user]["access_token"] = crypt.encrypt(access_token)
    config[user]["access_token_expiry"] = str(int(time.time()) + 3000)
with open(config_path, "w") as f:
    config.write(f)
