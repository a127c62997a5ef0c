//! A cheap clock for per-request latency: the CPU's time-stamp counter, calibrated
//! once against the monotonic clock. `Instant::now()` costs a vDSO call (~100 ns in
//! this VM, two per request); `rdtsc` costs a few nanoseconds. Only used for the
//! latency histogram, never for timers or deadlines.

use std::time::{Duration, Instant};

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
mod tests {
    use super::*;

    #[test]
    fn measures_sleeps_roughly() {
        let c = Cycles::calibrate(Duration::from_millis(5));
        let a = c.stamp();
        std::thread::sleep(Duration::from_millis(20));
        let us = c.micros(a, c.stamp());
        assert!((15_000..2_000_000).contains(&us), "{us} µs");
    }
}
