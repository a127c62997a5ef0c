//! Operating-system helpers the reactor (and `dbx-bench`) need: the open-files
//! limit, a random seed, the wall clock, systemd's readiness protocol and a cheap
//! cycle counter for latency.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock unix ms.
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A random-enough 64-bit seed without a crate: /dev/urandom, else time and pid.
pub fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_le_bytes(b) | 1;
    }
    (unix_ms_now() ^ ((std::process::id() as u64) << 32)) | 1
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (one descriptor per connection) and
/// return the limit in force. Never fails: on error the current soft limit stays.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let mut want = lim.rlim_max;
        if want == libc::RLIM_INFINITY {
            // Linux refuses "infinity" for NOFILE; its ceiling is fs.nr_open.
            want = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1 << 20);
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = want;
        }
    }
    lim.rlim_cur
}

// ---- systemd readiness protocol (`sd_notify`): datagrams to `$NOTIFY_SOCKET`, written
// by hand — a dozen lines over `UnixDatagram` — so the binary needs no libsystemd.

/// Send `state` (e.g. `READY=1`) if the service manager asked for notifications.
/// Errors are ignored: notification is advisory.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract namespace socket.
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

/// Half of `$WATCHDOG_USEC` in ms, when systemd's watchdog is on for this process.
pub fn watchdog_interval_ms() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| (usec / 2000).max(1))
}

// ---- A cheap clock for per-request latency: the CPU's time-stamp counter, calibrated
// once against the monotonic clock. `Instant::now()` costs a vDSO call (~100 ns in
// this VM, two per request); `rdtsc` costs a few nanoseconds. Only used for the
// latency histogram, never for timers or deadlines.

#[derive(Clone, Copy, Debug)]
pub struct Cycles {
    /// Nanoseconds per counter tick × 2^16 (fixed point); 0 = use `Instant`.
    ns_per_tick_q16: u64,
    origin: Instant,
}

#[cfg(target_arch = "x86_64")]
fn ticks() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn ticks() -> u64 {
    0
}

impl Cycles {
    /// Calibrate over `window` (a few ms at start-up). Falls back to `Instant` when
    /// the counter does not advance sensibly.
    pub fn calibrate(window: Duration) -> Cycles {
        let origin = Instant::now();
        let t0 = ticks();
        std::thread::sleep(window);
        let t1 = ticks();
        let ns = origin.elapsed().as_nanos() as u64;
        let dt = t1.wrapping_sub(t0);
        let q16 = if dt > 1000 && t1 > t0 { (ns << 16) / dt } else { 0 };
        Cycles { ns_per_tick_q16: q16, origin }
    }

    /// An opaque stamp.
    pub fn stamp(&self) -> u64 {
        if self.ns_per_tick_q16 == 0 {
            self.origin.elapsed().as_nanos() as u64
        } else {
            ticks()
        }
    }

    /// Microseconds between two stamps.
    pub fn micros(&self, from: u64, to: u64) -> u64 {
        let d = to.saturating_sub(from);
        if self.ns_per_tick_q16 == 0 {
            d / 1000
        } else {
            ((d as u128 * self.ns_per_tick_q16 as u128) >> 16) as u64 / 1000
        }
    }
}

#[cfg(test)]
mod tests;

/// `host:port` as an address: a literal, else the first name resolution.
pub fn bind_addr(host: &str, port: u16) -> std::io::Result<std::net::SocketAddr> {
    format!("{host}:{port}").parse().or_else(|_| {
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))
    })
}
