#!/usr/bin/env python3
"""The floor for perl/bench/fastpath.pl: the minimal client (python smtplib), kept running so
its interpreter start-up is not measured. Reads one command per line on stdin and answers with
the milliseconds the SMTP work took:
  one MECH USER SECRET            one session: connect, EHLO, STARTTLS, EHLO, AUTH, one message, QUIT
  burst MECH USER SECRET N        one session carrying N messages
MECH is XOAUTH2 (SECRET: the access token) or PLAIN (SECRET: the password).
Talks to $HOST:$PORT (STARTTLS), trusting the CA in SSL_CERT_FILE (the rig's)."""
import email.message
import os
import smtplib
import ssl
import sys
import time

host, port = os.environ["HOST"], int(os.environ["PORT"])
ctx = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))


def session(mech, user, secret, n):
    s = smtplib.SMTP(host, port, timeout=30)
    s.ehlo("client.test")
    s.starttls(context=ctx)
    s.ehlo("client.test")
    if mech == "XOAUTH2":
        ir = f"user={user}\x01auth=Bearer {secret}\x01\x01"
        s.auth("XOAUTH2", lambda challenge=None: ir, initial_response_ok=False)
    else:
        s.login(user, secret)
    for i in range(n):
        msg = email.message.EmailMessage()
        msg["From"] = user
        msg["To"] = "ops@example.test"
        msg["Subject"] = f"minimal client {i}"
        msg.set_content("bench\n")
        s.send_message(msg)
    s.quit()


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    t0 = time.perf_counter()
    if words[0] == "one":
        session(words[1], words[2], words[3], 1)
    else:
        session(words[1], words[2], words[3], int(words[4]))
    print(f"{(time.perf_counter() - t0) * 1000:.3f}", flush=True)
