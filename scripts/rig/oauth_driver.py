#!/usr/bin/env python3
"""Test-side OAuth2 driver for the peer-rig (stdlib only). Drives panva/oidc-provider's
built-in dev login/consent forms the way a browser would, so tests get real tokens.
usage:
  oauth_driver.py ISSUER code    USER [CLIENT_ID] [CLIENT_SECRET]   -> token JSON (authorization_code + PKCE)
  oauth_driver.py ISSUER refresh RT   [CLIENT_ID] [CLIENT_SECRET]   -> token JSON (refresh_token grant)
  oauth_driver.py ISSUER device  USER [CLIENT_ID] [CLIENT_SECRET]   -> token JSON (RFC 8628, approves as USER)
  oauth_driver.py ISSUER approve USER VERIFICATION_URI USER_CODE      -> approves a device code (RFC 8628) as USER
  oauth_driver.py ISSUER deny    USER VERIFICATION_URI USER_CODE      -> aborts it at the confirmation (access_denied)
  oauth_driver.py ISSUER introspect TOKEN                            -> introspection JSON (as client 'dovecot')
  oauth_driver.py ISSUER revoke TOKEN [CLIENT_ID] [CLIENT_SECRET]
  oauth_driver.py ISSUER browse  USER AUTHORIZE_URL REDIRECT_PREFIX  -> the final redirect URL (code+state),
                  for an authorize URL built by the code under test (its own state and PKCE)
"""
import base64, hashlib, html.parser, http.cookiejar, json, os, secrets, sys, time
import urllib.error, urllib.parse, urllib.request

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None

class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.forms = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form": self.forms.append({"action": a.get("action"), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")

jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

def req(url, data=None, auth=None):
    r = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data is not None else None)
    if auth: r.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        resp = opener.open(r, timeout=10)
    except urllib.error.HTTPError as e:
        resp = e
    return resp.status, resp.headers, resp.read().decode()

def browse(url, user, stop_prefix):
    """follow redirects and fill dev-interaction forms until a URL starting with stop_prefix"""
    for _ in range(20):
        if isinstance(url, str) and url.startswith(stop_prefix): return url
        status, headers, body = req(url) if not isinstance(url, tuple) else req(url[0], url[1])
        base = url if isinstance(url, str) else url[0]
        if status in (302, 303):
            url = urllib.parse.urljoin(base, headers["Location"]); continue
        p = Forms(); p.feed(body)
        if status != 200 or not p.forms: raise SystemExit(f"unexpected {status} at {base}: {body[:300]}")
        f = p.forms[0]; fields = dict(f["fields"])
        if "login" in fields or fields.get("prompt") == "login": fields.update(login=user, password="x")
        url = (urllib.parse.urljoin(base, f["action"]), fields)
    raise SystemExit("too many steps")

def token(issuer, data, cid, secret):
    status, _, body = req(issuer + "/token", data if secret else dict(data, client_id=cid),
                          auth=(cid, secret) if secret else None)
    out = json.loads(body); out["_http_status"] = status; return out

def approve(verification_uri, user_code, user):
    """enter user_code at the verification page, log in and consent as user"""
    _, _, page = req(verification_uri); p = Forms(); p.feed(page)
    f = p.forms[0]; fields = dict(f["fields"], user_code=user_code)
    try:
        browse((urllib.parse.urljoin(verification_uri, f["action"]), fields), user, "\0never")
    except SystemExit as e:
        if "unexpected 200" not in str(e): raise  # success page has no form

def main():
    issuer, cmd, arg = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    if cmd == "approve":
        approve(sys.argv[4], sys.argv[5], arg); print("approved"); return
    if cmd == "deny":
        _, _, page = req(sys.argv[4]); p = Forms(); p.feed(page)
        f = p.forms[0]
        status, _, page = req(urllib.parse.urljoin(sys.argv[4], f["action"]), dict(f["fields"], user_code=sys.argv[5]))
        p = Forms(); p.feed(page)
        if status != 200 or not p.forms: raise SystemExit(f"no confirmation page ({status}): {page[:300]}")
        f = p.forms[0]
        status, _, page = req(urllib.parse.urljoin(sys.argv[4], f["action"]), dict(f["fields"], abort="yes"))
        print("denied" if status < 400 else f"deny failed {status}: {page[:300]}"); return
    cid = sys.argv[4] if len(sys.argv) > 4 and cmd != "browse" else "rig-client"
    secret = sys.argv[5] if len(sys.argv) > 5 else ("rig-secret" if cid == "rig-client" else None)
    if cmd == "code":
        redirect = "http://127.0.0.1:%d/callback" % (40000 + secrets.randbelow(20000))  # native client: any loopback port
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(8)
        q = urllib.parse.urlencode(dict(client_id=cid, response_type="code", redirect_uri=redirect,
              scope="openid email offline_access", state=state, prompt="consent",
              code_challenge=challenge, code_challenge_method="S256"))
        final = browse(f"{issuer}/auth?{q}", arg, redirect)
        qs = urllib.parse.parse_qs(urllib.parse.urlparse(final).query)
        if "code" not in qs or qs["state"][0] != state: raise SystemExit(f"bad callback {final}")
        out = token(issuer, dict(grant_type="authorization_code", code=qs["code"][0], redirect_uri=redirect,
                                 code_verifier=verifier), cid, secret)
    elif cmd == "browse":
        print(browse(sys.argv[4], arg, sys.argv[5])); return
    elif cmd == "refresh":
        out = token(issuer, dict(grant_type="refresh_token", refresh_token=arg), cid, secret)
    elif cmd == "device":
        _, _, body = req(issuer + "/device/auth", dict(scope="openid email offline_access"), auth=(cid, secret)) if secret \
            else req(issuer + "/device/auth", dict(client_id=cid, scope="openid email offline_access"))
        d = json.loads(body)
        print(json.dumps({k: d[k] for k in d if k != "device_code"}), file=sys.stderr)
        grant = dict(grant_type="urn:ietf:params:oauth:grant-type:device_code", device_code=d["device_code"])
        print("poll before approval:", json.dumps(token(issuer, grant, cid, secret)), file=sys.stderr)
        _, _, page = req(d["verification_uri"]); p = Forms(); p.feed(page)
        f = p.forms[0]; fields = dict(f["fields"], user_code=d["user_code"])
        try:
            browse((urllib.parse.urljoin(d["verification_uri"], f["action"]), fields), arg, "\0never")
        except SystemExit as e:
            if "unexpected 200" not in str(e): raise  # success page has no form
        time.sleep(float(os.environ.get("DEVICE_POLL_WAIT", d.get("interval", 5))))
        out = token(issuer, grant, cid, secret)
    elif cmd == "introspect":
        _, _, body = req(issuer + "/token/introspection", dict(token=arg, client_id="dovecot", client_secret="dovecot-secret"))
        out = json.loads(body)
    elif cmd == "revoke":
        status, _, body = req(issuer + "/token/revocation", dict(token=arg), auth=(cid, secret))
        out = {"_http_status": status}
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))

if __name__ == "__main__":
    main()
