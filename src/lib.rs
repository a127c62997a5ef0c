//! # DBX — a low-latency WebSocket data store on one core
//!
//! # Layout
//! Dependencies point one way: `server` → `engine` → `cmd` → `store`; `proto` is
//! shared by all of them; nothing imports upward.
//!
//! - [`config`]: every setting — environment variable, flag, default, validation, and
//!   the bind-address rule (protected mode).
//! - [`server`]: the mio reactor (the only module that touches sockets); it knows no
//!   command, store or JSON:
//!   - `server::http` — a connection's HTTP phase, `/health` and `/metrics`;
//!   - `server::ws` — a connection's WebSocket phase (upgrade, frames, closing);
//!   - `server::handshake` — HTTP/1.1 upgrade parsing, credentials in the request,
//!     responses (pure);
//!   - `server::conn` — a connection's state machine and its outbound buffer;
//!   - `server::wheel` — the hashed timing wheel (heartbeats, deadlines);
//!   - `server::ratelimit` — the per-connection token bucket;
//!   - `server::sys` — open-files limit, seed, sd_notify, cycle counter.
//! - [`engine`]: the socket-free request pipeline (Redis's `call()` + propagation):
//!   `Engine::handle(session, text, out)`; owns the store, the hub, the persistence
//!   sink; `engine::policy` applies the command table's flags (roles, scopes, memory,
//!   revs, logging, batch).
//! - [`proto`]: the JSON protocol — `scan` (validating scanner), `request` (the one op
//!   parser), `params`, `envelope` (the one reply/event writer), `json`, `error`.
//! - [`cmd`]: the command table with flags (read / write / admin / denyoom) and one
//!   module per data type; commands know nothing of sockets or of the log format and
//!   report their effects in a `cmd::Outcome`.
//! - [`store`]: the keyspace, values, expiry, revisions and memory accounting.
//! - [`persist`]: durability behind one facade (`Persist`): `aof` (the log file,
//!   record encoding, group commit, fsync policies), `snapshot` (fork-based
//!   snapshots), `load` (start-up and replay), `format` (docs/PERSISTENCE.md).
//! - [`auth`]: API keys and JWTs, roles and key scopes (pure; `auth::verify` checks).
//! - [`glob`]: Redis-style glob matching (scan, patterns, scopes).
//! - [`pubsub`]: channels, patterns, key watches and the change history for resume.
//! - [`backend`]: gateway mode (`DBX_BACKEND=redis://…`): the `Gateway` the engine
//!   hands requests to when the data lives in Redis — RESP connections on the reactor's
//!   Poll, `FCALL` of the `dbx.lua` library, the change-stream follower, the pub/sub
//!   mirror, Sentinel.
//!
//! # Panics
//! Nothing reachable from the network may panic (docs/CONTRIBUTING.md): no `unwrap`,
//! `expect` or `panic!` outside tests anywhere, and in the modules that handle peer
//! input and data (`server`, `engine`, `proto`, `cmd`, `store`) no indexing or slicing that can
//! go out of bounds either — use `.get()`. `scripts/check-panics.sh` double-checks.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod backend;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod cmd;
pub mod config;
#[cfg_attr(not(test), deny(clippy::indexing_slicing))]
pub mod engine;
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
    let authn = auth::Authenticator::from_config(&cfg).map_err(RunError::Config)?;
    config::check_protected_mode(authn.enabled(), cfg.allow_anonymous, &cfg.host).map_err(RunError::Config)?;
    // TLS files are checked before anything else starts: a bad one is a configuration
    // error naming the setting and the file (exit status 2).
    let tls = server::tls::TlsSetup::from_config(&cfg).map_err(RunError::Config)?;
    if tls.is_none() && authn.enabled() && !config::is_loopback_host(&cfg.host) {
        log::warn!(
            "credentials are configured but {}:{} is plaintext: API keys and tokens cross the network \
             in clear; set DBX_TLS_CERT and DBX_TLS_KEY (or terminate TLS in front)",
            cfg.host,
            cfg.port
        );
    }
    if let config::Backend::Redis(t) = &cfg.backend {
        // Settings that make a gateway useless are start-up errors (exit 2); Redis
        // being down is not (the gateway starts degraded and recovers by itself).
        backend::startup_check(&cfg, t).map_err(RunError::Config)?;
        log::info!(
            "gateway mode: data in {}; DBX_PERSIST, DBX_DATA_DIR and DBX_MAXMEMORY* do not apply \
             (Redis persists and limits memory)",
            t.describe()
        );
    }
    let nofile = server::sys::raise_nofile_limit();
    log::info!("open files limit {nofile}");
    // Listener, poll, waker, signals, stdio, the log file: keep a few in reserve.
    if (cfg.ws_max_connections as u64).saturating_add(32) > nofile {
        log::warn!(
            "DBX_WS_MAX_CONNECTIONS={} is above what the open files limit ({nofile}) allows; \
             accepts will pause on EMFILE before the connection limit is reached",
            cfg.ws_max_connections
        );
    }
    let mut srv = server::Server::bind(cfg.clone(), authn).map_err(|e| {
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
