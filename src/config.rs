//! Every setting of the server: environment variable, command-line flag, default and
//! validation in one table (clap derive with `env = "DBX_…"`). Flags win over the
//! environment. No sockets here.

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

/// How the server trades memory for writes once `DBX_MAXMEMORY` is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MaxMemoryPolicy {
    /// writes that would exceed the limit get `oom`
    #[default]
    Noeviction,
    /// evict approximately least-recently-used keys
    #[value(name = "allkeys-lru")]
    AllkeysLru,
}

/// When the append-only log is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AppendFsync {
    Always,
    Everysec,
    No,
}

/// The oldest TLS version the server accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMinVersion {
    #[default]
    #[value(name = "1.2")]
    V1_2,
    #[value(name = "1.3")]
    V1_3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// DBX: a low-latency WebSocket data store. Every flag can also be set through the
/// environment variable shown; flags win.
#[derive(Clone, Debug, Parser)]
#[command(name = "dbx", version, about, max_term_width = 100)]
pub struct Config {
    /// Listen address
    #[arg(long, env = "DBX_HOST", default_value = "127.0.0.1", value_name = "DBX_HOST")]
    pub host: String,
    /// Listen port (1-65535)
    #[arg(long, env = "DBX_PORT", default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..), value_name = "DBX_PORT")]
    pub port: u16,
    /// Port of a second, plain-HTTP listener serving only `/health` and `/metrics`
    /// (1-65535; unset = none). When set, `/metrics` is no longer served on DBX_PORT.
    #[arg(long, env = "DBX_ADMIN_PORT", value_parser = clap::value_parser!(u16).range(1..), value_name = "DBX_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Address of the DBX_ADMIN_PORT listener
    #[arg(long, env = "DBX_ADMIN_HOST", default_value = "127.0.0.1", value_name = "DBX_ADMIN_HOST")]
    pub admin_host: String,
    /// Serve the WebSocket path
    #[arg(long, env = "DBX_WS_ENABLED", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set, value_name = "DBX_WS_ENABLED")]
    pub ws_enabled: bool,
    /// WebSocket path
    #[arg(long, env = "DBX_WS_PATH", default_value = "/ws", value_parser = parse_path, value_name = "DBX_WS_PATH")]
    pub ws_path: String,
    /// Maximum concurrent WebSocket connections
    #[arg(long, env = "DBX_WS_MAX_CONNECTIONS", default_value_t = 1000, value_parser = parse_positive_count, value_name = "DBX_WS_MAX_CONNECTIONS")]
    pub ws_max_connections: usize,
    /// Seconds between server heartbeats
    #[arg(long, env = "DBX_WS_HEARTBEAT_INTERVAL", default_value = "30", value_parser = parse_positive_secs, value_name = "DBX_WS_HEARTBEAT_INTERVAL")]
    pub ws_heartbeat_interval: f64,
    /// Handshake and liveness timeout, seconds
    #[arg(long, env = "DBX_WS_TIMEOUT", default_value = "30", value_parser = parse_positive_secs, value_name = "DBX_WS_TIMEOUT")]
    pub ws_timeout: f64,
    /// Requests per minute per connection (token bucket, burst the same); 0 = off
    #[arg(long, env = "DBX_WS_RATE_LIMIT", default_value_t = 1000, value_name = "DBX_WS_RATE_LIMIT")]
    pub ws_rate_limit: u32,
    /// Largest accepted message, bytes (`1mb` etc. accepted); larger closes with 1009
    #[arg(long, env = "DBX_MAX_MESSAGE_SIZE", default_value = "1048576", value_parser = parse_size, value_name = "DBX_MAX_MESSAGE_SIZE")]
    pub max_message_size: u64,
    /// Operations in one batch
    #[arg(long, env = "DBX_MAX_BATCH", default_value_t = 1000, value_name = "DBX_MAX_BATCH")]
    pub max_batch: usize,
    /// Memory limit for the store in bytes (`512mb` etc.); 0 = off
    #[arg(long, env = "DBX_MAXMEMORY", default_value = "0", value_parser = parse_size, value_name = "DBX_MAXMEMORY")]
    pub maxmemory: u64,
    /// What to do when DBX_MAXMEMORY is reached
    #[arg(long, env = "DBX_MAXMEMORY_POLICY", default_value = "noeviction", value_name = "DBX_MAXMEMORY_POLICY")]
    pub maxmemory_policy: MaxMemoryPolicy,
    /// Queued outbound bytes per connection: above it reading stops, above twice it the connection is closed (1008)
    #[arg(long, env = "DBX_WS_MAX_OUTBOUND", default_value = "8mb", value_parser = parse_size, value_name = "DBX_WS_MAX_OUTBOUND")]
    pub ws_max_outbound: u64,
    /// Changes kept for `key.watch` resume
    #[arg(long, env = "DBX_WATCH_BACKLOG", default_value_t = 100_000, value_name = "DBX_WATCH_BACKLOG")]
    pub watch_backlog: usize,
    /// Where the append-only log and snapshots live
    #[arg(long, env = "DBX_DATA_DIR", default_value = "./dbx-data", value_name = "DBX_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Persist to disk (false: memory only, no file written)
    #[arg(long, env = "DBX_PERSIST", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set, value_name = "DBX_PERSIST")]
    pub persist: bool,
    /// When the append-only log is fsynced
    #[arg(long, env = "DBX_APPENDFSYNC", default_value = "everysec", value_name = "DBX_APPENDFSYNC")]
    pub appendfsync: AppendFsync,
    /// Rewrite (compact) the log when it has grown by this percentage over the last snapshot
    #[arg(long, env = "DBX_AOF_REWRITE_PERCENTAGE", default_value_t = 100, value_name = "DBX_AOF_REWRITE_PERCENTAGE")]
    pub aof_rewrite_percentage: u64,
    /// ... and is at least this large (bytes, `64mb` etc.)
    #[arg(long, env = "DBX_AOF_REWRITE_MIN_SIZE", default_value = "64mb", value_parser = parse_size, value_name = "DBX_AOF_REWRITE_MIN_SIZE")]
    pub aof_rewrite_min_size: u64,
    /// At start-up, cut a log with a damaged record back to that record instead of
    /// refusing to start (what follows it is lost; see docs/PERSISTENCE.md)
    #[arg(long, env = "DBX_AOF_TRUNCATE_CORRUPT", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, value_name = "DBX_AOF_TRUNCATE_CORRUPT")]
    pub aof_truncate_corrupt: bool,
    /// API keys, comma-separated, each optionally `key:role` (read|write|admin; bare = admin)
    #[arg(long, env = "DBX_API_KEYS", value_name = "DBX_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// HS256 secret for JWTs
    #[arg(long, env = "DBX_JWT_SECRET", value_name = "DBX_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A file of API keys, one `key:role[:label]` a line (`#` comments); relative to
    /// $CREDENTIALS_DIRECTORY (systemd's LoadCredential=) when that is set. Re-read on SIGHUP
    #[arg(long, env = "DBX_API_KEYS_FILE", value_name = "DBX_API_KEYS_FILE", conflicts_with = "api_keys")]
    pub api_keys_file: Option<PathBuf>,
    /// A file holding the HS256 secret for JWTs (one trailing newline is dropped); relative
    /// to $CREDENTIALS_DIRECTORY when that is set. Re-read on SIGHUP
    #[arg(long, env = "DBX_JWT_SECRET_FILE", value_name = "DBX_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key file for RS256 / ES256 / EdDSA JWTs (the algorithm follows the key)
    #[arg(long, env = "DBX_JWT_PUBLIC_KEY", value_name = "DBX_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required JWT issuer (`iss`)
    #[arg(long, env = "DBX_JWT_ISSUER", value_name = "DBX_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required JWT audience (`aud`)
    #[arg(long, env = "DBX_JWT_AUDIENCE", value_name = "DBX_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock leeway for JWT `exp`/`nbf`, seconds
    #[arg(long, env = "DBX_JWT_LEEWAY", default_value_t = 0, value_name = "DBX_JWT_LEEWAY")]
    pub jwt_leeway: u64,
    /// Allow clients without credentials on a non-loopback address
    #[arg(long, env = "DBX_ALLOW_ANONYMOUS", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set, value_name = "DBX_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// PEM certificate chain, leaf first; with DBX_TLS_KEY the port serves TLS only (wss://, https://)
    #[arg(long, env = "DBX_TLS_CERT", value_name = "DBX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of DBX_TLS_CERT
    #[arg(long, env = "DBX_TLS_KEY", value_name = "DBX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate signed by it (mutual TLS)
    #[arg(long, env = "DBX_TLS_CLIENT_CA", value_name = "DBX_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Oldest TLS version accepted: 1.2 or 1.3
    #[arg(long, env = "DBX_TLS_MIN_VERSION", default_value = "1.2", value_name = "DBX_TLS_MIN_VERSION")]
    pub tls_min_version: TlsMinVersion,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, env = "DBX_LOG", default_value = "info", value_name = "DBX_LOG")]
    pub log: LogLevel,
    /// Log line format: text (timestamp, level, module, message, logfmt fields; under
    /// journald a priority prefix instead of the timestamp) or json (one object per line)
    #[arg(long, env = "DBX_LOG_FORMAT", default_value = "text", value_name = "DBX_LOG_FORMAT")]
    pub log_format: crate::logging::Format,
    /// Where the data lives: `embedded` (this process), or a Redis 7+ this process
    /// fronts as a gateway: `redis://[user:password@]host:port[/db]`, `rediss://…`,
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/master-name`, where the
    /// credentials are the data nodes' and DBX_BACKEND_SENTINEL_PASSWORD is the
    /// sentinels' (docs/BACKEND.md)
    #[arg(long, env = "DBX_BACKEND", default_value = "embedded", value_parser = parse_backend, value_name = "DBX_BACKEND", hide_env_values = true)]
    pub backend: Backend,
    /// Pipelined connections from this gateway to the backend
    #[arg(long, env = "DBX_BACKEND_CONNECTIONS", default_value_t = 2, value_parser = parse_backend_connections, value_name = "DBX_BACKEND_CONNECTIONS")]
    pub backend_connections: usize,
    /// Requests waiting on the backend; above it new requests get `overloaded`
    #[arg(long, env = "DBX_BACKEND_MAX_INFLIGHT", default_value_t = 10_000, value_parser = parse_positive_count, value_name = "DBX_BACKEND_MAX_INFLIGHT")]
    pub backend_max_inflight: usize,
    /// Seconds before a backend request is answered `unavailable`
    #[arg(long, env = "DBX_BACKEND_TIMEOUT", default_value = "5", value_parser = parse_positive_secs, value_name = "DBX_BACKEND_TIMEOUT")]
    pub backend_timeout: f64,
    /// `redis+sentinel://`: the sentinels' own password (their `requirepass`), sent as
    /// `AUTH <password>` to each sentinel before asking it anything. The credentials in
    /// the URL are for the data nodes (primary and replicas), not for the sentinels.
    #[arg(
        long,
        env = "DBX_BACKEND_SENTINEL_PASSWORD",
        value_name = "DBX_BACKEND_SENTINEL_PASSWORD",
        hide_env_values = true
    )]
    pub backend_sentinel_password: Option<String>,
    /// `rediss://`: PEM file of the CAs that sign Redis's certificate (default: the
    /// system's CA store)
    #[arg(long, env = "DBX_BACKEND_TLS_CA", value_name = "DBX_BACKEND_TLS_CA")]
    pub backend_tls_ca: Option<PathBuf>,
    /// Start even against a Redis whose maxmemory-policy evicts keys (watchers never
    /// hear of an eviction)
    #[arg(long, env = "DBX_BACKEND_ALLOW_EVICTION", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set, value_name = "DBX_BACKEND_ALLOW_EVICTION")]
    pub backend_allow_eviction: bool,
    /// Serve an RFC 6455 echo endpoint at this path (conformance testing only; off by default)
    #[arg(long, env = "DBX_ECHO_PATH", value_parser = parse_path, value_name = "DBX_ECHO_PATH")]
    pub echo_path: Option<String>,
}

impl Config {
    /// Parse flags and environment. On a bad value, returns the one-line message that
    /// names the variable (the caller prints it and exits 2); help and version are
    /// printed by clap itself.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    /// A config for tests and benchmarks: defaults, memory only.
    pub fn for_tests() -> Config {
        let mut c = Config::parse_from(["dbx"]);
        c.persist = false;
        c
    }

    pub fn heartbeat_ms(&self) -> u64 {
        (self.ws_heartbeat_interval * 1000.0) as u64
    }

    pub fn timeout_ms(&self) -> u64 {
        (self.ws_timeout * 1000.0) as u64
    }

    pub fn backend_timeout_ms(&self) -> u64 {
        (self.backend_timeout * 1000.0) as u64
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got '{s}'")),
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(['?', '#', ' ']) {
        Ok(s.to_string())
    } else {
        Err(format!("expected a path starting with '/', got '{s}'"))
    }
}

/// A count that must be at least 1 (`0` would refuse every connection: a typo, not a
/// setting).
fn parse_positive_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got '{s}'")),
    }
}

/// At most 64: each connection takes a token from a fixed range (see `backend`).
fn parse_backend_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to 64, got '{s}'")),
    }
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("expected seconds > 0, got '{s}'")),
    }
}

/// Sizes: plain bytes or a number with a unit (`kb`, `mb`, `gb`, binary multiples as
/// Redis does, case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = if let Some(n) = t.strip_suffix("gb") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("mb") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("kb") {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix('b') {
        (n, 1)
    } else {
        (t.as_str(), 1)
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("expected a size such as 1048576 or 512mb, got '{s}'"))
}

// ---- DBX_BACKEND ----

/// Where the data lives (`DBX_BACKEND`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// In this process (the default).
    #[default]
    Embedded,
    /// A Redis 7+ server this process fronts as a gateway.
    Redis(RedisTarget),
}

/// A parsed `redis://`, `rediss://` or `redis+sentinel://` address.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `rediss://`: TLS to Redis.
    pub tls: bool,
    /// The server (one), or the sentinels (one or more).
    pub addrs: Vec<(String, u16)>,
    /// `redis+sentinel://…/name`: the master name to ask the sentinels about.
    pub sentinel_master: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `SELECT` this database after connecting (0: none needed).
    pub db: u32,
}

// The password never reaches a log line.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl RedisTarget {
    /// The address without its credentials, for logs and `server.info`.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self.addrs.iter().map(|(h, p)| format_host_port(h, *p)).collect();
        match &self.sentinel_master {
            Some(m) => format!("redis+sentinel://{}/{m}", hosts.join(",")),
            None => {
                let scheme = if self.tls { "rediss" } else { "redis" };
                format!("{scheme}://{}/{}", hosts.join(","), self.db)
            }
        }
    }
}

fn format_host_port(h: &str, p: u16) -> String {
    if h.contains(':') {
        format!("[{h}]:{p}")
    } else {
        format!("{h}:{p}")
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("unclosed '[' in '{s}'"))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("missing host in '{s}'"));
    }
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("bad port '{p}' in '{s}'")),
        },
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding of the user and password (`%40` for `@`, as in URLs).
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("bad %-escape in the credentials")?;
            out.push(v);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the credentials are not UTF-8".to_string())
}

pub fn parse_backend(s: &str) -> Result<Backend, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("embedded") {
        return Ok(Backend::Embedded);
    }
    let (scheme, rest) = t.split_once("://").ok_or_else(|| {
        "expected embedded, redis://[user:password@]host:port[/db], rediss://… or \
         redis+sentinel://[user:password@]host:port[,host:port…]/master-name (the credentials \
         are the data nodes'; the sentinels' password is DBX_BACKEND_SENTINEL_PASSWORD)"
            .to_string()
    })?;
    let (tls, sentinel) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+sentinel" => (false, true),
        other => {
            return Err(format!("unknown scheme '{other}://' (expected redis://, rediss:// or redis+sentinel://)"))
        }
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| percent_decode(u)).transpose()?, Some(percent_decode(p)?)),
            None => (None, Some(percent_decode(a)?)),
        },
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    let addrs = hosts.split(',').map(parse_host_port).collect::<Result<Vec<_>, _>>()?;
    let (mut db, mut sentinel_master) = (0, None);
    if sentinel {
        if path.is_empty() || path.contains('/') {
            return Err("redis+sentinel:// needs the master name after the hosts: …/master-name".to_string());
        }
        sentinel_master = Some(path.to_string());
    } else {
        if addrs.len() != 1 {
            return Err("redis:// names one server (several hosts need redis+sentinel://)".to_string());
        }
        if !path.is_empty() {
            db = path.parse::<u32>().map_err(|_| format!("bad database number '{path}' (expected 0, 1, …)"))?;
        }
    }
    Ok(Backend::Redis(RedisTarget { tls, addrs, sentinel_master, user, password, db }))
}

// ---- the bind-address rule (protected mode) ----

pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let h = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().map(|ip| ip.to_canonical().is_loopback()).unwrap_or(false)
}

/// Protected mode: with no credential configured, the server may listen only on
/// a loopback address unless anonymous access is allowed explicitly.
pub fn check_protected_mode(auth_enabled: bool, allow_anonymous: bool, host: &str) -> Result<(), String> {
    if auth_enabled || allow_anonymous || is_loopback_host(host) {
        return Ok(());
    }
    Err(format!(
        "protected mode: no credential is configured (DBX_API_KEYS, DBX_JWT_SECRET or DBX_JWT_PUBLIC_KEY) \
         and DBX_HOST={host} is not a loopback address; configure a credential or set DBX_ALLOW_ANONYMOUS=true"
    ))
}

#[cfg(test)]
mod tests;
