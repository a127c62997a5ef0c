#!/usr/bin/env bash
# Persistence benchmarks: string.set throughput with persistence off / everysec /
# always (group commit) at 50 connections, and a snapshot of 1,000,000 keys with the
# worst request latency seen meanwhile. 127.0.0.1 only; every run is bounded in time.
# Needs: cargo build --release (dbx and dbx-bench), python3 with `websockets`.
set -euo pipefail
cd "$(dirname "$0")/.."
LIB_NAME=bench-persist
. scripts/lib.sh
DUR=${DUR:-10s}
WORK=$(mktemp -d /var/tmp/dbx-bench-persist.XXXXXX)
PID=
cleanup() { stop_pids "$PID"; rm -rf "$WORK"; }
cleanup_on_exit cleanup

start() { # start PORT ENV... ; waits until it listens
  local port=$1; shift
  rm -rf "$WORK/data"
  env DBX_PORT="$port" DBX_DATA_DIR="$WORK/data" DBX_WS_RATE_LIMIT=0 DBX_LOG=warn "$@" "$DBX" 2>"$WORK/err.log" &
  PID=$!
  wait_health "$port" "$PID" "$WORK/err.log" 300 && return 0
  echo "server did not start"; cat "$WORK/err.log"; exit 1
}
stop() { stop_pids "$PID"; PID=; }

PORT=18391
MODES=${MODES-off everysec always}   # MODES= skips the throughput runs
for mode in $MODES; do
  if [ "$mode" = off ]; then start $PORT DBX_PERSIST=false; else start $PORT DBX_APPENDFSYNC=$mode; fi
  echo "== string.set, 50 connections, persistence $mode"
  timeout 120 "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 50 --mix set=1 -d "$DUR" --warmup 2s --json-only
  stop
done

echo "== snapshot of 1,000,000 keys (everysec) while a get/set load runs at ${RATE:-20000} req/s"
start $PORT DBX_APPENDFSYNC=everysec DBX_AOF_REWRITE_PERCENTAGE=0
timeout 300 python3 scripts/persist_bench.py fill $PORT 1000000
echo "-- baseline (no snapshot)"
timeout 120 "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 20 --rate "${RATE:-20000}" --mix get=9,set=1 --keyspace 1000000 --key-prefix key: -d "$DUR" --warmup 1s --json-only
echo "-- with a snapshot started 3 s into the run"
timeout 300 python3 scripts/persist_bench.py save $PORT 4 &
SAVE=$!
timeout 120 "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 20 --rate "${RATE:-20000}" --mix get=9,set=1 --keyspace 1000000 --key-prefix key: -d "$DUR" --warmup 1s --json-only
wait $SAVE
ls -l "$WORK/data"
stop
