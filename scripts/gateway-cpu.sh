#!/usr/bin/env bash
# CPU time per request of a gateway and of its Redis (user + system, from /proc), which
# moves much less than throughput when other work shares the machine: one redis-server
# and one gateway pinned to SERVER_CORE, dbx-bench pinned to BENCH_CORE, SECS seconds of
# TEST (set or get) at P requests in flight on 50 connections, 32-byte values.
#
#   scripts/gateway-cpu.sh                 # set and get, 1 and 16 in flight
#   TESTS=set PIPELINES=16 SECS=6 scripts/gateway-cpu.sh
#
# Uses the release binaries (cargo build --release). Every wait is bounded.
set -euo pipefail

cd "$(dirname "$0")/.."
LIB_NAME=gateway-cpu
. scripts/lib.sh

SECS=${SECS:-4}
TESTS=${TESTS:-"set get"}
PIPELINES=${PIPELINES:-"1 16"}
REDIS_PORT=${REDIS_PORT:-16590}
DBX_PORT=${DBX_PORT:-18290}
pin_cores "${SERVER_CORE:-0}" "${BENCH_CORE:-1}" "fewer than 2 cores (@NCPU@): nothing pinned"
[ -x "$DBX" ] && [ -x "$BENCH" ] || die "build first: cargo build --release"
ensure_port_free "$REDIS_PORT" REDIS_PORT
ensure_port_free "$DBX_PORT" DBX_PORT
OUT=$(mktemp -d)
trap 'kill "$DBX_PID" "$REDIS_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$OUT"' EXIT

"${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --logfile '' >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do [ "$(timeout 2 redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
export DBX_BACKEND=redis://127.0.0.1:$REDIS_PORT DBX_WS_RATE_LIMIT=0 DBX_LOG=warn
start_dbx "$OUT/dbx.log" --port "$DBX_PORT"
wait_health "$DBX_PORT" "$DBX_PID" "$OUT/dbx.log" 100 || die "the gateway did not answer within 10 s"
timeout 60 "${PIN_BENCH[@]}" "$BENCH" --url "ws://127.0.0.1:$DBX_PORT/ws" -c 50 --mix set=1 --preload \
  --duration 1s --warmup 0s --keyspace 10000 --value-size 32 --json-only >/dev/null 2>&1 || die "preload failed"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '%-4s %3s %10s %14s %14s %14s\n' test P ops/s redis_us/op gateway_us/op total_us/op
for p in $PIPELINES; do
  for t in $TESTS; do
    r0=$(ticks "$REDIS_PID"); g0=$(ticks "$DBX_PID")
    line=$(timeout $((SECS + 60)) "${PIN_BENCH[@]}" "$BENCH" --url "ws://127.0.0.1:$DBX_PORT/ws" -c 50 -P "$p" \
      --mix "$t=1" --duration "${SECS}s" --warmup 0s --keyspace 10000 --value-size 32 --json-only 2>/dev/null | tail -n 1)
    r1=$(ticks "$REDIS_PID"); g1=$(ticks "$DBX_PID")
    ops=$(json_field "$line" ops_per_sec)
    [ -n "$ops" ] || die "dbx-bench gave no result: $line"
    awk -v o="$ops" -v s="$SECS" -v r=$((r1 - r0)) -v g=$((g1 - g0)) -v hz="$hz" -v t="$t" -v p="$p" 'BEGIN {
      n = o * s; ru = r * 1e6 / hz / n; gu = g * 1e6 / hz / n
      printf "%-4s %3s %10.0f %14.2f %14.2f %14.2f\n", t, p, o, ru, gu, ru + gu }'
  done
done
