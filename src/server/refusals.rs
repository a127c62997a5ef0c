//! Refusals in the log (issue 17): connection limit, authentication failures, rate
//! limiting and slow consumers are logged at `info`, but at most `PER_SECOND` lines a
//! second: an attack or a misconfigured client fleet must not turn the log into the
//! bottleneck. Lines over the budget are counted, and the next line logged carries the
//! count (`suppressed=N`); the metrics count every refusal regardless.

/// Refusal lines logged per second at most.
pub const PER_SECOND: u32 = 5;

#[derive(Default)]
pub struct RefusalLog {
    /// Start of the current one-second window (monotonic ms).
    window: u64,
    in_window: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether a refusal at `now_ms` may be logged; if so, how many were suppressed
    /// since the last one logged (to put on the line).
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms >= self.window + 1000 {
            self.window = now_ms;
            self.in_window = 0;
        }
        if self.in_window >= PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_a_second_then_the_count() {
        let mut r = RefusalLog::default();
        let logged: Vec<_> = (0..20).map(|i| r.admit(1000 + i)).collect();
        assert_eq!(logged.iter().filter(|x| x.is_some()).count(), 5);
        assert_eq!(r.admit(2000), Some(15), "the next second's first line carries the count");
        assert_eq!(r.admit(2001), Some(0));
    }
}
