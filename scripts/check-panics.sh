#!/usr/bin/env bash
# Belt-and-braces check of the no-panic policy (docs/CONTRIBUTING.md): no
# `.unwrap()`, `.expect(`, `panic!`, `unreachable!`, `todo!`, `unimplemented!` in the
# server's non-test code. Clippy enforces the same (lib.rs denies unwrap_used,
# expect_used, panic; indexing_slicing in server/proto/cmd/store); this grep also
# catches code clippy did not see (a cfg that was off, an `#[allow]` slipped in).
#
#   scripts/check-panics.sh [DIR...]     (default: src, without src/bin)
#
# Skipped: unit tests — `tests.rs` files beside the code (by path), and a small inline
# `#[cfg(test)] mod tests {` up to its closing `}` in column 0 — comment text,
# tests/, benches/, examples/, fuzz/, and src/bin/ (the load
# generator is a client, not reachable from the network). A line that must stay
# can carry `// panic-ok: <why it cannot fail>`; keep those rare and reviewed.
#
# Exit status: 0 clean, 1 when a hit is found (each printed as file:line: text).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -gt 0 ]; then
    dirs=("$@")
else
    dirs=(src)
fi

# Unit tests live beside the code they test, in `tests.rs` files (`#[cfg(test)] mod
# tests;`): skipped by path.
files=$(find "${dirs[@]}" -name '*.rs' -not -path 'src/bin/*' -not -name 'tests.rs' | sort)
hits=0
for f in $files; do
    out=$(awk '
        # Strip string and char literals and trailing // comments (roughly) before
        # matching, so a message that mentions unwrap() is not a hit.
        function code(line) {
            gsub(/r#"([^"]|"[^#])*"#/, "\"\"", line)
            gsub(/"([^"\\]|\\.)*"/, "\"\"", line)
            gsub(/\x27(\\.|[^\x27\\])\x27/, "\x27\x27", line)
            sub(/\/\/.*$/, "", line)
            return line
        }
        # A small inline `#[cfg(test)] mod tests { ... }`: rustfmt (checked in CI)
        # closes a top-level item with a `}` in column 0, so skip to that line.
        in_tests { if ($0 == "}") in_tests = 0; next }
        /^mod tests \{$/ && prev_cfg_test { in_tests = 1; next }
        {
            raw = $0
            c = code($0)
            if (c ~ /^#\[cfg\(test\)\]/) { prev_cfg_test = 1; next }
            if (c !~ /^#\[/) prev_cfg_test = 0
            if (raw ~ /panic-ok:/) next
            if (c ~ /\.unwrap\(\)|\.expect\(|panic!\(|unreachable!\(|todo!\(|unimplemented!\(/) {
                printf "%s:%d: %s\n", FILENAME, FNR, raw
            }
        }' "$f")
    if [ -n "$out" ]; then
        echo "$out"
        hits=$((hits + $(printf '%s\n' "$out" | wc -l)))
    fi
done

n=$(printf '%s\n' "$files" | grep -c . || true)
if [ "$hits" -gt 0 ]; then
    echo "check-panics: $hits possible panic(s) in non-test code ($n files); use ?, .get(), unwrap_or, or match" >&2
    exit 1
fi
echo "check-panics: ok ($n files, no unwrap/expect/panic outside tests)"
