#!/usr/bin/env bash
# Autobahn|Testsuite (wstest -m fuzzingclient) against DBX's RFC 6455 echo endpoint,
# which is served by the same reactor, handshake code and framing as /ws.
#
#   scripts/autobahn.sh            # cases 1.* .. 10.* (301 cases; 12.*/13.* excluded:
#                                  # permessage-deflate is not offered)
#   scripts/autobahn.sh '5.*,7.*'  # a subset (the comparison then covers those only)
#   scripts/autobahn.sh --update   # run all, then rewrite scripts/autobahn/expected.json
#
# Steps: build the release binary, start it on a free loopback port with
# --echo-path /echo (DBX_PERSIST=false, DBX_WS_RATE_LIMIT=0, no credentials), run the
# suite (scripts/autobahn/run.sh: a Python 3 venv with the patched autobahntestsuite
# from PyPI, created on first use), then compare every case with
# scripts/autobahn/expected.json (scripts/autobahn/compare.py): the script FAILS when a
# case's behavior is FAILED, when a case got worse than expected, or did not finish,
# or when the server died.
#
# Environment (all optional):
#   AUTOBAHN_TIMEOUT  limit for the wstest run, seconds        (default 300)
#   AUTOBAHN_VENV     the suite's venv                         (default /tmp/dbx-autobahn-venv)
#   AUTOBAHN_OUT      reports, logs                            (default target/autobahn)
#   BUILD=0           use the existing target/release/dbx (or DBX_BIN)
#   BUILD_TIMEOUT     limit for the release build, seconds   (default 1800)
#   DBX_BIN           server binary                            (default target/release/dbx)
#   AUTOBAHN_TLS=1    serve the echo endpoint over TLS (a certificate from
#                     scripts/dev-cert.sh) and run the suite against wss://; the
#                     expected results are the same as over ws://
#
# Exit status: 0 = no regression; 1 = a case failed or got worse; 2 = setup error.
# Last lines: the suite's "autobahn: N ok, M non-strict, K failed", the comparison,
# and "autobahn wall time: ...".
set -euo pipefail

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    local root here
    root=$(pwd)
    here="$root/scripts/autobahn"
    local update=0 cases=""
    case "${1:-}" in
        -h | --help)
            sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --update) update=1 ;;
        "") ;;
        *) cases="$1" ;;
    esac

    local t0
    t0=$(date +%s)
    export AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-300}"
    export AUTOBAHN_VENV="${AUTOBAHN_VENV:-/tmp/dbx-autobahn-venv}"
    export AUTOBAHN_AGENT="dbx"
    local tls="${AUTOBAHN_TLS:-0}" scheme=ws
    [ "$tls" = 1 ] && scheme=wss
    local out="${AUTOBAHN_OUT:-$root/target/autobahn$([ "$tls" = 1 ] && echo -tls)}"
    mkdir -p "$out"
    export AUTOBAHN_OUT="$out"

    local bin="${DBX_BIN:-$root/target/release/dbx}"
    if [ "${BUILD:-1}" != 0 ]; then
        echo "autobahn.sh: building the release binary" >&2
        timeout "${BUILD_TIMEOUT:-1800}" cargo build --release --quiet --bin dbx
    fi
    [ -x "$bin" ] || {
        echo "autobahn.sh: no server binary at $bin" >&2
        exit 2
    }
    local t_built
    t_built=$(date +%s)

    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local tls_env=() ca=""
    if [ "$tls" = 1 ]; then
        bash "$root/scripts/dev-cert.sh" "$out/certs" >/dev/null
        tls_env=(DBX_TLS_CERT="$out/certs/cert.pem" DBX_TLS_KEY="$out/certs/key.pem")
        ca="$out/certs/ca.pem"
    fi
    # A clean, credential-free server whatever the caller's environment holds.
    env -u DBX_API_KEYS -u DBX_JWT_SECRET -u DBX_JWT_PUBLIC_KEY -u DBX_TLS_CLIENT_CA \
        DBX_PERSIST=false DBX_WS_RATE_LIMIT=0 DBX_LOG=warn "${tls_env[@]}" \
        "$bin" --host 127.0.0.1 --port "$port" --echo-path /echo >"$out/server.log" 2>&1 &
    SERVER_PID=$!
    trap 'stop_server' EXIT

    # Wait (bounded) for /health.
    local ready=0
    for _ in $(seq 1 100); do
        if python3 - "$port" "$ca" <<'EOF' 2>/dev/null; then
import ssl, sys, urllib.request
port, ca = sys.argv[1], sys.argv[2]
if ca:
    ctx = ssl.create_default_context(cafile=ca)
    urllib.request.urlopen("https://127.0.0.1:%s/health" % port, timeout=1, context=ctx).read()
else:
    urllib.request.urlopen("http://127.0.0.1:%s/health" % port, timeout=1).read()
EOF
            ready=1
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ready" != 1 ]; then
        echo "autobahn.sh: the server did not come up on port $port; its log:" >&2
        tail -n 20 "$out/server.log" >&2
        exit 2
    fi

    local rc_run=0
    if [ -n "$cases" ]; then
        bash "$here/run.sh" "$scheme://127.0.0.1:$port/echo" "$cases" | tee "$out/summary.txt" || rc_run=$?
    else
        bash "$here/run.sh" "$scheme://127.0.0.1:$port/echo" | tee "$out/summary.txt" || rc_run=$?
    fi
    [ "$rc_run" = 2 ] && exit 2

    local alive=1
    kill -0 "$SERVER_PID" 2>/dev/null || alive=0

    local rc_cmp=0
    local index="$out/reports/index.json"
    if [ ! -f "$index" ]; then
        echo "autobahn.sh: no report at $index" >&2
        rc_cmp=1
    elif [ "$update" = 1 ]; then
        python3 "$here/compare.py" "$index" "$here/expected.json" --update
    elif [ -n "$cases" ]; then
        # A subset: compare only the cases that ran.
        python3 - "$index" "$here/expected.json" "$out/expected-subset.json" <<'EOF'
import json, sys
index, exp_path, sub_path = sys.argv[1:4]
ran = set()
for agent in json.load(open(index)).values():
    ran.update(agent)
exp = json.load(open(exp_path))
json.dump({k: v for k, v in exp.items() if k in ran}, open(sub_path, "w"))
EOF
        python3 "$here/compare.py" "$index" "$out/expected-subset.json" || rc_cmp=$?
    else
        python3 "$here/compare.py" "$index" "$here/expected.json" || rc_cmp=$?
    fi

    local t1
    t1=$(date +%s)
    if [ "$alive" != 1 ]; then
        echo "autobahn.sh: the server died during the run; tail of $out/server.log:" >&2
        tail -n 20 "$out/server.log" >&2
    fi
    echo "autobahn wall time: $((t1 - t0)) s (build $((t_built - t0)) s, suite $((t1 - t_built)) s); reports in $out/reports"
    if [ "$alive" != 1 ] || [ "$rc_cmp" != 0 ] || [ "$rc_run" != 0 ]; then
        echo "autobahn.sh: FAILED" >&2
        exit 1
    fi
}

stop_server() {
    if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
}

main "$@"
