#!/usr/bin/env bash
# Gateway mode (issue 16) across two gateways: pub/sub fan-out and watch latency.
#
# Starts redis-server and two gateways (A, B) on it, all pinned to SERVER_CORE (0); the
# load runs on BENCH_CORE (1):
#   1. fan-out: 1 publisher on A (dbx-bench, PIPELINE in flight), SUBSCRIBERS subscribers
#      split over A and B (two dbx-bench processes); deliveries per second on each and
#      in total;
#   2. watch latency: a watcher on A, a writer on B (python3 + websockets, one write at a
#      time, WRITES writes): from sending `string.set` on B to the keyspace event on A,
#      p50 / p99 / max.
# (The machine's load is printed before and after: other work skews the figures.)
#
# Environment (all optional): REDIS_PORT=16579 GW_A_PORT=18201 GW_B_PORT=18202
#   SUBSCRIBERS=1000 PIPELINE=64 DURATION=8s WARMUP=2s WRITES=2000 SERVER_CORE=0
#   BENCH_CORE=1 BUILD=1
set -euo pipefail

cd "$(dirname "$0")/.."
LIB_NAME=bench-gateway
. scripts/lib.sh

REDIS_PORT=${REDIS_PORT:-16579}
GW_A_PORT=${GW_A_PORT:-18201}
GW_B_PORT=${GW_B_PORT:-18202}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
PIPELINE=${PIPELINE:-64}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
WRITES=${WRITES:-2000}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-1}

command -v redis-server >/dev/null || die "redis-server (7.0+) is needed: apt-get install redis-server"
python3 -c 'import websockets' 2>/dev/null || die "python3 with websockets is needed (pip install websockets)"
pin_cores "$SERVER_CORE" "$BENCH_CORE" "cannot pin to separate cores (@NCPU@ CPUs); running unpinned"
if [ "$BUILD" = 1 ]; then
  cargo build --release --bin dbx --bin dbx-bench >&2
fi
[ -x "$DBX" ] && [ -x "$BENCH" ] || die "no release binaries (BUILD=1 builds them)"
for p in "$REDIS_PORT:REDIS_PORT" "$GW_A_PORT:GW_A_PORT" "$GW_B_PORT:GW_B_PORT"; do
  ensure_port_free "${p%%:*}" "${p##*:}"
done

DIR=$(mktemp -d "${TMPDIR:-/tmp}/dbx-bench-gateway.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

"${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$DIR" --logfile "$DIR/redis.log" &
PIDS+=($!)
for _ in $(seq 100); do port_open "$REDIS_PORT" && break; sleep 0.1; done
for port in "$GW_A_PORT" "$GW_B_PORT"; do
  # shellcheck disable=SC2046
  env $(env | sed -n 's/^\(DBX_[A-Za-z0-9_]*\)=.*/-u \1/p') DBX_HOST=127.0.0.1 DBX_PORT="$port" \
    DBX_WS_RATE_LIMIT=0 DBX_LOG=warn DBX_BACKEND="redis://127.0.0.1:$REDIS_PORT" \
    "${PIN_SERVER[@]}" "$DBX" 2>"$DIR/gw-$port.log" &
  PIDS+=($!)
done
for port in "$GW_A_PORT" "$GW_B_PORT"; do
  ok=0
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  [ "$ok" = 1 ] || die "gateway on $port is not healthy (log: $(cat "$DIR/gw-$port.log"))"
done
say "bench-gateway: load before: $(uptime)"

# --- 1. fan-out over two gateways
half=$((SUBSCRIBERS / 2))
"${PIN_BENCH[@]}" "$BENCH" --url "ws://127.0.0.1:$GW_B_PORT/ws" -c 1 -P 1 --mix ping=1 \
  --subscribers $((SUBSCRIBERS - half)) --channel fan --duration "$DURATION" --warmup "$WARMUP" \
  --json-only >"$DIR/b.json" 2>"$DIR/b.err" &
BPID=$!
sleep 1 # B's subscribers first, so both halves are counted from the start
"${PIN_BENCH[@]}" "$BENCH" --url "ws://127.0.0.1:$GW_A_PORT/ws" -c 1 -P "$PIPELINE" --mix publish=1 \
  --subscribers "$half" --channel fan --duration "$DURATION" --warmup "$WARMUP" \
  --json-only >"$DIR/a.json" 2>"$DIR/a.err" || die "dbx-bench on A failed: $(cat "$DIR/a.err")"
wait "$BPID" || die "dbx-bench on B failed: $(cat "$DIR/b.err")"
python3 - "$DIR/a.json" "$DIR/b.json" <<'EOF'
import json, sys
a = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
b = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
da, db = a.get("deliveries_per_sec", 0), b.get("deliveries_per_sec", 0)
print(f"fan-out: publishes {a.get('ops_per_sec', 0):.0f}/s on A; deliveries {da:.0f}/s on A "
      f"({a.get('subscribed')} subscribers) + {db:.0f}/s on B ({b.get('subscribed')} subscribers) "
      f"= {da + db:.0f}/s; delivery p50/p99 on A {a.get('delivery_p50_us')}/{a.get('delivery_p99_us')} us")
EOF

# --- 2. watch latency: write on B, event on A
"${PIN_BENCH[@]}" python3 - "ws://127.0.0.1:$GW_A_PORT/ws" "ws://127.0.0.1:$GW_B_PORT/ws" "$WRITES" <<'EOF'
import asyncio, json, sys, time
import websockets

async def main(url_a, url_b, n):
    async with websockets.connect(url_a, max_size=None) as a, websockets.connect(url_b, max_size=None) as b:
        await a.recv(); await b.recv()  # hello
        await a.send(json.dumps({"id": 1, "method": "key.watch", "params": {"keys": ["lat"]}}))
        while json.loads(await a.recv()).get("id") != 1:
            pass
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await b.send(json.dumps({"id": i + 10, "method": "string.set", "params": {"key": "lat", "value": str(i)}}))
            while True:
                m = json.loads(await a.recv())
                if m.get("type") == "keyspace":
                    break
            lat.append((time.perf_counter() - t0) * 1e6)
            while json.loads(await b.recv()).get("id") != i + 10:
                pass
        lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
        print(f"watch latency, write on B -> event on A ({n} writes, one at a time): "
              f"p50 {q(0.5):.0f} us, p99 {q(0.99):.0f} us, max {lat[-1]:.0f} us")

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
EOF
say "bench-gateway: load after: $(uptime)"
