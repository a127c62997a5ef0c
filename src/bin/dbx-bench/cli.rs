//! Command-line options (clap) and the parsing of their values: durations
//! (`10s`, `500ms`, `2m`) and the method mix (`get=9,set=1`).
//!
//! Kept apart from the run so the whole interface (every flag, its default and
//! its value syntax) reads in one place.

use std::time::Duration;

use clap::Parser;

use crate::request::Kind;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "dbx-bench",
    version,
    about = "Load generator for the DBX WebSocket data store (closed- and open-loop)"
)]
pub(crate) struct Opts {
    /// WebSocket URL of the server (ws:// only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,
    /// Active connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub(crate) connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub(crate) pipeline: usize,
    /// Measurement duration (e.g. 10s, 500ms, 1m; a bare number is seconds).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Warm-up before measuring (load is applied, nothing is recorded).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Method mix as name=weight pairs. Names: get, set, incr, hget, hset, publish, ping.
    #[arg(long, default_value = "get=9,set=1")]
    pub(crate) mix: String,
    /// Number of distinct keys (chosen uniformly at random).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) keyspace: u64,
    /// Value size in bytes for set/hset/publish.
    #[arg(long, default_value_t = 32)]
    pub(crate) value_size: usize,
    /// Prefix of every key and channel the benchmark touches.
    #[arg(long, default_value = "bench:")]
    pub(crate) key_prefix: String,
    /// Before the run, write every key the mix reads (string.set / hash.set).
    #[arg(long)]
    pub(crate) preload: bool,
    /// Deadline of the preload phase.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) preload_timeout: Duration,
    /// Open loop: total requests per second, spread over all connections.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Extra connections that only answer pings (held open during the run).
    #[arg(long, default_value_t = 0)]
    pub(crate) idle: usize,
    /// Worker threads, each with its own mio loop (connections are split between them).
    #[arg(short = 't', long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// API key, sent as the `api_key` query parameter.
    #[arg(long, env = "DBX_BENCH_API_KEY")]
    pub(crate) api_key: Option<String>,
    /// JWT, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "DBX_BENCH_TOKEN")]
    pub(crate) token: Option<String>,
    /// Deadline of the whole connect phase (all active and idle connections).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// After the measurement, how long to wait for replies still in flight.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// Print only the final JSON line.
    #[arg(long)]
    pub(crate) json_only: bool,
    /// Allow a host that is not a loopback address.
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Pub/sub fan-out: extra connections subscribed to `--channel`, counting events.
    #[arg(long, default_value_t = 0)]
    pub(crate) subscribers: usize,
    /// Channel for `publish` and the subscribers (default: `<key-prefix>chan`).
    #[arg(long)]
    pub(crate) channel: Option<String>,
    /// wss://: trust the CA certificates in this PEM file (e.g. scripts/dev-cert.sh's ca.pem).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// wss://: accept any server certificate (encrypted, not authenticated).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Measure connection set-up instead of requests: open this many connections one
    /// after another (TCP, TLS on wss://, upgrade, hello) and report connections per
    /// second; with --no-resume every TLS handshake is a full one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) connect_only: usize,
    /// wss://: do not resume TLS sessions (every handshake is a full one).
    #[arg(long)]
    pub(crate) no_resume: bool,
    /// Seed of the key/method random generator.
    #[arg(long, default_value_t = 0x5eed_1234_abcd_ef01)]
    pub(crate) seed: u64,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad duration {s:?} (use e.g. 10s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * mult > 1e7 {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

pub(crate) fn parse_mix(s: &str) -> Result<Vec<(Kind, u32)>, String> {
    let mut out: Vec<(Kind, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = match part.split_once(['=', ':']) {
            Some((n, w)) => {
                (n.trim(), w.trim().parse::<u32>().map_err(|_| format!("bad weight in mix entry {part:?}"))?)
            }
            None => (part, 1),
        };
        let kind = Kind::parse(name)
            .ok_or_else(|| format!("unknown method {name:?} in --mix (get, set, incr, hget, hset, publish, ping)"))?;
        if w > 0 {
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some(e) => e.1 += w,
                None => out.push((kind, w)),
            }
        }
    }
    let total: u64 = out.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Err("--mix has no method with a positive weight".into());
    }
    if total > 1_000_000 {
        return Err("--mix weights too large (total must be <= 1000000)".into());
    }
    Ok(out)
}

/// Refuse settings that cannot run.
pub(crate) fn validate(o: &Opts) -> Result<(), String> {
    if o.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if o.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if o.keyspace == 0 {
        return Err("--keyspace must be at least 1".into());
    }
    if o.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if let Some(r) = o.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number of requests per second".into());
        }
    }
    Ok(())
}
