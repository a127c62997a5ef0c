#!/usr/bin/env bash
# Install DBX as a systemd service: binary, unit, environment file, user and data dir.
# Usage: sudo scripts/install.sh [--no-build] [--prefix /usr/local]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --prefix) prefix="$2"; shift ;;
    *) echo "usage: $0 [--no-build] [--prefix DIR]" >&2; exit 2 ;;
  esac
  shift
done
[ "$build" = 1 ] && cargo build --release --bin dbx
install -D -m 0755 target/release/dbx "$prefix/bin/dbx"
if ! id dbx >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/dbx --shell /usr/sbin/nologin dbx
fi
install -d -o dbx -g dbx -m 0750 /var/lib/dbx
install -d -m 0755 /etc/dbx
# Never overwrite an operator's settings.
[ -f /etc/dbx/dbx.env ] || install -m 0640 -g dbx scripts/dbx.env /etc/dbx/dbx.env
sed "s#/usr/local/bin/dbx#$prefix/bin/dbx#" scripts/dbx.service > /etc/systemd/system/dbx.service
install -D -m 0644 README.md "$prefix/share/doc/dbx/README.md"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "installed; start with: systemctl enable --now dbx"
else
  echo "installed; systemd is not running here, so the unit was not loaded"
fi
