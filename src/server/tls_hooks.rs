//! Where the reactor meets TLS (issue 15): a TLS connection per accepted socket, the
//! handshake counters and histogram, `/health` and `/metrics` fields, the certificate
//! expiry warning. Kept out of mod.rs so the reactor only calls small hooks.

use super::conn::{CloseReason, Conn};
use super::metrics::Histogram;
use super::tls::{self, TlsConn, TlsEvent};
use super::Server;
use crate::proto::Json;
use hashbrown::HashMap;
use std::fmt::Write;

/// How often the certificate's expiry is checked (and warned about).
pub const CERT_CHECK_MS: u64 = 3_600_000;

/// TLS counters for `/metrics`.
pub struct TlsStats {
    pub full: u64,
    pub resumed: u64,
    pub failures: HashMap<&'static str, u64>,
    pub duration: Histogram,
}

impl Default for TlsStats {
    fn default() -> Self {
        TlsStats { full: 0, resumed: 0, failures: HashMap::new(), duration: Histogram::new(&tls::HANDSHAKE_BUCKETS_US) }
    }
}

/// A new socket on a TLS port gets its rustls connection (with the configuration in
/// force now). false: it could not (the caller drops the socket).
pub(super) fn attach(setup: Option<&tls::TlsSetup>, c: &mut Conn) -> bool {
    {
        let Some(setup) = setup else {
            return true;
        };
        let Some(config) = setup.config() else {
            return false;
        };
        match TlsConn::new(config) {
            Ok(t) => {
                if let Some(w) = c.wire() {
                    w.tls = Some(Box::new(t));
                }
                true
            }
            Err(e) => {
                log::error!("cannot start TLS for {}: {e}", c.peer);
                false
            }
        }
    }
}

impl Server {
    /// After a read: count a finished handshake, flush what rustls wants to send
    /// (handshake messages, alerts), and name a TLS failure as the close reason.
    pub(super) fn tls_after_read(&mut self, t: usize) {
        if self.tls.is_none() {
            return;
        }
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let Some(tls) = c.wire().and_then(|w| w.tls.as_deref_mut()) else {
            return;
        };
        let event = tls.take_event();
        let wants_write = tls.wants_write();
        let failed = tls.failure.is_some();
        if failed && c.dead.is_some() {
            c.dead = Some(CloseReason::TlsError);
        }
        if let Some(TlsEvent::Handshake { micros, resumed }) = event {
            if resumed {
                self.tls_stats.resumed += 1;
            } else {
                self.tls_stats.full += 1;
            }
            self.tls_stats.duration.record(micros);
            log::debug!("TLS handshake #{t} in {micros} µs{}", if resumed { " (resumed)" } else { "" });
        }
        if wants_write {
            self.mark_dirty(t);
        }
    }

    /// A connection is freed: a handshake that never finished is a failure, with the
    /// reason rustls gave or why the connection ended.
    pub(super) fn tls_freed(&mut self, c: &Conn) {
        let Some(tls) = c.wire_ref().and_then(|w| w.tls.as_deref()) else {
            return;
        };
        if !tls.is_handshaking() {
            return;
        }
        let reason = tls.failure.unwrap_or(match c.dead {
            Some(CloseReason::HandshakeTimeout) => "timeout",
            Some(CloseReason::Shutdown) => "shutdown",
            _ => "eof",
        });
        *self.tls_stats.failures.entry(reason).or_insert(0) += 1;
        log::debug!("TLS handshake from {} failed: {reason}", c.peer);
    }

    /// `/health`: `"tls":true` and the certificate's `not_after`.
    pub(super) fn tls_describe(&self, j: &mut Json) {
        match &self.tls {
            None => {
                j.bool("tls", false);
            }
            Some(s) => {
                j.bool("tls", true);
                let na = s.facts.not_after.map(tls::rfc3339_secs);
                j.opt_str("tls_not_after", na.as_deref());
            }
        }
    }

    /// `/metrics` series.
    pub(super) fn tls_metrics(&self, m: &mut String) {
        let on = self.tls.is_some();
        let _ = writeln!(m, "# HELP dbx_tls_enabled 1 when the port serves TLS\n# TYPE dbx_tls_enabled gauge");
        let _ = writeln!(m, "dbx_tls_enabled {}", u8::from(on));
        if !on {
            return;
        }
        let _ = writeln!(
            m,
            "# HELP dbx_tls_handshakes_total Completed TLS handshakes\n# TYPE dbx_tls_handshakes_total counter"
        );
        let _ = writeln!(m, "dbx_tls_handshakes_total{{kind=\"full\"}} {}", self.tls_stats.full);
        let _ = writeln!(m, "dbx_tls_handshakes_total{{kind=\"resumed\"}} {}", self.tls_stats.resumed);
        let _ = writeln!(
            m,
            "# HELP dbx_tls_handshake_failures_total TLS handshakes that did not complete, by reason\n\
             # TYPE dbx_tls_handshake_failures_total counter"
        );
        let mut reasons: Vec<_> = self.tls_stats.failures.iter().collect();
        reasons.sort();
        for (r, n) in reasons {
            let _ = writeln!(m, "dbx_tls_handshake_failures_total{{reason=\"{r}\"}} {n}");
        }
        self.tls_stats.duration.write(
            m,
            "dbx_tls_handshake_duration_seconds",
            "TLS handshake duration (accept to finished)",
        );
        if let Some(na) = self.tls.as_ref().and_then(|s| s.facts.not_after) {
            let _ = writeln!(
                m,
                "# HELP dbx_tls_cert_not_after_timestamp_seconds notAfter of the served certificate\n\
                 # TYPE dbx_tls_cert_not_after_timestamp_seconds gauge\ndbx_tls_cert_not_after_timestamp_seconds {na}"
            );
        }
    }

    /// Warn (at start, on reload and hourly) once the certificate has fewer than
    /// `EXPIRY_WARNING_DAYS` left.
    pub(super) fn tls_check_expiry(&self) {
        let Some(s) = &self.tls else { return };
        let now = (self.unix_ms / 1000) as i64;
        match s.days_left(now) {
            Some(d) if d < 0 => log::error!("TLS {} has EXPIRED: clients will refuse it", s.describe()),
            Some(d) if d < tls::EXPIRY_WARNING_DAYS => {
                log::warn!("TLS {} expires in {d} days: renew it and send SIGHUP", s.describe())
            }
            _ => {}
        }
    }
}
