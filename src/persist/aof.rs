//! The append-only log: the record encoding (`OpLog`, and the framed records
//! `append_*` add), writing a turn's records with one `write(2)` and the fsync policy
//! (`flush`), the log-space reservation that refuses a write before it runs when the
//! disk is full, and the `everysec` fsync thread (docs/PERSISTENCE.md).

use super::{crash_point, format, load, lock, Persist};
use crate::config::AppendFsync;
use crate::proto::{write_str, Params, Raw};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Log space is reserved this far ahead when the disk has room (one `fallocate` per
/// 64 MiB of log instead of one per write).
const RESERVE_STEP: u64 = 64 << 20;
/// What a request's record may need beyond the request's own text: the record frame,
/// rev and clock, the `{"method","params"}` wrapping of batch operations, a few keys
/// evicted to make room, the turn's `rev` record.
pub(super) const RECORD_SLACK: u64 = 64 << 10;
/// While the disk is full, how often a request may try to extend the reservation.
const RESERVE_RETRY: Duration = Duration::from_millis(100);

/// A log record that was already applied (and, under `everysec`/`no`, answered) could
/// not be written or fsynced: stop, and let the restart replay what is on disk.
pub(super) fn fail_stop(why: &str) -> ! {
    log::error!("{why}; stopping (fail-stop: the restart replays what is on disk)");
    log::logger().flush();
    std::process::exit(1);
}

/// The turn's log records, and the requests being recorded into them.
///
/// Operations (`{"method":…,"params":…}` objects, comma-separated) are written straight
/// into the turn's buffer, inside an `O` frame opened at the first operation. The frame
/// stays open for the following requests of the loop turn, which all run at the same
/// clock, and is closed — rev, clock, `]`, checksums — before the turn's records are
/// written (`Persist::flush`), before any other record, when the clock changes, and
/// once it holds `TURN_FRAME_MAX` bytes. Replay applies a frame's operations in order
/// at its clock and then takes its rev, so a frame holding several requests restores
/// the same store and rev as one frame per request did; what the turn saves is a frame
/// header, a rev, a clock and a CRC pass per request (the CRC of one large frame runs
/// on crc32fast's folding path, several times faster per byte than on ~100-byte
/// records). A torn tail (power loss) can then cut several requests of the last turn
/// instead of one: requests written by the same `write(2)` — under `always` none was
/// answered before the fsync; under `everysec` they are within the last second the
/// policy may lose anyway.
#[derive(Debug, Default)]
pub struct OpLog {
    /// Complete records of this turn (and, after a failed write, those not written
    /// yet), then the open frame.
    pub(super) buf: Vec<u8>,
    /// Where the open frame starts (meaningful while `count > 0`).
    at: usize,
    /// Operations in the open frame; 0: no frame is open.
    count: usize,
    /// The clock of the open frame's operations.
    clock: u64,
    /// The rev after the last finished request in the open frame.
    rev: u64,
    /// The request being handled has written operations (`Persist::append_ops` ends it).
    fresh: bool,
}

/// An open `O` frame is closed before a request once it is this large: replay reads a
/// frame whole, and a turn under heavy load should not make one of unbounded size.
const TURN_FRAME_MAX: usize = 256 << 10;

/// The start of an `O` frame: the frame header, the kind, `rev` and `now_ms` (both
/// filled in by `close`), and the `[` of the operations array.
const OPS_HEAD: [u8; OPS_AT_ARRAY + 1] = {
    let mut h = [0u8; OPS_AT_ARRAY + 1];
    h[format::FRAME_HEADER] = format::K_OPS;
    h[OPS_AT_ARRAY] = b'[';
    h
};
const OPS_AT_REV: usize = format::FRAME_HEADER + 1;
const OPS_AT_ARRAY: usize = OPS_AT_REV + 16;

impl OpLog {
    pub(super) fn with_capacity(n: usize) -> OpLog {
        OpLog { buf: Vec::with_capacity(n), ..OpLog::default() }
    }

    fn sep(&mut self) {
        if self.count == 0 {
            self.at = self.buf.len();
            self.buf.extend_from_slice(&OPS_HEAD);
        } else {
            self.buf.push(b',');
        }
        self.count += 1;
        self.fresh = true;
    }

    /// A request running at `now_ms` starts: close the open frame first if its
    /// operations ran at another clock or it is full.
    fn begin(&mut self, now_ms: u64) {
        if self.count > 0 && (self.clock != now_ms || self.buf.len() - self.at >= TURN_FRAME_MAX) {
            self.close();
        }
        self.clock = now_ms;
    }

    /// The request that began is done; `rev` is the store's rev after it. Returns
    /// whether it logged anything.
    fn end(&mut self, rev: u64) -> bool {
        let logged = std::mem::take(&mut self.fresh);
        if logged {
            self.rev = rev;
        }
        logged
    }

    /// A key evicted by `allkeys-lru`: eviction samples at random, so it is logged as
    /// its effect, a `key.del`.
    pub fn evicted(&mut self, key: &str) {
        self.sep();
        self.buf.extend_from_slice(b"{\"method\":\"key.del\",\"params\":{\"key\":");
        write_str(&mut self.buf, key);
        self.buf.extend_from_slice(b"}}");
    }

    /// An operation as it was called. `method` is a command-table name: plain ASCII
    /// that needs no escaping (`cmd::tests` checks every name), so it is copied as is.
    pub fn op(&mut self, method: &'static str, params: &Params) {
        self.sep();
        self.buf.extend_from_slice(b"{\"method\":\"");
        self.buf.extend_from_slice(method.as_bytes());
        self.buf.extend_from_slice(b"\",\"params\":");
        params.write_json(&mut self.buf);
        self.buf.push(b'}');
    }

    /// A plain `string.set` (params `key` and `value` only) in its short form,
    /// `[key,value]` (their JSON texts as sent): the commonest logged write in half the
    /// bytes of the general form, which is what `everysec` pays for per write (the
    /// page-cache copy, the disk).
    pub fn set(&mut self, key: Raw<'_>, value: Raw<'_>) {
        self.sep();
        self.buf.push(b'[');
        self.buf.extend_from_slice(key.get().as_bytes());
        self.buf.push(b',');
        self.buf.extend_from_slice(value.get().as_bytes());
        self.buf.push(b']');
    }

    /// An operation given as a method and its params object (already JSON): the
    /// replayable form of a command whose effect is not a function of its params.
    pub fn op_json(&mut self, method: &str, params: &[u8]) {
        self.sep();
        self.buf.extend_from_slice(b"{\"method\":");
        write_str(&mut self.buf, method);
        self.buf.extend_from_slice(b",\"params\":");
        self.buf.extend_from_slice(params);
        self.buf.push(b'}');
    }

    /// No request is being recorded (or it logged nothing).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Complete the open frame, if one is open: the rev after its last request, its
    /// clock, `]`, the checksums. Only between requests (never with `fresh` set).
    fn close(&mut self) {
        if self.count == 0 {
            return;
        }
        self.buf.push(b']');
        if let Some(f) = self.buf.get_mut(self.at + OPS_AT_REV..self.at + OPS_AT_ARRAY) {
            let (r, n) = f.split_at_mut(8);
            r.copy_from_slice(&self.rev.to_le_bytes());
            n.copy_from_slice(&self.clock.to_le_bytes());
        }
        format::end_frame(&mut self.buf, self.at);
        self.count = 0;
    }

    /// The first `n` bytes of the complete records reached the file.
    fn written(&mut self, n: usize) {
        self.buf.drain(..n.min(self.complete().len()));
        self.at = self.at.saturating_sub(n);
    }

    /// The complete records (an open frame, which only a request in progress has, is
    /// never written).
    pub(super) fn complete(&self) -> &[u8] {
        let end = if self.count > 0 { self.at } else { self.buf.len() };
        self.buf.get(..end).unwrap_or_default()
    }
}

impl Persist {
    /// Why a write carried by a request of `request_len` bytes must be refused before
    /// it runs, if it must: its record would not fit in the log space that can be
    /// reserved. Runs for every request, so the common case (the reservation has room)
    /// is one comparison here, inlined; anything else is `reserve`.
    #[inline]
    pub fn refusing_for(&mut self, request_len: usize) -> Option<String> {
        if !self.on {
            return None;
        }
        let need = request_len as u64 + RECORD_SLACK;
        if self.no_fallocate || self.log_end() + need <= self.reserved_to {
            return None;
        }
        self.reserve(need).err()
    }

    /// Where the log ends once this turn's records are written.
    fn log_end(&self) -> u64 {
        self.cur_bytes + self.ops.buf.len() as u64
    }

    /// Make sure `need` more bytes fit in the log's allocated space: extend the
    /// allocation by RESERVE_STEP when the disk has room, or by just `need` when it is
    /// nearly full. Err(why) when not even that fits.
    pub(super) fn reserve(&mut self, need: u64) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let end = self.log_end();
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

    /// Where the request about to run at `now_ms` records its operations (`OpLog`),
    /// when the log is on.
    pub fn op_log(&mut self, now_ms: u64) -> Option<&mut OpLog> {
        if self.on {
            self.ops.begin(now_ms);
            Some(&mut self.ops)
        } else {
            None
        }
    }

    /// The request is done; `rev` is the store's rev after it. Its operations, if it
    /// logged any, stay in the turn's open frame (see `OpLog`), which takes this rev.
    pub fn append_ops(&mut self, rev: u64) {
        if self.ops.end(rev) {
            self.last_rev = self.last_rev.max(rev);
        }
    }

    /// Log a new epoch (after `server.flush`).
    pub fn append_epoch(&mut self, epoch: &str) {
        if !self.on {
            return;
        }
        self.ops.close();
        let b = &mut self.ops.buf;
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
        self.ops.close();
        let b = &mut self.ops.buf;
        let at = format::begin_frame(b);
        b.push(format::K_REV);
        format::put_u64(b, rev);
        format::put_u64(b, now_ms);
        format::end_frame(b, at);
        self.last_rev = rev;
    }

    pub(super) fn log_path(&self) -> PathBuf {
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
        // The turn's requests are done: their frame is complete.
        self.ops.close();
        let mut wrote = false;
        if !self.ops.complete().is_empty() {
            let mut done = 0;
            let res = loop {
                let Some(rest) = self.ops.complete().get(done..).filter(|r| !r.is_empty()) else {
                    break Ok(());
                };
                match (&*file).write(rest) {
                    Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            self.ops.written(done);
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
}

/// The `everysec` helper: fsyncs the current log once a second when it was written,
/// and any log retired by a switch. The loop only sets flags and swaps `Arc`s.
pub(super) struct Syncer {
    pub(super) shared: Arc<SyncShared>,
    pub(super) stop: Option<mpsc::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
pub(super) struct SyncShared {
    pub(super) file: Mutex<Option<Arc<File>>>,
    pub(super) retired: Mutex<Vec<Arc<File>>>,
    pub(super) dirty: AtomicBool,
    pub(super) failed: AtomicBool,
    pub(super) error: Mutex<Option<String>>,
    pub(super) last_ok_ms: std::sync::atomic::AtomicU64,
}

impl Syncer {
    pub(super) fn start(file: Arc<File>, path: PathBuf) -> io::Result<Syncer> {
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

    pub(super) fn error(&self) -> Option<String> {
        if self.shared.failed.load(Ordering::Acquire) {
            lock(&self.shared.error).clone()
        } else {
            None
        }
    }

    pub(super) fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn open_log(path: &Path, gen: u64, rev: u64, now_ms: u64, epoch: &str) -> io::Result<(File, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's operations written into the open frame make the same record as
    /// framing the finished list (the form before records were written in place), and
    /// a request that logged nothing leaves nothing.
    #[test]
    fn in_place_record_is_the_framed_op_list() {
        let mut log = OpLog::with_capacity(16);
        log.buf.extend_from_slice(b"earlier");
        log.evicted("old\"key");
        log.op_json("set.remove", br#"{"key":"s","members":["a"]}"#);
        assert_eq!(log.complete(), b"earlier", "an open frame is never written");
        log.clock = 1_700_000_000_000;
        assert!(log.end(42));
        log.close();
        let mut want = b"earlier".to_vec();
        let at = format::begin_frame(&mut want);
        want.push(format::K_OPS);
        format::put_u64(&mut want, 42);
        format::put_u64(&mut want, 1_700_000_000_000);
        want.extend_from_slice(
            br#"[{"method":"key.del","params":{"key":"old\"key"}},{"method":"set.remove","params":{"key":"s","members":["a"]}}]"#,
        );
        format::end_frame(&mut want, at);
        assert_eq!(log.complete(), &want[..]);
        assert!(log.is_empty());
        log.written(3);
        assert_eq!(log.complete(), &want[3..]);
    }
}
