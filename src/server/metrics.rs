//! Counters and histograms for `/metrics` (Prometheus text exposition, version 0.0.4),
//! written by hand: a few counters and two fixed-bucket histograms do not need a crate,
//! and recording stays a couple of integer additions on the loop.

use crate::proto::Code;
use hashbrown::HashMap;
use std::fmt::Write;
use std::path::Path;

/// Request-handling latency buckets, microseconds (upper bounds; +Inf implied).
pub const LATENCY_BUCKETS_US: [u64; 14] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 100_000];
/// Gateway mode: time from a command queued for Redis to its reply, microseconds (a
/// loopback Redis answers in 50-500 µs; DBX_BACKEND_TIMEOUT is seconds).
pub const BACKEND_BUCKETS_US: [u64; 14] =
    [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000];
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
    pub fn write(&self, out: &mut String, name: &str, help: &str) {
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

    /// One labelled series of a histogram family (`labels` like `kind="exec"`); the
    /// caller writes the family's HELP and TYPE once, before its first series.
    pub fn write_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Everything the reactor counts.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub accepted: u64,
    /// Refused handshakes and HTTP errors by JSON error code (`overloaded`, `unauthorized` …).
    pub refused: HashMap<&'static str, u64>,
    pub closed: HashMap<&'static str, u64>,
    /// WebSocket connections opened with an API key, by the key's label (bounded by the
    /// number of configured keys; JWT subjects are not counted here, they are unbounded).
    pub opened_by_key: HashMap<String, u64>,
    /// Requests by method, in first-seen order (at most one row per table name).
    pub requests: Vec<(&'static str, u64)>,
    /// Index in `requests` of the last request's method: a run of one method (the
    /// common pipeline) is counted with a pointer comparison instead of hashing its name.
    last_method: usize,
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
            opened_by_key: HashMap::new(),
            requests: Vec::new(),
            last_method: 0,
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
    /// DBX_WS_MAX_CONNECTIONS, so that dashboards and alerts can say "near the limit".
    pub max_connections: u64,
    pub sockets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// What the engine reports (store and hub), as it reports it.
    pub engine: crate::engine::Gauges,
    pub maxmemory: u64,
    pub uptime_s: u64,
    pub version: &'a str,
    /// More gauges (persistence): (name, help, value).
    pub extra: Vec<(&'static str, &'static str, f64)>,
    /// The data directory when persistence is on (for the last snapshot's time).
    pub data_dir: Option<&'a Path>,
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
        match self.requests.get_mut(self.last_method) {
            Some((m, n)) if std::ptr::eq(*m, method) || *m == method => *n += 1,
            _ => {
                let i = self.requests.iter().position(|(m, _)| *m == method).unwrap_or_else(|| {
                    self.requests.push((method, 0));
                    self.requests.len() - 1
                });
                if let Some((_, n)) = self.requests.get_mut(i) {
                    *n += 1;
                }
                self.last_method = i;
            }
        }
        self.latency.record(latency_us);
    }

    pub fn count_error(&mut self, code: Code) {
        *self.errors.entry(code).or_insert(0) += 1;
    }

    pub fn count_refused(&mut self, code: &'static str) {
        *self.refused.entry(code).or_insert(0) += 1;
    }

    pub fn count_opened_by_key(&mut self, label: &str) {
        match self.opened_by_key.get_mut(label) {
            Some(n) => *n += 1,
            None => {
                self.opened_by_key.insert(label.to_string(), 1);
            }
        }
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
        counter(
            &mut m,
            "dbx_connections_max",
            "DBX_WS_MAX_CONNECTIONS: above it upgrades are refused (overloaded)",
            "gauge",
            g.max_connections,
        );
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
            "dbx_connections_opened_by_key_total",
            "WebSocket connections opened with an API key, by the key's label (or fingerprint)",
            "key",
            self.opened_by_key.iter().map(|(k, v)| (k.as_str(), *v)),
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
        counter(&mut m, "dbx_keys", "Keys in the store", "gauge", g.engine.keys);
        counter(&mut m, "dbx_used_memory_bytes", "Estimated store memory", "gauge", g.engine.used_memory);
        counter(&mut m, "dbx_maxmemory_bytes", "DBX_MAXMEMORY (0 = off)", "gauge", g.maxmemory);
        counter(&mut m, "dbx_expired_keys_total", "Keys removed by expiry", "counter", g.engine.expired);
        counter(&mut m, "dbx_evicted_keys_total", "Keys evicted under DBX_MAXMEMORY", "counter", g.engine.evicted);
        counter(&mut m, "dbx_revision", "The store's global revision", "gauge", g.engine.rev);
        counter(
            &mut m,
            "dbx_pubsub_subscriptions",
            "Channel and pattern subscriptions",
            "gauge",
            g.engine.subscriptions,
        );
        counter(&mut m, "dbx_watchers", "Connections watching keys", "gauge", g.engine.watchers);
        counter(&mut m, "dbx_pubsub_deliveries_total", "Pub/sub events delivered", "counter", g.engine.deliveries);
        for &(name, help, v) in &g.extra {
            gauge_f(&mut m, name, help, "gauge", v);
        }
        if let Some(dir) = g.data_dir {
            snapshot_series(&mut m, dir, &g.extra);
        }
        process_series(&mut m);
        m
    }
}

fn gauge_f(out: &mut String, name: &str, help: &str, kind: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

/// `dbx_last_snapshot_timestamp_seconds` and `dbx_last_snapshot_success`.
///
/// The time comes from the newest complete `snapshot-N.dbx` on disk (its mtime: the
/// file is renamed into place once written), so it survives restarts, which an
/// alert on "no snapshot for N hours" needs; 0 means there is none. Only names
/// without `.tmp` are looked at, and nothing is removed (`persist::load::scan` would
/// delete the file a running snapshot child is writing). Success is the outcome of
/// the last snapshot of this run as the persistence layer exports it
/// (`dbx_last_snapshot_ok`), 1 when none was attempted yet, as Redis reports
/// `rdb_last_bgsave_status:ok` before its first save. The directory holds a handful
/// of files: one readdir per scrape is cheap next to rendering the page.
fn snapshot_series(out: &mut String, dir: &Path, persist: &[(&str, &str, f64)]) {
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let gen = name.to_str()?.strip_prefix("snapshot-")?.strip_suffix(".dbx")?.parse::<u64>().ok()?;
            Some((gen, e.path()))
        })
        .max_by_key(|(gen, _)| *gen);
    let ts = newest
        .and_then(|(_, p)| std::fs::metadata(p).ok()?.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    gauge_f(
        out,
        "dbx_last_snapshot_timestamp_seconds",
        "Unix time the newest complete snapshot on disk was written (0 = none)",
        "gauge",
        ts,
    );
    let ok = persist.iter().find(|(name, _, _)| *name == "dbx_last_snapshot_ok").map_or(1.0, |g| g.2);
    gauge_f(out, "dbx_last_snapshot_success", "1 unless the last snapshot of this run failed", "gauge", ok);
}

/// Boot time plus the process's start in clock ticks since boot; both fixed for the
/// life of the process, so /proc/stat is read once.
fn start_time_seconds(start_ticks: Option<u64>, tck: f64) -> Option<f64> {
    static START: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok())
        })?;
        Some(btime as f64 + start_ticks? as f64 / tck)
    })
}

/// Open descriptors, counted off the loop. Listing /proc/self/fd is O(descriptors) in
/// the kernel: 4-12 ms at 10,000 connections on the development VM, a stall every
/// connection would see at each scrape. So the first scrape counts inline (few
/// descriptors at start-up) and every scrape then asks a helper thread for a fresh
/// count, which the next scrape reports: the value is at most one scrape old.
fn open_fds() -> Option<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::sync::OnceLock;
    static COUNT: AtomicU64 = AtomicU64::new(u64::MAX);
    static ASK: OnceLock<Option<SyncSender<()>>> = OnceLock::new();
    fn count() -> Option<u64> {
        std::fs::read_dir("/proc/self/fd").ok().map(|rd| rd.count() as u64)
    }
    if COUNT.load(Ordering::Relaxed) == u64::MAX {
        COUNT.store(count()?, Ordering::Relaxed);
    }
    let ask = ASK.get_or_init(|| {
        let (tx, rx) = sync_channel::<()>(1);
        let spawned = std::thread::Builder::new().name("dbx-fdcount".into()).spawn(move || {
            for () in rx {
                if let Some(n) = count() {
                    COUNT.store(n, Ordering::Relaxed);
                }
            }
        });
        spawned.ok().map(|_| tx)
    });
    // A full channel means a count is already pending: never block the loop.
    if let Some(tx) = ask {
        let _ = tx.try_send(());
    }
    Some(COUNT.load(Ordering::Relaxed))
}

/// The standard `process_*` series of Prometheus client libraries, read from
/// /proc/self as they do (client_golang's process collector). Hand-written: three
/// small files and one `getrlimit` do not need the `procfs` crate. A series whose
/// source cannot be read is left out rather than reported as 0. Cost on the loop per
/// scrape: one read of /proc/self/stat (about 25 us) and a getrlimit.
fn process_series(out: &mut String) {
    // SAFETY: sysconf has no preconditions.
    let (tck, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Field 2 (comm) may contain spaces and parentheses: the fields after it start
    // after the last ')'. `f[0]` is field 3 (state), so field N is `f[N - 3]`.
    let f: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if tck > 0 {
        let tck = tck as f64;
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            gauge_f(
                out,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds",
                "counter",
                (utime + stime) as f64 / tck,
            );
        }
        if let Some(start) = start_time_seconds(field(22), tck) {
            gauge_f(
                out,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                "gauge",
                start,
            );
        }
    }
    if let (Some(rss), true) = (field(24), page > 0) {
        gauge_f(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            "gauge",
            (rss * page as u64) as f64,
        );
    }
    if let Some(n) = open_fds() {
        gauge_f(out, "process_open_fds", "Number of open file descriptors", "gauge", n as f64);
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and has no other effect.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        gauge_f(out, "process_max_fds", "Maximum number of open file descriptors", "gauge", lim.rlim_cur as f64);
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

    #[test]
    fn requests_are_counted_per_method_whatever_the_order() {
        let mut m = Metrics::default();
        // The same name from two places (two pointers) is one row.
        let other: &'static str = String::from("string.get").leak();
        for name in ["string.get", "string.get", "string.set", other, "batch", "string.set", "string.get"] {
            m.count_request(name, 1);
        }
        let mut rows = m.requests.clone();
        rows.sort();
        assert_eq!(rows, [("batch", 1), ("string.get", 4), ("string.set", 2)]);
        assert_eq!(m.latency.count(), 7);
    }
}
