#!/usr/bin/env bash
# Pub/sub fan-out benchmark.
#
# Starts `dbx` pinned to SERVER_CORE (default 0), then `dbx-bench` pinned to
# BENCH_CORE (default 1) with PUBLISHERS publishing connections (default 1) and
# SUBSCRIBERS subscribers (default 1000) on one channel. Reports deliveries per second
# (events received by all subscribers / s), the publishers' request rate, delivery
# latency, order violations, and the server's CPU use over the run. The machine load
# (uptime) is printed before and after: other work on the cores skews the figures.
#
# Environment (all optional):
#   PORT=18090 SUBSCRIBERS=1000 PUBLISHERS=1 PIPELINE=64 DURATION=8s WARMUP=2s
#   VALUE_SIZE=32 RATE= (publishes/s, open loop; empty = closed loop, as fast as the
#   replies allow) SERVER_CORE=0 BENCH_CORE=1 BUILD=1 (0: use existing binaries)
#   DBX_* server settings pass through.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIB_NAME=fanout
. scripts/lib.sh

PORT=${PORT:-18090}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
PUBLISHERS=${PUBLISHERS:-1}
PIPELINE=${PIPELINE:-64}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
VALUE_SIZE=${VALUE_SIZE:-32}
RATE=${RATE:-}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-1}

export DBX_PERSIST=${DBX_PERSIST:-false}
export DBX_WS_RATE_LIMIT=${DBX_WS_RATE_LIMIT:-0}
export DBX_WS_MAX_CONNECTIONS=${DBX_WS_MAX_CONNECTIONS:-$((SUBSCRIBERS + PUBLISHERS + 100))}
export DBX_LOG=${DBX_LOG:-warn}

OUT_DIR=${OUT_DIR:-$ROOT/target/fanout}
mkdir -p "$OUT_DIR"
SERVER_LOG=$OUT_DIR/server.log

pin_cores "$SERVER_CORE" "$BENCH_CORE" \
  "cannot pin server and bench to separate cores (@NCPU@ CPUs); running unpinned"

raise_fd_limit $((SUBSCRIBERS + PUBLISHERS + 512))

release_binaries "run with BUILD=1"

ensure_port_free "$PORT" PORT

SERVER_PID=
cleanup() { stop_pids "$SERVER_PID"; }
cleanup_on_exit cleanup

say "fanout: load before: $(uptime)"
start_dbx "$SERVER_LOG" --port "$PORT"
SERVER_PID=$DBX_PID
wait_health "$PORT" "$SERVER_PID" "$SERVER_LOG" 100 || die "server did not listen on $PORT"

cpu_ticks() { proc_cpu_ticks "$SERVER_PID"; }
TCK=$(getconf CLK_TCK)

ARGS=(--url "ws://127.0.0.1:$PORT/ws" -c "$PUBLISHERS" -P "$PIPELINE" --mix publish=1
      --subscribers "$SUBSCRIBERS" --channel fanout --value-size "$VALUE_SIZE"
      --duration "$DURATION" --warmup "$WARMUP" --connect-timeout 20s --drain-timeout 2s)
[ -n "$RATE" ] && ARGS+=(--rate "$RATE")

say "fanout: dbx-bench ${ARGS[*]}"
c0=$(cpu_ticks); t0=$(date +%s.%N)
set +e
"${PIN_BENCH[@]}" timeout 60 "$BENCH" "${ARGS[@]}" >"$OUT_DIR/result.json" 2>"$OUT_DIR/bench.log"
rc=$?
set -e
c1=$(cpu_ticks); t1=$(date +%s.%N)
cat "$OUT_DIR/bench.log" >&2
say "fanout: load after:  $(uptime)"
# Server CPU per delivery: its CPU over the whole run (connect, warm-up, measure, drain)
# divided by every event delivered in that time -- an upper bound that does not depend
# on whether the generator kept up.
total=$(sed -nE 's/.*"deliveries_total":([0-9]+).*/\1/p' "$OUT_DIR/result.json" | tail -n 1)
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v tck="$TCK" -v n="${total:-0}" 'BEGIN {
  cpu = (c1 - c0) / tck
  printf "fanout: server cpu %.2fs = %.0f%% of one core over the whole run (%.1fs)\n", cpu, 100 * cpu / (t1 - t0), t1 - t0
  if (n > 0 && cpu > 0)
    printf "fanout: %d deliveries in the run: %.3f us of server cpu each (= %.2fM deliveries per server cpu-second)\n", n, 1e6 * cpu / n, n / cpu / 1e6
}' >&2
grep -iE "slow consumer|closing" "$SERVER_LOG" | head -5 >&2 || true
tail -n 1 "$OUT_DIR/result.json"
[ "$rc" = 0 ] || die "dbx-bench failed (exit $rc)"
