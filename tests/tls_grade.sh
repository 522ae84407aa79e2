#!/usr/bin/env bash
# TLS grade of gatehouse's default TLS settings, measured by testssl.sh.
#
#   apt-get install -y testssl.sh      # Debian package, command `testssl`
#   tests/tls_grade.sh                 # takes a few minutes
#
# Starts `gatehouse demo` (self-signed certificate, default [server.tls]
# settings) on a free port of 127.0.0.1, runs testssl against it (protocols,
# cipher categories, forward secrecy, server preferences, server defaults,
# every cipher, vulnerabilities; no DNS, so it works offline), and keeps the
# report in tests/tls-grade/testssl-latest.{txt,json}.
#
# Exits non-zero when the report says VULNERABLE anywhere, or when SSLv2,
# SSLv3, TLS 1.0 or TLS 1.1 is offered. Not part of `cargo test`: it needs a
# Debian package and minutes.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
out="$here/tls-grade"
mkdir -p "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

command -v testssl >/dev/null || { echo "testssl not found: apt-get install -y testssl.sh" >&2; exit 2; }

(cd "$repo" && cargo build --quiet --bin gatehouse)
bin="$CARGO_TARGET_DIR/debug/gatehouse"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" demo --listen "127.0.0.1:$port" --big-recording-mib 1 >"$out/gateway.log" 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true; wait "$gateway" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.2
done

txt="$out/testssl-latest.txt"
json="$out/testssl-latest.json"
rm -f "$txt" "$json"
# testssl exits non-zero for findings of any severity; the verdict is ours, below.
testssl --quiet --color 0 --warnings off --sneaky --nodns none \
    --connect-timeout 10 --openssl-timeout 10 \
    --protocols --std --fs --server-preference --server-defaults --each-cipher --vulnerable \
    --logfile "$txt" --jsonfile "$json" \
    "127.0.0.1:$port" >/dev/null || true

[ -s "$txt" ] || { echo "testssl wrote no report" >&2; exit 2; }

status=0
if grep -n 'VULNERABLE' "$txt" | grep -v -i 'not vulnerable'; then
    echo "FAIL: testssl reports a vulnerability (lines above)" >&2
    status=1
fi
if grep -n -E '^ *(SSLv2|SSLv3|TLS 1|TLS 1\.1) +offered' "$txt"; then
    echo "FAIL: a protocol below TLS 1.2 is offered (lines above)" >&2
    status=1
fi
[ "$status" -eq 0 ] && echo "OK: no VULNERABLE finding, nothing below TLS 1.2 offered ($txt)"
exit "$status"
