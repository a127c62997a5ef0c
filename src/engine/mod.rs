//! The socket-free request pipeline (Redis's `call()` plus propagation): a text frame
//! in, a reply envelope out, and everything the request caused — key-space events,
//! pub/sub deliveries, log records, snapshots, a new epoch — applied here. It owns the
//! store, the real-time hub, the persistence sink and the server facts. It knows
//! nothing of sockets, frames or timers: the reactor (`server`) owns those.
//!
//! # The seam
//! The reactor talks to the engine only through the methods below; a second engine
//! (the Redis backend of the next issue) implements the same ones.
//!
//! - [`Engine::handle`]`(session, text, out) -> Outcome` — one request. The reactor
//!   hands in the connection's [`Session`] (token, credential, rate-limit bucket, the
//!   reply's sequence number) and the frame's text. [`Reply::Now`]: `out` holds the
//!   reply; [`Reply::None`]: nothing is sent (a client heartbeat); [`Reply::Later`]:
//!   the reply completes after a round trip and is collected with
//!   [`Engine::completed`]. Either way the reactor passes it through the connection's
//!   [`ReplyOrder`] with its sequence number, so a reply completed later still goes
//!   out behind the replies before it, in request order. The embedded engine
//!   completes every request at once.
//! - [`Engine::events`] — deliveries to send after the reply that caused them
//!   ("reply first, then event"): `(token, frame)`; one frame shared by its receivers.
//! - [`Engine::tick`] / [`Engine::set_connections`] — the loop's clocks and the
//!   connection count (for `server.info`).
//! - [`Engine::active_expire`] and [`Engine::flush_log`] — end-of-turn work in
//!   Redis's `beforeSleep` order: expire keys (their events go to `events`), then write
//!   the log, before any reply is flushed.
//! - [`Engine::disconnect`] — a connection is gone (or going): forget its
//!   subscriptions and watches.
//! - [`Engine::wakeup_ms`], [`Engine::close`] — when to wake without I/O; shutdown.
//! - Read-only facts for the reactor's own frames and HTTP answers: [`Engine::stamp`],
//!   [`Engine::epoch`], [`Engine::rev`], [`Engine::describe`], [`Engine::gauges`].

mod order;
pub mod policy;

pub use order::ReplyOrder;

use crate::auth::{Authenticator, Identity};
use crate::backend::{Gateway, Local};
use crate::cmd::{self, Change, Ctx, Effect, ServerFacts};
use crate::config::Config;
use crate::persist::Persist;
use crate::proto::{self, envelope, Code, Error, Incoming, Json};
use crate::pubsub::Hub;
use crate::server::ratelimit::TokenBucket;
use crate::store::{Gone, Key, Store};
use std::rc::Rc;

/// Keys removed per loop turn by active expiry; the rest wait for the next turn.
const EXPIRE_BUDGET: usize = 1000;

/// The calling connection, as the engine sees it.
pub struct Session<'a> {
    /// The reactor's token for the connection (subscriptions and deliveries use it).
    pub conn: usize,
    /// The reply's place in the connection's order (see [`ReplyOrder`]).
    pub seq: u64,
    /// The connection's credential; `auth.refresh` replaces it.
    pub identity: &'a mut Rc<Identity>,
    /// The connection's rate limit, charged per operation.
    pub bucket: &'a mut TokenBucket,
}

/// When the reply of a request is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `out` holds it.
    Now,
    /// There is none (a client heartbeat); its sequence number is skipped.
    None,
    /// It completes later (a backend round trip); see [`Engine::completed`].
    Later,
}

/// What `handle` tells the reactor besides the reply (metrics, timers).
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub reply: Reply,
    /// The table name the request ran as (`batch`, `unknown` for an unknown method);
    /// None when it never reached the table (unreadable, rate limited).
    pub method: Option<&'static str>,
    pub error: Option<Code>,
    /// Operations executed (a batch counts each).
    pub ops: u64,
    /// `auth.refresh` replaced the credential: re-arm its expiry timer.
    pub identity_changed: bool,
}

impl Outcome {
    fn refused(code: Code) -> Outcome {
        Outcome { reply: Reply::Now, method: None, error: Some(code), ops: 0, identity_changed: false }
    }
}

/// Sampled at scrape time for `/metrics`.
pub struct Gauges {
    pub keys: u64,
    pub used_memory: u64,
    pub expired: u64,
    pub evicted: u64,
    pub rev: u64,
    pub subscriptions: u64,
    pub watchers: u64,
    pub deliveries: u64,
}

pub struct Engine {
    store: Store,
    hub: Hub,
    persist: Persist,
    facts: ServerFacts,
    auth: Rc<Authenticator>,
    rate_limit: u32,
    /// This turn's clocks: wall (unix ms, and its RFC 3339 text) and monotonic ms.
    unix_ms: u64,
    mono_ms: u64,
    stamp: String,
    rng: u64,
    /// Reused from request to request: the commands' outcome.
    fx: cmd::Outcome,
    /// The last request's params vector, emptied: the next request parses into it.
    spare: proto::SpareFields,
    /// Replies completed after `handle` returned (always empty here).
    done: Vec<(usize, u64, Vec<u8>)>,
    /// Gateway mode (`DBX_BACKEND=redis://…`): the data lives in Redis and requests
    /// go there; the store above stays empty (it serves the gateway-side methods) and
    /// the hub holds this process's subscriptions and watches. None: embedded.
    gateway: Option<Box<Gateway>>,
}

/// Lend the gateway the engine's local state (disjoint fields, so `self.gateway` and
/// these borrow at once).
macro_rules! local {
    ($s:ident) => {
        Local {
            store: &mut $s.store,
            hub: &mut $s.hub,
            facts: &mut $s.facts,
            auth: &$s.auth,
            fx: &mut $s.fx,
            unix_ms: $s.unix_ms,
            mono_ms: $s.mono_ms,
            stamp: &$s.stamp,
        }
    };
}

impl Engine {
    /// Load the data directory (when persistence is on) and start. `seed`: randomness
    /// for epochs; `now_ms`: the wall clock. An error names the file and offset.
    pub fn open(cfg: &Config, auth: Rc<Authenticator>, seed: u64, now_ms: u64) -> Result<Engine, String> {
        let fresh = format!("{seed:016x}");
        let gateway_mode = cfg.backend != crate::config::Backend::Embedded;
        let (persist, store, epoch) = if cfg.persist && !gateway_mode {
            let mut replayer = policy::Replayer::default();
            let o = Persist::open(cfg, &fresh, now_ms, &mut |s, now, m, p| replayer.apply(s, now, m, p))?;
            (o.persist, o.store, o.epoch)
        } else {
            (Persist::off(), Store::new(), fresh)
        };
        let facts = ServerFacts {
            version: env!("CARGO_PKG_VERSION"),
            // Gateway mode: the backend's epoch, learnt at connect.
            epoch: if gateway_mode { String::new() } else { epoch },
            max_batch: cfg.max_batch,
            maxmemory: cfg.maxmemory,
            maxmemory_policy: cfg.maxmemory_policy,
            persist_enabled: cfg.persist,
            ..ServerFacts::default()
        };
        let mut hub = Hub::new(cfg.watch_backlog, store.rev());
        let stamp = proto::rfc3339_ms(now_ms);
        hub.stamp.clone_from(&stamp);
        Ok(Engine {
            store,
            hub,
            persist,
            facts,
            auth,
            rate_limit: cfg.ws_rate_limit,
            unix_ms: now_ms,
            mono_ms: 0,
            stamp,
            rng: seed | 1,
            fx: cmd::Outcome::default(),
            spare: proto::SpareFields::new(),
            done: Vec::new(),
            gateway: None,
        })
    }

    /// Gateway mode: requests go to the backend through `gw` from now on.
    pub fn attach_gateway(&mut self, gw: Gateway) {
        self.gateway = Some(Box::new(gw));
    }

    /// Readiness on a backend connection's token (see `backend::TOKEN_BASE`).
    pub fn backend_event(&mut self, token: usize, readable: bool, writable: bool) {
        if let Some(gw) = self.gateway.as_deref_mut() {
            gw.on_event(&mut local!(self), token, readable, writable);
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The loop's clocks for this turn: wall ms (replies' timestamps, TTLs) and
    /// monotonic ms (rate limits, uptime).
    pub fn tick(&mut self, unix_ms: u64, mono_ms: u64) {
        self.mono_ms = mono_ms;
        self.facts.uptime_s = mono_ms / 1000;
        if unix_ms != self.unix_ms {
            self.unix_ms = unix_ms;
            self.stamp = proto::rfc3339_ms(unix_ms);
            self.hub.stamp.clone_from(&self.stamp);
        }
    }

    pub fn set_connections(&mut self, n: usize) {
        self.facts.connections = n;
    }

    /// Credentials re-read on SIGHUP: `auth.refresh` checks tokens against these from
    /// now on (connections keep the identity they have).
    pub fn set_auth(&mut self, auth: Rc<Authenticator>) {
        self.auth = auth;
    }

    /// Run one text frame (see the module docs).
    pub fn handle(&mut self, s: &mut Session, text: &str, out: &mut Vec<u8>) -> Outcome {
        let req = match proto::parse_incoming_with(text, std::mem::take(&mut self.spare)) {
            Incoming::Heartbeat => {
                return Outcome { reply: Reply::None, method: None, error: None, ops: 0, identity_changed: false }
            }
            Incoming::Invalid { id, message } => {
                let e = Error::new(Code::InvalidRequest, message);
                envelope::error(out, id.map(|r| r.get()), &e, &self.stamp);
                return Outcome::refused(e.code);
            }
            Incoming::Request(r) => r,
        };
        let id = req.id.map(|r| r.get());
        let cost = policy::cost(&req.method, &req.params, self.facts.max_batch);
        if let Err(wait) = s.bucket.try_take(cost, self.mono_ms) {
            let mut e = Error::new(
                Code::RateLimited,
                format!("Rate limit of {} requests per minute exceeded", self.rate_limit),
            );
            e.retry_after_ms = Some(wait);
            envelope::error(out, id, &e, &self.stamp);
            return Outcome::refused(e.code);
        }
        if let Some(gw) = self.gateway.as_deref_mut() {
            let o = gw.handle(&mut local!(self), s, id, &req.method, &req.params, out);
            if o.error == Some(Code::Internal) {
                log::error!("internal error for request id {}", id.unwrap_or("null"));
            }
            return o;
        }
        // A write is refused before it runs when its log record might not fit on disk.
        self.facts.writes_refused = self.persist.refusing_for(text.len());
        self.facts.snapshot_running = self.persist.snapshot_running();
        self.fx.reset(true);
        let log = self.persist.op_log(self.unix_ms);
        let mut ctx = Ctx {
            store: &mut self.store,
            hub: Some(&mut self.hub),
            now_ms: self.unix_ms,
            facts: &self.facts,
            identity: s.identity.clone(),
            auth: Some(&self.auth),
            conn: s.conn,
            replaying: false,
        };
        let err = policy::respond(&mut ctx, &mut self.fx, log, id, &req.method, &req.params, &self.stamp, out);
        let ops = self.fx.ops;
        self.facts.ops_total += ops;
        if let Some(e) = &err {
            if e.code == Code::Internal {
                log::error!("internal error for request id {}: {}", id.unwrap_or("null"), e.message);
            }
        }
        let identity_changed = self.apply(s);
        let method = match self.fx.last_method() {
            _ if req.method == "batch" => "batch",
            "" => "unknown",
            ran => ran,
        };
        self.spare = proto::recycle(req.params.into_fields());
        Outcome { reply: Reply::Now, method: Some(method), error: err.map(|e| e.code), ops, identity_changed }
    }

    /// Apply what the request's commands asked for: log records, a new credential, a
    /// new epoch, a snapshot; then queue the events its changes cause.
    fn apply(&mut self, s: &mut Session) -> bool {
        // Into the log before the reply leaves (`flush_log` runs before any flush).
        self.persist.append_ops(self.store.rev());
        let (mut identity_changed, mut flushed, mut save) = (false, false, false);
        for e in self.fx.effects.drain(..) {
            match e {
                Effect::IdentityChanged(id) => {
                    // Watches follow a narrowed key scope.
                    self.hub.set_scope(s.conn, id.clone());
                    *s.identity = id;
                    identity_changed = true;
                }
                Effect::Flushed => flushed = true,
                Effect::SaveRequested => save = true,
            }
        }
        if flushed {
            // History is gone: a new epoch (PROTOCOL.md §5).
            self.facts.epoch = format!("{:016x}", self.rand());
            self.persist.append_epoch(&self.facts.epoch);
        }
        if save {
            self.persist.start_snapshot(&self.store, &self.facts.epoch, self.unix_ms);
        }
        let mut changes = std::mem::take(&mut self.fx.changes);
        self.publish_changes(&mut changes);
        self.fx.changes = changes;
        identity_changed
    }

    /// Hand key-space changes to the hub in rev order — keys that expired or were
    /// evicted meanwhile included.
    fn publish_changes(&mut self, changes: &mut Vec<Change>) {
        let gone = self.store.take_gone();
        if gone.is_empty() {
            // The common case: the request's own changes, already in rev order.
            for c in changes.drain(..) {
                self.hub.changed(c.key, c.event, c.rev, &self.facts.epoch, self.unix_ms);
            }
        } else {
            let mut all: Vec<(u64, Option<Key>, &'static str)> = gone
                .into_iter()
                .map(|(k, why, rev)| {
                    (rev, Some(Key::from(k)), if why == Gone::Expired { "expired" } else { "evicted" })
                })
                .chain(changes.drain(..).map(|c| (c.rev, c.key, c.event)))
                .collect();
            all.sort_by_key(|c| c.0);
            for (rev, key, event) in all {
                self.hub.changed(key, event, rev, &self.facts.epoch, self.unix_ms);
            }
        }
    }

    /// Deliveries queued since the last call, in order: `(token, frame)`.
    pub fn events(&mut self) -> std::vec::Drain<'_, (usize, Rc<[u8]>)> {
        match self.gateway.as_deref_mut() {
            // Held behind the replies of requests still waiting on the backend.
            Some(gw) => gw.route_events(&mut self.hub.out),
            None => self.hub.out.drain(..),
        }
    }

    /// Replies that completed after `handle` returned [`Reply::Later`]:
    /// `(token, seq, reply)`. The embedded engine has none.
    pub fn completed(&mut self) -> std::vec::Drain<'_, (usize, u64, Vec<u8>)> {
        // Embedded: nothing is ever pending: `done` stays empty (and allocates nothing).
        match self.gateway.as_deref_mut() {
            Some(gw) => gw.done.drain(..),
            None => self.done.drain(..),
        }
    }

    /// Active expiry with a per-turn budget; anything left is picked up next turn (the
    /// wakeup is then 0 because the next expiry is already due). Events go to `events`.
    pub fn active_expire(&mut self) {
        if let Some(gw) = self.gateway.as_deref_mut() {
            // Gateway: reconnects, timeouts, `dbx_expire_due` (expiry happens in Redis).
            gw.tick(&mut local!(self));
            return;
        }
        self.store.expire_cycle(self.unix_ms, EXPIRE_BUDGET);
        if self.store.has_gone() {
            self.publish_changes(&mut Vec::new());
        }
    }

    /// The append-only log before any reply (Redis's beforeSleep order): write the
    /// turn's records, fsync under `always` (a failure there stops the process: see
    /// `persist`).
    pub fn flush_log(&mut self) {
        if !self.persist.is_on() {
            return;
        }
        self.persist.note_rev(self.store.rev(), self.unix_ms);
        self.persist.flush();
        self.persist.poll_child();
        self.persist.maybe_rewrite(&self.store, &self.facts.epoch, self.unix_ms);
    }

    /// `t` is gone or closing: drop its subscriptions and watches (no more events).
    pub fn disconnect(&mut self, t: usize) {
        self.hub.remove_conn(t);
        if let Some(gw) = self.gateway.as_deref_mut() {
            gw.disconnect(&self.hub, t);
        }
    }

    /// Ms until the engine needs the loop without I/O: the next key expiry (against
    /// the wall clock `wall_ms`), persistence retries and the snapshot child.
    pub fn wakeup_ms(&self, wall_ms: u64) -> Option<u64> {
        if self.gateway.is_some() {
            // Expiry calls, reconnects and timeouts run on this tick.
            return Some(10);
        }
        let expiry = self.store.next_expiry().map(|at| at.saturating_sub(wall_ms));
        match (expiry, self.persist.wakeup_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Shutdown: write and sync what the log holds.
    pub fn close(&mut self) {
        self.persist.close();
    }

    /// This turn's RFC 3339 timestamp.
    pub fn stamp(&self) -> &str {
        &self.stamp
    }

    pub fn epoch(&self) -> &str {
        &self.facts.epoch
    }

    pub fn rev(&self) -> u64 {
        match &self.gateway {
            Some(gw) => gw.rev(),
            None => self.store.rev(),
        }
    }

    /// Whether writes are refused (the log cannot be written; in gateway mode, the
    /// backend is not serving): `/health` says 503.
    pub fn degraded(&self) -> bool {
        match &self.gateway {
            Some(gw) => !gw.ready(),
            None => self.persist.refusing().is_some(),
        }
    }

    /// The engine's fields of `/health`: keys, memory, persistence.
    pub fn describe(&self, j: &mut Json) {
        if let Some(gw) = &self.gateway {
            gw.describe(j);
            return;
        }
        j.u64("keys", self.store.len() as u64).u64("used_memory", self.store.used_memory() as u64);
        self.persist.describe(j);
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            rev: self.rev(),
            keys: self.store.len() as u64,
            used_memory: self.store.used_memory() as u64,
            expired: self.store.expired_total,
            evicted: self.store.evicted_total,
            subscriptions: self.hub.subscriptions() as u64,
            watchers: self.hub.watchers() as u64,
            deliveries: self.hub.deliveries_total,
        }
    }

    /// Gateway mode: the backend latency histograms for `/metrics` (none embedded).
    pub fn backend_histograms(&self, out: &mut String) {
        if let Some(gw) = &self.gateway {
            gw.histograms(out);
        }
    }

    /// Persistence series for `/metrics`.
    pub fn persist_metrics(&self) -> Vec<(&'static str, &'static str, f64)> {
        match &self.gateway {
            // Gateway mode: no persistence here; the backend's series instead.
            Some(gw) => gw.metrics(),
            None => self.persist.metrics(self.unix_ms),
        }
    }
}
