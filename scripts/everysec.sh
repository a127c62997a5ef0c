#!/usr/bin/env bash
# What the append-only log costs a write (issue 19: `string.set` under `everysec` ≥ 0.9×
# of persistence off): PAIRS interleaved pairs of SECS-second runs of `dbx-bench -c 50
# -P P --mix set=1`, each pair one server with DBX_PERSIST=false and one with
# DBX_PERSIST=true DBX_APPENDFSYNC=everysec (a fresh data directory each), the same
# release binary; server on SERVER_CORE, load on BENCH_CORE. Prints each pair, then the
# medians of throughput and of server CPU per request (user + system from /proc, which
# moves less than throughput when other work shares the machine) and their ratios.
#
#   scripts/everysec.sh                    # 7 pairs of 4 s, 16 in flight
#   PAIRS=9 SECS=4 P=16 scripts/everysec.sh
#
# Uses the release binaries (BUILD=1 builds them first). Every wait is bounded.
set -euo pipefail

cd "$(dirname "$0")/.."
LIB_NAME=everysec
. scripts/lib.sh

PAIRS=${PAIRS:-7}
SECS=${SECS:-4}
P=${P:-16}
PORT=${PORT:-18297}
release_binaries "cargo build --release, or BUILD=1"
pin_cores "${SERVER_CORE:-0}" "${BENCH_CORE:-1}" "fewer than 2 cores (@NCPU@): nothing pinned"
ensure_port_free "$PORT" PORT
WORK=$(mktemp -d)
DBX_PID=
cleanup() {
  stop_pids "$DBX_PID"
  rm -rf "$WORK"
}
cleanup_on_exit cleanup
hz=$(getconf CLK_TCK)

# run MODE: one server in MODE (off / everysec), preloaded, one measured run; prints
# "ops/s cpu_us_per_request".
run() {
  local dir="$WORK/$1-$RANDOM"
  mkdir -p "$dir"
  if [ "$1" = off ]; then
    export DBX_PERSIST=false
  else
    export DBX_PERSIST=true DBX_APPENDFSYNC=everysec
  fi
  DBX_DATA_DIR=$dir DBX_WS_RATE_LIMIT=0 DBX_LOG=warn start_dbx "$dir/dbx.log" --port "$PORT"
  wait_health "$PORT" "$DBX_PID" "$dir/dbx.log" 100 || die "the server did not answer within 10 s"
  timeout 60 "${PIN_BENCH[@]}" "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 50 --mix set=1 --preload \
    --duration 1s --warmup 0s --keyspace 10000 --value-size 32 --json-only >/dev/null 2>&1 || die "preload failed"
  local c0 c1 line ops
  c0=$(proc_cpu_ticks "$DBX_PID")
  line=$(timeout $((SECS + 60)) "${PIN_BENCH[@]}" "$BENCH" --url "ws://127.0.0.1:$PORT/ws" -c 50 -P "$P" \
    --mix set=1 --duration "${SECS}s" --warmup 0s --keyspace 10000 --value-size 32 --json-only 2>/dev/null | tail -n 1)
  c1=$(proc_cpu_ticks "$DBX_PID")
  stop_pids "$DBX_PID"
  DBX_PID=
  rm -rf "$dir"
  unset DBX_PERSIST DBX_APPENDFSYNC
  ops=$(json_field "$line" ops_per_sec)
  [ -n "$ops" ] || die "dbx-bench gave no result: $line"
  awk -v o="$ops" -v s="$SECS" -v c=$((c1 - c0)) -v hz="$hz" 'BEGIN { printf "%.0f %.3f\n", o, c * 1e6 / hz / (o * s) }'
}

say "everysec: load before: $(uptime)"
printf '%-5s %12s %10s %12s %10s %8s\n' pair off_ops/s off_us every_ops/s every_us ratio
: >"$WORK/pairs"
for i in $(seq "$PAIRS"); do
  read -r o_ops o_us < <(run off)
  read -r e_ops e_us < <(run everysec)
  printf '%-5s %12s %10s %12s %10s %8.3f\n' "$i" "$o_ops" "$o_us" "$e_ops" "$e_us" \
    "$(awk -v a="$e_ops" -v b="$o_ops" 'BEGIN { print a / b }')"
  echo "$o_ops $o_us $e_ops $e_us" >>"$WORK/pairs"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mo=$(awk '{ print $1 }' "$WORK/pairs" | median)
mou=$(awk '{ print $2 }' "$WORK/pairs" | median)
me=$(awk '{ print $3 }' "$WORK/pairs" | median)
meu=$(awk '{ print $4 }' "$WORK/pairs" | median)
mr=$(awk '{ print $3 / $1 }' "$WORK/pairs" | median)
echo
printf 'medians of %s pairs: off %s/s (%s us CPU/request), everysec %s/s (%s us): throughput %.3fx (median of the pair ratios %.3fx), CPU per request %.3fx\n' \
  "$PAIRS" "$mo" "$mou" "$me" "$meu" "$(awk -v a="$me" -v b="$mo" 'BEGIN { print a / b }')" "$mr" \
  "$(awk -v a="$meu" -v b="$mou" 'BEGIN { print a / b }')"
say "everysec: load after: $(uptime)"
