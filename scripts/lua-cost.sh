#!/usr/bin/env bash
# What the gateway's library costs Redis, in machine instructions (callgrind), which
# other work on the machine does not change: a redis-server under valgrind with
# src/backend/dbx.lua loaded, each command below sent N times, instructions per call.
#
#   scripts/lua-cost.sh                      # the default set of calls
#   N=500 scripts/lua-cost.sh FCALL dbx_run 0 1000 100000 P 1 k v   # one call of your own
#   LIB=old.lua scripts/lua-cost.sh …       # another version of the library
#
# Needs redis-server 7+, redis-cli and valgrind (apt-get install valgrind). Nothing is
# measured in tests: this is a benchmark tool. Every wait is bounded.
set -euo pipefail

cd "$(dirname "$0")/.."
LIB_NAME=lua-cost
. scripts/lib.sh

N=${N:-1000}
PORT=${PORT:-16399}
command -v valgrind >/dev/null || die "valgrind is not installed"
command -v redis-server >/dev/null || die "redis-server is not installed"
ensure_port_free "$PORT" PORT
WORK=$(mktemp -d)
trap 'kill "$VG_PID" 2>/dev/null; wait "$VG_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
  redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --logfile '' \
  >"$WORK/vg.log" 2>&1 &
VG_PID=$!
for _ in $(seq 100); do
  [ "$(timeout 2 redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.2
done
[ "$(timeout 2 redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] || die "redis-server under valgrind did not start"
redis-cli -p "$PORT" -x FUNCTION LOAD REPLACE <"${LIB:-src/backend/dbx.lua}" >/dev/null
redis-cli -p "$PORT" FCALL dbx_init 0 100000 >/dev/null

# ir ARGS...: instructions per call of the command ARGS, sent N times in one pipeline.
ir() {
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  python3 - "$N" "$@" <<'PY' | timeout 600 redis-cli -p "$PORT" --pipe >/dev/null
import sys
n, args = int(sys.argv[1]), sys.argv[2:]
cmd = '*%d\r\n' % len(args) + ''.join('$%d\r\n%s\r\n' % (len(a.encode()), a) for a in args)
sys.stdout.write(cmd * n)
PY
  rm -f "$WORK"/cg.out.*
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
  local f total
  f=$(ls -t "$WORK"/cg.out.* | head -n 1)
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
  echo $((total / N))
}

if [ $# -gt 0 ]; then
  printf '%s: %s instructions per call\n' "$*" "$(ir "$@")"
  exit 0
fi

V=$(printf 'x%.0s' $(seq 32))
TEN=(P 10)
for i in $(seq 10); do TEN+=("k$i" "$V"); done
FIFTY=(P 50)
for i in $(seq 50); do FIFTY+=("k$i" "$V"); done
JSON10=$(python3 -c 'import json,sys; print(json.dumps([{"method":"string.set","params":{"key":"k%d" % i,"value":sys.argv[1]}} for i in range(10)]))' "$V")
printf '%-58s %12s\n' call instructions
row() { printf '%-58s %12s\n' "$1" "$(N=$2 ir "${@:3}")"; }
row "SET (native, for scale)" "$N" SET k "$V"
row "dbx_run: 1 plain string.set (compact form)" "$N" FCALL dbx_run 0 1000 100000 P 1 k1 "$V"
row "dbx_run: 10 plain string.set (compact form)" $((N / 4)) FCALL dbx_run 0 1000 100000 "${TEN[@]}"
row "dbx_run: 50 plain string.set (compact form)" $((N / 10)) FCALL dbx_run 0 1000 100000 "${FIFTY[@]}"
row "dbx_run: 1 string.set as JSON" "$N" FCALL dbx_run 0 1000 100000 "{\"method\":\"string.set\",\"params\":{\"key\":\"k1\",\"value\":\"$V\"}}"
row "dbx_exec: batch of 10 string.set" $((N / 4)) FCALL dbx_exec 0 1000 100000 "$JSON10"
