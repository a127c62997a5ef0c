//! Per-connection token bucket (`DBX_WS_RATE_LIMIT` requests per minute, burst = the same).
//!
//! Pure: the current time is always passed in as milliseconds, so the bucket is tested
//! without sleeping.
//!
//! The bucket counts in *units* of 1/60 000 of a token. Refilling `per_minute` tokens per
//! 60 000 ms is then exactly `per_minute` units per millisecond, so refill is continuous
//! (no per-second steps) and entirely integer: no float drift however long a connection
//! lives, and no rounding loss when time is advanced in many small steps.

/// Units per token: one token per minute is one unit per millisecond.
const UNITS_PER_TOKEN: u64 = 60_000;

/// A token bucket refilled continuously at `per_minute` tokens per minute, holding at
/// most `per_minute` tokens. `per_minute == 0` means unlimited.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens per minute, which is also the refill in units per millisecond.
    per_minute: u32,
    /// Current content in units (1/60 000 token).
    units: u64,
    /// Time up to which refill has been accounted.
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens refilled at `per_minute` per minute.
    /// `per_minute == 0` means unlimited: every take succeeds.
    pub fn new(per_minute: u32, now_ms: u64) -> Self {
        TokenBucket { per_minute, units: Self::capacity_units_for(per_minute), last_ms: now_ms }
    }

    /// Whether this bucket never refuses (`per_minute == 0`).
    pub fn is_unlimited(&self) -> bool {
        self.per_minute == 0
    }

    /// Burst capacity in tokens (equal to `per_minute`; 0 when unlimited).
    pub fn capacity(&self) -> u32 {
        self.per_minute
    }

    fn capacity_units_for(per_minute: u32) -> u64 {
        u64::from(per_minute).saturating_mul(UNITS_PER_TOKEN)
    }

    /// Credits the time elapsed since the last call. A clock that goes backwards credits
    /// nothing and does not move `last_ms` back, so it cannot mint tokens later either.
    fn refill(&mut self, now_ms: u64) {
        if now_ms <= self.last_ms {
            return;
        }
        let elapsed = now_ms - self.last_ms;
        let cap = Self::capacity_units_for(self.per_minute);
        let added = elapsed.saturating_mul(u64::from(self.per_minute));
        self.units = self.units.saturating_add(added).min(cap);
        self.last_ms = now_ms;
    }

    /// Milliseconds until the bucket holds `target_units`, at least 1.
    fn wait_for(&self, target_units: u64) -> u64 {
        let deficit = target_units.saturating_sub(self.units);
        let rate = u64::from(self.per_minute).max(1);
        deficit.div_ceil(rate).max(1)
    }

    /// Takes `n` tokens at once, all or nothing.
    ///
    /// * `Ok(())` — taken (always, when unlimited or `n == 0`).
    /// * `Err(ms)` — nothing taken; `ms >= 1` is how long until `n` tokens will be there
    ///   (the `retry_after_ms` to report).
    /// * If `n` exceeds the burst capacity the take can never succeed; the error then
    ///   carries the time until the bucket is full (at least 1), and the caller should
    ///   refuse such a batch outright rather than ask the client to retry it.
    pub fn try_take(&mut self, n: u32, now_ms: u64) -> Result<(), u64> {
        if self.per_minute == 0 || n == 0 {
            return Ok(());
        }
        self.refill(now_ms);
        if n > self.per_minute {
            return Err(self.wait_for(Self::capacity_units_for(self.per_minute)));
        }
        let need = u64::from(n) * UNITS_PER_TOKEN;
        if self.units >= need {
            self.units -= need;
            Ok(())
        } else {
            Err(self.wait_for(need))
        }
    }

    /// Whole tokens available now (`u32::MAX` when unlimited).
    pub fn available(&mut self, now_ms: u64) -> u32 {
        if self.per_minute == 0 {
            return u32::MAX;
        }
        self.refill(now_ms);
        u32::try_from(self.units / UNITS_PER_TOKEN).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_and_drains() {
        let mut b = TokenBucket::new(3, 1_000);
        assert_eq!(b.available(1_000), 3);
        assert_eq!(b.try_take(1, 1_000), Ok(()));
        assert_eq!(b.try_take(1, 1_000), Ok(()));
        assert_eq!(b.try_take(1, 1_000), Ok(()));
        assert_eq!(b.available(1_000), 0);
        // 3 per minute = one token every 20 s.
        assert_eq!(b.try_take(1, 1_000), Err(20_000));
    }

    #[test]
    fn continuous_refill() {
        let mut b = TokenBucket::new(60, 0); // one token per second
        for _ in 0..60 {
            assert!(b.try_take(1, 0).is_ok());
        }
        assert_eq!(b.try_take(1, 0), Err(1_000));
        assert_eq!(b.try_take(1, 400), Err(600));
        assert_eq!(b.try_take(1, 999), Err(1));
        assert_eq!(b.try_take(1, 1_000), Ok(()));
        assert_eq!(b.try_take(1, 1_000), Err(1_000));
        assert_eq!(b.available(2_500), 1);
        assert_eq!(b.available(10_000), 9);
    }

    #[test]
    fn never_exceeds_capacity() {
        let mut b = TokenBucket::new(10, 0);
        assert_eq!(b.available(1_000_000_000), 10);
        assert!(b.try_take(10, 1_000_000_000).is_ok());
        assert!(b.try_take(1, 1_000_000_000).is_err());
    }

    #[test]
    fn all_or_nothing() {
        let mut b = TokenBucket::new(10, 0);
        assert!(b.try_take(7, 0).is_ok());
        // 3 left: asking for 5 takes nothing.
        let wait = b.try_take(5, 0);
        assert_eq!(wait, Err(2 * 6_000));
        assert_eq!(b.available(0), 3);
        assert!(b.try_take(3, 0).is_ok());
        assert_eq!(b.available(0), 0);
        // The reported wait is exactly enough.
        let mut b = TokenBucket::new(10, 0);
        assert!(b.try_take(10, 0).is_ok());
        let Err(ms) = b.try_take(4, 0) else { panic!("should be limited") };
        assert!(b.try_take(4, ms - 1).is_err());
        assert!(b.try_take(4, ms).is_ok());
    }

    #[test]
    fn oversized_request_reports_time_to_full() {
        let mut b = TokenBucket::new(10, 0);
        // Full bucket: still refused, retry hint at least 1 ms.
        assert_eq!(b.try_take(11, 0), Err(1));
        assert_eq!(b.available(0), 10, "nothing taken");
        assert!(b.try_take(10, 0).is_ok());
        assert_eq!(b.try_take(11, 0), Err(60_000));
        assert_eq!(b.try_take(u32::MAX, 30_000), Err(30_000));
    }

    #[test]
    fn unlimited() {
        let mut b = TokenBucket::new(0, 0);
        assert!(b.is_unlimited());
        for i in 0..10_000 {
            assert!(b.try_take(1, i).is_ok());
        }
        assert!(b.try_take(u32::MAX, 0).is_ok());
        assert_eq!(b.available(0), u32::MAX);
    }

    #[test]
    fn zero_take_is_free() {
        let mut b = TokenBucket::new(1, 0);
        assert!(b.try_take(1, 0).is_ok());
        assert!(b.try_take(0, 0).is_ok());
        assert!(b.try_take(1, 0).is_err());
    }

    #[test]
    fn no_drift_with_small_steps() {
        // 1000/min = 1 token per 60 ms; step 1 ms at a time for 10 minutes.
        let mut b = TokenBucket::new(1_000, 0);
        assert!(b.try_take(1_000, 0).is_ok());
        let mut taken = 0u64;
        for t in 1..=600_000u64 {
            if b.try_take(1, t).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 10_000, "exactly rate × time, no drift");
        // Odd rate that does not divide a minute evenly.
        let mut b = TokenBucket::new(7, 0);
        assert!(b.try_take(7, 0).is_ok());
        let mut taken = 0u64;
        for t in 1..=60_000u64 * 3 {
            if b.try_take(1, t).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 21);
    }

    #[test]
    fn clock_going_backwards_mints_nothing() {
        let mut b = TokenBucket::new(60, 10_000);
        assert!(b.try_take(60, 10_000).is_ok());
        assert!(b.try_take(1, 5_000).is_err());
        assert_eq!(b.available(5_000), 0);
        // Time resumes from the latest seen instant, not from the earlier one.
        assert_eq!(b.available(10_999), 0);
        assert_eq!(b.available(11_000), 1);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut b = TokenBucket::new(u32::MAX, 0);
        assert_eq!(b.available(u64::MAX), u32::MAX);
        assert!(b.try_take(u32::MAX, u64::MAX).is_ok());
        assert_eq!(b.try_take(1, u64::MAX), Err(60_000u64.div_ceil(u64::from(u32::MAX))));
        let mut b = TokenBucket::new(1, u64::MAX - 5);
        assert!(b.try_take(1, u64::MAX).is_ok());
        assert!(b.try_take(1, u64::MAX).is_err());
    }
}
