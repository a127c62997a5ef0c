#!/usr/bin/env bash
# Memory per idle WebSocket connection.
#
# Starts the release `dbx` (pinned to SERVER_CORE), reads its RSS, opens N idle
# WebSocket connections from a second process (`dbx-bench --idle N`, pinned to
# BENCH_CORE; they only answer pings), reads the RSS again while they are held, and
# prints (RSS after - RSS before) / N. Target: <= 16 KiB per idle connection.
#
# Environment (all optional):
#   N=10000 PORT=18181 SERVER_CORE=0 BENCH_CORE=1 BUILD=0 (1: cargo build --release first)
#   HOLD=8  seconds dbx-bench keeps the connections (the RSS is read mid-way)
# Every step is bounded (timeout); the whole script takes about HOLD + connect time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

N=${N:-10000}
PORT=${PORT:-18181}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-0}
HOLD=${HOLD:-8}
DBX=$ROOT/target/release/dbx
BENCH=$ROOT/target/release/dbx-bench
OUT=$(mktemp -d "${TMPDIR:-/tmp}/dbx-idle-mem.XXXXXX")

say() { printf '%s\n' "$*" >&2; }
die() { say "idle-memory: $*"; exit 1; }

if [ "$BUILD" = 1 ]; then
  timeout 3600 cargo build --release --bin dbx --bin dbx-bench >&2 || die "build failed"
fi
[ -x "$DBX" ] && [ -x "$BENCH" ] || die "release binaries missing (BUILD=1)"

PIN_S=(); PIN_B=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_S=(taskset -c "$SERVER_CORE"); PIN_B=(taskset -c "$BENCH_CORE")
fi

# Both processes need a descriptor per connection.
NEED=$((N + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED" ]; then
  ulimit -n "$NEED" 2>/dev/null || die "open-file limit $(ulimit -n) < $NEED (raise the hard limit)"
fi

SERVER_PID=; BENCH_PID=
cleanup() {
  for p in $BENCH_PID $SERVER_PID; do
    kill "$p" 2>/dev/null || true
  done
  for p in $BENCH_PID $SERVER_PID; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$OUT"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

DBX_PERSIST=false DBX_LOG=warn DBX_WS_RATE_LIMIT=0 DBX_WS_MAX_CONNECTIONS=$((N + 100)) \
  "${PIN_S[@]}" "$DBX" --port "$PORT" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  curl -fsS --max-time 1 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/server.log" >&2; die "server exited"; }
  sleep 0.1
done
curl -fsS --max-time 1 "http://127.0.0.1:$PORT/health" >/dev/null || die "server not up"

# Warm the allocator and the code paths with one short connection round, then settle.
timeout 20 "${PIN_B[@]}" "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 1 -d 200ms --warmup 0s \
  --mix get=1 --keyspace 10 --json-only >/dev/null 2>&1 || true
sleep 0.5
BEFORE=$(rss_kib "$SERVER_PID")

# Hold N idle connections (+1 active one sending 1 request/s).
timeout $((HOLD + 90)) "${PIN_B[@]}" "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 1 --rate 1 \
  --idle "$N" -d "${HOLD}s" --warmup 0s --mix get=1 --keyspace 10 --connect-timeout 60s \
  >"$OUT/bench.out" 2>"$OUT/bench.err" &
BENCH_PID=$!
opened=0
for _ in $(seq 900); do
  grep -q "idle connections to" "$OUT/bench.err" 2>/dev/null && { opened=1; break; }
  kill -0 "$BENCH_PID" 2>/dev/null || break
  sleep 0.1
done
[ "$opened" = 1 ] || { cat "$OUT/bench.err" >&2; die "dbx-bench did not open $N connections"; }
sleep $((HOLD / 2))
CONNS=$(curl -fsS --max-time 2 "http://127.0.0.1:$PORT/metrics" | awk '$1=="dbx_connections" {print $2}')
AFTER=$(rss_kib "$SERVER_PID")
wait "$BENCH_PID" || true
BENCH_PID=

PER=$(( (AFTER - BEFORE) * 1024 / N ))
say "$(grep "idle connections to" "$OUT/bench.err")"
printf 'idle-memory: N=%d open=%s RSS before=%d KiB after=%d KiB -> %d bytes (%.2f KiB) per idle connection (target <= 16 KiB)\n' \
  "$N" "$CONNS" "$BEFORE" "$AFTER" "$PER" "$(echo "$PER / 1024" | bc -l)"
[ "$CONNS" -ge "$N" ] || die "only $CONNS connections were open when RSS was read"
