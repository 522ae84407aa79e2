#!/usr/bin/env bash
# Install the real dashboards of tests/real_apps (requirements.txt, from PyPI)
# into one virtualenv: target/real-apps/venv, or the directory given.
# Idempotent: a stamp of requirements.txt's hash skips a second install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/../../target/real-apps/venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "python3 with the venv module is needed: apt-get install -y python3-venv" >&2
  exit 1
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/pip" install --disable-pip-version-check --quiet -r "$here/requirements.txt"
echo "$want" > "$stamp"
