#!/usr/bin/env python3
"""Test-side SMTP client for the rig (stdlib only): EHLO, [STARTTLS], AUTH XOAUTH2|OAUTHBEARER, one message.
usage: send_xoauth2.py MODE HOST PORT USER TOKEN [MECH] [CAFILE]
  MODE: plain (no TLS) | starttls | tls (implicit TLS, 465-style); MECH: XOAUTH2 (default) | OAUTHBEARER
  CAFILE: PEM CA bundle; if omitted, OpenSSL default paths (honours SSL_CERT_FILE) are used.
Prints 'AUTH 235 ...' / 'AUTH-FAILED <code> <text>' and 'SEND {}' (smtplib's refused-recipients dict)."""
import email.message, smtplib, ssl, sys, time
mode, host, port, user, token = sys.argv[1:6]
mech = sys.argv[6] if len(sys.argv) > 6 else "XOAUTH2"
cafile = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] else None
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=10) if mode == "tls" else smtplib.SMTP(host, int(port), timeout=10)
s.ehlo("client.test")
if mode == "starttls":
    s.starttls(context=ctx); s.ehlo("client.test")
if mech == "XOAUTH2":
    ir = f"user={user}\x01auth=Bearer {token}\x01\x01"
else:  # RFC 7628 gs2 header + kvpairs
    ir = f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
state = {"first": True}
def authobj(challenge=None):
    # first call: initial response; on the 334 error challenge answer with an empty line (RFC 7628 3.2.3),
    # smtplib's default would resend the credentials
    if state["first"]:
        state["first"] = False
        return ir
    return ""
try:
    code, resp = s.auth(mech, authobj, initial_response_ok=True)
    print("AUTH", code, resp.decode())
except smtplib.SMTPNotSupportedError as e:
    print("AUTH-FAILED no AUTH advertised:", e); s.quit(); sys.exit(2)
except smtplib.SMTPAuthenticationError as e:
    print("AUTH-FAILED", e.smtp_code, e.smtp_error.decode()); s.quit(); sys.exit(2)
msg = email.message.EmailMessage()
msg["From"] = user; msg["To"] = "bob@example.test"; msg["Subject"] = f"rig test {time.time()}"
msg.set_content("hello from the rig\n")
print("SEND", s.send_message(msg))
s.quit()
