#!/usr/bin/env bash
# Installs each client the way a user would, from its package, into a fresh temp
# directory, and runs a smoke test from there against the real server:
#   npm pack clients/js  -> npm install <tarball> (+ ws for Node < 22) -> node smoke.mjs
#   pip wheel clients/python -> new venv -> pip install <wheel> -> python smoke.py
# Also checks what the packages ship (LICENSE, README, types) and their versions.
#   DBX_BIN: the server binary (default target/debug/dbx).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DBX_BIN="${DBX_BIN:-$ROOT/target/debug/dbx}"
case "$DBX_BIN" in /*) ;; *) DBX_BIN="$ROOT/$DBX_BIN" ;; esac
WORK="$(mktemp -d /tmp/dbx-client-smoke.XXXXXX)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DBX_HOST=127.0.0.1 DBX_PORT=$PORT DBX_PERSIST=false DBX_LOG=warn "$DBX_BIN" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
export DBX_URL="ws://127.0.0.1:$PORT/ws"

echo "== npm: pack, install the tarball into a fresh project, run the smoke test"
mkdir -p "$WORK/js-pack" "$WORK/js-app"
(cd "$ROOT/clients/js" && npm pack --silent --pack-destination "$WORK/js-pack" >/dev/null)
TARBALL=$(ls "$WORK"/js-pack/dbx-client-*.tgz)
[ "$(basename "$TARBALL")" = "dbx-client-$VERSION.tgz" ] || { echo "npm package version is not the server's $VERSION: $TARBALL" >&2; exit 1; }
CONTENTS=$(tar -tzf "$TARBALL")
for f in package/LICENSE package/README.md package/src/index.d.ts package/src/methods.d.ts; do
  grep -qx "$f" <<<"$CONTENTS" || { echo "the npm package lacks $f" >&2; exit 1; }
done
cp "$ROOT/clients/smoke/smoke.mjs" "$WORK/js-app/"
cd "$WORK/js-app"
npm init -y >/dev/null
npm pkg set type=module >/dev/null
# Node 20/21 have no global WebSocket: the client's optional peer `ws` provides it.
node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' && EXTRA= || EXTRA=ws
npm install --no-audit --no-fund --silent "$TARBALL" $EXTRA
node smoke.mjs

echo "== pip: build the wheel, install it into a fresh virtualenv, run the smoke test"
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/wheel" "$ROOT/clients/python"
WHEEL=$(ls "$WORK"/wheel/dbx_client-*.whl)
case "$(basename "$WHEEL")" in dbx_client-"$VERSION"-*) ;; *) echo "wheel version is not the server's $VERSION: $WHEEL" >&2; exit 1 ;; esac
python3 - "$WHEEL" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
assert "License-Expression: MIT" in meta, "METADATA has no License-Expression: MIT"
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the wheel does not ship LICENSE"
assert "dbx_client/py.typed" in names, "the wheel does not ship py.typed"
assert "Project-URL: Repository" in meta
PY
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "$WHEEL"
mkdir -p "$WORK/py-app" && cp "$ROOT/clients/smoke/smoke.py" "$WORK/py-app/"
cd "$WORK/py-app"
"$WORK/venv/bin/python" smoke.py
echo "client packages: 2 passed, 0 failed"
