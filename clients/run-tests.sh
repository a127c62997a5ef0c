#!/usr/bin/env bash
# Installs what the client tests need and runs them against the real server binary.
#   DBX_BIN: the server binary (default target/debug/dbx, relative to the repo root).
# Exit status is non-zero when any suite fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DBX_BIN="${DBX_BIN:-target/debug/dbx}"
case "$DBX_BIN" in /*) ;; *) DBX_BIN="$ROOT/$DBX_BIN" ;; esac
export DBX_BIN
echo "clients: server binary $DBX_BIN"
[ -x "$DBX_BIN" ] || echo "clients: WARNING: $DBX_BIN is missing; every test that needs the server will fail" >&2

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
(cd clients/js && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })
python3 -m pip install -q --disable-pip-version-check -e "clients/python[test]" mypy

status=0
node clients/gen-methods.mjs --check || { echo "clients: generated method files are stale: run node clients/gen-methods.mjs" >&2; status=1; }
(cd clients/js && node --test --test-concurrency=1 --test-timeout=120000 \
  test/client.test.js test/reconnect.test.js test/browser.test.js) || status=1
(cd clients/python && python3 -m pytest -v -p no:cacheprovider) || status=1
# The typed helpers (TypedDict results generated from the method table) type-check.
(cd clients/python && python3 -m mypy --strict --follow-imports=silent dbx_client/_generated.py) || status=1
# Installed as a user would: npm pack / wheel into fresh directories, smoke-tested there.
bash clients/smoke/run.sh || status=1
exit $status
