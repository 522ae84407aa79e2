#!/usr/bin/env python3
"""Sign in to gatehouse through the bench upstream's login and enroll TOTP,
so every benchmark request carries an authenticated, 2FA-passed session.
Prints the session cookie (name=value). Standard library only; also a module
(`bench/churn.py` signs users in and out with it).

usage: signin.py HOST PORT USER
"""
import base64, hashlib, hmac, http.client, re, ssl, struct, sys, time, urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class Failed(Exception):
    """An answer the bench did not expect."""


def request(host, port, method, path, cookie="", form=None):
    """One request on a new connection → (status, Location, gatehouse session cookie, body)."""
    conn = http.client.HTTPSConnection(host, port, context=CTX, timeout=10)
    try:
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
    finally:
        conn.close()
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


def sign_in(host, port, user, secret=None):
    """Sign `user` in and pass the second factor: enroll when `secret` is None,
    else answer the challenge with a code from `secret`. → (cookie, secret).
    A user's code is accepted once per 30 s step (replays are refused)."""
    status, to, cookie, _ = request(host, port, "POST", "/login",
                                    form={"username": user, "password": "bench"})
    if status not in (302, 303) or not cookie:
        raise Failed(f"sign-in: unexpected answer {status} {to}")
    want = "/.gatehouse/2fa/enroll" if secret is None else "/.gatehouse/2fa"
    if to != want:
        raise Failed(f"sign-in: expected {want}, got {to}")
    status, _, _, page = request(host, port, "GET", to, cookie)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    if secret is None:
        found = re.search(r'data-secret="([A-Z2-7]+)"', page)
        secret = found.group(1) if found else None
    if status != 200 or not secret or not csrf:
        raise Failed(f"second-factor page: unexpected answer {status}")
    status, _, active, _ = request(host, port, "POST", to, cookie,
                                   form={"csrf": csrf.group(1), "code": totp(secret, time.time())})
    if status not in (200, 302, 303) or not active:
        raise Failed(f"second factor: unexpected answer {status}")
    return active, secret


if __name__ == "__main__":
    host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    try:
        active, _ = sign_in(host, port, user)
        # The session is active and 2FA-passed: a protected page must reach the upstream.
        status, _, _, body = request(host, port, "GET", "/small", active)
        if status != 200 or len(body) != 1024:
            raise Failed(f"signed-in request: unexpected answer {status}")
    except Failed as e:
        sys.exit(str(e))
    print(active)
