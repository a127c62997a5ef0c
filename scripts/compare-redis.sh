#!/usr/bin/env bash
# DBX vs Redis on the same footing: each server pinned to SERVER_CORE (0), each
# load generator pinned to BENCH_CORE (1); GET and SET, 50 connections, 1 and 16
# requests in flight, ~SECS seconds per measurement, ROUNDS rounds interleaved
# (redis, dbx, redis, dbx, ...). Prints the median of each and the DBX/Redis ratio.
#
# Installs redis-server and redis-tools with apt-get if they are missing.
#
# Environment (all optional):
#   ROUNDS=3 SECS=5 CONNS=50 KEYSPACE=10000 VALUE_SIZE=32
#   REDIS_PORT=16379 DBX_PORT=18080 SERVER_CORE=0 BENCH_CORE=1 BUILD=1
#   DBX_* server settings pass through (DBX_PERSIST=false, DBX_WS_RATE_LIMIT=0 by default).
#   TLS=1: both over TLS with a scripts/dev-cert.sh certificate: DBX serves wss:// and
#   dbx-bench trusts the CA (--ca); redis-server listens on --tls-port only (Debian's is
#   built with TLS) and redis-benchmark runs with --tls --cacert.
#   GATEWAY=1: dbx runs in gateway mode in front of that same redis-server
#   (DBX_BACKEND=redis://127.0.0.1:REDIS_PORT, issue 16), both pinned to SERVER_CORE: the
#   ratio is then a gateway's throughput over redis-benchmark's on the Redis it uses.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIB_NAME=compare-redis
. scripts/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-50}
KEYSPACE=${KEYSPACE:-10000}
VALUE_SIZE=${VALUE_SIZE:-32}
REDIS_PORT=${REDIS_PORT:-16379}
DBX_PORT=${DBX_PORT:-18080}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-1}
OUT_DIR=${OUT_DIR:-$ROOT/target/compare-redis}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-"set get"}

export DBX_PERSIST=${DBX_PERSIST:-false}
export DBX_WS_RATE_LIMIT=${DBX_WS_RATE_LIMIT:-0}
export DBX_LOG=${DBX_LOG:-warn}
TLS=${TLS:-0}
GATEWAY=${GATEWAY:-0}
if [ "$GATEWAY" = 1 ]; then
  [ "$TLS" = 1 ] && die "GATEWAY=1 with TLS=1 is not supported by this script"
  export DBX_BACKEND=redis://127.0.0.1:$REDIS_PORT
fi

mkdir -p "$OUT_DIR"
RAW=$OUT_DIR/raw.txt
: >"$RAW"

# --- redis from apt if missing
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null \
   || ! command -v redis-cli >/dev/null; then
  SUDO=
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "redis is not installed and I am not root (no sudo)"
    SUDO=sudo
  fi
  say "compare-redis: installing redis-server and redis-tools with apt-get"
  timeout 600 $SUDO apt-get update >&2 || die "apt-get update failed"
  timeout 900 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    redis-server redis-tools >&2 || die "apt-get install redis-server redis-tools failed"
fi

# --- pinning
pin_cores "$SERVER_CORE" "$BENCH_CORE" "cannot pin to separate cores (@NCPU@ CPUs); running unpinned"

# --- build
release_binaries "run with BUILD=1"

ensure_port_free "$REDIS_PORT" REDIS_PORT "in use"
ensure_port_free "$DBX_PORT" DBX_PORT "in use"

# --- servers (killed on exit)
REDIS_PID=
DBX_PID=
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dbx-compare.XXXXXX")
export DBX_DATA_DIR=${DBX_DATA_DIR:-$DATA_DIR/dbx}
cleanup() { stop_pids "$REDIS_PID" "$DBX_PID"; rm -rf "$DATA_DIR"; }
cleanup_on_exit cleanup

SCHEME=ws; BENCH_TLS=(); REDIS_LISTEN=(--port "$REDIS_PORT"); REDIS_TLS=()
if [ "$TLS" = 1 ]; then
  bash scripts/dev-cert.sh "$DATA_DIR/certs" >/dev/null || die "scripts/dev-cert.sh failed"
  C=$DATA_DIR/certs
  export DBX_TLS_CERT=$C/cert.pem DBX_TLS_KEY=$C/key.pem CURL_CA=$C/ca.pem
  SCHEME=wss; BENCH_TLS=(--ca "$C/ca.pem")
  REDIS_LISTEN=(--port 0 --tls-port "$REDIS_PORT" --tls-cert-file "$C/cert.pem" --tls-key-file "$C/key.pem"
    --tls-ca-cert-file "$C/ca.pem" --tls-auth-clients no)
  REDIS_TLS=(--tls --cacert "$C/ca.pem")
fi

( cd "$DATA_DIR" && exec "${PIN_SERVER[@]}" redis-server --save '' --appendonly no \
    "${REDIS_LISTEN[@]}" --bind 127.0.0.1 --daemonize no --logfile '' ) >"$OUT_DIR/redis.log" 2>&1 &
REDIS_PID=$!
start_dbx "$OUT_DIR/dbx.log" --port "$DBX_PORT"

ready_redis=0 ready_dbx=0
for _ in $(seq 150); do
  kill -0 "$REDIS_PID" 2>/dev/null || { cat "$OUT_DIR/redis.log" >&2; die "redis-server exited"; }
  kill -0 "$DBX_PID" 2>/dev/null || { cat "$OUT_DIR/dbx.log" >&2; die "dbx exited"; }
  [ "$ready_redis" = 1 ] || { [ "$(timeout 2 redis-cli "${REDIS_TLS[@]}" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && ready_redis=1; }
  [ "$ready_dbx" = 1 ] || { health_ok "$DBX_PORT" && ready_dbx=1; }
  [ "$ready_redis" = 1 ] && [ "$ready_dbx" = 1 ] && break
  sleep 0.1
done
[ "$ready_redis" = 1 ] || die "redis-server did not answer within 15s"
[ "$ready_dbx" = 1 ] || die "dbx did not answer within 15s"
say "compare-redis: $(redis-server --version | head -n 1)"

# --- measurement helpers
# redis_bench TEST P N -> "rps p50_ms p99_ms" (latencies empty for old redis-benchmark)
redis_bench() {
  local test=$1 p=$2 n=$3 out line
  out=$(timeout $((SECS * 6 + 60)) "${PIN_BENCH[@]}" redis-benchmark "${REDIS_TLS[@]}" -h 127.0.0.1 -p "$REDIS_PORT" \
        -t "$test" -c "$CONNS" -P "$p" -n "$n" -r "$KEYSPACE" -d "$VALUE_SIZE" -q --csv 2>/dev/null) || true
  printf 'redis %s P%s n=%s: %s\n' "$test" "$p" "$n" "$(tr '\n' ' ' <<<"$out")" >>"$RAW"
  line=$(grep -i "^\"$test\"" <<<"$out" | head -n 1 | tr -d '"')
  [ -n "$line" ] || { echo "0 - -"; return; }
  # CSV: test,rps,avg,min,p50,p95,p99,max (ms)
  awk -F, '{ printf "%s %s %s\n", $2, ($5 == "" ? "-" : $5), ($7 == "" ? "-" : $7) }' <<<"$line"
}

# dbx_bench TEST P -> "ops p50_ms p99_ms"
dbx_bench() {
  local test=$1 p=$2 line
  line=$(timeout $((SECS + 90)) "${PIN_BENCH[@]}" "$BENCH" --url "$SCHEME://127.0.0.1:$DBX_PORT/ws" "${BENCH_TLS[@]}" \
         -c "$CONNS" -P "$p" --mix "$test=1" --duration "${SECS}s" --warmup 1s \
         --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" --json-only 2>>"$OUT_DIR/bench.log" | tail -n 1) || true
  printf 'dbx %s P%s: %s\n' "$test" "$p" "$line" >>"$RAW"
  local ops p50 p99
  ops=$(json_field "$line" ops_per_sec); p50=$(json_field "$line" p50_us); p99=$(json_field "$line" p99_us)
  [ -n "$ops" ] || { echo "0 - -"; return; }
  awk -v o="$ops" -v a="$p50" -v b="$p99" 'BEGIN { printf "%s %.3f %.3f\n", o, a / 1000, b / 1000 }'
}

median() { # numbers on stdin ("-" ignored)
  grep -E '^[0-9.]+$' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Preload DBX keys for GET (redis gets its keys from the SET test of each round).
timeout 120 "${PIN_BENCH[@]}" "$BENCH" --url "$SCHEME://127.0.0.1:$DBX_PORT/ws" "${BENCH_TLS[@]}" -c "$CONNS" \
  --mix set=1 --preload --duration 1s --warmup 0s --keyspace "$KEYSPACE" \
  --value-size "$VALUE_SIZE" --json-only >/dev/null 2>>"$OUT_DIR/bench.log" || die "dbx preload failed"
timeout 120 redis-benchmark "${REDIS_TLS[@]}" -h 127.0.0.1 -p "$REDIS_PORT" -t set -c "$CONNS" -P 16 -n $((KEYSPACE * 10)) \
  -r "$KEYSPACE" -d "$VALUE_SIZE" -q >/dev/null 2>&1 || die "redis preload failed"

# Size redis-benchmark -n for ~SECS seconds from a short calibration run.
declare -A N
for p in $PIPELINES; do
  for t in $TESTS; do
    cal=$((p == 1 ? 20000 : 200000))
    read -r rps _ _ < <(redis_bench "$t" "$p" "$cal")
    n=$(awk -v r="$rps" -v s="$SECS" 'BEGIN { n = int(r * s); if (n < 10000) n = 10000; print n }')
    N[$t$p]=$n
    say "compare-redis: redis $t P$p calibrated at ${rps} req/s -> -n $n"
  done
done

declare -A R D
for round in $(seq "$ROUNDS"); do
  for p in $PIPELINES; do
    for t in $TESTS; do
      say "compare-redis: round $round/$ROUNDS $t P$p"
      R[$t$p]+="$(redis_bench "$t" "$p" "${N[$t$p]}")"$'\n'
      D[$t$p]+="$(dbx_bench "$t" "$p")"$'\n'
    done
  done
done

col() { awk -v c="$1" 'NF { print $c }'; }
printf '\n%-5s %3s %14s %14s %9s %10s %10s %10s %10s\n' \
  test P redis_ops/s dbx_ops/s dbx/redis redis_p50 dbx_p50 redis_p99 dbx_p99
for p in $PIPELINES; do
  for t in $TESTS; do
    r_ops=$(col 1 <<<"${R[$t$p]}" | median)
    d_ops=$(col 1 <<<"${D[$t$p]}" | median)
    r50=$(col 2 <<<"${R[$t$p]}" | median); d50=$(col 2 <<<"${D[$t$p]}" | median)
    r99=$(col 3 <<<"${R[$t$p]}" | median); d99=$(col 3 <<<"${D[$t$p]}" | median)
    ratio=$(awk -v a="$d_ops" -v b="$r_ops" 'BEGIN { if (b + 0 > 0 && a != "-") printf "%.2f", a / b; else print "-" }')
    printf '%-5s %3s %14.0f %14.0f %9s %10s %10s %10s %10s\n' "$t" "$p" \
      "${r_ops/-/0}" "${d_ops/-/0}" "$ratio" "$r50" "$d50" "$r99" "$d99"
  done
done
printf '\nmedians of %s rounds, %ss each, %s connections, keyspace %s, %s-byte values; latencies in ms%s%s\n' \
  "$ROUNDS" "$SECS" "$CONNS" "$KEYSPACE" "$VALUE_SIZE" "$([ "$TLS" = 1 ] && echo '; both over TLS')" \
  "$([ "$GATEWAY" = 1 ] && echo '; dbx is a gateway to that redis-server, both on the server core')"
printf 'raw output: %s\n' "$RAW"
