//! # DBX — a low-latency WebSocket data store on one core
//!
//! # Layout
//! Dependencies point one way: `server` → `cmd` → `store`; `proto` is shared by the
//! server and the commands; nothing imports upward.
//!
//! - [`config`]: every setting — environment variable, flag, default, validation.
//! - [`server`]: the mio reactor (the only module that touches sockets):
//!   - `server::handshake` — HTTP/1.1 upgrade parsing and responses (pure);
//!   - `server::conn` — a connection's state machine and its outbound buffer;
//!   - `server::wheel` — the hashed timing wheel (heartbeats, deadlines);
//!   - `server::ratelimit` — the per-connection token bucket.
//! - [`proto`]: the JSON envelope (split by `proto::scan`, a validating scanner), typed
//!   parameters, error codes, the reply writer.
//! - [`cmd`]: the command table with flags (read / write / admin / denyoom) and one
//!   module per data type; commands know nothing of sockets.
//! - [`store`]: the keyspace, values, expiry, revisions and memory accounting.
//! - [`persist`]: the append-only log (group commit, fsync policies), fork-based
//!   snapshots, start-up loading and replay (docs/PERSISTENCE.md).
//! - [`auth`]: API keys and JWTs, roles and key scopes (pure).
//! - [`glob`]: Redis-style glob matching (scan, patterns, scopes).
//! - [`pubsub`]: channels, patterns, key watches and the change history for resume.
//!
//! # Panics
//! Nothing reachable from the network may panic (docs/CONTRIBUTING.md): no `unwrap`,
//! `expect` or `panic!` outside tests anywhere, and in the modules that handle peer
//! input and data (`server`, `proto`, `cmd`, `store`) no indexing or slicing that can
//! go out of bounds either — use `.get()`. `scripts/check-panics.sh` double-checks.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod cmd;
pub mod config;
pub mod glob;
pub mod logging;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod persist;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod proto;
pub mod pubsub;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod server;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod store;
pub mod tls_client;

/// Why the server did not run: a configuration error (exit status 2, PROTOCOL.md §8)
/// or a failure at run time (exit status 1).
#[derive(Debug)]
pub enum RunError {
    Config(String),
    Runtime(String),
}

/// Start the server with `cfg` and serve until SIGTERM/SIGINT.
pub fn run(cfg: config::Config) -> Result<(), RunError> {
    let auth_cfg = auth::AuthConfig {
        api_keys: cfg.api_keys.clone(),
        jwt_secret: cfg.jwt_secret.clone(),
        jwt_public_key_path: cfg.jwt_public_key.clone(),
        jwt_issuer: cfg.jwt_issuer.clone(),
        jwt_audience: cfg.jwt_audience.clone(),
        jwt_leeway: cfg.jwt_leeway,
    };
    let authn = auth::Authenticator::new(&auth_cfg).map_err(RunError::Config)?;
    auth::check_protected_mode(authn.enabled(), cfg.allow_anonymous, &cfg.host).map_err(RunError::Config)?;
    // TLS files are checked before anything else starts: a bad one is a configuration
    // error naming the setting and the file (exit status 2).
    let tls = server::tls::TlsSetup::from_config(&cfg).map_err(RunError::Config)?;
    if tls.is_none() && authn.enabled() && !auth::is_loopback_host(&cfg.host) {
        log::warn!(
            "credentials are configured but {}:{} is plaintext: API keys and tokens cross the network \
             in clear; set DBX_TLS_CERT and DBX_TLS_KEY (or terminate TLS in front)",
            cfg.host,
            cfg.port
        );
    }
    let nofile = server::raise_nofile_limit();
    log::info!("open files limit {nofile}");
    // Listener, poll, waker, signals, stdio, the log file: keep a few in reserve.
    if (cfg.ws_max_connections as u64).saturating_add(32) > nofile {
        log::warn!(
            "DBX_WS_MAX_CONNECTIONS={} is above what the open files limit ({nofile}) allows; \
             accepts will pause on EMFILE before the connection limit is reached",
            cfg.ws_max_connections
        );
    }
    let mut srv = server::Server::bind(cfg.clone()).map_err(|e| {
        if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput) {
            RunError::Runtime(e.to_string()) // persistence: names the file and offset
        } else {
            RunError::Runtime(format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port))
        }
    })?;
    srv.install_signals().map_err(|e| RunError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let scheme = if srv.is_tls() { "wss" } else { "ws" };
    if let Some(t) = &tls {
        let min = match cfg.tls_min_version {
            config::TlsMinVersion::V1_2 => "1.2",
            config::TlsMinVersion::V1_3 => "1.3",
        };
        log::info!("TLS {} (min version {min})", t.describe());
    }
    log::info!("dbx {} listening on {scheme}://{}{}", env!("CARGO_PKG_VERSION"), srv.local_addr(), cfg.ws_path);
    if let Some(admin) = srv.admin_addr() {
        log::info!("admin (/health, /metrics) listening on http://{admin}");
    }
    srv.run().map_err(|e| RunError::Runtime(format!("event loop failed: {e}")))
}
