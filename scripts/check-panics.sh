#!/usr/bin/env bash
# Belt-and-braces check of the no-panic policy (docs/CONTRIBUTING.md): no
# `.unwrap()`, `.expect(`, `panic!`, `unreachable!`, `todo!`, `unimplemented!` in the
# server's non-test code. Clippy enforces the same (lib.rs denies unwrap_used,
# expect_used, panic; indexing_slicing in server/proto/cmd/store); this grep also
# catches code clippy did not see (a cfg that was off, an `#[allow]` slipped in).
#
#   scripts/check-panics.sh [DIR...]     (default: src, without src/bin)
#
# Skipped: items under `#[cfg(test)]` (the attribute's next item, by brace depth),
# comment lines, tests/, benches/, examples/, fuzz/, and src/bin/ (the load
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
        # Strip raw strings (one line, r#"..."#), string and char literals and
        # trailing // comments (roughly) before matching and counting braces.
        function code(line) {
            gsub(/r#"([^"]|"[^#])*"#/, "\"\"", line)
            gsub(/"([^"\\]|\\.)*"/, "\"\"", line)
            gsub(/\x27(\\.|[^\x27\\])\x27/, "\x27\x27", line)
            sub(/\/\/.*$/, "", line)
            return line
        }
        {
            raw = $0
            c = code($0)
            if (skip_pending) {
                # The item after #[cfg(test)]: skip until its braces balance (or a
                # `;` ends a brace-less item such as `mod tests;` / `use ...;`).
                if (!in_item) {
                    if (c ~ /^[[:space:]]*#\[/) { next }
                    in_item = 1; depth = 0; opened = 0
                }
                n_open = gsub(/\{/, "{", c); n_close = gsub(/\}/, "}", c)
                depth += n_open - n_close
                if (n_open > 0) opened = 1
                if ((opened && depth <= 0) || (!opened && c ~ /;[[:space:]]*$/)) {
                    skip_pending = 0; in_item = 0
                }
                next
            }
            if (c ~ /^[[:space:]]*#\[cfg\(test\)\]/) { skip_pending = 1; in_item = 0; next }
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
