//! The HTTP phase of a connection: reading the request head, routing it (upgrade, or
//! a plain answer), and the plain answers themselves: `/health` (JSON) and
//! `/metrics` (Prometheus text, rendered by `metrics`), built from what the reactor
//! counts and what the engine reports.

use super::conn::{CloseReason, Phase};
use super::handshake::{self, Parse, Paths, Route};
use super::metrics::{Gauges, Metrics};
use super::Server;
use crate::engine::Engine;
use crate::proto::Json;
use std::io::{self, Read};

/// What the reactor knows at answer time.
pub struct Facts<'a> {
    pub uptime_s: u64,
    /// Open WebSocket connections (counted against the limit).
    pub connections: u64,
    /// DBX_WS_MAX_CONNECTIONS.
    pub max_connections: u64,
    /// Every socket, HTTP ones included.
    pub sockets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub maxmemory: u64,
    /// The data directory when persistence is on (the last snapshot's time).
    pub data_dir: Option<&'a std::path::Path>,
}

/// 200 `ok`, or 503 `degraded` while the log cannot be written (writes refused).
/// `more` adds the reactor's own fields (TLS).
pub fn health(engine: &Engine, f: &Facts, more: impl FnOnce(&mut Json)) -> (u16, Vec<u8>) {
    let degraded = engine.degraded();
    let mut b = Vec::with_capacity(256);
    b.push(b'{');
    let mut j = Json::fields(&mut b, true);
    j.str("status", if degraded { "degraded" } else { "ok" })
        .str("version", env!("CARGO_PKG_VERSION"))
        .u64("uptime_s", f.uptime_s)
        .u64("connections", f.connections);
    engine.describe(&mut j);
    more(&mut j);
    b.push(b'}');
    (if degraded { 503 } else { 200 }, b)
}

pub fn metrics(engine: &Engine, m: &Metrics, f: &Facts) -> String {
    let g = Gauges {
        connections: f.connections,
        max_connections: f.max_connections,
        sockets: f.sockets,
        bytes_in: f.bytes_in,
        bytes_out: f.bytes_out,
        engine: engine.gauges(),
        maxmemory: f.maxmemory,
        uptime_s: f.uptime_s,
        version: env!("CARGO_PKG_VERSION"),
        extra: engine.persist_metrics(),
        data_dir: f.data_dir,
    };
    let mut text = m.render(&g);
    engine.backend_histograms(&mut text);
    text
}

/// Bind DBX_ADMIN_PORT, if set. The error names DBX_ADMIN_PORT, not the client port
/// (`InvalidInput`: the caller prints it as it is).
pub fn bind_admin(cfg: &crate::config::Config) -> io::Result<Option<std::net::TcpListener>> {
    let Some(port) = cfg.admin_port else { return Ok(None) };
    super::sys::bind_addr(&cfg.admin_host, port).and_then(std::net::TcpListener::bind).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("DBX_ADMIN_PORT: cannot listen on {}:{port}: {e}", cfg.admin_host),
        )
    })
}

impl Server {
    pub(super) fn read_http(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let admin_conn = c.admin;
        // The admin port serves `/health` and `/metrics` only; with an admin port, the
        // client port no longer serves `/metrics`.
        let paths_ws = if self.cfg.ws_enabled && !admin_conn { Some(self.cfg.ws_path.clone()) } else { None };
        let echo = if admin_conn { None } else { self.cfg.echo_path.clone() };
        let metrics_here = admin_conn || self.admin_addr.is_none();
        let Phase::Http { wire, head } = &mut c.phase else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let parsed = loop {
            match wire.read(&mut chunk) {
                Ok(0) => {
                    self.kill(t, CloseReason::PeerClosed);
                    return;
                }
                Ok(n) => {
                    head.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let paths = Paths { ws: paths_ws.as_deref(), echo: echo.as_deref(), metrics: metrics_here };
                    match handshake::parse(head, &paths) {
                        Parse::Partial => continue,
                        Parse::Done(route, len) => break (route, len),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.kill(t, CloseReason::PeerReset);
                    return;
                }
            }
        };
        let (route, len) = parsed;
        match route {
            Route::Upgrade(up) => self.upgrade(t, up, len, false),
            Route::Echo(up) => self.upgrade(t, up, len, true),
            Route::Health { head } => {
                let (status, body) = health(&self.engine, &self.http_facts(), |j| self.tls_describe(j));
                let full = handshake::response(status, "application/json", &body, "");
                self.answer(t, if head { handshake::without_body(full, body.len()) } else { full });
            }
            Route::Metrics(m) => {
                if !admin_conn {
                    if let Err(r) = self.metrics_allowed(&m) {
                        self.metrics.count_refused(r.code);
                        let body_len = handshake::refusal_body_len(&r);
                        let full = handshake::refusal_response(&r);
                        return self.answer(t, if m.head { handshake::without_body(full, body_len) } else { full });
                    }
                }
                let mut body = metrics(&self.engine, &self.metrics, &self.http_facts());
                self.tls_metrics(&mut body);
                let full = handshake::response(200, "text/plain; version=0.0.4", body.as_bytes(), "");
                self.answer(t, if m.head { handshake::without_body(full, body.len()) } else { full });
            }
            Route::Refuse(r) => {
                self.metrics.count_refused(r.code);
                log::debug!("refused #{t}: {} {}", r.status, r.code);
                self.answer(t, handshake::refusal_response(&r));
            }
        }
    }

    /// `/metrics` on the client port when credentials are configured: an admin
    /// credential, from the same places the upgrade reads it (401 without or with a bad
    /// one, 403 for read/write). Without credentials it stays open, as before.
    fn metrics_allowed(&self, m: &handshake::MetricsRequest) -> Result<(), handshake::Refusal> {
        use crate::auth::{AuthError, Role};
        use handshake::Refusal;
        if !self.auth.enabled() {
            return Ok(());
        }
        let (credential, _) = handshake::extract_credential(m.api_key.as_deref(), m.authorization.as_deref(), None);
        match self.auth.authenticate(credential, self.unix_ms / 1000) {
            Ok(id) if id.role == Role::Admin => Ok(()),
            Ok(id) => Err(Refusal::new(
                403,
                "forbidden",
                format!("/metrics needs an admin credential; this one is {}", id.role.as_str()),
            )),
            Err(AuthError::Missing) => Err(Refusal::new(
                401,
                "unauthorized",
                "Missing credential: pass an admin api_key or an Authorization bearer token",
            )),
            Err(AuthError::Invalid(m)) => Err(Refusal::new(401, "unauthorized", format!("Invalid credential: {m}"))),
        }
    }

    /// Listen on DBX_ADMIN_PORT too (plain HTTP, `/health` and `/metrics` only).
    pub(super) fn add_admin_listener(&mut self, l: std::net::TcpListener) -> io::Result<()> {
        l.set_nonblocking(true)?;
        self.admin_addr = Some(l.local_addr()?);
        let mut l = mio::net::TcpListener::from_std(l);
        self.poll.registry().register(&mut l, super::ADMIN_LISTENER, mio::Interest::READABLE)?;
        self.admin_listener = Some(l);
        Ok(())
    }

    /// The DBX_ADMIN_PORT listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    /// Queue a complete HTTP answer; the connection ends once it is sent.
    pub(super) fn answer(&mut self, t: usize, bytes: Vec<u8>) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let phase = std::mem::replace(&mut c.phase, Phase::Gone);
        let (Phase::Http { mut wire, .. } | Phase::Answered { mut wire }) = phase else {
            c.phase = phase;
            return;
        };
        wire.queue(&bytes);
        c.phase = Phase::Answered { wire };
        self.mark_dirty(t);
    }

    /// After an answer was sent and the write side shut: read and discard until EOF.
    pub(super) fn drain_answered(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        // An HTTP answer, or a WebSocket failed by us (`fail_ws`): keep its reason.
        let why = c.closing.unwrap_or(CloseReason::HttpDone);
        let Phase::Answered { wire } = &mut c.phase else {
            return;
        };
        let mut sink = [0u8; 4096];
        loop {
            match wire.sock.read(&mut sink) {
                Ok(0) => return self.kill(t, why),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(t, why),
            }
        }
    }

    pub(super) fn http_facts(&self) -> Facts<'_> {
        let (mut bytes_in, mut bytes_out) = (self.metrics.bytes_in_closed, self.metrics.bytes_out_closed);
        for (_, c) in self.conns.iter() {
            if let Some(w) = c.wire_ref() {
                bytes_in += w.bytes_in;
                bytes_out += w.bytes_out;
            }
        }
        Facts {
            uptime_s: self.started.elapsed().as_secs(),
            connections: self.ws_count as u64,
            max_connections: self.cfg.ws_max_connections as u64,
            sockets: self.conns.len() as u64,
            bytes_in,
            bytes_out,
            maxmemory: self.cfg.maxmemory,
            data_dir: self.cfg.persist.then_some(self.cfg.data_dir.as_path()),
        }
    }
}
