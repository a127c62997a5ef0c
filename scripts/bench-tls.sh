#!/usr/bin/env bash
# TLS cost on the same machine: two release servers pinned to SERVER_CORE (one plain
# ws://, one wss:// with a scripts/dev-cert.sh certificate), dbx-bench pinned to
# BENCH_CORE, interleaved rounds (ws, wss, ws, wss …) of string.get with CONNS
# connections at 1 and 16 in flight; then new connections per second (TCP + TLS +
# upgrade, one after another) with full and with resumed TLS handshakes, and plain.
# Prints medians and the wss/ws ratios. For redis-server over TLS see
# `TLS=1 scripts/compare-redis.sh`; for memory `TLS=1 scripts/idle-memory.sh`.
#
# Environment (all optional):
#   ROUNDS=3 SECS=5 CONNS=50 KEYSPACE=10000 CONNECTS=2000 WS_PORT=18280 WSS_PORT=18281
#   SERVER_CORE=0 BENCH_CORE=1 BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIB_NAME=bench-tls
. scripts/lib.sh

ROUNDS=${ROUNDS:-3}; SECS=${SECS:-5}; CONNS=${CONNS:-50}; KEYSPACE=${KEYSPACE:-10000}
CONNECTS=${CONNECTS:-2000}; WS_PORT=${WS_PORT:-18280}; WSS_PORT=${WSS_PORT:-18281}
SERVER_CORE=${SERVER_CORE:-0}; BENCH_CORE=${BENCH_CORE:-1}; BUILD=${BUILD:-1}
export DBX_PERSIST=false DBX_WS_RATE_LIMIT=0 DBX_LOG=warn
release_binaries "run with BUILD=1"
pin_cores "$SERVER_CORE" "$BENCH_CORE" "cannot pin to separate cores (@NCPU@ CPUs); running unpinned"
ensure_port_free "$WS_PORT" WS_PORT "in use"
ensure_port_free "$WSS_PORT" WSS_PORT "in use"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/dbx-bench-tls.XXXXXX")
WS_PID=; WSS_PID=
cleanup() { stop_pids "$WS_PID" "$WSS_PID"; rm -rf "$OUT"; }
cleanup_on_exit cleanup
bash scripts/dev-cert.sh "$OUT/certs" >/dev/null
CA=$OUT/certs/ca.pem

start_dbx "$OUT/ws.log" --port "$WS_PORT"; WS_PID=$DBX_PID
DBX_TLS_CERT=$OUT/certs/cert.pem DBX_TLS_KEY=$OUT/certs/key.pem start_dbx "$OUT/wss.log" --port "$WSS_PORT"
WSS_PID=$DBX_PID
wait_health "$WS_PORT" "$WS_PID" "$OUT/ws.log" 150 || die "ws server not up"
CURL_CA=$CA wait_health "$WSS_PORT" "$WSS_PID" "$OUT/wss.log" 150 || die "wss server not up"

url() { if [ "$1" = ws ]; then echo "ws://127.0.0.1:$WS_PORT/ws"; else echo "wss://127.0.0.1:$WSS_PORT/ws --ca $CA"; fi; }
for s in ws wss; do
  # shellcheck disable=SC2046
  timeout 120 "${PIN_BENCH[@]}" "$BENCH" --url $(url $s) -c "$CONNS" --mix set=1 --preload --duration 1s \
    --warmup 0s --keyspace "$KEYSPACE" --json-only >/dev/null 2>&1 || die "preload $s failed"
done

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print 0; exit }
  if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
declare -A OPS P50 P99
for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    for s in ws wss; do
      # shellcheck disable=SC2046
      line=$(timeout $((SECS + 90)) "${PIN_BENCH[@]}" "$BENCH" --url $(url $s) -c "$CONNS" -P "$p" --mix get=1 \
        --duration "${SECS}s" --warmup 1s --keyspace "$KEYSPACE" --json-only 2>/dev/null | tail -n 1) || true
      OPS[$s$p]+="$(json_field "$line" ops_per_sec)"$'\n'
      P50[$s$p]+="$(json_field "$line" p50_us)"$'\n'
      P99[$s$p]+="$(json_field "$line" p99_us)"$'\n'
      say "bench-tls: round $round P$p $s: $(json_field "$line" ops_per_sec) ops/s"
    done
  done
done
printf '\n%-3s %12s %12s %8s %9s %9s %9s %9s\n' P ws_ops/s wss_ops/s wss/ws ws_p50us wss_p50us ws_p99us wss_p99us
for p in 1 16; do
  w=$(median <<<"${OPS[ws$p]}"); t=$(median <<<"${OPS[wss$p]}")
  printf '%-3s %12.0f %12.0f %8s %9s %9s %9s %9s\n' "$p" "$w" "$t" \
    "$(awk -v a="$t" -v b="$w" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
    "$(median <<<"${P50[ws$p]}")" "$(median <<<"${P50[wss$p]}")" "$(median <<<"${P99[ws$p]}")" "$(median <<<"${P99[wss$p]}")"
done
printf '\nnew connections, %s one after another (TCP connect, TLS, upgrade, 101):\n' "$CONNECTS"
for mode in plain resumed full; do
  case $mode in
    plain) args=(--url "ws://127.0.0.1:$WS_PORT/ws") ;;
    resumed) args=(--url "wss://127.0.0.1:$WSS_PORT/ws" --ca "$CA") ;;
    full) args=(--url "wss://127.0.0.1:$WSS_PORT/ws" --ca "$CA" --no-resume) ;;
  esac
  line=$(timeout 300 "${PIN_BENCH[@]}" "$BENCH" "${args[@]}" --connect-only "$CONNECTS" --json-only 2>/dev/null | tail -n 1)
  printf '  %-8s %8.0f/s  p50 %s us  p99 %s us\n' "$mode" "$(json_field "$line" per_sec)" \
    "$(json_field "$line" p50_us)" "$(json_field "$line" p99_us)"
done
printf '\nmedians of %s rounds, %ss each, %s connections, keyspace %s (string.get)\n' "$ROUNDS" "$SECS" "$CONNS" "$KEYSPACE"
