//! Refusals in the log (issue 17): connection limit, authentication failures, rate
//! limiting and slow consumers are logged at `info`, but at most `PER_SECOND` lines a
//! second: an attack or a misconfigured client fleet must not turn the log into the
//! bottleneck. Lines over the budget are counted, and the next line logged carries the
//! count (`suppressed=N`); the metrics count every refusal regardless.

use super::Server;

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

impl Server {
    /// A request refused by the connection's token bucket.
    pub(super) fn log_rate_limited(&mut self, t: usize) {
        let (Some(suppressed), Some(c)) = (self.refusal_log.admit(self.mono), self.conns.get(t)) else {
            return;
        };
        log::info!(
            peer:% = c.peer,
            key = c.identity.label.as_str(),
            suppressed;
            "refused a request on #{}: rate limit of {} requests per minute",
            c.serial,
            self.cfg.ws_rate_limit
        );
    }

    /// A consumer cut off with 1008: `queued` bytes were waiting, `dropped` unsent.
    pub(super) fn log_slow_consumer(&mut self, t: usize, queued: usize, dropped: usize) {
        let (Some(suppressed), Some(c)) = (self.refusal_log.admit(self.mono), self.conns.get(t)) else {
            return;
        };
        log::info!(
            peer:% = c.peer,
            key = c.identity.label.as_str(),
            queued,
            dropped,
            suppressed;
            "refused #{}: slow consumer closed with 1008 (output queued beyond twice DBX_WS_MAX_OUTBOUND, {} bytes)",
            c.serial,
            self.cfg.ws_max_outbound
        );
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
