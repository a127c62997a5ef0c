# shellcheck shell=bash
# Shared helpers of the benchmark scripts (loadtest.sh, fanout.sh, compare-redis.sh,
# idle-memory.sh, heartbeat-scale.sh, bench-persist.sh). Source it after setting
# LIB_NAME (the prefix of messages):
#
#   LIB_NAME=loadtest; . "$(dirname "$0")/lib.sh"
#
# Nothing here starts work by itself; every wait is bounded.

# The release binaries (the scripts cd to the repository root before sourcing this).
DBX=$PWD/target/release/dbx
BENCH=$PWD/target/release/dbx-bench

say() { printf '%s\n' "$*" >&2; }
die() { say "${LIB_NAME:-dbx}: $*"; exit 1; }

# True if something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ensure_port_free PORT VAR [WORDS]: die "port PORT is WORDS; set VAR=" if it is taken.
ensure_port_free() {
  if port_open "$1"; then die "port $1 is ${3:-already in use}; set $2="; fi
}

# pin_cores SERVER_CORE BENCH_CORE [WARNING]: PIN_SERVER and PIN_BENCH become
# `taskset -c N` prefixes when taskset exists and both cores are distinct and present;
# otherwise both are empty and WARNING (if given) is printed.
pin_cores() {
  local ncpu
  ncpu=$(nproc 2>/dev/null || echo 1)
  if command -v taskset >/dev/null && [ "$ncpu" -gt "$1" ] && [ "$ncpu" -gt "$2" ] && [ "$1" != "$2" ]; then
    PIN_SERVER=(taskset -c "$1")
    PIN_BENCH=(taskset -c "$2")
  else
    PIN_SERVER=()
    PIN_BENCH=()
    [ -z "${3:-}" ] || say "${LIB_NAME:-dbx}: WARNING: ${3//@NCPU@/$ncpu}"
  fi
}

# raise_fd_limit NEED [HINT]: soft open-file limit >= NEED, or die.
raise_fd_limit() {
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$1" ]; then
    ulimit -n "$1" 2>/dev/null || die "open-file limit $(ulimit -n) < $1${2:+ $2}"
  fi
}

# build_release: the release dbx and dbx-bench (bounded by BUILD_TIMEOUT, default 1 h).
build_release() {
  timeout "${BUILD_TIMEOUT:-3600}" cargo build --release --bin dbx --bin dbx-bench >&2 || die "cargo build failed"
}

# release_binaries HINT: build them first when BUILD=1; die "release binaries missing
# (HINT)" if either is absent.
release_binaries() {
  if [ "${BUILD:-0}" = 1 ]; then
    say "${LIB_NAME:-dbx}: building release binaries"
    build_release
  fi
  [ -x "$DBX" ] && [ -x "$BENCH" ] || die "release binaries missing ($1)"
}

# start_dbx LOG ARGS...: run "${PIN_SERVER[@]}" $DBX ARGS in the background, output in
# LOG; its pid in DBX_PID. DBX_* settings come from the environment.
start_dbx() {
  local log=$1
  shift
  "${PIN_SERVER[@]}" "$DBX" "$@" >"$log" 2>&1 &
  DBX_PID=$!
}

# health_ok PORT: /health answers (curl), or the port accepts (without curl).
health_ok() {
  if command -v curl >/dev/null; then
    # TLS ports: CURL_CA names the CA file (scripts/dev-cert.sh's ca.pem).
    if [ -n "${CURL_CA:-}" ]; then
      curl -fsS --max-time 1 --cacert "$CURL_CA" "https://127.0.0.1:$1/health" >/dev/null 2>&1
    else
      curl -fsS --max-time 1 "http://127.0.0.1:$1/health" >/dev/null 2>&1
    fi
  else
    port_open "$1"
  fi
}

# wait_health PORT PID LOG TRIES: poll every 0.1 s until /health answers (0), the tries
# run out (1), or PID exits (LOG is printed and the script dies).
wait_health() {
  local _
  for _ in $(seq "$4"); do
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "server exited at start"; }
    health_ok "$1" && return 0
    sleep 0.1
  done
  return 1
}

# wait_log FILE PATTERN PID TRIES: poll every 0.1 s until FILE contains PATTERN (0);
# 1 once PID has exited or the tries run out.
wait_log() {
  local _
  for _ in $(seq "$4"); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# stop_pids PID...: SIGTERM to all, then up to 5 s each to exit, then SIGKILL.
stop_pids() {
  local p _
  for p in "$@"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    [ -n "$p" ] || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}

# cleanup_on_exit FUNC: run FUNC on exit; INT and TERM exit 130 (through FUNC).
cleanup_on_exit() {
  # shellcheck disable=SC2064
  trap "$1" EXIT
  trap 'exit 130' INT TERM
}

# CPU time (utime + stime, clock ticks) and resident set size (KiB) of PID, from /proc.
proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
proc_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# json_field JSON NAME: the last numeric (or null) value of "NAME": in JSON text.
json_field() { sed -nE "s/.*\"$2\":(-?[0-9.eE+]+|null).*/\1/p" <<<"$1"; }
