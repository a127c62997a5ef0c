#!/usr/bin/env bash
# Online, consistent backup of a running DBX server, its verification, and a restore.
#
#   scripts/backup.sh [--data-dir DIR] [--no-load-check] DEST   back up into DEST (new or empty)
#   scripts/backup.sh --verify DEST                             check a backup again
#   scripts/backup.sh --restore DEST DATA_DIR                   put a backup into a new data dir
#
# A backup, on the machine that runs the server (it reads DBX_DATA_DIR):
#   1. asks the server for a snapshot (`server.save`, an admin request) and waits until
#      /health reports it done: the log after it is then short;
#   2. copies the newest snapshot and the logs after it (aof-S.log, aof-(S+1).log, …);
#      the last log is being appended to, so it is copied up to its size at that moment —
#      a prefix of the history, every write acknowledged before step 1 included (its
#      record reached the file before its reply left the server). A record cut in half
#      at the end is dropped at load, as after a crash;
#   3. checks that each copy equals the source's bytes (SHA-256 of the copy against the
#      same byte range of the source); if a snapshot finishing meanwhile removed a source
#      file, starts again (3 attempts);
#   4. writes SHA256SUMS and backup.info (rev and epoch when it began, policy, files);
#   5. load check: starts the dbx binary on a scratch copy of the backup (127.0.0.1, a
#      free port), checks that it loads and that its rev is at least the rev at step 1,
#      and stops it. Skipped with --no-load-check, or when no dbx binary is found.
#
# The backup holds no CLEAN and no POLICY file, on purpose: a restored backup is an
# earlier point in history, so its first start must begin a new epoch (resuming watchers
# get `gap` instead of a replay of revisions that now mean other changes); without
# POLICY the server treats it as a crash whose policy is unknown and does exactly that.
#
# Environment:
#   DBX_URL        the server (default ws://127.0.0.1:8080); DBX_API_KEY: an admin
#                  credential when the server has credentials; DBX_HEALTH_URL: where
#                  /health is when not on DBX_URL's host and port (see scripts/dbxws.py)
#   DBX_DATA_DIR   the server's data directory (default ./dbx-data, as the server's)
#   DBX_BIN        the dbx binary for the load check (default: dbx in PATH,
#                  /usr/local/bin/dbx, target/release/dbx, target/debug/dbx)
#   BACKUP_SNAPSHOT_TIMEOUT  seconds to wait for the snapshot (default 600)
#   DBX_BACKUP_TEST_HOOK     tests only (tests/backup.rs): a command run once between
#                            listing the files and copying them
# Needs: python3 (standard library only), sha256sum, head, stat.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WS="python3 $HERE/dbxws.py"

say() { printf 'backup: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# The generations of files matching PREFIX-N.SUFFIX in DIR, ascending.
gens() { # gens DIR PREFIX SUFFIX
  local f n
  for f in "$1/$2"-*"$3"; do
    [ -e "$f" ] || continue
    n=${f##*/}; n=${n#"$2"-}; n=${n%"$3"}
    [[ $n =~ ^[0-9]+$ ]] && echo "$n"
  done | sort -n
}

sha() { sha256sum | cut -d' ' -f1; }

find_bin() {
  local b
  for b in "${DBX_BIN:-}" "$(command -v dbx 2>/dev/null || true)" /usr/local/bin/dbx \
    "$HERE/../target/release/dbx" "$HERE/../target/debug/dbx"; do
    [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
  done
  return 1
}

# The data files of a backup (snapshot first, then the logs in order), one a line.
backup_files() {
  local g
  for g in $(gens "$1" snapshot .dbx); do echo "snapshot-$g.dbx"; done
  for g in $(gens "$1" aof .log); do echo "aof-$g.log"; done
}

# load_check DIR MIN_REV: start dbx on a scratch copy of DIR's files; MIN_REV: the
# loaded rev must be at least this. Prints a JSON summary line.
load_check() {
  local dir=$1 min_rev=$2 bin port info rev keys attempt
  bin=$(find_bin) || { say "WARNING: no dbx binary found (set DBX_BIN): load check skipped"; return 0; }
  CHECK_TMP=$(mktemp -d "${TMPDIR:-/tmp}/dbx-backup-check.XXXXXX")
  local tmp=$CHECK_TMP
  mkdir "$tmp/data"
  while read -r f; do cp "$dir/$f" "$tmp/data/$f"; done < <(backup_files "$dir")
  for attempt in 1 2 3; do
    port=$($WS free-port)
    # Only our settings: none of the operator's DBX_* (credentials, a TLS setup, …).
    # shellcheck disable=SC2046
    env $(env | sed -n 's/^\(DBX_[A-Za-z0-9_]*\)=.*/-u \1/p') \
      DBX_HOST=127.0.0.1 DBX_PORT="$port" DBX_DATA_DIR="$tmp/data" DBX_APPENDFSYNC=no \
      DBX_AOF_REWRITE_PERCENTAGE=0 DBX_LOG=info "$bin" >"$tmp/out.log" 2>&1 &
    CHECK_PID=$!
    for _ in $(seq 600); do
      grep -q "listening on" "$tmp/out.log" 2>/dev/null && break
      kill -0 "$CHECK_PID" 2>/dev/null || break
      sleep 0.1
    done
    grep -q "listening on" "$tmp/out.log" 2>/dev/null && break
    kill -KILL "$CHECK_PID" 2>/dev/null || true
    wait "$CHECK_PID" 2>/dev/null || true
    CHECK_PID=
    # Another process may have taken the free port between the probe and the bind.
    grep -qi "address already in use" "$tmp/out.log" && continue
    cat "$tmp/out.log" >&2
    die "the backup does not load (dbx output above)"
  done
  [ -n "$CHECK_PID" ] || die "could not start dbx for the load check"
  info=$(DBX_URL="ws://127.0.0.1:$port" DBX_API_KEY='' $WS call server.info) || die "server.info on the restored copy failed"
  kill -TERM "$CHECK_PID"
  wait "$CHECK_PID" || die "dbx on the restored copy did not exit cleanly"
  CHECK_PID=
  rev=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rev"])' "$info")
  keys=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["keys"])' "$info")
  if grep -qi "torn" "$tmp/out.log"; then
    say "load check: the last log's copy ended inside a record (written while copying); it is dropped at load, as after a crash"
  fi
  rm -rf "$tmp"
  CHECK_TMP=
  [ "$rev" -ge "$min_rev" ] || die "the backup loads at rev $rev, below rev $min_rev seen when the backup began"
  say "load check: $bin loads the backup: $keys keys, rev $rev (>= $min_rev at the start of the backup)"
  printf '{"load_check":"ok","keys":%s,"rev":%s,"min_rev":%s}\n' "$keys" "$rev" "$min_rev"
}

info_field() { sed -n "s/^$2=//p" "$1/backup.info"; }

verify() {
  local dest=$1
  [ -f "$dest/SHA256SUMS" ] && [ -f "$dest/backup.info" ] || die "$dest is not a backup (no SHA256SUMS / backup.info)"
  (cd "$dest" && sha256sum --quiet -c SHA256SUMS) || die "$dest: checksums do not match"
  say "checksums ok ($(wc -l <"$dest/SHA256SUMS") files)"
  load_check "$dest" "$(info_field "$dest" rev)"
}

restore() {
  local src=$1 dst=$2 f
  verify "$src" >/dev/null
  if [ -e "$dst" ] && [ -n "$(ls -A "$dst")" ]; then
    die "$dst is not empty: restore only into a new or empty directory (move the old one aside first)"
  fi
  umask 077
  mkdir -p "$dst"
  chmod 0700 "$dst"
  while read -r f; do cp "$src/$f" "$dst/$f"; done < <(backup_files "$src")
  local sums
  sums=$(cd "$src" && pwd)/SHA256SUMS
  (cd "$dst" && sha256sum --quiet -c "$sums") || die "the copy in $dst does not match $sums"
  sync -f "$dst" 2>/dev/null || sync
  say "restored into $dst: $(backup_files "$dst" | paste -sd' ')"
  say "start dbx with DBX_DATA_DIR=$dst (as the service: chown -R dbx:dbx $dst); its first start begins a new epoch"
}

# One attempt at copying the newest snapshot and the logs after it into DEST.
# Returns 1 when a source file changed under it (the caller starts again).
copy_once() {
  local src=$1 dest=$2 min_gen=$3 s g prev f size sums=""
  s=$(gens "$src" snapshot .dbx | tail -1)
  [ -n "$s" ] || die "no snapshot in $src after server.save (is DBX_DATA_DIR the server's data directory?)"
  [ "$s" -ge "$min_gen" ] || die "$src holds snapshot-$s.dbx, older than the one just made (generation $min_gen): wrong DBX_DATA_DIR?"
  local files=("snapshot-$s.dbx")
  prev=$((s - 1))
  for g in $(gens "$src" aof .log); do
    [ "$g" -ge "$s" ] || continue
    [ "$g" -eq $((prev + 1)) ] || { say "log sequence moved while listing"; return 1; }
    files+=("aof-$g.log")
    prev=$g
  done
  [ "${#files[@]}" -ge 2 ] || { say "aof-$s.log is missing (a newer snapshot may have replaced it)"; return 1; }
  # Tests only: a command run between listing and copying on the first attempt (such as
  # another server.save, whose completion removes the files just listed).
  if [ "$4" = 1 ] && [ -n "${DBX_BACKUP_TEST_HOOK:-}" ]; then bash -c "$DBX_BACKUP_TEST_HOOK" >&2; fi
  for f in "${files[@]}"; do
    size=$(stat -c %s "$src/$f" 2>/dev/null) || { say "$f disappeared while copying"; return 1; }
    # Exactly SIZE bytes: the last log may grow meanwhile; what follows is later history.
    head -c "$size" "$src/$f" >"$dest/$f" 2>/dev/null || { say "$f disappeared while copying"; return 1; }
    [ "$(stat -c %s "$dest/$f")" -eq "$size" ] || { say "$f shrank while copying"; return 1; }
    local want got
    got=$(sha <"$dest/$f")
    # The source read again: the copy must equal the bytes the server wrote.
    want=$(head -c "$size" "$src/$f" 2>/dev/null | sha) || true
    [ -e "$src/$f" ] || { say "$f was removed while copying"; return 1; }
    [ "$want" = "$got" ] || die "$f: the copy differs from the source (sha256 $got vs $want)"
    sums+="$got  $f"$'\n'
  done
  printf '%s' "$sums" >"$dest/SHA256SUMS"
}

backup() {
  local dest=$1 data=${DATA_DIR:-${DBX_DATA_DIR:-./dbx-data}} saved min_gen attempt f
  [ -d "$data" ] || die "data directory $data not found (set DBX_DATA_DIR or --data-dir)"
  if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then die "$dest is not empty"; fi
  # A backup holds the whole data set: readable by its owner only.
  umask 077
  mkdir -p "$dest"
  say "asking ${DBX_URL:-ws://127.0.0.1:8080} for a snapshot"
  saved=$($WS save-and-wait "${BACKUP_SNAPSHOT_TIMEOUT:-600}") || die "no snapshot was made (the reason is above); nothing copied"
  field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print("" if v is None else v)' "$saved" "$1"; }
  min_gen=$(field generation)
  say "snapshot $min_gen done ($(field bytes) bytes in $(field ms) ms); copying from $data"
  for attempt in 1 2 3; do
    if copy_once "$data" "$dest" "$min_gen" "$attempt"; then
      break
    fi
    rm -f "$dest"/snapshot-*.dbx "$dest"/aof-*.log "$dest/SHA256SUMS"
    [ "$attempt" -lt 3 ] || die "the data directory kept changing under the copy (snapshots finishing): try again"
    say "starting the copy again (attempt $((attempt + 1)))"
  done
  local files
  files=$(cut -d' ' -f3 <"$dest/SHA256SUMS" | paste -sd' ')
  {
    echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "source_data_dir=$(cd "$data" && pwd)"
    echo "source_url=${DBX_URL:-ws://127.0.0.1:8080}"
    echo "rev=$(field rev)"
    echo "epoch=$(field epoch)"
    echo "appendfsync=$(cat "$data/POLICY" 2>/dev/null || field appendfsync)"
    echo "snapshot_generation=$min_gen"
    echo "files=$files"
  } >"$dest/backup.info"
  (cd "$dest" && sha256sum --quiet -c SHA256SUMS) || die "checksums of $dest do not match"
  sync -f "$dest" 2>/dev/null || sync
  say "copied $files ($(cd "$dest" && cat $files | wc -c) bytes), checksums verified"
  if [ "${LOAD_CHECK:-1}" = 1 ]; then
    load_check "$dest" "$(field rev)"
  fi
  say "backup in $dest"
}

CHECK_PID=
CHECK_TMP=
cleanup() {
  if [ -n "$CHECK_PID" ]; then kill -KILL "$CHECK_PID" 2>/dev/null || true; fi
  if [ -n "$CHECK_TMP" ]; then rm -rf "$CHECK_TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
DATA_DIR=
LOAD_CHECK=1
case "${1:-}" in
  --verify) [ $# -eq 2 ] || usage; verify "$2" ;;
  --restore) [ $# -eq 3 ] || usage; restore "$2" "$3" ;;
  -h | --help | "") usage ;;
  *)
    while [ $# -gt 1 ]; do
      case "$1" in
        --data-dir) DATA_DIR=$2; shift ;;
        --no-load-check) LOAD_CHECK=0 ;;
        *) usage ;;
      esac
      shift
    done
    [ $# -eq 1 ] || usage
    case "$1" in -*) usage ;; esac
    backup "$1"
    ;;
esac
