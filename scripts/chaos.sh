#!/usr/bin/env bash
# Chaos: SIGKILL the server at random moments under a verifying write load and restart
# it, CYCLES times under each policy in MODES (scripts/chaos.py does the work and
# describes every check). 127.0.0.1 only; bounded in time (DEADLINE seconds per mode).
#
#   scripts/chaos.sh                      # 20 cycles under always, then under everysec
#   CYCLES=50 MODES=always SEED=7 scripts/chaos.sh
#
# Under `always` a violation is any acknowledged write lost, rev going back, or the
# epoch changing; under `everysec` lost writes are reported (a SIGKILL keeps the page
# cache, so normally none) and the epoch must change after every crash. Exit status 1
# on any violation. Settings: CYCLES (20), MODES ("always everysec"), CONNS (8),
# DEPTH (4 requests in flight per connection), SEED, DEADLINE (600 s per mode),
# PORT (18451), DBX_BIN (default target/release/dbx, else target/debug/dbx).
# Needs python3 with `websockets` (pip install websockets).
set -euo pipefail
cd "$(dirname "$0")/.."
LIB_NAME=chaos
. scripts/lib.sh
BIN=${DBX_BIN:-}
if [ -z "$BIN" ]; then
  for b in target/release/dbx target/debug/dbx; do [ -x "$b" ] && { BIN=$PWD/$b; break; }; done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || die "no dbx binary: cargo build --release (or set DBX_BIN)"
python3 -c 'import websockets' 2>/dev/null || die "python3 websockets missing: pip install websockets"
PORT=${PORT:-18451}
ensure_port_free "$PORT" PORT
pin_cores 0 1 "fewer than 2 cores (@NCPU@) or no taskset: server and writer not pinned"
WORK=$(mktemp -d /var/tmp/dbx-chaos.XXXXXX)
cleanup() { rm -rf "$WORK"; }
cleanup_on_exit cleanup
say "chaos: $BIN, work dir $WORK"
status=0
for mode in ${MODES:-always everysec}; do
  mkdir -p "$WORK/$mode"
  # The script's own deadline stops starting cycles; timeout is the hard bound.
  deadline=${DEADLINE:-600}
  if ! timeout $((deadline + 120)) "${PIN_BENCH[@]}" python3 scripts/chaos.py --bin "$BIN" --mode "$mode" \
    --cycles "${CYCLES:-20}" --conns "${CONNS:-8}" --depth "${DEPTH:-4}" --port "$PORT" \
    --work "$WORK/$mode" --deadline "$deadline" ${SEED:+--seed "$SEED"} \
    ${PIN_SERVER[1]:+--pin-server "${PIN_SERVER[2]}"}; then
    status=1
    say "chaos: VIOLATION under $mode; server log: $WORK/$mode/server.log (kept)"
    trap - EXIT
  fi
done
exit $status
