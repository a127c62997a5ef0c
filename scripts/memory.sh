#!/usr/bin/env bash
# Memory footprint: DBX's used_memory vs the real heap growth, and DBX vs Redis.
#
#   scripts/memory.sh            # all data sets, 1,000,000 elements each
#   N=100000 scripts/memory.sh   # smaller
#
# Data sets (the same in both stores):
#   strings  N keys of 16 bytes ("key:000000000001") with 32-byte values
#   hashes   N/1000 hashes of 1000 fields (16-byte fields, 16-byte values)
#   sets     N/1000 sets of 1000 16-byte members
#   zsets    N/1000 sorted sets of 1000 16-byte members with integer scores
#   lists    N/1000 lists of 1000 16-byte values
#
# DBX side: examples/memory.rs loads the store in-process and prints used_memory,
# heap growth (glibc mallinfo2) and RSS growth. Redis side: a fresh redis-server per
# data set, loaded through `redis-cli --pipe`, `INFO memory` used_memory minus the
# empty server's. Needs redis-server and redis-cli (apt-get install -y redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
SETS=${SETS:-"strings hashes sets zsets lists"}
PORT=${PORT:-6399}

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build --release --example memory >/dev/null 2>&1

resp() { # emit RESP commands for data set $1
    python3 - "$1" "$N" <<'PY'
import sys
mode, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*a):
    parts = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(x), x))
    out.write(b"".join(parts))
v32, v16, per = "v" * 32, "v" * 16, 1000
if mode == "strings":
    for i in range(n):
        cmd("SET", "key:%012d" % i, v32)
else:
    for k in range(n // per):
        key = "key:%012d" % k
        # 100 elements per command, as a client would batch them.
        for start in range(0, per, 100):
            els = ["el:%013d" % i for i in range(start, start + 100)]
            if mode == "hashes":
                cmd("HSET", key, *[x for e in els for x in (e, v16)])
            elif mode == "sets":
                cmd("SADD", key, *els)
            elif mode == "zsets":
                cmd("ZADD", key, *[x for i, e in enumerate(els, start) for x in (str(i), e)])
            elif mode == "lists":
                cmd("RPUSH", key, *els)
PY
}

redis_used() {
    redis-cli -p "$PORT" info memory | awk -F: '/^used_memory:/ {gsub("\r",""); print $2}'
}

have_redis=0
command -v redis-server >/dev/null && command -v redis-cli >/dev/null && have_redis=1
[ $have_redis = 1 ] && echo "# $(redis-server --version)"
printf '%-8s %10s %14s %14s %14s %9s %12s %14s %12s %9s\n' set elements used_memory heap_growth rss_growth used/heap dbx_B/elem redis_used redis_B/elem dbx/redis
for s in $SETS; do
    line=$(./target/release/examples/memory "$s" "$N")
    used=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["used_memory"])')
    heap=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["heap_growth"])')
    rss=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_growth"])')
    rused=NA rper=NA ratio=NA
    if [ $have_redis = 1 ]; then
        dir=$(mktemp -d)
        redis-server --port "$PORT" --save '' --appendonly no --dir "$dir" --daemonize yes --logfile "$dir/log" >/dev/null
        for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
        base=$(redis_used)
        resp "$s" | redis-cli -p "$PORT" --pipe >/dev/null
        rused=$(( $(redis_used) - base ))
        redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
        rm -rf "$dir"
        rper=$(python3 -c "print(f'{$rused/$N:.1f}')")
        ratio=$(python3 -c "print(f'{$heap/$rused:.2f}')")
    fi
    printf '%-8s %10d %14d %14d %14d %9s %12s %14s %12s %9s\n' "$s" "$N" "$used" "$heap" "$rss" \
        "$(python3 -c "print(f'{$used/$heap:.2f}')")" "$(python3 -c "print(f'{$heap/$N:.1f}')")" "$rused" "$rper" "$ratio"
done
echo "# used/heap: DBX's estimate over its real heap growth (target 0.80-1.20)."
echo "# dbx/redis: DBX heap growth over Redis used_memory growth for the same data (target <= 1)."
