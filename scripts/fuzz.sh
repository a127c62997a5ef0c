#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that see network input (cargo fuzz, libFuzzer).
#
#   scripts/fuzz.sh TARGET SECONDS [-- extra libFuzzer flags]
#   scripts/fuzz.sh all SECONDS          # each available target for SECONDS
#   scripts/fuzz.sh list                 # targets, available and planned
#   scripts/fuzz.sh build [TARGET]       # build only
#
# Targets (fuzz/fuzz_targets/*.rs; seeds in fuzz/seeds/TARGET, dictionary
# fuzz/dict/*.dict):
#   handshake  server::handshake::parse — the HTTP/1.1 upgrade request head and the
#              router, query decoding, refusal rendering           dict: handshake
#   envelope   proto::parse_incoming + every Params accessor (str, opt_str, value,
#              opt_bool, opt_i64, i64, opt_usize, opt_f64, str_list, value_list,
#              one_or_many, object, array), raw_str, value_text    dict: envelope
#   command    newline-separated requests executed by engine::policy::execute on a fresh Store
#              with a Hub (every data type, TTLs, batch, watch)    dict: envelope
#   aof_load   persist::load::load on a data directory holding one arbitrary log or
#              snapshot file (first byte: which file, magic prepended or not,
#              --aof-truncate-corrupt or not): loads or is refused, never panics
#                                                                  dict: aof_load
#   aof_length a valid log whose record lengths (or their checksums) are damaged by
#              an input mask, middle or last record: start-up after a crash refuses
#              with the offset, never loads with records missing, never cuts
#
# Crashes land in fuzz/artifacts/TARGET/; reproduce with
#   cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# and turn each into a regression test (a unit test beside the code, or tests/).
# The working corpus is fuzz/corpus/TARGET (not committed; it grows from the seeds).
# A log of each run is kept in target/fuzz/TARGET.log; the last lines printed are
# libFuzzer's final stats: executions, exec/s, coverage (cov) and features (ft).
#
# Toolchain: cargo fuzz needs nightly-only flags (-Zsanitizer, -Cpasses=sancov);
# with only a stable toolchain this script sets RUSTC_BOOTSTRAP=1, which enables
# them on stable. Sanitizer: FUZZ_SANITIZER=address (default) or none (faster; our
# crate has no unsafe code, so panics are what the fuzzing is after).
# Environment: FUZZ_JOBS (libFuzzer -fork workers, default 1), CARGO_BUILD_JOBS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

AVAILABLE="handshake envelope command aof_load aof_length"
PLANNED=""

dict_for() {
    case "$1" in
        handshake) echo handshake ;;
        envelope | command) echo envelope ;;
        aof_length) echo aof_load ;;
        *) echo "$1" ;;
    esac
}

max_len_for() {
    case "$1" in
        handshake) echo 20000 ;; # past MAX_HEAD (16 KiB) so the 431 path is reachable
        command) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

usage() {
    sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

ensure_tools() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: installing cargo-fuzz (crates.io)" >&2
        cargo install cargo-fuzz --locked
    fi
    if ! rustc --version | grep -q nightly; then
        export RUSTC_BOOTSTRAP=1
    fi
}

build() {
    ensure_tools
    local t
    for t in "$@"; do
        cargo fuzz build -s "${FUZZ_SANITIZER:-address}" "$t"
    done
}

run_one() {
    local target=$1 secs=$2
    shift 2
    case " $AVAILABLE " in
        *" $target "*) ;;
        *)
            case " $PLANNED " in
                *" $target "*)
                    echo "fuzz.sh: '$target' is planned, not written yet (see the comment at the top of $0)" >&2
                    exit 2
                    ;;
            esac
            echo "fuzz.sh: unknown target '$target' (available: $AVAILABLE)" >&2
            exit 2
            ;;
    esac
    build "$target"
    local corpus="$ROOT/fuzz/corpus/$target" seeds="$ROOT/fuzz/seeds/$target"
    local dict
    dict="$ROOT/fuzz/dict/$(dict_for "$target").dict"
    mkdir -p "$corpus" "$ROOT/fuzz/artifacts/$target" "$ROOT/target/fuzz"
    local log="$ROOT/target/fuzz/$target.log"
    local extra=()
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then extra+=("-fork=${FUZZ_JOBS}"); fi
    echo "fuzz.sh: $target for ${secs}s (corpus $corpus, seeds $seeds, dict $dict); log $log" >&2
    local rc=0
    timeout -k 30 "$((secs + 300))" cargo fuzz run -s "${FUZZ_SANITIZER:-address}" "$target" "$corpus" "$seeds" -- \
        -max_total_time="$secs" -dict="$dict" -max_len="$(max_len_for "$target")" \
        -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$ROOT/fuzz/artifacts/$target/" "${extra[@]}" "$@" >"$log" 2>&1 || rc=$?
    # Summary: the last status line and libFuzzer's final stats.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    if [ "$rc" != 0 ]; then
        echo "fuzz.sh: $target FAILED (exit $rc); tail of $log:" >&2
        tail -n 40 "$log" >&2
        ls -1 "$ROOT/fuzz/artifacts/$target" >&2 || true
        return 1
    fi
    echo "fuzz.sh: $target ok"
}

[ $# -ge 1 ] || usage
case "$1" in
    -h | --help) usage ;;
    list)
        echo "available: $AVAILABLE"
        echo "planned:   $PLANNED"
        ;;
    build)
        shift
        if [ $# -gt 0 ]; then build "$@"; else build $AVAILABLE; fi
        ;;
    all)
        [ $# -ge 2 ] || usage
        secs=$2
        shift 2
        [ "${1:-}" = "--" ] && shift
        failed=0
        for t in $AVAILABLE; do run_one "$t" "$secs" "$@" || failed=1; done
        exit $failed
        ;;
    *)
        [ $# -ge 2 ] || usage
        target=$1 secs=$2
        shift 2
        [ "${1:-}" = "--" ] && shift
        run_one "$target" "$secs" "$@"
        ;;
esac
