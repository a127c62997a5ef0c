//! Snapshots, whole: when one starts (`maybe_rewrite`, `server.save`), the start (a
//! new log, then `fork`), reaping the child and putting its file in place
//! (`poll_child`), and the child's writer (`write`).
//!
//! The writer runs in the forked child (the copy-on-write image of the store at the
//! fork), so it must not take locks another thread of the parent could have held at
//! the fork: no logging, no stdout; it reports through its exit status.

use super::aof::open_log;
use super::format::{self, SNAP_MAGIC};
use super::{crash_point, load, lock, sync_dir, Persist};
use crate::store::Store;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries are framed one by one but written through a 1 MiB buffer.
const BUF: usize = 1 << 20;

/// Write the store to `tmp` and fsync it. `crash_mid`: abort halfway (test hook).
pub fn write(tmp: &Path, gen: u64, store: &Store, epoch: &str, now_ms: u64, crash_mid: bool) -> io::Result<()> {
    let file = File::create(tmp)?;
    let mut w = BufWriter::with_capacity(BUF, file);
    let mut b = Vec::with_capacity(64 * 1024);
    b.extend_from_slice(SNAP_MAGIC);
    format::header(&mut b, gen, store.rev(), now_ms, epoch);
    let half = store.len() / 2;
    let mut n = 0u64;
    for it in store.iter() {
        let at = format::begin_frame(&mut b);
        b.push(format::K_ENTRY);
        format::put_u64(&mut b, it.expires_at);
        format::put_str(&mut b, &it.key);
        format::encode_value(&it.value, &mut b);
        format::end_frame(&mut b, at);
        n += 1;
        if b.len() >= 60 * 1024 {
            w.write_all(&b)?;
            b.clear();
        }
        if crash_mid && n as usize == half {
            w.write_all(&b)?;
            w.flush()?;
            std::process::abort();
        }
    }
    let at = format::begin_frame(&mut b);
    b.push(format::K_END);
    format::put_u64(&mut b, n);
    format::end_frame(&mut b, at);
    w.write_all(&b)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

pub(super) struct Child {
    pub(super) pid: libc::pid_t,
    pub(super) gen: u64,
    pub(super) started: Instant,
    /// How long fork() stalled the loop (copying the page tables).
    pub(super) fork_us: u64,
}

#[derive(Clone, Debug)]
pub(super) struct SaveInfo {
    pub(super) gen: u64,
    pub(super) ok: bool,
    pub(super) ms: u64,
    pub(super) bytes: u64,
    pub(super) fork_us: u64,
}

impl Persist {
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
                let code = match write(&tmp, gen, store, epoch, now_ms, crash_mid) {
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
