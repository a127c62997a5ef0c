#!/usr/bin/env bash
# Standard DBX load test.
#
# Builds release, starts `dbx` pinned to one core (SERVER_CORE, default 0) and runs
# the standard scenarios with `dbx-bench` pinned to another (BENCH_CORE, default 1):
#   GET and SET, 50 connections, 1 and 16 requests in flight; a 1:9 set:get mix;
#   10,000 idle connections (that only answer pings) + 50 active.
# Prints a table; the raw JSON result of every run goes to $OUT_DIR/loadtest.jsonl.
#
# Environment (all optional):
#   PORT=18080 DURATION=10s WARMUP=2s IDLE=10000 CONNS=50 KEYSPACE=10000 VALUE_SIZE=32
#   SERVER_CORE=0 BENCH_CORE=1 BUILD=1 (0: use the existing target/release binaries)
#   SCENARIOS="get-p1 get-p16 set-p1 set-p16 mix-p1 mix-p16 idle"   (subset to run)
#   BENCH_ARGS="..."   extra dbx-bench options for every run (e.g. --threads 2)
#   DBX_* server settings pass through; DBX_PERSIST defaults to false and
#   DBX_WS_RATE_LIMIT to 0 unless you set them.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIB_NAME=loadtest
. scripts/lib.sh

PORT=${PORT:-18080}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
IDLE=${IDLE:-10000}
CONNS=${CONNS:-50}
KEYSPACE=${KEYSPACE:-10000}
VALUE_SIZE=${VALUE_SIZE:-32}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-1}
BENCH_ARGS=${BENCH_ARGS:-}
SCENARIOS=${SCENARIOS:-"get-p1 get-p16 set-p1 set-p16 mix-p1 mix-p16 idle"}
OUT_DIR=${OUT_DIR:-$ROOT/target/loadtest}

export DBX_PERSIST=${DBX_PERSIST:-false}
export DBX_WS_RATE_LIMIT=${DBX_WS_RATE_LIMIT:-0}
export DBX_WS_MAX_CONNECTIONS=${DBX_WS_MAX_CONNECTIONS:-$((IDLE + CONNS + 1000))}
export DBX_LOG=${DBX_LOG:-warn}

mkdir -p "$OUT_DIR"
SERVER_LOG=$OUT_DIR/server.log
BENCH_LOG=$OUT_DIR/bench.log
RESULTS=$OUT_DIR/loadtest.jsonl
: >"$RESULTS"
: >"$BENCH_LOG"

# Seconds from a dbx-bench duration ("10s", "500ms", "2m", "3").
secs() {
  case $1 in
    *ms) echo $(( (${1%ms} + 999) / 1000 )) ;;
    *s) echo "${1%s}" ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *) echo "$1" ;;
  esac
}

# --- CPU pinning (needs two CPUs; otherwise run unpinned and say so)
pin_cores "$SERVER_CORE" "$BENCH_CORE" \
  "cannot pin server and bench to separate cores (@NCPU@ CPUs); running unpinned"

# --- file descriptors: idle + active connections, in both processes
NEED_FDS=$((IDLE + CONNS + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FDS" ]; then
  HARD=$(ulimit -Hn)
  if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$NEED_FDS" ]; then
    ulimit -Hn "$NEED_FDS" 2>/dev/null || true
    HARD=$(ulimit -Hn)
  fi
  if [ "$HARD" = unlimited ] || [ "$HARD" -ge "$NEED_FDS" ]; then
    ulimit -n "$NEED_FDS"
  else
    ulimit -n "$HARD"
    NEW_IDLE=$((HARD - CONNS - 512))
    [ "$NEW_IDLE" -lt 0 ] && NEW_IDLE=0
    say "loadtest: WARNING: open-file limit $HARD; idle connections reduced from $IDLE to $NEW_IDLE"
    IDLE=$NEW_IDLE
  fi
fi

# --- build
if [ "$BUILD" = 1 ]; then
  say "loadtest: building release binaries"
  build_release
fi
[ -x "$DBX" ] || die "$DBX not found (run with BUILD=1)"
[ -x "$BENCH" ] || die "$BENCH not found (run with BUILD=1)"

ensure_port_free "$PORT" PORT

# --- server
SERVER_PID=
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dbx-loadtest.XXXXXX")
export DBX_DATA_DIR=${DBX_DATA_DIR:-$DATA_DIR}
cleanup() {
  stop_pids "$SERVER_PID"
  rm -rf "$DATA_DIR"
}
cleanup_on_exit cleanup

start_dbx "$SERVER_LOG" --port "$PORT"
SERVER_PID=$DBX_PID

# Wait (bounded) until /health answers.
wait_health "$PORT" "$SERVER_PID" "$SERVER_LOG" 150 \
  || { cat "$SERVER_LOG" >&2; die "server did not answer on port $PORT within 15s"; }
say "loadtest: dbx (pid $SERVER_PID) on 127.0.0.1:$PORT, persist=$DBX_PERSIST rate_limit=$DBX_WS_RATE_LIMIT"

# --- scenarios
URL="ws://127.0.0.1:$PORT/ws"
RUN_SECS=$(( $(secs "$DURATION") + $(secs "$WARMUP") ))
COMMON=(--url "$URL" -c "$CONNS" --duration "$DURATION" --warmup "$WARMUP"
        --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" --json-only)

declare -a ROWS=()

run() { # name, dbx-bench args...
  local name=$1; shift
  local limit=$((RUN_SECS + 120)) line
  say "loadtest: $name"
  # shellcheck disable=SC2086
  line=$(timeout "$limit" "${PIN_BENCH[@]}" "$BENCH" "${COMMON[@]}" "$@" $BENCH_ARGS 2>>"$BENCH_LOG" | tail -n 1) || true
  [ -n "$line" ] || line='{"error":"no output (timeout or crash)"}'
  printf '{"scenario":"%s","result":%s}\n' "$name" "$line" >>"$RESULTS"
  ROWS+=("$name	$line")
}

for s in $SCENARIOS; do
  case $s in
    get-p1)  run "GET  c$CONNS P1"  --mix get=1 -P 1 --preload ;;
    get-p16) run "GET  c$CONNS P16" --mix get=1 -P 16 --preload ;;
    set-p1)  run "SET  c$CONNS P1"  --mix set=1 -P 1 ;;
    set-p16) run "SET  c$CONNS P16" --mix set=1 -P 16 ;;
    mix-p1)  run "1:9 set:get c$CONNS P1"  --mix set=1,get=9 -P 1 --preload ;;
    mix-p16) run "1:9 set:get c$CONNS P16" --mix set=1,get=9 -P 16 --preload ;;
    idle)    run "GET  c$CONNS P1 +$IDLE idle" --mix get=1 -P 1 --preload --idle "$IDLE" \
               --connect-timeout 120s ;;
    *) die "unknown scenario $s" ;;
  esac
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$SERVER_LOG" >&2; die "server died during $s"; }
done

# --- table
# Field of the top-level JSON object (keys are sorted; the nested by_method object comes
# first, so the last match is the top-level one).
field() { sed -nE "s/.*\"$2\":(-?[0-9.eE+]+|null|\"[^\"]*\").*/\1/p" <<<"$1" | tr -d '"'; }

printf '\n%-28s %12s %9s %9s %9s %9s %10s %8s %8s\n' \
  scenario ops/s p50_us p90_us p99_us p99.9_us max_us errors cpu%
for row in "${ROWS[@]}"; do
  name=${row%%	*}
  json=${row#*	}
  err=$(field "$json" error)
  if [ -n "$err" ]; then
    printf '%-28s FAILED: %s\n' "$name" "$err"
    continue
  fi
  printf '%-28s %12.0f %9s %9s %9s %9s %10s %8s %8s\n' "$name" \
    "$(field "$json" ops_per_sec)" "$(field "$json" p50_us)" "$(field "$json" p90_us)" \
    "$(field "$json" p99_us)" "$(field "$json" p999_us)" "$(field "$json" max_us)" \
    "$(field "$json" errors)" "$(field "$json" cpu_pct)"
done
printf '\n(cpu%% = dbx-bench CPU over the measurement; near 100 means the generator limits the result)\n'
printf 'raw results: %s\n' "$RESULTS"
