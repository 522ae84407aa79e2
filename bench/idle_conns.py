#!/usr/bin/env python3
"""Open N keep-alive TLS connections to a proxy, make one request on each,
then hold them all idle for HOLD seconds (the orchestrator reads the proxy's
RSS meanwhile). Prints "open N" once all are established.

usage: idle_conns.py HOST PORT N HOLD [COOKIE]
"""
import asyncio, ssl, sys

host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cookie = sys.argv[5] if len(sys.argv) > 5 else ""
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
request = (f"GET /small HTTP/1.1\r\nHost: {host}:{port}\r\n"
           + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n").encode()


async def one(sem, conns):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), 30)
            w.write(request)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await asyncio.wait_for(r.readexactly(length), 30)
            if b" 200 " in head.split(b"\r\n")[0]:
                conns.append(w)
            else:
                w.close()
        except Exception:
            pass


async def main():
    conns = []
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(one(sem, conns) for _ in range(n)))
    print(f"open {len(conns)}", flush=True)
    await asyncio.sleep(hold)
    for w in conns:
        w.close()


asyncio.run(main())
