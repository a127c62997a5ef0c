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
mod tests;
