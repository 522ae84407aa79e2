#!/usr/bin/env python3
"""Sign-in churn for `bench/soak`: USERS users take turns, each one at a time
and at most once per 31 s (a TOTP code is accepted once per step). A turn is
a failed password, a sign-in with the second factor (enrollment on a user's
first turn), signed-in requests, requests without a session and with a
made-up one, and a logout after which the old cookie must no longer work.
Runs for SECONDS, then prints one line: turns made and answers that were not
what a turn expects (each such answer is also printed as it happens).

usage: churn.py HOST PORT USERS SECONDS PREFIX
"""
import secrets, sys, time

from signin import Failed, request, sign_in

host, port, users, seconds, prefix = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                      float(sys.argv[4]), sys.argv[5])
STEP = 31


def turn(user, secret):
    """One user's turn → the user's TOTP secret."""
    status, _, _, _ = request(host, port, "POST", "/login",
                              form={"username": user, "password": "wrong"})
    if status != 200:
        raise Failed(f"wrong password: got {status}, expected the form again")
    cookie, secret = sign_in(host, port, user, secret)
    for _ in range(5):
        status, _, _, body = request(host, port, "GET", "/small", cookie)
        if status != 200 or len(body) != 1024:
            raise Failed(f"signed-in request: got {status}")
    status, to, _, _ = request(host, port, "GET", "/small")
    if status not in (302, 303):
        raise Failed(f"request without a session: got {status}")
    made_up = "__Host-gatehouse=" + secrets.token_urlsafe(32)
    status, _, _, _ = request(host, port, "GET", "/small", made_up)
    if status == 200:
        raise Failed("a made-up session cookie reached the dashboard")
    status, _, _, _ = request(host, port, "GET", "/logout", cookie)
    if status not in (302, 303):
        raise Failed(f"logout: got {status}")
    status, _, _, _ = request(host, port, "GET", "/small", cookie)
    if status == 200:
        raise Failed("a logged-out session reached the dashboard")
    return secret


def main():
    end = time.monotonic() + seconds
    secret = {}
    due = {}
    turns = unexpected = 0
    i = 0
    while time.monotonic() < end:
        user = f"{prefix}{i % users}@example.com"
        i += 1
        wait = due.get(user, 0) - time.monotonic()
        if wait > 0:
            if time.monotonic() + wait >= end:
                break
            time.sleep(wait)
        due[user] = time.monotonic() + STEP
        try:
            secret[user] = turn(user, secret.get(user))
        except (Failed, OSError) as e:
            unexpected += 1
            print(f"churn {user}: {e}", file=sys.stderr, flush=True)
        turns += 1
    print(f"turns {turns} unexpected {unexpected}", flush=True)


main()
