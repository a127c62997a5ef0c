#!/usr/bin/env bash
# DBX gateways over Redis with Sentinel failover, on loopback, for a user to try
# (issue 16; docs/BACKEND.md). Starts:
#
#   Redis primary   127.0.0.1:$REDIS_PORT        (appendonly, appendfsync always)
#   Redis replica   127.0.0.1:$REPLICA_PORT      (replicaof the primary)
#   Sentinel        127.0.0.1:$SENTINEL_PORT     (master name "dbx", quorum 1)
#   DBX gateway A   ws://127.0.0.1:$GW_A_PORT/ws (DBX_BACKEND=redis+sentinel://…/dbx)
#   DBX gateway B   ws://127.0.0.1:$GW_B_PORT/ws
#
# then waits until Ctrl-C (or `STOP=1`: prints the endpoints and stops at once) and stops
# everything it started, by PID. Logs and data stay in $DIR (a temp dir unless set).
#
# Things to try (dbx-cli is target/release/dbx-cli):
#   dbx-cli --url ws://127.0.0.1:$GW_A_PORT/ws key.watch '{"keys":["k"]}'      # watch on A
#   dbx-cli --url ws://127.0.0.1:$GW_B_PORT/ws string.set '{"key":"k","value":"1"}'  # write on B
#   kill -9 <primary pid>   # failover: the gateways follow the sentinel to the replica
#   redis-cli -p $REDIS_PORT XREVRANGE __dbx:changes + - COUNT 5    # the change stream
#
# Environment (all optional): REDIS_PORT=16379 REPLICA_PORT=16380 SENTINEL_PORT=26379
#   GW_A_PORT=18101 GW_B_PORT=18102 DIR= BUILD=1 (0: use the existing release binary)
#   STOP=0 (1: start, check, stop)
set -euo pipefail

cd "$(dirname "$0")/.."
LIB_NAME=cluster-demo
. scripts/lib.sh

REDIS_PORT=${REDIS_PORT:-16379}
REPLICA_PORT=${REPLICA_PORT:-16380}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
GW_A_PORT=${GW_A_PORT:-18101}
GW_B_PORT=${GW_B_PORT:-18102}
BUILD=${BUILD:-1}
STOP=${STOP:-0}
DIR=${DIR:-$(mktemp -d /tmp/dbx-cluster-demo.XXXXXX)}
mkdir -p "$DIR"

command -v redis-server >/dev/null || die "redis-server (7.0+) is needed: apt-get install redis-server redis-sentinel"
for p in "$REDIS_PORT:REDIS_PORT" "$REPLICA_PORT:REPLICA_PORT" "$SENTINEL_PORT:SENTINEL_PORT" \
  "$GW_A_PORT:GW_A_PORT" "$GW_B_PORT:GW_B_PORT"; do
  ensure_port_free "${p%%:*}" "${p##*:}"
done
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin dbx --bin dbx-cli >&2
fi
[ -x "$DBX" ] || die "no $DBX (BUILD=1 builds it)"

PIDS=()
stop_all() {
  local pid
  # Gateways first, then the sentinel, then Redis (reverse start order), each by PID.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[$i]}
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  say "stopped (logs and data in $DIR)"
}
trap stop_all EXIT

# wait_port PORT WHAT: bounded wait for a listener.
wait_port() {
  for _ in $(seq 1 100); do
    port_open "$1" && return 0
    sleep 0.1
  done
  die "$2 did not listen on $1 (logs in $DIR)"
}

redis_node() { # PORT NAME [EXTRA ARGS…]
  local port=$1 name=$2
  shift 2
  mkdir -p "$DIR/$name"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$DIR/$name" --appendonly yes --appendfsync always \
    --maxmemory-policy noeviction --logfile "$DIR/$name.log" "$@" &
  PIDS+=($!)
  wait_port "$port" "redis $name"
}

redis_node "$REDIS_PORT" primary
redis_node "$REPLICA_PORT" replica --replicaof 127.0.0.1 "$REDIS_PORT"

cat > "$DIR/sentinel.conf" <<EOF
port $SENTINEL_PORT
bind 127.0.0.1
dir $DIR
logfile $DIR/sentinel.log
sentinel monitor dbx 127.0.0.1 $REDIS_PORT 1
sentinel down-after-milliseconds dbx 1000
sentinel failover-timeout dbx 5000
EOF
redis-server "$DIR/sentinel.conf" --sentinel &
PIDS+=($!)
wait_port "$SENTINEL_PORT" sentinel

gateway() { # PORT NAME
  DBX_PORT=$1 DBX_HOST=127.0.0.1 DBX_BACKEND="redis+sentinel://127.0.0.1:$SENTINEL_PORT/dbx" \
    "$DBX" 2> "$DIR/gateway-$2.log" &
  PIDS+=($!)
  wait_port "$1" "gateway $2"
}
gateway "$GW_A_PORT" A
gateway "$GW_B_PORT" B

# Both gateways serve once they reached the primary through the sentinel.
for port in "$GW_A_PORT" "$GW_B_PORT"; do
  ok=0
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.1
  done
  [ "$ok" = 1 ] || die "gateway on $port is not healthy: $(curl -sS "http://127.0.0.1:$port/health" 2>&1)"
done

cat >&2 <<EOF
cluster-demo: running (data and logs in $DIR)
  primary  redis://127.0.0.1:$REDIS_PORT   pid ${PIDS[0]}
  replica  redis://127.0.0.1:$REPLICA_PORT   pid ${PIDS[1]}
  sentinel 127.0.0.1:$SENTINEL_PORT (master "dbx")   pid ${PIDS[2]}
  gateway A ws://127.0.0.1:$GW_A_PORT/ws   pid ${PIDS[3]}   (health: http://127.0.0.1:$GW_A_PORT/health)
  gateway B ws://127.0.0.1:$GW_B_PORT/ws   pid ${PIDS[4]}
EOF
if [ "$STOP" = 1 ]; then
  exit 0
fi
say "Ctrl-C stops everything."
wait "${PIDS[3]}" "${PIDS[4]}" || true
