//! Start-up: find the newest complete snapshot, load it, replay the logs after it.
//!
//! Files are discovered by name (no manifest): `snapshot-N.dbx` is the whole store at
//! the moment log `aof-N.log` was started, so the state is the newest snapshot S plus
//! `aof-S.log`, `aof-(S+1).log`, … in order (no snapshot: the empty store plus the logs
//! from `aof-0.log`). A snapshot only gets its final name once it is complete and
//! fsynced; `*.tmp` files are leftovers of an interrupted snapshot and are removed.

use super::format::{self, Cursor, FrameReader, Next, AOF_MAGIC, SNAP_MAGIC};
use crate::proto::{array_elements, request, Params};
use crate::store::Store;
use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn snapshot_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("snapshot-{gen}.dbx"))
}

pub fn snapshot_tmp_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("snapshot-{gen}.dbx.tmp"))
}

pub fn log_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("aof-{gen}.log"))
}

/// The generations of the snapshots and logs in `dir`, each sorted ascending.
/// Removes leftover `*.tmp` files.
pub fn scan(dir: &Path) -> std::io::Result<(Vec<u64>, Vec<u64>)> {
    let (mut snaps, mut logs) = (Vec::new(), Vec::new());
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") && name.starts_with("snapshot-") {
            log::warn!("removing {} (left by an interrupted snapshot)", ent.path().display());
            let _ = fs::remove_file(ent.path());
        } else if let Some(g) =
            name.strip_prefix("snapshot-").and_then(|r| r.strip_suffix(".dbx")).and_then(|g| g.parse::<u64>().ok())
        {
            snaps.push(g);
        } else if let Some(g) =
            name.strip_prefix("aof-").and_then(|r| r.strip_suffix(".log")).and_then(|g| g.parse::<u64>().ok())
        {
            logs.push(g);
        }
    }
    snaps.sort_unstable();
    logs.sort_unstable();
    Ok((snaps, logs))
}

/// Runs one logged operation again: (store, the clock it ran at, method, params).
pub type Replay<'r> = dyn FnMut(&mut Store, u64, &str, &Params<'_>) + 'r;

/// What start-up found.
pub struct Loaded {
    pub store: Store,
    pub epoch: Option<String>,
    /// The newest complete snapshot: generation and size in bytes.
    pub snapshot: Option<(u64, u64)>,
    /// The log to append to (the newest), if any.
    pub last_log: Option<u64>,
    /// Bytes of the logs after the snapshot (the rewrite trigger compares it).
    pub log_bytes: u64,
    pub records: u64,
    /// `--aof-truncate-corrupt` cut records away: acknowledged writes may be gone.
    pub cut_corrupt: bool,
    /// The newest log was written by an older DBX (format v1): appends go to a new one.
    pub last_log_v1: bool,
}

fn damaged(path: &Path, offset: u64, why: &str) -> String {
    format!(
        "{} is damaged at byte offset {offset}: {why}. See docs/PERSISTENCE.md \"Recovery\" \
         (start once with --aof-truncate-corrupt to cut the log back to that offset, losing what follows it)",
        path.display()
    )
}

/// Load everything in `dir` (created if missing). `clean`: the last run shut down
/// cleanly (its log was flushed and fsynced), so a torn tail cannot be a write cut
/// short by a crash: it is damage, refused like damage in the middle.
/// Operations are replayed through the engine's command policy
/// (`engine::policy::Replayer`); `load_with` takes another replay.
pub fn load(dir: &Path, truncate_corrupt: bool, clean: bool) -> Result<Loaded, String> {
    let mut r = crate::engine::policy::Replayer::default();
    load_with(dir, truncate_corrupt, clean, &mut |s, now, m, p| r.apply(s, now, m, p))
}

/// `load`, with `replay` running each logged operation again (`store`, the clock it
/// ran at, method, params): the server passes the engine's, so the loading itself
/// knows no commands.
pub fn load_with(dir: &Path, truncate_corrupt: bool, clean: bool, replay: &mut Replay) -> Result<Loaded, String> {
    let t0 = Instant::now();
    fs::create_dir_all(dir).map_err(|e| format!("cannot create DBX_DATA_DIR {}: {e}", dir.display()))?;
    let (snaps, logs) = scan(dir).map_err(|e| format!("cannot read DBX_DATA_DIR {}: {e}", dir.display()))?;
    let mut out = Loaded {
        store: Store::new(),
        epoch: None,
        snapshot: None,
        last_log: None,
        log_bytes: 0,
        records: 0,
        cut_corrupt: false,
        last_log_v1: false,
    };
    let base = snaps.last().copied();
    if let Some(g) = base {
        let path = snapshot_path(dir, g);
        let size = load_snapshot(&path, &mut out)?;
        out.snapshot = Some((g, size));
        log::info!(
            "loaded {} ({} keys, {size} bytes) in {} ms",
            path.display(),
            out.store.len(),
            t0.elapsed().as_millis()
        );
    }
    // The logs that follow the snapshot must be contiguous from its generation.
    let start = base.unwrap_or(0);
    let mut want: Vec<u64> = logs.iter().copied().filter(|&g| g >= start).collect();
    if let Some(&first) = want.first() {
        if first != start {
            return Err(format!(
                "{} is missing: the logs in {} start at aof-{first}.log, which does not follow {}",
                log_path(dir, start).display(),
                dir.display(),
                base.map_or("an empty store".to_string(), |g| format!("snapshot-{g}.dbx"))
            ));
        }
    }
    for w in want.windows(2) {
        if let [a, b] = w {
            if b - a != 1 {
                return Err(format!(
                    "{} is missing between aof-{a}.log and aof-{b}.log",
                    log_path(dir, a + 1).display()
                ));
            }
        }
    }
    let t1 = Instant::now();
    let n = want.len();
    let mut i = 0;
    while i < n {
        let g = want.get(i).copied().unwrap_or(0);
        let last = i + 1 == n;
        let path = log_path(dir, g);
        match replay_log(&path, last && !clean, &mut out, replay)? {
            None => {}
            Some((offset, why)) => {
                if !truncate_corrupt {
                    return Err(damaged(&path, offset, why));
                }
                log::warn!(
                    "{}: {why} at byte offset {offset}; --aof-truncate-corrupt: cutting the log back to it",
                    path.display()
                );
                cut(&path, offset)?;
                out.cut_corrupt = true;
                out.log_bytes += offset;
                for &later in want.get(i + 1..).unwrap_or_default() {
                    let p = log_path(dir, later);
                    let to = p.with_extension("log.discarded");
                    log::warn!("moving {} aside to {}", p.display(), to.display());
                    fs::rename(&p, &to).map_err(|e| format!("cannot move {}: {e}", p.display()))?;
                }
                want.truncate(i + 1);
                break;
            }
        }
        i += 1;
    }
    out.last_log = want.last().copied();
    if !want.is_empty() {
        log::info!(
            "replayed {} records from {} log file(s) in {} ms (rev {})",
            out.records,
            want.len(),
            t1.elapsed().as_millis(),
            out.store.rev()
        );
    }
    Ok(out)
}

/// Cut `path` back to `len` bytes, durably.
pub fn cut(path: &Path, len: u64) -> Result<(), String> {
    let f = OpenOptions::new().write(true).open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.set_len(len).and_then(|()| f.sync_all()).map_err(|e| format!("cannot truncate {}: {e}", path.display()))
}

fn load_snapshot(path: &Path, out: &mut Loaded) -> Result<u64, String> {
    let io = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = File::open(path).map_err(io)?;
    let mut r = match FrameReader::open(file, SNAP_MAGIC).map_err(io)? {
        Ok(r) => r,
        Err(Next::Corrupt { offset, why }) => return Err(damaged(path, offset, why)),
        Err(_) => return Err(damaged(path, 0, "shorter than its header")),
    };
    let size = r.len();
    let mut header = None;
    let mut entries = 0u64;
    loop {
        let at = r.offset;
        let payload = match r.next_frame().map_err(io)? {
            Next::Frame(p) => p,
            Next::Eof | Next::Torn { .. } => return Err(damaged(path, at, "the snapshot ends before its end record")),
            Next::Corrupt { offset, why } => return Err(damaged(path, offset, why)),
        };
        let bad = |why| damaged(path, at, why);
        if header.is_none() {
            let h = format::parse_header(&payload).ok_or_else(|| bad("no header"))?;
            out.store.set_rev(h.rev);
            out.epoch = Some(h.epoch.clone());
            header = Some(h);
            continue;
        }
        let now = header.as_ref().map_or(0, |h| h.created_ms);
        let mut c = Cursor::new(&payload);
        match c.u8() {
            Some(format::K_ENTRY) => {
                let (exp, key) = c.u64().zip(c.str()).ok_or_else(|| bad("short entry"))?;
                let value = format::decode_value(&mut c).ok_or_else(|| bad("bad value"))?;
                out.store.set(key, value, exp, now);
                entries += 1;
            }
            Some(format::K_END) => {
                let n = c.u64().ok_or_else(|| bad("short end record"))?;
                if n != entries {
                    return Err(bad("entry count does not match the end record"));
                }
                return Ok(size);
            }
            _ => return Err(bad("unknown record kind")),
        }
    }
}

/// Replay one log into `out.store`. Ok(Some((offset, why))) = corruption at `offset`
/// (the caller refuses to start or, when asked to, cuts the log there). `may_be_torn`:
/// this is the newest log and the last run crashed, so an incomplete last record is
/// the write the crash cut short: it is cut back here, with a warning. Anywhere else
/// an incomplete record is damage.
fn replay_log(
    path: &Path,
    may_be_torn: bool,
    out: &mut Loaded,
    replay: &mut Replay,
) -> Result<Option<(u64, &'static str)>, String> {
    let io = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = File::open(path).map_err(io)?;
    let mut r = match FrameReader::open(file, AOF_MAGIC).map_err(io)? {
        Ok(r) => r,
        Err(Next::Corrupt { offset, why }) => return Ok(Some((offset, why))),
        Err(_) if may_be_torn => {
            // Created but its header never made it to disk: start it again.
            log::warn!("{}: shorter than its header (interrupted creation); resetting it", path.display());
            cut(path, 0)?;
            return Ok(None);
        }
        Err(_) => return Ok(Some((0, "shorter than its header"))),
    };
    out.last_log_v1 = r.version() == 1;
    let mut have_header = false;
    loop {
        let at = r.offset;
        let payload = match r.next_frame().map_err(io)? {
            Next::Frame(p) => p,
            Next::Eof => break,
            Next::Torn { offset } if may_be_torn => {
                log::warn!(
                    "{}: torn last record at byte offset {offset} ({} bytes after it); cutting the log back to offset {offset}",
                    path.display(),
                    r.len() - offset
                );
                cut(path, if have_header { offset } else { 0 })?;
                out.log_bytes += offset;
                return Ok(None);
            }
            Next::Torn { offset } => {
                return Ok(Some((offset, "incomplete record where no crash can have cut a write short")));
            }
            Next::Corrupt { offset, why } => return Ok(Some((offset, why))),
        };
        if !have_header {
            let Some(h) = format::parse_header(&payload) else {
                return Ok(Some((at, "no header")));
            };
            out.store.set_rev(h.rev);
            out.epoch = Some(h.epoch);
            have_header = true;
            continue;
        }
        let mut c = Cursor::new(&payload);
        match c.u8() {
            Some(format::K_OPS) => {
                let Some((rev, now_ms)) = c.u64().zip(c.u64()) else {
                    return Ok(Some((at, "short record")));
                };
                if !apply(&mut out.store, now_ms, c.rest(), replay) {
                    return Ok(Some((at, "a record that does not parse")));
                }
                out.store.set_rev(rev);
            }
            Some(format::K_REV) => {
                let Some(rev) = c.u64() else {
                    return Ok(Some((at, "short record")));
                };
                // The active expiry that consumed these revs, at its clock: without it
                // the keys it removed would still be here and expire again after the
                // restart, taking new revs (and sending `expired` events a second time).
                if let Some(now_ms) = c.u64() {
                    out.store.expire_cycle(now_ms, usize::MAX);
                }
                out.store.set_rev(rev);
            }
            Some(format::K_EPOCH) => {
                let Some(e) = c.str16() else {
                    return Ok(Some((at, "short record")));
                };
                out.epoch = Some(e.to_string());
            }
            _ => return Ok(Some((at, "unknown record kind"))),
        }
        // Keys expired during replay were reported when they expired the first time:
        // nothing to publish (and nothing to accumulate over a long log).
        out.store.take_gone();
        out.records += 1;
    }
    out.log_bytes += r.len();
    Ok(None)
}

/// Run one logged request again at its recorded clock (`now_ms`): relative TTLs
/// resolve to the same absolute deadlines. False if the record does not parse.
fn apply(store: &mut Store, now_ms: u64, json: &[u8], replay: &mut Replay) -> bool {
    let Ok(text) = std::str::from_utf8(json) else {
        return false;
    };
    // The log holds what the scanner accepted when the request arrived: the same
    // parser as a batch's operations reads it back.
    let Some(ops) = request::ops(text) else {
        return false;
    };
    // Every operation is read before any runs: a record that does not parse changes
    // nothing (it may be cut away by --aof-truncate-corrupt).
    let mut parsed = Vec::with_capacity(ops.len());
    for raw in ops {
        let op = match array_elements(raw) {
            // The short form of a plain `string.set` (`OpLog::set`): `[key,value]`.
            Some(kv) => match kv.as_slice() {
                [key, value] => Some((
                    Cow::Borrowed("string.set"),
                    Params::from_fields(vec![(Cow::Borrowed("key"), *key), (Cow::Borrowed("value"), *value)]),
                )),
                _ => None,
            },
            None => request::op(raw).ok().and_then(|op| op.params().ok().map(|p| (op.method, p))),
        };
        let Some(op) = op else {
            return false;
        };
        parsed.push(op);
    }
    for (method, params) in parsed {
        replay(store, now_ms, &method, &params);
    }
    true
}
