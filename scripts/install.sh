#!/usr/bin/env bash
# Install DBX as a systemd service: binary, unit, environment file and user. The data
# directory (/var/lib/dbx) is created by systemd itself (StateDirectory=dbx in the unit).
#
# It installs a binary you built, as yourself — it never runs cargo, so no build runs as
# root (build scripts and proc macros of every dependency would run with root rights):
#
#   cargo build --release --bin dbx          # as your user
#   sudo scripts/install.sh                  # installs target/release/dbx
#   sudo scripts/install.sh --bin PATH --prefix /usr/local
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
bin=target/release/dbx
usage() { echo "usage: $0 [--bin PATH] [--prefix DIR]   (build first, as your user: cargo build --release --bin dbx)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) [ $# -ge 2 ] || usage; bin="$2"; shift ;;
    --prefix) [ $# -ge 2 ] || usage; prefix="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
if [ ! -x "$bin" ]; then
  echo "install.sh: no binary at $bin. Build it first as your user (not root):" >&2
  echo "  cargo build --release --bin dbx" >&2
  exit 1
fi
# A binary that does not run here (wrong architecture, missing library) would only fail
# later under systemd: try it now.
"$bin" --version >/dev/null || { echo "install.sh: $bin --version failed" >&2; exit 1; }
install -D -m 0755 -o root -g root "$bin" "$prefix/bin/dbx"
if ! id dbx >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/dbx --no-create-home --shell /usr/sbin/nologin dbx
fi
install -d -m 0755 /etc/dbx
# Never overwrite an operator's settings.
[ -f /etc/dbx/dbx.env ] || install -m 0640 -g dbx scripts/dbx.env /etc/dbx/dbx.env
# The API keys file the unit loads as a credential (root-only: systemd reads it and
# hands the service a private copy). A first install gets one random admin key.
if [ ! -f /etc/dbx/api_keys ]; then
  umask 077
  key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '# key:role[:label], one a line (read|write|admin); re-read on systemctl reload dbx\n%s:admin:admin\n' "$key" >/etc/dbx/api_keys
  chmod 0600 /etc/dbx/api_keys
  echo "install.sh: created /etc/dbx/api_keys with one admin key (label 'admin'); read it with: sudo cat /etc/dbx/api_keys"
fi
# The unit sets DBX_DATA_DIR=/var/lib/dbx and allows writes only there; an older
# dbx.env that sets another directory would win (EnvironmentFile= overrides
# Environment=) and the server could not write it.
if grep -Eq '^[[:space:]]*DBX_DATA_DIR=' /etc/dbx/dbx.env && ! grep -Eq '^[[:space:]]*DBX_DATA_DIR=/var/lib/dbx/?[[:space:]]*$' /etc/dbx/dbx.env; then
  echo "install.sh: WARNING: /etc/dbx/dbx.env sets DBX_DATA_DIR to another directory than /var/lib/dbx;" >&2
  echo "  remove that line, or move the data directory with a drop-in (see the comments in dbx.service)" >&2
fi
sed "s#/usr/local/bin/dbx#$prefix/bin/dbx#" scripts/dbx.service >/etc/systemd/system/dbx.service
install -D -m 0644 README.md "$prefix/share/doc/dbx/README.md"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "installed; start with: systemctl enable --now dbx"
else
  echo "installed; systemd is not running here, so the unit was not loaded"
fi
