#!/usr/bin/env python3
"""Sign in to gatehouse through the bench upstream's login and enroll TOTP,
so every benchmark request carries an authenticated, 2FA-passed session.
Prints the session cookie (name=value). Standard library only.

usage: signin.py HOST PORT USER
"""
import base64, hashlib, hmac, http.client, re, ssl, struct, sys, time, urllib.parse

host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def request(method, path, cookie="", form=None):
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    headers = {"Host": f"{host}:{port}"}
    body = None
    if cookie:
        headers["Cookie"] = cookie
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    session = ""
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie" and value.startswith("__Host-gatehouse="):
            session = value.split(";", 1)[0]
    return resp.status, resp.getheader("Location") or "", session, text


def totp(secret_b32, at):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000)


status, to, cookie, _ = request("POST", "/login", form={"username": user, "password": "bench"})
if status not in (302, 303) or not cookie:
    sys.exit(f"sign-in: unexpected answer {status} {to}")
if to != "/.gatehouse/2fa/enroll":
    sys.exit(f"sign-in: expected the enrollment page, got {to}")
status, _, _, page = request("GET", to, cookie)
secret = re.search(r'data-secret="([A-Z2-7]+)"', page)
csrf = re.search(r'name="csrf" value="([^"]+)"', page)
if status != 200 or not secret or not csrf:
    sys.exit(f"enrollment page: unexpected answer {status}")
status, _, active, _ = request(
    "POST", to, cookie, form={"csrf": csrf.group(1), "code": totp(secret.group(1), time.time())}
)
if status != 200 or not active:
    sys.exit(f"enrollment: unexpected answer {status}")
# The session is active and 2FA-passed: a protected page must reach the upstream.
status, _, _, body = request("GET", "/small", active)
if status != 200 or len(body) != 1024:
    sys.exit(f"signed-in request: unexpected answer {status}")
print(active)
