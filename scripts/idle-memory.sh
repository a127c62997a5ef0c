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
#   TLS=1   serve wss:// with a certificate from scripts/dev-cert.sh (target then
#           <= 32 KiB per idle TLS connection)
# Every step is bounded (timeout); the whole script takes about HOLD + connect time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIB_NAME=idle-memory
. scripts/lib.sh

N=${N:-10000}
PORT=${PORT:-18181}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-0}
HOLD=${HOLD:-8}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/dbx-idle-mem.XXXXXX")

release_binaries BUILD=1

TLS=${TLS:-0}
SCHEME=ws; TARGET_KIB=16; BENCH_TLS=(); CURL_BASE="http://127.0.0.1:$PORT"; CURL_TLS=(); CONNECT_S=60
if [ "$TLS" = 1 ]; then
  bash scripts/dev-cert.sh "$OUT/certs" >/dev/null
  export DBX_TLS_CERT="$OUT/certs/cert.pem" DBX_TLS_KEY="$OUT/certs/key.pem" CURL_CA="$OUT/certs/ca.pem"
  SCHEME=wss; TARGET_KIB=32; BENCH_TLS=(--ca "$CURL_CA"); CURL_BASE="https://127.0.0.1:$PORT"
  CURL_TLS=(--cacert "$CURL_CA")
  # dbx-bench does each TLS handshake in its blocking connect phase: a few hundred per second.
  CONNECT_S=300
fi

pin_cores "$SERVER_CORE" "$BENCH_CORE"

# Both processes need a descriptor per connection.
raise_fd_limit $((N + 512)) "(raise the hard limit)"

SERVER_PID=; BENCH_PID=
cleanup() {
  stop_pids "$BENCH_PID" "$SERVER_PID"
  rm -rf "$OUT"
}
cleanup_on_exit cleanup

DBX_PERSIST=false DBX_LOG=warn DBX_WS_RATE_LIMIT=0 DBX_WS_MAX_CONNECTIONS=$((N + 100)) \
  start_dbx "$OUT/server.log" --port "$PORT"
SERVER_PID=$DBX_PID
wait_health "$PORT" "$SERVER_PID" "$OUT/server.log" 100 || die "server not up"

# Warm the allocator and the code paths with one short connection round, then settle.
timeout 20 "${PIN_BENCH[@]}" "$BENCH" --url "$SCHEME://127.0.0.1:$PORT/ws" "${BENCH_TLS[@]}" -c 1 -d 200ms --warmup 0s \
  --mix get=1 --keyspace 10 --json-only >/dev/null 2>&1 || true
sleep 0.5
BEFORE=$(proc_rss_kib "$SERVER_PID")

# Hold N idle connections (+1 active one sending 1 request/s).
timeout $((HOLD + CONNECT_S + 30)) "${PIN_BENCH[@]}" "$BENCH" --url "$SCHEME://127.0.0.1:$PORT/ws" "${BENCH_TLS[@]}" -c 1 --rate 1 \
  --idle "$N" -d "${HOLD}s" --warmup 0s --mix get=1 --keyspace 10 --connect-timeout "${CONNECT_S}s" \
  >"$OUT/bench.out" 2>"$OUT/bench.err" &
BENCH_PID=$!
wait_log "$OUT/bench.err" "connections to" "$BENCH_PID" $((CONNECT_S * 10 + 300)) \
  || { cat "$OUT/bench.err" >&2; die "dbx-bench did not open $N connections"; }
sleep $((HOLD / 2))
CONNS=$(curl -fsS --max-time 2 "${CURL_TLS[@]}" "$CURL_BASE/metrics" | awk '$1=="dbx_connections" {print $2}')
AFTER=$(proc_rss_kib "$SERVER_PID")
wait "$BENCH_PID" || true
BENCH_PID=

PER=$(( (AFTER - BEFORE) * 1024 / N ))
say "$(grep "connections to" "$OUT/bench.err")"
printf 'idle-memory: %s N=%d open=%s RSS before=%d KiB after=%d KiB -> %d bytes (%.2f KiB) per idle connection (target <= %d KiB)\n' \
  "$SCHEME" "$N" "$CONNS" "$BEFORE" "$AFTER" "$PER" "$(echo "$PER / 1024" | bc -l)" "$TARGET_KIB"
[ "$CONNS" -ge "$N" ] || die "only $CONNS connections were open when RSS was read"
