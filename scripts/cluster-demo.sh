#!/usr/bin/env bash
# Try DBX gateways over Redis on one machine: a Redis primary, a replica, a sentinel
# (quorum 1) and two DBX gateways that find the primary through the sentinel, all on
# 127.0.0.1. Everything lives in one directory; `stop` ends it by the recorded PIDs.
#
#   scripts/cluster-demo.sh start    # start all five, print the URLs to try
#   scripts/cluster-demo.sh status   # which of them run, and who is primary
#   scripts/cluster-demo.sh failover # kill the primary: the sentinel promotes the replica
#   scripts/cluster-demo.sh stop     # stop all by PID, keep the directory (logs)
#
# Settings: DEMO_DIR (default /tmp/dbx-cluster-demo), DBX_BIN (default
# target/release/dbx, else target/debug/dbx), PORT_BASE (default 17000: Redis primary
# PORT_BASE, replica +1, sentinel +2, gateways +10 and +11). Needs redis-server and
# redis-cli (Debian: apt install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
LIB_NAME=cluster-demo
. scripts/lib.sh
DIR=${DEMO_DIR:-/tmp/dbx-cluster-demo}
BASE=${PORT_BASE:-17000}
P_PRIMARY=$BASE P_REPLICA=$((BASE + 1)) P_SENTINEL=$((BASE + 2))
P_GW_A=$((BASE + 10)) P_GW_B=$((BASE + 11))
MASTER=dbx

bin() {
  local b=${DBX_BIN:-}
  if [ -z "$b" ]; then
    for c in target/release/dbx target/debug/dbx; do [ -x "$c" ] && { b=$PWD/$c; break; }; done
  fi
  [ -n "$b" ] && [ -x "$b" ] || die "no dbx binary: cargo build --release (or set DBX_BIN)"
  echo "$b"
}

# run NAME CMD...: start CMD in the background, output in DIR/NAME.log, PID in DIR/NAME.pid.
run() {
  local name=$1
  shift
  "$@" >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

wait_port() { # wait_port NAME PORT
  local _
  for _ in $(seq 100); do
    port_open "$2" && return 0
    alive "$1" || { cat "$DIR/$1.log" >&2; die "$1 exited at start (log above)"; }
    sleep 0.1
  done
  die "$1 did not open port $2 within 10 s (see $DIR/$1.log)"
}

redis_conf() { # redis_conf NAME PORT [REPLICAOF_PORT]
  mkdir -p "$DIR/$1"
  {
    echo "port $2"
    echo "bind 127.0.0.1"
    echo "dir $DIR/$1"
    echo "appendonly yes"
    echo "appendfsync everysec"
    echo "save \"\""
    echo "maxmemory-policy noeviction"
    [ -z "${3:-}" ] || echo "replicaof 127.0.0.1 $3"
  } >"$DIR/$1.conf"
}

start() {
  local dbx names n
  dbx=$(bin)
  command -v redis-server >/dev/null || die "redis-server not found (apt install redis-server redis-sentinel)"
  for n in primary replica sentinel gw-a gw-b; do alive "$n" && die "$n already runs (pid $(cat "$DIR/$n.pid")): $0 stop first"; done
  for p in $P_PRIMARY $P_REPLICA $P_SENTINEL $P_GW_A $P_GW_B; do ensure_port_free "$p" PORT_BASE; done
  mkdir -p "$DIR"
  redis_conf primary "$P_PRIMARY"
  redis_conf replica "$P_REPLICA" "$P_PRIMARY"
  run primary redis-server "$DIR/primary.conf"
  wait_port primary "$P_PRIMARY"
  run replica redis-server "$DIR/replica.conf"
  wait_port replica "$P_REPLICA"
  cat >"$DIR/sentinel.conf" <<EOF
port $P_SENTINEL
bind 127.0.0.1
dir $DIR
sentinel monitor $MASTER 127.0.0.1 $P_PRIMARY 1
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
EOF
  # redis-server in sentinel mode (what Debian's redis-sentinel runs); the sentinel
  # rewrites its file with what it learns (replicas, the current primary).
  run sentinel redis-server "$DIR/sentinel.conf" --sentinel
  wait_port sentinel "$P_SENTINEL"
  for n in a b; do
    local port=$P_GW_A
    [ $n = a ] || port=$P_GW_B
    # Only our settings: none of the caller's DBX_* (a data directory, TLS files, …).
    # shellcheck disable=SC2046
    run "gw-$n" env $(env | sed -n 's/^\(DBX_[A-Za-z0-9_]*\)=.*/-u \1/p') \
      DBX_HOST=127.0.0.1 DBX_PORT="$port" \
      DBX_BACKEND="redis+sentinel://127.0.0.1:$P_SENTINEL/$MASTER" "$dbx"
    wait_port "gw-$n" "$port"
  done
  say "cluster-demo: running in $DIR (logs *.log, PIDs *.pid)"
  say "  Redis primary 127.0.0.1:$P_PRIMARY, replica :$P_REPLICA, sentinel :$P_SENTINEL (master name $MASTER)"
  say "  gateway A ws://127.0.0.1:$P_GW_A/ws   gateway B ws://127.0.0.1:$P_GW_B/ws"
  say "try it:"
  say "  dbx-cli -u ws://127.0.0.1:$P_GW_A/ws watch greeting        # in one terminal"
  say "  dbx-cli -u ws://127.0.0.1:$P_GW_B/ws string.set key=greeting value=hello"
  say "  redis-cli -p $P_PRIMARY GET greeting; redis-cli -p $P_PRIMARY XRANGE __dbx:changes - +"
  say "  $0 failover; $0 status; $0 stop"
}

status() {
  local n
  for n in primary replica sentinel gw-a gw-b; do
    if alive "$n"; then echo "$n: running (pid $(cat "$DIR/$n.pid"))"; else echo "$n: stopped"; fi
  done
  if alive sentinel && command -v redis-cli >/dev/null; then
    echo "primary according to the sentinel: $(redis-cli -p "$P_SENTINEL" SENTINEL get-master-addr-by-name "$MASTER" | paste -sd:)"
  fi
}

failover() {
  local addr port n
  command -v redis-cli >/dev/null || die "redis-cli not found"
  addr=$(redis-cli -p "$P_SENTINEL" SENTINEL get-master-addr-by-name "$MASTER" | paste -sd' ')
  port=${addr##* }
  for n in primary replica; do
    if alive "$n" && grep -q "^port $port\$" "$DIR/$n.conf"; then
      say "cluster-demo: killing the primary ($n, port $port); the sentinel promotes the other in about 2 s"
      kill -9 "$(cat "$DIR/$n.pid")"
      return 0
    fi
  done
  die "the primary (port $port) is not one of ours or not running"
}

stop() {
  local n pids=()
  for n in gw-a gw-b sentinel replica primary; do
    alive "$n" && pids+=("$(cat "$DIR/$n.pid")")
    rm -f "$DIR/$n.pid"
  done
  [ ${#pids[@]} -eq 0 ] || stop_pids "${pids[@]}"
  say "cluster-demo: stopped (logs kept in $DIR)"
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  failover) failover ;;
  stop) stop ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
