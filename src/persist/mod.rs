//! Durability: the append-only log and snapshots (docs/PERSISTENCE.md). No sockets,
//! no commands (the engine hands in how a logged operation is replayed).
//!
//! - this file: the facade the engine owns (`Persist`: open, refuse, append, flush,
//!   wake-ups, close, `/health` and `/metrics` facts), the data directory's lock and
//!   its `CLEAN` and `POLICY` files;
//! - `aof`: the log file — record encoding, group commit, fsync policy, the space
//!   reservation, the `everysec` fsync thread;
//! - `snapshot`: when one starts, the fork, reaping the child, the child's writer;
//! - `load`: start-up (newest snapshot, then the logs after it);
//! - `format`: frames, checksums and value encoding shared by logs and snapshots.
//!
//! - The log records each request that changed something *as executed*: the
//!   operations (`{"method","params"}`, a batch as the list of its operations that
//!   changed something), the clock they ran at and the rev after them — the requests
//!   of one loop turn in one record (`aof::OpLog`). Replaying with
//!   the recorded clock resolves relative TTLs to the same absolute deadlines — that is
//!   the normalisation; effects that are not a function of the request and the store
//!   are logged as their effect (evictions as `key.del`, `cmd::Outcome::log_as` for
//!   random commands). Expiry is not logged: it follows from the clock; the revs it consumed
//!   are kept by `K_REV` records, with the clock the active expiry ran at.
//! - Records collect in `ops` (an `aof::OpLog`) during a loop turn; `flush` (from the reactor's
//!   `before_sleep`, before any reply is written) writes them with one `write(2)` and,
//!   under `always`, one `fdatasync` for the whole turn (group commit). Under
//!   `everysec` a helper thread fsyncs once a second; the loop never waits on it.
//! - A snapshot forks: the child writes the copy-on-write image; the parent switches to
//!   a new log at the fork and reaps the child with `waitpid(WNOHANG)` each turn.
//! - Log space is reserved ahead (`fallocate` in large steps, as etcd's WAL does):
//!   before a request runs, `refusing_for` makes sure its record will fit, and refuses
//!   the write (`unavailable`) when the reservation cannot be extended (disk full).
//!   A refused write is never applied, and writes resume once space is freed.
//! - A write or fsync error on a record already applied and answered (EIO, or a full
//!   disk where the reservation could not help) is fatal: the process exits with
//!   status 1 and systemd restarts it, replaying what is on disk (fail-stop, as
//!   PostgreSQL and etcd do). Retrying an fsync that failed would be a lie: Linux may
//!   have dropped the dirty pages and report the retry as a success.

pub mod aof;
pub mod format;
pub mod load;
pub mod snapshot;

use crate::config::{AppendFsync, Config};
use crate::proto::Json;
use crate::store::Store;
use aof::{open_log, OpLog, Syncer};
use snapshot::{Child, SaveInfo};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How often the loop wakes while a snapshot child runs (to reap it) and while the log
/// is failing (to retry).
const CHILD_POLL_MS: u64 = 20;
const RETRY_MS: u64 = 1000;
/// `DBX_TEST_CRASH_AT=<step>` aborts the process at that step (crash-safety tests
/// only; see docs/PERSISTENCE.md). Steps: `snapshot-log-switched`,
/// `snapshot-child-writing` (the child dies), `snapshot-before-rename`,
/// `snapshot-after-rename`, `aof-written` (after a log write, before its fsync).
fn crash_point(crash_at: &Option<String>, step: &str) {
    if crash_at.as_deref() == Some(step) {
        log::error!("DBX_TEST_CRASH_AT={step}: aborting");
        std::process::abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// fsync a directory so that a created or renamed entry survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The persistence state the reactor owns. `Persist::off()` does nothing at all.
pub struct Persist {
    on: bool,
    dir: PathBuf,
    policy: AppendFsync,
    file: Option<Arc<File>>,
    /// Generation of the current log (`aof-<gen>.log`).
    gen: u64,
    /// Records of this turn (and, after a failed write, those not written yet), and
    /// the record of the request being handled.
    ops: OpLog,
    /// Written to the file but not fsynced (`always` retries the fsync).
    unsynced: bool,
    /// The rev the log knows about; a higher store rev gets a `K_REV` record.
    last_rev: u64,
    /// Bytes in the logs since the last complete snapshot, and in the current log.
    log_bytes: u64,
    cur_bytes: u64,
    base_size: u64,
    snapshot_gen: Option<u64>,
    /// The log file is allocated up to this offset (`fallocate`, KEEP_SIZE).
    reserved_to: u64,
    /// The file system cannot preallocate: records are written unreserved.
    no_fallocate: bool,
    /// Why the reservation cannot be extended (disk full): writes are refused.
    no_space: Option<String>,
    /// When the next request may try to extend the reservation again.
    reserve_retry_at: Option<Instant>,
    /// When an automatic snapshot may be tried again after one could not start.
    rewrite_retry_at: Option<Instant>,
    syncer: Option<Syncer>,
    child: Option<Child>,
    last_save: Option<SaveInfo>,
    rewrite_pct: u64,
    rewrite_min: u64,
    crash_at: Option<String>,
    _lock: Option<File>,
}

/// What a start-up with persistence found.
pub struct Opened {
    pub persist: Persist,
    pub store: Store,
    pub epoch: String,
}

impl Persist {
    /// Persistence off: no file is ever touched.
    pub fn off() -> Persist {
        Persist {
            on: false,
            dir: PathBuf::new(),
            policy: AppendFsync::No,
            file: None,
            gen: 0,
            ops: OpLog::default(),
            unsynced: false,
            last_rev: 0,
            log_bytes: 0,
            cur_bytes: 0,
            base_size: 0,
            snapshot_gen: None,
            reserved_to: 0,
            no_fallocate: false,
            no_space: None,
            reserve_retry_at: None,
            rewrite_retry_at: None,
            syncer: None,
            child: None,
            last_save: None,
            rewrite_pct: 0,
            rewrite_min: 0,
            crash_at: None,
            _lock: None,
        }
    }

    /// Load the data directory and open the newest log for appending. `fresh_epoch`
    /// is used when nothing was stored yet. An error names the file and offset.
    /// `replay` runs a logged operation again (see `load::load`).
    pub fn open(cfg: &Config, fresh_epoch: &str, now_ms: u64, replay: &mut load::Replay) -> Result<Opened, String> {
        let dir = cfg.data_dir.clone();
        let lock = lock_dir(&dir)?;
        // A clean shutdown leaves a marker; its absence means the process died.
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker)
                .and_then(|()| sync_dir(&dir))
                .map_err(|e| format!("cannot remove {}: {e}", marker.display()))?;
        }
        // The policy the last run wrote its log under (not this run's: a crash under
        // `everysec` restarted with `always` may still have lost its last second).
        let last_policy = read_policy(&dir);
        let loaded = load::load_with(&dir, cfg.aof_truncate_corrupt, clean, replay)?;
        write_policy(&dir, cfg.appendfsync)?;
        // The epoch promises watchers that no acknowledged change is missing from the
        // revisions they saw. After a crash under `everysec`/`no` (the last moments'
        // acknowledged writes may not have reached the disk) or a cut of a damaged log,
        // revisions may be reused for other changes: start a new epoch so resuming
        // watchers resync instead of trusting a replay. A crashed run whose policy is
        // unknown (no POLICY file: an older DBX) counts as one that may have lost writes.
        let maybe_lost = loaded.cut_corrupt || (!clean && last_policy != Some(AppendFsync::Always));
        let epoch = match loaded.epoch.clone() {
            Some(e) if !maybe_lost => e,
            Some(_) => {
                log::warn!(
                    "{}; starting a new epoch so that watchers resynchronise",
                    if loaded.cut_corrupt {
                        "records were cut from a damaged log"
                    } else {
                        "the last run did not shut down cleanly and acknowledged writes of its last moments may be lost"
                    }
                );
                fresh_epoch.to_string()
            }
            None => fresh_epoch.to_string(),
        };
        let epoch_changed = loaded.epoch.as_deref().is_some_and(|e| e != epoch);
        let store = loaded.store;
        let mut gen = loaded.last_log.or(loaded.snapshot.map(|(g, _)| g)).unwrap_or(0);
        if loaded.last_log_v1 {
            // Written by an older DBX (frames without a length checksum): never mix
            // formats in one file; the next log in the sequence gets this version's.
            gen += 1;
            log::info!("the newest log has the older format (v1); appending to a new aof-{gen}.log");
        }
        let path = load::log_path(&dir, gen);
        let (file, cur_bytes) = open_log(&path, gen, store.rev(), now_ms, &epoch)
            .and_then(|r| sync_dir(&dir).map(|()| r))
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let file = Arc::new(file);
        let syncer = match cfg.appendfsync {
            AppendFsync::Everysec => Some(
                Syncer::start(file.clone(), path.clone()).map_err(|e| format!("cannot start the fsync thread: {e}"))?,
            ),
            _ => None,
        };
        let log_bytes = if loaded.last_log == Some(gen) { loaded.log_bytes.max(cur_bytes) } else { cur_bytes };
        let crash_at = std::env::var("DBX_TEST_CRASH_AT").ok().filter(|s| !s.is_empty());
        let persist = Persist {
            on: true,
            dir,
            policy: cfg.appendfsync,
            file: Some(file),
            gen,
            ops: OpLog::with_capacity(64 * 1024),
            unsynced: false,
            last_rev: store.rev(),
            log_bytes,
            cur_bytes,
            base_size: loaded.snapshot.map_or(0, |(_, s)| s),
            snapshot_gen: loaded.snapshot.map(|(g, _)| g),
            reserved_to: cur_bytes,
            no_fallocate: false,
            no_space: None,
            reserve_retry_at: None,
            rewrite_retry_at: None,
            syncer,
            child: None,
            last_save: None,
            rewrite_pct: cfg.aof_rewrite_percentage,
            rewrite_min: cfg.aof_rewrite_min_size,
            crash_at,
            _lock: Some(lock),
        };
        let mut persist = persist;
        if epoch_changed {
            persist.append_epoch(&epoch);
        }
        Ok(Opened { persist, store, epoch })
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn snapshot_running(&self) -> bool {
        self.child.is_some()
    }

    /// Why writes are refused now, if they are.
    pub fn refusing(&self) -> Option<String> {
        if !self.on {
            return None;
        }
        self.no_space.clone()
    }

    /// When the loop must wake up for persistence even if nothing else happens.
    pub fn wakeup_ms(&self) -> Option<u64> {
        if self.child.is_some() {
            Some(CHILD_POLL_MS)
        } else if self.refusing().is_some() || !self.ops.complete().is_empty() {
            Some(RETRY_MS)
        } else {
            None
        }
    }

    /// Shutdown: write and fsync everything, stop a running snapshot child.
    pub fn close(&mut self) {
        if !self.on {
            return;
        }
        self.flush();
        if let Some(f) = &self.file {
            match f.sync_all() {
                Ok(()) => {
                    log::info!("append-only log flushed and fsynced");
                    // Tell the next start that nothing acknowledged was lost.
                    let marker = self.dir.join(CLEAN_MARKER);
                    if let Err(e) = File::create(&marker).and_then(|m| m.sync_all()).and_then(|()| sync_dir(&self.dir))
                    {
                        log::warn!("cannot write {}: {e}", marker.display());
                    }
                }
                Err(e) => log::error!("cannot fsync {}: {e}", self.log_path().display()),
            }
        }
        if let Some(c) = self.child.take() {
            // SAFETY: plain syscalls on our own child.
            unsafe {
                libc::kill(c.pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(c.pid, &mut st, 0);
            }
            let _ = std::fs::remove_file(load::snapshot_tmp_path(&self.dir, c.gen));
            log::info!("snapshot {} abandoned at shutdown", c.gen);
        }
        if let Some(s) = self.syncer.as_mut() {
            s.stop();
        }
    }

    /// Fields for `/health` and `server.info`.
    pub fn describe(&self, j: &mut Json) {
        if !self.on {
            j.str("persistence", "off");
            return;
        }
        let err = self.refusing();
        j.str("persistence", if err.is_some() { "degraded" } else { "ok" })
            .opt_str("persistence_error", err.as_deref())
            .str("appendfsync", policy_name(self.policy))
            .u64("aof_generation", self.gen)
            .u64("aof_bytes_since_snapshot", self.log_bytes)
            .bool("snapshot_in_progress", self.child.is_some());
        if let Some(g) = self.snapshot_gen {
            j.u64("snapshot_generation", g).u64("snapshot_bytes", self.base_size);
        }
        if let Some(s) = &self.last_save {
            j.obj("last_snapshot", |o| {
                o.u64("generation", s.gen)
                    .bool("ok", s.ok)
                    .u64("ms", s.ms)
                    .u64("bytes", s.bytes)
                    .u64("fork_us", s.fork_us);
            });
        }
    }
}

impl Persist {
    /// Persistence gauges for `/metrics`: (name, help, value); `server::metrics`
    /// writes them out with the rest.
    pub fn metrics(&self, now_ms: u64) -> Vec<(&'static str, &'static str, f64)> {
        let mut m = Vec::new();
        let mut g = |name: &'static str, help: &'static str, v: f64| m.push((name, help, v));
        g("dbx_persistence_enabled", "1 when the append-only log is on", if self.on { 1.0 } else { 0.0 });
        if !self.on {
            return m;
        }
        g(
            "dbx_persistence_degraded",
            "1 while writes are refused (log cannot be written)",
            f64::from(u8::from(self.refusing().is_some())),
        );
        g("dbx_aof_generation", "Generation of the current log file", self.gen as f64);
        g("dbx_aof_bytes_since_snapshot", "Log bytes written since the last snapshot", self.log_bytes as f64);
        g("dbx_snapshot_in_progress", "1 while a snapshot child runs", f64::from(u8::from(self.child.is_some())));
        if let Some(s) = &self.last_save {
            g("dbx_last_snapshot_ok", "1 if the last snapshot succeeded", f64::from(u8::from(s.ok)));
            g("dbx_last_snapshot_duration_seconds", "How long the last snapshot took", s.ms as f64 / 1e3);
            g(
                "dbx_last_snapshot_fork_seconds",
                "How long fork() stalled the loop for the last snapshot",
                s.fork_us as f64 / 1e6,
            );
            g("dbx_last_snapshot_bytes", "Size of the last snapshot", s.bytes as f64);
        }
        // everysec: how far the disk may be behind (time since the last successful fsync).
        if let Some(sy) = &self.syncer {
            let last = sy.shared.last_ok_ms.load(Ordering::Relaxed);
            let lag = if last == 0 { 0 } else { now_ms.saturating_sub(last) };
            g(
                "dbx_fsync_lag_seconds",
                "Seconds since the fsync thread last synced the log (everysec)",
                lag as f64 / 1e3,
            );
        }
        m
    }
}

impl Drop for Persist {
    fn drop(&mut self) {
        if let Some(s) = self.syncer.as_mut() {
            s.stop();
        }
    }
}

/// Take an exclusive lock on `dir/LOCK`: two servers appending to one log would
/// interleave their records. Held (through the returned file) for the process's life.
fn lock_dir(dir: &Path) -> Result<File, String> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create DBX_DATA_DIR {}: {e}", dir.display()))?;
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("{} is in use by another dbx process (DBX_DATA_DIR must not be shared)", dir.display()));
    }
    Ok(f)
}

/// Written at a clean shutdown, removed at start.
const CLEAN_MARKER: &str = "CLEAN";
/// The fsync policy of the run that writes the log (`always`, `everysec` or `no`),
/// read by the next start to decide whether a crash can have lost acknowledged writes.
const POLICY_FILE: &str = "POLICY";

fn policy_name(p: AppendFsync) -> &'static str {
    match p {
        AppendFsync::Always => "always",
        AppendFsync::Everysec => "everysec",
        AppendFsync::No => "no",
    }
}

fn read_policy(dir: &Path) -> Option<AppendFsync> {
    let s = std::fs::read_to_string(dir.join(POLICY_FILE)).ok()?;
    [AppendFsync::Always, AppendFsync::Everysec, AppendFsync::No].into_iter().find(|&p| policy_name(p) == s.trim())
}

/// Record this run's policy durably before the first record is written under it.
fn write_policy(dir: &Path, p: AppendFsync) -> Result<(), String> {
    let path = dir.join(POLICY_FILE);
    let tmp = dir.join("POLICY.tmp");
    std::fs::write(&tmp, format!("{}\n", policy_name(p)))
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| sync_dir(dir))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
