//! Counters and histograms for `/metrics` (Prometheus text exposition, version 0.0.4),
//! written by hand: a few counters and two fixed-bucket histograms do not need a crate,
//! and recording stays a couple of integer additions on the loop.

use crate::proto::Code;
use hashbrown::HashMap;
use std::fmt::Write;

/// Request-handling latency buckets, microseconds (upper bounds; +Inf implied).
pub const LATENCY_BUCKETS_US: [u64; 14] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 100_000];
/// Event-loop turn duration buckets, microseconds.
pub const LOOP_BUCKETS_US: [u64; 10] = [10, 50, 100, 500, 1000, 5000, 10_000, 50_000, 100_000, 1_000_000];

#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Vec<u64>,
    sum: u64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0, count: 0 }
    }

    pub fn record(&mut self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Prometheus histogram series with cumulative buckets; values are exported in
    /// seconds as the convention asks (the bucket bounds are µs).
    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Everything the reactor counts.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub accepted: u64,
    /// Refused handshakes and HTTP errors by JSON error code (`overloaded`, `unauthorized` …).
    pub refused: HashMap<&'static str, u64>,
    pub closed: HashMap<&'static str, u64>,
    pub requests: HashMap<&'static str, u64>,
    pub errors: HashMap<Code, u64>,
    pub latency: Histogram,
    pub loop_turns: Histogram,
    pub bytes_in_closed: u64,
    pub bytes_out_closed: u64,
    pub rate_limited: u64,
    pub ops_total: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accepted: 0,
            refused: HashMap::new(),
            closed: HashMap::new(),
            requests: HashMap::new(),
            errors: HashMap::new(),
            latency: Histogram::new(&LATENCY_BUCKETS_US),
            loop_turns: Histogram::new(&LOOP_BUCKETS_US),
            bytes_in_closed: 0,
            bytes_out_closed: 0,
            rate_limited: 0,
            ops_total: 0,
        }
    }
}

/// Values sampled at scrape time (gauges the reactor does not keep as counters).
pub struct Gauges<'a> {
    pub connections: u64,
    pub sockets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub keys: u64,
    pub used_memory: u64,
    pub maxmemory: u64,
    pub expired: u64,
    pub evicted: u64,
    pub rev: u64,
    pub subscriptions: u64,
    pub watchers: u64,
    pub deliveries: u64,
    pub uptime_s: u64,
    pub version: &'a str,
    /// More gauges (persistence): (name, help, value).
    pub extra: Vec<(&'static str, &'static str, f64)>,
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

fn labelled<K: AsRef<str>>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    items: impl Iterator<Item = (K, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let mut rows: Vec<(String, u64)> = items.map(|(k, v)| (k.as_ref().to_string(), v)).collect();
    rows.sort();
    for (k, v) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
    }
}

impl Metrics {
    pub fn count_request(&mut self, method: &'static str, latency_us: u64) {
        *self.requests.entry(method).or_insert(0) += 1;
        self.latency.record(latency_us);
    }

    pub fn count_error(&mut self, code: Code) {
        *self.errors.entry(code).or_insert(0) += 1;
    }

    pub fn count_refused(&mut self, code: &'static str) {
        *self.refused.entry(code).or_insert(0) += 1;
    }

    pub fn count_closed(&mut self, reason: &'static str) {
        *self.closed.entry(reason).or_insert(0) += 1;
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut m = String::with_capacity(8192);
        let _ = writeln!(
            m,
            "# HELP dbx_build_info Build information\n# TYPE dbx_build_info gauge\ndbx_build_info{{version=\"{}\"}} 1",
            g.version
        );
        counter(&mut m, "dbx_uptime_seconds", "Seconds since the server started", "gauge", g.uptime_s);
        counter(&mut m, "dbx_connections", "Open WebSocket connections", "gauge", g.connections);
        counter(&mut m, "dbx_sockets", "Open TCP sockets, handshakes included", "gauge", g.sockets);
        counter(&mut m, "dbx_connections_accepted_total", "TCP connections accepted", "counter", self.accepted);
        labelled(
            &mut m,
            "dbx_connections_refused_total",
            "HTTP requests refused, by error code",
            "reason",
            self.refused.iter().map(|(k, v)| (*k, *v)),
        );
        labelled(
            &mut m,
            "dbx_connections_closed_total",
            "Connections closed, by reason",
            "reason",
            self.closed.iter().map(|(k, v)| (*k, *v)),
        );
        counter(
            &mut m,
            "dbx_connections_closed_idle_total",
            "Connections closed by the liveness timeout",
            "counter",
            self.closed.get("idle_timeout").copied().unwrap_or(0),
        );
        counter(
            &mut m,
            "dbx_slow_consumers_total",
            "Connections cut off for exceeding twice DBX_WS_MAX_OUTBOUND",
            "counter",
            self.closed.get("slow_consumer").copied().unwrap_or(0),
        );
        labelled(
            &mut m,
            "dbx_requests_total",
            "Requests handled, by method",
            "method",
            self.requests.iter().map(|(k, v)| (*k, *v)),
        );
        labelled(
            &mut m,
            "dbx_errors_total",
            "Error replies, by code",
            "code",
            self.errors.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        counter(
            &mut m,
            "dbx_operations_total",
            "Operations executed (each batch operation once)",
            "counter",
            self.ops_total,
        );
        counter(&mut m, "dbx_rate_limited_total", "Requests refused by the token bucket", "counter", self.rate_limited);
        self.latency.write(&mut m, "dbx_request_duration_seconds", "Request handling time on the loop");
        self.loop_turns.write(
            &mut m,
            "dbx_event_loop_turn_seconds",
            "Time the loop spends per turn (lag seen by every connection)",
        );
        counter(&mut m, "dbx_received_bytes_total", "Bytes read from sockets", "counter", g.bytes_in);
        counter(&mut m, "dbx_sent_bytes_total", "Bytes written to sockets", "counter", g.bytes_out);
        counter(&mut m, "dbx_keys", "Keys in the store", "gauge", g.keys);
        counter(&mut m, "dbx_used_memory_bytes", "Estimated store memory", "gauge", g.used_memory);
        counter(&mut m, "dbx_maxmemory_bytes", "DBX_MAXMEMORY (0 = off)", "gauge", g.maxmemory);
        counter(&mut m, "dbx_expired_keys_total", "Keys removed by expiry", "counter", g.expired);
        counter(&mut m, "dbx_evicted_keys_total", "Keys evicted under DBX_MAXMEMORY", "counter", g.evicted);
        counter(&mut m, "dbx_revision", "The store's global revision", "gauge", g.rev);
        counter(&mut m, "dbx_pubsub_subscriptions", "Channel and pattern subscriptions", "gauge", g.subscriptions);
        counter(&mut m, "dbx_watchers", "Connections watching keys", "gauge", g.watchers);
        counter(&mut m, "dbx_pubsub_deliveries_total", "Pub/sub events delivered", "counter", g.deliveries);
        for &(name, help, v) in &g.extra {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&LATENCY_BUCKETS_US);
        for v in [0, 1, 3, 7, 1_000_000] {
            h.record(v);
        }
        let mut s = String::new();
        h.write(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.000001\"} 2"));
        assert!(s.contains("x_bucket{le=\"0.000005\"} 3"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 5"));
        assert!(s.contains("x_count 5"));
    }
}
