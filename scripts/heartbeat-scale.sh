#!/usr/bin/env bash
# Heartbeats at scale: does a 1 s heartbeat to 10,000 idle connections hurt the
# latency of an active client?
#
# Server: release `dbx`, DBX_WS_HEARTBEAT_INTERVAL=1, pinned to SERVER_CORE.
# Clients (pinned to BENCH_CORE):
#   baseline: `dbx-bench -c C` alone;
#   loaded:   the same, while a second `dbx-bench` process holds N idle connections
#             (they answer every Ping with a Pong), i.e. the server sends N heartbeat
#             texts + N Pings per second and reads N Pongs.
# Prints both p50/p99/p99.9 and the p99 ratio (goal: at most 2x).
#
# Environment (all optional):
#   N=10000 C=1 PIPELINE=1 DURATION=8 WARMUP=2 PORT=18182 SERVER_CORE=0 BENCH_CORE=1
#   INTERVAL=1 (heartbeat seconds)  BUILD=0 (1: cargo build --release first)
# Each dbx-bench run is bounded to DURATION + WARMUP (+ connect) <= ~20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIB_NAME=heartbeat-scale
. scripts/lib.sh

N=${N:-10000}
C=${C:-1}
PIPELINE=${PIPELINE:-1}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
PORT=${PORT:-18182}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
INTERVAL=${INTERVAL:-1}
BUILD=${BUILD:-0}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/dbx-hb-scale.XXXXXX")

release_binaries BUILD=1

pin_cores "$SERVER_CORE" "$BENCH_CORE" "not pinned (need taskset and 2 CPUs)"
raise_fd_limit $((N + 512))

SERVER_PID=; HOLDER_PID=
cleanup() {
  stop_pids "$HOLDER_PID" "$SERVER_PID"
  rm -rf "$OUT"
}
cleanup_on_exit cleanup

DBX_PERSIST=false DBX_LOG=warn DBX_WS_RATE_LIMIT=0 DBX_WS_MAX_CONNECTIONS=$((N + 100)) \
DBX_WS_HEARTBEAT_INTERVAL=$INTERVAL DBX_WS_TIMEOUT=30 \
  start_dbx "$OUT/server.log" --port "$PORT"
SERVER_PID=$DBX_PID
wait_health "$PORT" "$SERVER_PID" "$OUT/server.log" 100 || true

URL="ws://127.0.0.1:$PORT/ws"
measure() { # label
  timeout $((DURATION + WARMUP + 30)) "${PIN_BENCH[@]}" "$BENCH" --url "$URL" -c "$C" -P "$PIPELINE" \
    -d "${DURATION}s" --warmup "${WARMUP}s" --mix get=9,set=1 --keyspace 1000 --preload \
    --key-prefix "hb:" --json-only 2>>"$OUT/bench.err" | tail -n 1 >"$OUT/$1.json"
  grep -q '"error"' "$OUT/$1.json" && { cat "$OUT/$1.json" >&2; die "$1 run failed"; }
  true
}
field() { sed -nE "s/.*\"$2\":(-?[0-9.eE+]+).*/\1/p" "$OUT/$1.json"; }
cpu_ticks() { proc_cpu_ticks "$SERVER_PID"; }

say "heartbeat-scale: baseline (c=$C, no idle connections)"
B0=$(cpu_ticks)
measure base
B1=$(cpu_ticks)

# Hold N idle connections in a second process for the loaded run (it also has one
# active connection at 1 request/s). It shares the generator's core and spends a
# fifth of it answering 10k pings and heartbeats a second; at nice 19 it does not
# preempt the measuring client, so what is measured is the server's share.
HOLD=$((DURATION + WARMUP + 6))
timeout $((HOLD + 60)) nice -n 19 "${PIN_BENCH[@]}" "$BENCH" --url "$URL" -c 1 --rate 1 --idle "$N" -d "${HOLD}s" \
  --warmup 0s --mix get=1 --keyspace 10 --key-prefix "hold:" --connect-timeout 30s \
  >"$OUT/holder.out" 2>"$OUT/holder.err" &
HOLDER_PID=$!
wait_log "$OUT/holder.err" "connections to" "$HOLDER_PID" 400 \
  || { cat "$OUT/holder.err" >&2; die "holder did not open $N connections"; }
say "heartbeat-scale: $(grep 'connections to' "$OUT/holder.err")"
sleep 2 # every connection is now past its first (random-phase) heartbeat
T0=$(cpu_ticks)
say "heartbeat-scale: loaded (c=$C, $N idle connections, heartbeat every ${INTERVAL}s)"
measure loaded
T1=$(cpu_ticks)
OPEN=$(curl -fsS --max-time 2 "http://127.0.0.1:$PORT/metrics" | awk '$1=="dbx_connections" {print $2}')
wait "$HOLDER_PID" || true
HOLDER_PID=
HZ=$(getconf CLK_TCK)

printf '\n%-34s %10s %9s %9s %9s %9s\n' run ops/s p50_us p99_us p99.9_us max_us
for r in base loaded; do
  printf '%-34s %10.0f %9s %9s %9s %9s\n' "$r" "$(field $r ops_per_sec)" "$(field $r p50_us)" \
    "$(field $r p99_us)" "$(field $r p999_us)" "$(field $r max_us)"
done
B=$(field base p99_us); L=$(field loaded p99_us)
printf '\nidle connections open during the loaded run: %s\n' "$OPEN"
printf 'server CPU (approx., per second of run): base %.1f%%, loaded %.1f%% of one core\n' \
  "$(echo "($B1 - $B0) * 100 / $HZ / ($DURATION + $WARMUP)" | bc -l)" \
  "$(echo "($T1 - $T0) * 100 / $HZ / ($DURATION + $WARMUP)" | bc -l)"
printf 'p99 ratio loaded/base: %.2f (goal <= 2)\n' "$(echo "$L / $B" | bc -l)"
