//! Durability: the append-only log and snapshots (docs/PERSISTENCE.md). No sockets.
//!
//! - The log records each request that changed something *as executed*: the
//!   operations (`{"method","params"}`, a batch as the list of its operations that
//!   changed something), the clock they ran at and the rev after them. Replaying with
//!   the recorded clock resolves relative TTLs to the same absolute deadlines — that is
//!   the normalisation; effects that are not a function of the request and the store
//!   are logged as their effect (evictions as `key.del`, `Ctx::log_override` for random
//!   commands). Expiry is not logged: it follows from the clock; the revs it consumed
//!   are kept by `K_REV` records, with the clock the active expiry ran at.
//! - Records collect in `pending` during a loop turn; `flush` (from the reactor's
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
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the loop wakes while a snapshot child runs (to reap it) and while the log
/// is failing (to retry).
const CHILD_POLL_MS: u64 = 20;
const RETRY_MS: u64 = 1000;
/// Log space is reserved this far ahead when the disk has room (one `fallocate` per
/// 64 MiB of log instead of one per write).
const RESERVE_STEP: u64 = 64 << 20;
/// What a request's record may need beyond the request's own text: the record frame,
/// rev and clock, the `{"method","params"}` wrapping of batch operations, a few keys
/// evicted to make room, the turn's `rev` record.
const RECORD_SLACK: u64 = 64 << 10;
/// While the disk is full, how often a request may try to extend the reservation.
const RESERVE_RETRY: Duration = Duration::from_millis(100);

/// A log record that was already applied (and, under `everysec`/`no`, answered) could
/// not be written or fsynced: stop, and let the restart replay what is on disk.
fn fail_stop(why: &str) -> ! {
    log::error!("{why}; stopping (fail-stop: the restart replays what is on disk)");
    log::logger().flush();
    std::process::exit(1);
}

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

/// The `everysec` helper: fsyncs the current log once a second when it was written,
/// and any log retired by a switch. The loop only sets flags and swaps `Arc`s.
struct Syncer {
    shared: Arc<SyncShared>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct SyncShared {
    file: Mutex<Option<Arc<File>>>,
    retired: Mutex<Vec<Arc<File>>>,
    dirty: AtomicBool,
    failed: AtomicBool,
    error: Mutex<Option<String>>,
    last_ok_ms: std::sync::atomic::AtomicU64,
}

impl Syncer {
    fn start(file: Arc<File>, path: PathBuf) -> io::Result<Syncer> {
        let shared = Arc::new(SyncShared::default());
        *lock(&shared.file) = Some(file);
        let (tx, rx) = mpsc::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new().name("dbx-fsync".into()).spawn(move || loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let retired = std::mem::take(&mut *lock(&sh.retired));
            let mut err = None;
            for f in retired {
                if let Err(e) = f.sync_data() {
                    err = Some(format!("cannot fsync a retired log: {e}"));
                }
            }
            if sh.dirty.swap(false, Ordering::AcqRel) {
                let f = lock(&sh.file).clone();
                if let Some(f) = f {
                    if let Err(e) = f.sync_data() {
                        sh.dirty.store(true, Ordering::Release);
                        err = Some(format!("cannot fsync {}: {e}", path.display()));
                    }
                }
            }
            match err {
                Some(e) => {
                    *lock(&sh.error) = Some(e);
                    sh.failed.store(true, Ordering::Release);
                }
                None => {
                    if sh.failed.swap(false, Ordering::AcqRel) {
                        *lock(&sh.error) = None;
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    sh.last_ok_ms.store(now, Ordering::Relaxed);
                }
            }
        })?;
        Ok(Syncer { shared, stop: Some(tx), thread: Some(thread) })
    }

    fn error(&self) -> Option<String> {
        if self.shared.failed.load(Ordering::Acquire) {
            lock(&self.shared.error).clone()
        } else {
            None
        }
    }

    fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Child {
    pid: libc::pid_t,
    gen: u64,
    started: Instant,
    /// How long fork() stalled the loop (copying the page tables).
    fork_us: u64,
}

#[derive(Clone, Debug)]
struct SaveInfo {
    gen: u64,
    ok: bool,
    ms: u64,
    bytes: u64,
    fork_us: u64,
}

/// The persistence state the reactor owns. `Persist::off()` does nothing at all.
pub struct Persist {
    on: bool,
    dir: PathBuf,
    policy: AppendFsync,
    file: Option<Arc<File>>,
    /// Generation of the current log (`aof-<gen>.log`).
    gen: u64,
    /// Records of this turn (and, after a failed write, those not written yet).
    pending: Vec<u8>,
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
            pending: Vec::new(),
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
    pub fn open(cfg: &Config, fresh_epoch: &str, now_ms: u64) -> Result<Opened, String> {
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
        let loaded = load::load(&dir, cfg.aof_truncate_corrupt, clean)?;
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
            pending: Vec::with_capacity(64 * 1024),
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

    /// Why a write carried by a request of `request_len` bytes must be refused before
    /// it runs, if it must: its record would not fit in the log space that can be
    /// reserved. Cheap while the reservation has room (one comparison).
    pub fn refusing_for(&mut self, request_len: usize) -> Option<String> {
        if !self.on {
            return None;
        }
        self.reserve(request_len as u64 + RECORD_SLACK).err()
    }

    /// Make sure `need` more bytes fit in the log's allocated space: extend the
    /// allocation by RESERVE_STEP when the disk has room, or by just `need` when it is
    /// nearly full. Err(why) when not even that fits.
    fn reserve(&mut self, need: u64) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let end = self.cur_bytes + self.pending.len() as u64;
        if self.no_fallocate || end + need <= self.reserved_to {
            return Ok(());
        }
        if let (Some(why), Some(at)) = (&self.no_space, self.reserve_retry_at) {
            if Instant::now() < at {
                return Err(why.clone());
            }
        }
        let Some(file) = self.file.clone() else {
            return Err("the append-only log is not open".to_string());
        };
        let mut last_err = io::Error::from_raw_os_error(libc::ENOSPC);
        for target in [end + need.max(RESERVE_STEP), end + need] {
            let (off, len) = (self.cur_bytes as libc::off_t, (target - self.cur_bytes) as libc::off_t);
            // SAFETY: fallocate on a descriptor we own; KEEP_SIZE leaves the file size
            // alone, so a reader (and a crash) never sees the reserved blocks.
            let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, len) };
            if r == 0 {
                self.reserved_to = target;
                self.reserve_retry_at = None;
                if let Some(why) = self.no_space.take() {
                    log::warn!("log space is available again (after: {why}); writes are accepted");
                }
                return Ok(());
            }
            last_err = io::Error::last_os_error();
            match last_err.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => continue,
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                    log::warn!(
                        "{}: the file system cannot preallocate ({last_err}); a full disk will stop the server instead of refusing writes",
                        self.log_path().display()
                    );
                    self.no_fallocate = true;
                    return Ok(());
                }
                _ => break,
            }
        }
        let why = format!("cannot reserve space in {}: {last_err}", self.log_path().display());
        if self.no_space.as_deref() != Some(&why) {
            log::error!("{why}; refusing writes until space is freed");
        }
        self.no_space = Some(why.clone());
        self.reserve_retry_at = Some(Instant::now() + RESERVE_RETRY);
        Err(why)
    }

    /// Log one request: `ops` is the comma-separated list of its operations (from
    /// `Ctx::log`), `rev` the store's rev after it, `now_ms` the clock it ran at.
    pub fn append_ops(&mut self, rev: u64, now_ms: u64, ops: &[u8]) {
        if !self.on {
            return;
        }
        let b = &mut self.pending;
        let at = format::begin_frame(b);
        b.push(format::K_OPS);
        format::put_u64(b, rev);
        format::put_u64(b, now_ms);
        b.push(b'[');
        b.extend_from_slice(ops);
        b.push(b']');
        format::end_frame(b, at);
        self.last_rev = self.last_rev.max(rev);
    }

    /// Log a new epoch (after `server.flush`).
    pub fn append_epoch(&mut self, epoch: &str) {
        if !self.on {
            return;
        }
        let b = &mut self.pending;
        let at = format::begin_frame(b);
        b.push(format::K_EPOCH);
        format::put_str16(b, epoch);
        format::end_frame(b, at);
    }

    /// Keep revs consumed without a logged request (active expiry at clock `now_ms`):
    /// a rev never goes back, also across a restart. The clock lets replay expire the
    /// same keys there, so they do not expire (and consume revs) a second time after
    /// the restart.
    pub fn note_rev(&mut self, rev: u64, now_ms: u64) {
        if !self.on || rev <= self.last_rev {
            return;
        }
        let b = &mut self.pending;
        let at = format::begin_frame(b);
        b.push(format::K_REV);
        format::put_u64(b, rev);
        format::put_u64(b, now_ms);
        format::end_frame(b, at);
        self.last_rev = rev;
    }

    fn log_path(&self) -> PathBuf {
        load::log_path(&self.dir, self.gen)
    }

    /// Write this turn's records (and fsync under `always`). Called before any reply
    /// of the turn is written. Returns only once everything logged so far is where the
    /// policy promises it (written; under `always` also on disk): a failure stops the
    /// process (see the module comment).
    pub fn flush(&mut self) {
        if !self.on {
            return;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        let mut wrote = false;
        if !self.pending.is_empty() {
            let mut done = 0;
            let res = loop {
                let Some(rest) = self.pending.get(done..).filter(|r| !r.is_empty()) else {
                    break Ok(());
                };
                match (&*file).write(rest) {
                    Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            self.pending.drain(..done);
            self.cur_bytes += done as u64;
            self.log_bytes += done as u64;
            if done > 0 {
                wrote = true;
                self.unsynced = true;
            }
            if let Err(e) = res {
                fail_stop(&format!("cannot write {}: {e}", self.log_path().display()));
            }
        }
        if wrote {
            crash_point(&self.crash_at, "aof-written");
        }
        match self.policy {
            AppendFsync::Always if self.unsynced => {
                if let Err(e) = file.sync_data() {
                    fail_stop(&format!("cannot fsync {}: {e}", self.log_path().display()));
                }
                self.unsynced = false;
            }
            AppendFsync::Everysec if wrote => {
                if let Some(s) = &self.syncer {
                    s.shared.dirty.store(true, Ordering::Release);
                }
            }
            _ => {}
        }
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::error) {
            // Acknowledged records (everysec) may not be on disk, and a retried fsync
            // cannot be trusted to say whether they are.
            fail_stop(&e);
        }
        if self.no_space.is_some() {
            // Lets /health recover once space is freed, even when no write comes.
            let _ = self.reserve(RECORD_SLACK);
        }
    }

    /// When the loop must wake up for persistence even if nothing else happens.
    pub fn wakeup_ms(&self) -> Option<u64> {
        if self.child.is_some() {
            Some(CHILD_POLL_MS)
        } else if self.refusing().is_some() || !self.pending.is_empty() {
            Some(RETRY_MS)
        } else {
            None
        }
    }

    /// Start a snapshot if the log has grown enough (DBX_AOF_REWRITE_PERCENTAGE over
    /// the last snapshot, and at least DBX_AOF_REWRITE_MIN_SIZE).
    pub fn maybe_rewrite(&mut self, store: &Store, epoch: &str, now_ms: u64) {
        if !self.on || self.child.is_some() || self.rewrite_pct == 0 || self.no_space.is_some() {
            return;
        }
        if self.rewrite_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        if self.log_bytes >= self.rewrite_min
            && self.log_bytes.saturating_mul(100) >= self.base_size.saturating_mul(self.rewrite_pct)
        {
            log::info!(
                "log has {} bytes since the last snapshot ({} bytes): starting a snapshot",
                self.log_bytes,
                self.base_size
            );
            self.start_snapshot(store, epoch, now_ms);
        }
    }

    /// Switch to a new log and fork a child that writes the store as it is now.
    /// False if one is already running, persistence is off, or it could not start.
    pub fn start_snapshot(&mut self, store: &Store, epoch: &str, now_ms: u64) -> bool {
        if !self.on || self.child.is_some() {
            return false;
        }
        // Everything so far belongs to the current log.
        self.flush();
        let gen = self.gen + 1;
        let path = load::log_path(&self.dir, gen);
        let (file, bytes) =
            match open_log(&path, gen, store.rev(), now_ms, epoch).and_then(|r| sync_dir(&self.dir).map(|()| r)) {
                Ok(r) => r,
                Err(e) => {
                    // Nothing is lost: the current log goes on. Try again later.
                    let _ = std::fs::remove_file(&path);
                    log::error!("snapshot not started: cannot create {}: {e}", path.display());
                    self.rewrite_retry_at = Some(Instant::now() + Duration::from_secs(10));
                    return false;
                }
            };
        crash_point(&self.crash_at, "snapshot-log-switched");
        let file = Arc::new(file);
        if let Some(old) = self.file.replace(file.clone()) {
            if let Some(s) = &self.syncer {
                // The last second of the old log still needs its fsync.
                lock(&s.shared.retired).push(old);
                *lock(&s.shared.file) = Some(file);
            }
        }
        self.gen = gen;
        self.cur_bytes = bytes;
        self.reserved_to = bytes;
        self.log_bytes += bytes;
        let tmp = load::snapshot_tmp_path(&self.dir, gen);
        let crash_mid = self.crash_at.as_deref() == Some("snapshot-child-writing");
        // SAFETY: fork() in a process whose other threads (the fsync helper) hold no
        // lock the child needs: the child only reads the store image, writes one file
        // through std::fs, and leaves with _exit (no destructors, no atexit, no log).
        let t_fork = Instant::now();
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                log::error!("snapshot not started: fork failed: {}", io::Error::last_os_error());
                false
            }
            0 => {
                // The child needs no inherited descriptor: without this it would keep
                // client sockets (a close by the parent would send no FIN until the
                // child exits) and the listener open.
                close_inherited_fds();
                yield_to_the_loop();
                let code = match snapshot::write(&tmp, gen, store, epoch, now_ms, crash_mid) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                // SAFETY: leaving the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let fork_us = t_fork.elapsed().as_micros() as u64;
                log::info!("snapshot {gen} started (child {pid}, {} keys, fork took {fork_us} us)", store.len());
                self.child = Some(Child { pid, gen, started: t_fork, fork_us });
                true
            }
        }
    }

    /// Reap a finished snapshot child (never blocks) and put its file in place.
    pub fn poll_child(&mut self) {
        let Some(c) = &self.child else { return };
        let (pid, gen, started, fork_us) = (c.pid, c.gen, c.started, c.fork_us);
        let mut status: libc::c_int = 0;
        // SAFETY: plain syscall on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return;
        }
        self.child = None;
        let ok = r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        let ms = started.elapsed().as_millis() as u64;
        let tmp = load::snapshot_tmp_path(&self.dir, gen);
        if !ok {
            log::error!("snapshot {gen} failed (child {pid}, status {status:#x}); the log is kept, nothing is lost");
            let _ = std::fs::remove_file(&tmp);
            self.last_save = Some(SaveInfo { gen, ok: false, ms, bytes: 0, fork_us });
            return;
        }
        crash_point(&self.crash_at, "snapshot-before-rename");
        let dst = load::snapshot_path(&self.dir, gen);
        if let Err(e) = std::fs::rename(&tmp, &dst).and_then(|()| sync_dir(&self.dir)) {
            log::error!("snapshot {gen}: cannot rename {}: {e}", tmp.display());
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        crash_point(&self.crash_at, "snapshot-after-rename");
        let bytes = std::fs::metadata(&dst).map_or(0, |m| m.len());
        // Older snapshots and logs are now covered by this one.
        if let Ok((snaps, logs)) = load::scan(&self.dir) {
            for g in snaps.into_iter().filter(|&g| g < gen) {
                let _ = std::fs::remove_file(load::snapshot_path(&self.dir, g));
            }
            for g in logs.into_iter().filter(|&g| g < gen) {
                let _ = std::fs::remove_file(load::log_path(&self.dir, g));
            }
        }
        self.base_size = bytes;
        self.snapshot_gen = Some(gen);
        self.log_bytes = if self.gen == gen { self.cur_bytes } else { 0 };
        log::info!("snapshot {gen} done: {bytes} bytes in {ms} ms");
        self.last_save = Some(SaveInfo { gen, ok: true, ms, bytes, fork_us });
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
    /// Persistence series for `/metrics` (Prometheus text exposition).
    pub fn metrics(&self, now_ms: u64) -> String {
        use std::fmt::Write;
        let mut m = String::new();
        let mut g = |name: &str, help: &str, v: f64| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
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

/// The snapshot child inherits the loop's CPU pinning (`taskset -c 0`): it would then
/// compete with the loop for that one core. Let it run on any core, at a lower
/// priority, so the loop keeps its core while the image is written.
fn yield_to_the_loop() {
    // SAFETY: plain syscalls on the calling (child) process; failures are harmless.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).clamp(1, 1024) as usize;
        for cpu in 0..n {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Close every descriptor above stderr (in the snapshot child).
fn close_inherited_fds() {
    // SAFETY: plain syscalls; close_range exists since Linux 5.9, the loop is the
    // fallback for older kernels.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..65_536 {
                libc::close(fd);
            }
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

/// Open log `path` for appending; a new (or empty) one gets its magic and header,
/// fsynced. Returns the file and its size.
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

fn open_log(path: &Path, gen: u64, rev: u64, now_ms: u64, epoch: &str) -> io::Result<(File, u64)> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut len = f.metadata()?.len();
    if len == 0 {
        let mut b = format::AOF_MAGIC.to_vec();
        format::header(&mut b, gen, rev, now_ms, epoch);
        f.write_all(&b)?;
        f.sync_all()?;
        len = b.len() as u64;
    }
    Ok((f, len))
}
