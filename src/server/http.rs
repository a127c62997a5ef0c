//! The plain HTTP answers on the WebSocket port: `/health` (JSON) and `/metrics`
//! (Prometheus text, rendered by `metrics`). Built from what the reactor counts and
//! what the engine reports; no socket work here.

use super::metrics::{Gauges, Metrics};
use crate::engine::Engine;
use crate::proto::Json;

/// What the reactor knows at answer time.
pub struct Facts {
    pub uptime_s: u64,
    /// Open WebSocket connections (counted against the limit).
    pub connections: u64,
    /// Every socket, HTTP ones included.
    pub sockets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub maxmemory: u64,
}

/// 200 `ok`, or 503 `degraded` while the log cannot be written (writes refused).
pub fn health(engine: &Engine, f: &Facts) -> (u16, Vec<u8>) {
    let degraded = engine.degraded();
    let mut b = Vec::with_capacity(256);
    b.push(b'{');
    let mut j = Json::fields(&mut b, true);
    j.str("status", if degraded { "degraded" } else { "ok" })
        .str("version", env!("CARGO_PKG_VERSION"))
        .u64("uptime_s", f.uptime_s)
        .u64("connections", f.connections);
    engine.describe(&mut j);
    b.push(b'}');
    (if degraded { 503 } else { 200 }, b)
}

pub fn metrics(engine: &Engine, m: &Metrics, f: &Facts) -> String {
    let e = engine.gauges();
    let g = Gauges {
        connections: f.connections,
        sockets: f.sockets,
        bytes_in: f.bytes_in,
        bytes_out: f.bytes_out,
        keys: e.keys,
        used_memory: e.used_memory,
        maxmemory: f.maxmemory,
        expired: e.expired,
        evicted: e.evicted,
        rev: e.rev,
        subscriptions: e.subscriptions,
        watchers: e.watchers,
        deliveries: e.deliveries,
        uptime_s: f.uptime_s,
        version: env!("CARGO_PKG_VERSION"),
        extra: engine.persist_metrics(),
    };
    m.render(&g)
}
