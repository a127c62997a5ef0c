//! Gateway mode (issue 16, `DBX_BACKEND=redis://…`): the data lives in Redis 7+, and
//! this process is one of several gateways in front of it. Policy stays here (roles,
//! key scopes, parameter names, rate limits, `DBX_MAX_BATCH`, the reserved prefix);
//! data methods run inside Redis through the `dbx` function library (`dbx.lua`,
//! docs/BACKEND.md), one `FCALL dbx_run` per loop turn and backend connection (a plain
//! `string.set` in compact form, other methods as JSON; a batch is one `dbx_exec`, so it
//! is atomic there), except the plain reads `string.get`, `string.mget` and `hash.get`
//! of a field, which run as native commands (`fast.rs`). `server.ping`/`time`,
//! `auth.refresh`, `pubsub.*` and `key.watch`/`unwatch` are answered here.
//!
//! Connections (all on the reactor's Poll, tokens from `TOKEN_BASE`, far above any
//! connection slab key):
//! - `data[i]` (DBX_BACKEND_CONNECTIONS): pipelined FCALLs, a FIFO of pending replies;
//!   `data[0]` also loads the library, checks `maxmemory-policy` and calls
//!   `dbx_init`, and every ~50 ms `dbx_expire_due`.
//! - `follow`: `XREAD BLOCK` on `__dbx:changes` from the last delivered id; each entry
//!   becomes a key-space event for the local watchers, in rev order.
//! - `sub`: SUBSCRIBE/PSUBSCRIBE mirroring the local pub/sub subscriptions, so a publish
//!   on any gateway reaches the subscribers of every gateway.
//!
//! A request waiting on Redis is answered `unavailable` when its connection breaks or
//! DBX_BACKEND_TIMEOUT passes (the connection is then dropped and reopened: a RESP
//! connection cannot skip a reply), `overloaded` above DBX_BACKEND_MAX_INFLIGHT.

mod fast;
mod follow;
mod latency;
mod resolve;
mod resp;
mod sentinel;
mod sync;

use crate::auth::{Authenticator, Identity};
use crate::cmd::{self, Ctx, ServerFacts, DENYOOM, NO_BATCH};
use crate::config::{Config, RedisTarget};
use crate::engine::{policy, Outcome, Reply, Session};
use crate::proto::{envelope, request, write_str, Code, Error, Json, Params};
use crate::pubsub::Hub;
use crate::store::Store;
use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;
use resp::RespConn;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::net::SocketAddr;
use std::rc::Rc;

pub use follow::{decode_entry, StreamChange, StreamEntry};
pub use sync::startup_check;

/// The function library, loaded with `FUNCTION LOAD REPLACE` at each (re)connect.
pub const LIBRARY: &str = include_str!("dbx.lua");

/// Backend tokens: `TOKEN_BASE + i` for data connection i (< 64), then the follower
/// and the subscriber. The connection slab's keys are small integers; the reactor's
/// own tokens sit at `usize::MAX - 1 … - 4`.
pub const TOKEN_BASE: usize = usize::MAX - 200;
const FOLLOW: usize = TOKEN_BASE + 64;
const SUB: usize = TOKEN_BASE + 65;
const SENTINEL: usize = TOKEN_BASE + 66;
pub const TOKEN_END: usize = TOKEN_BASE + 67;

/// How often `dbx_expire_due` runs (expired events within 100 ms of the deadline).
const EXPIRE_EVERY_MS: u64 = 50;
/// Keys removed per `dbx_expire_due` call.
const EXPIRE_LIMIT: u32 = 1000;
/// `XREAD BLOCK` time; the follower's timeout is this plus DBX_BACKEND_TIMEOUT.
const FOLLOW_BLOCK_MS: u64 = 1000;
/// Stream entries per `XREAD`. An entry holds one call's changes (up to ~3,500 keys for
/// the parts of one huge operation, ~100–500 fields usually): 64 of them bound what one
/// read brings into memory at once (a few tens of MB at worst) while a busy stream
/// still takes only tens of reads a second.
const FOLLOW_COUNT: u32 = 64;
/// Most requests (and bytes of operations) in one grouped `dbx_run`.
const GROUP_MAX_OPS: usize = 256;
const GROUP_MAX_BYTES: usize = 256 * 1024;
/// `retry_after_ms` of an `overloaded` answer.
const OVERLOAD_RETRY_MS: u64 = 100;
/// Channel names in Redis carry this prefix, so DBX's pub/sub cannot collide with
/// another application's on the same Redis.
const CHANNEL_PREFIX: &str = "__dbx:ps:";
const STREAM: &str = "__dbx:changes";

/// What the engine lends the gateway for one call: the local state that gateway-side
/// methods act on (an always-empty store, the hub of subscriptions and watches).
pub struct Local<'a> {
    pub store: &'a mut Store,
    pub hub: &'a mut Hub,
    pub facts: &'a mut ServerFacts,
    pub auth: &'a Authenticator,
    pub fx: &'a mut cmd::Outcome,
    pub unix_ms: u64,
    pub mono_ms: u64,
    pub stamp: &'a str,
}

/// A client request waiting on Redis.
struct Waiting {
    conn: usize,
    /// The client connection's generation when it asked (a reused slab slot must not
    /// get a reply meant for its previous owner).
    generation: u32,
    seq: u64,
    /// The raw JSON id.
    id: Option<Box<str>>,
    kind: Kind,
}

enum Kind {
    /// `dbx_exec` of one method; for `key.scan` by a credential with a key scope, the
    /// scope the returned keys are filtered by (the library does not know scopes).
    Single(Option<Rc<Identity>>),
    /// `dbx_exec` of a batch: for each operation, its local error, or Ok (sent) with
    /// the scan filter as above.
    Batch(Vec<Result<Option<Rc<Identity>>, Error>>),
    /// `PUBLISH`: receivers = Redis's answer.
    Publish,
    /// `dbx_info` for `server.info`.
    Info,
    /// `dbx_watch_read` for `key.watch`.
    Watch(Box<WatchAsk>),
    /// `string.get` on the fast path (`fast.rs`): the key, and the gateway's clock
    /// (unix ms) that decides expiry, as the library's `now_ms`.
    /// `hash.get` of one field: the field too.
    Get { key: Box<str>, field: Option<Box<str>>, now_ms: u64 },
    /// `string.mget` on the fast path.
    MGet { keys: Vec<Box<str>>, now_ms: u64 },
}

#[derive(Default)]
struct Flow {
    issued: u64,
    answered: u64,
    /// `(issued when it arrived, frame)`: sent once `answered` reaches it.
    held: std::collections::VecDeque<(u64, Rc<[u8]>)>,
}

/// Single-method requests gathered in one loop turn for one data connection: the
/// arguments of one `dbx_run` after `now_ms` and `backlog`, back to back in `args`
/// (argument i ends at `ends[i]`): one JSON op per request, or key and value for a
/// plain `string.set`. Consecutive plain sets form a run (`runs`: the index of its
/// first argument, and its count), sent as `P count key value …`.
struct Group {
    args: Vec<u8>,
    ends: Vec<usize>,
    runs: Vec<(usize, usize)>,
    /// The last request gathered was a plain set (a next one joins its run).
    in_run: bool,
    waits: Vec<Waiting>,
    denyoom: bool,
    unix_ms: u64,
}

struct WatchAsk {
    keys: Vec<Box<str>>,
    patterns: Vec<Box<str>>,
    since: Option<(u64, Box<str>)>,
    scope: Rc<Identity>,
}

/// A key.watch whose values were read at `rev`, waiting for the follower to deliver
/// up to `rev` so that nothing after the read can be missed or seen twice.
struct Parked {
    w: Waiting,
    ask: Box<WatchAsk>,
    rev: u64,
    epoch: String,
    values: Box<RawValue>,
    since_ms: u64,
}

/// What a pending reply on a backend connection is for.
enum Tag {
    /// AUTH / SELECT: an error closes the connection.
    Setup,
    /// `CONFIG GET maxmemory-policy`.
    Policy,
    /// `FUNCTION LOAD REPLACE`.
    Load,
    /// `dbx_init`.
    Init,
    Expire,
    Follow,
    /// One `dbx_run` for several single-method requests (see `add_to_group`).
    Group(Vec<Waiting>),
    /// `SENTINEL get-master-addr-by-name`.
    Master,
    Req(Waiting),
    /// The `EXEC` of a fast-path transaction (`fast.rs`).
    Fast(Vec<Waiting>),
}

#[derive(Deserialize)]
struct ExecReply<'a> {
    rev: u64,
    epoch: String,
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
}

/// The result of a plain `string.set` (what the embedded command answers), from the
/// bare rev `dbx_run` returns for it.
pub fn set_result(j: &mut Json, rev: u64) {
    j.bool("set", true).u64("rev", rev);
}

#[derive(Deserialize)]
struct Elem<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrObj>,
}

#[derive(Deserialize)]
struct ErrObj {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RevEpoch {
    rev: u64,
    epoch: String,
}

#[derive(Deserialize)]
struct WatchRead {
    rev: u64,
    epoch: String,
    values: Box<RawValue>,
}

pub struct Gateway {
    target: RedisTarget,
    registry: Registry,
    /// The primary's address (resolved at start; from the sentinels after a failover).
    addr: Option<SocketAddr>,
    data: Vec<RespConn<Tag>>,
    /// Per data connection: the single-method requests of this turn (`add_to_group`).
    groups: Vec<Option<Group>>,
    /// Per data connection: the fast-path gets of this turn (`fast.rs`).
    fast: Vec<Option<fast::FastGroup>>,
    /// Requests whose connection closed before they were sent (see `fail_orphans`).
    orphans: Vec<Tag>,
    follow: RespConn<Tag>,
    sub: RespConn<()>,
    /// `redis+sentinel://`: the connection to one of the sentinels (which one:
    /// `sentinel_at`), asked for the primary at start, after a failure and every second.
    sentinel: RespConn<Tag>,
    sentinel_at: usize,
    next_sentinel_ask: u64,
    /// DBX_BACKEND_SENTINEL_PASSWORD: `AUTH` on each sentinel connection.
    sentinel_password: Option<String>,
    /// Why the last sentinel asked gave no primary (refused AUTH, no such master …),
    /// until one answers (`/health`, and the log once per distinct reason).
    sentinel_error: Option<String>,
    /// Sentinels in a row that answered without a primary (see `sentinel_refused`).
    sentinel_misses: usize,
    /// The reasons logged since a sentinel last answered (`note_sentinel_error`).
    sentinel_logged: Vec<String>,
    /// Host names looked up off the loop (`resolve.rs`).
    resolver: resolve::Resolver,
    /// data[0] has loaded the library and called dbx_init since it (re)connected.
    ready: bool,
    /// Why requests are refused although Redis answers (an evicting policy).
    refusal: Option<String>,
    allow_eviction: bool,
    /// Requests waiting on Redis (parked watches included).
    inflight: usize,
    max_inflight: usize,
    timeout_ms: u64,
    backlog: usize,
    /// Per client token: bumped when the connection goes (see `Waiting::generation`).
    generations: Vec<u32>,
    /// Replies completed: `(token, seq, reply)`.
    pub done: Vec<(usize, u64, Vec<u8>)>,
    /// Per client connection: requests issued / answered, and events held until the
    /// replies of the requests before them went out ("reply first, then event": the
    /// follower may bring a write's change before the write's own reply).
    flows: hashbrown::HashMap<usize, Flow>,
    ready_events: Vec<(usize, Rc<[u8]>)>,
    /// The last rev delivered to local watchers, and the stream id it came from.
    delivered: u64,
    delivered_n: u64,
    follow_from: String,
    /// Fields t, k and e of the entry `follow_from` names, as read: `dbx_init` checks
    /// after a reconnect that this entry is still there as it was (a lost entry whose rev
    /// another gateway reused since would otherwise go unnoticed).
    follow_last: Option<[String; 3]>,
    /// The follower has read the stream up to its end once (history complete).
    follow_started: bool,
    /// The newest rev Redis reported (dbx_exec / dbx_init).
    latest_rev: u64,
    /// The epoch of what was delivered (for dbx_init after a reconnect).
    known_epoch: Option<String>,
    parked: Vec<Parked>,
    next_expire_ms: u64,
    expire_outstanding: bool,
    /// Subscriptions mirrored on `sub` (channel or pattern names, unprefixed).
    mirrored_channels: hashbrown::HashSet<Box<str>>,
    mirrored_patterns: hashbrown::HashSet<Box<str>>,
    /// `sub` reconnected: subscribe to everything again.
    sub_resubscribe: bool,
    /// `pubsub.subscribe` replies waiting for Redis to confirm these names.
    confirming: Vec<(Vec<Box<str>>, Waiting, Vec<u8>)>,
    scratch: Vec<u8>,
    frames: Vec<(Tag, OwnedFrame, u64)>,
    /// Backend reply times by kind (`/metrics`).
    latency: latency::Latency,
    /// Requests answered `unavailable` / timed out (metrics, logs).
    pub unavailable_total: u64,
    logged_down: bool,
}

impl Gateway {
    pub fn new(cfg: &Config, target: RedisTarget, registry: Registry) -> Result<Gateway, String> {
        let mut resolver = resolve::Resolver::default();
        // A literal address is known now; a name is being looked up (`reconnect` uses
        // it once the answer is in).
        let addr = match (&target.sentinel_master, target.addrs.first()) {
            (None, Some((h, p))) => resolver.lookup(h, *p),
            _ => None,
        };
        let n = cfg.backend_connections.clamp(1, 64);
        let tls = tls_to(cfg, &target)?;
        let conn = |t: usize| {
            let mut c = RespConn::new(Token(t));
            c.tls_to.clone_from(&tls);
            c
        };
        Ok(Gateway {
            addr,
            registry,
            data: (0..n).map(|i| conn(TOKEN_BASE + i)).collect(),
            groups: Vec::new(),
            fast: Vec::new(),
            orphans: Vec::new(),
            follow: conn(FOLLOW),
            sub: {
                let mut c = RespConn::new(Token(SUB));
                c.tls_to.clone_from(&tls);
                c
            },
            sentinel: RespConn::new(Token(SENTINEL)),
            sentinel_at: 0,
            next_sentinel_ask: 0,
            sentinel_password: cfg.backend_sentinel_password.clone(),
            sentinel_error: None,
            sentinel_misses: 0,
            sentinel_logged: Vec::new(),
            resolver,
            ready: false,
            refusal: None,
            allow_eviction: cfg.backend_allow_eviction,
            inflight: 0,
            max_inflight: cfg.backend_max_inflight,
            timeout_ms: cfg.backend_timeout_ms(),
            backlog: cfg.watch_backlog,
            generations: Vec::new(),
            done: Vec::new(),
            flows: hashbrown::HashMap::new(),
            ready_events: Vec::new(),
            delivered: 0,
            delivered_n: 0,
            follow_from: "0-0".to_string(),
            follow_last: None,
            follow_started: false,
            latest_rev: 0,
            known_epoch: None,
            parked: Vec::new(),
            next_expire_ms: 0,
            expire_outstanding: false,
            mirrored_channels: Default::default(),
            mirrored_patterns: Default::default(),
            sub_resubscribe: false,
            confirming: Vec::new(),
            scratch: Vec::new(),
            frames: Vec::new(),
            latency: latency::Latency::default(),
            unavailable_total: 0,
            logged_down: false,
            target,
        })
    }

    pub fn is_token(t: usize) -> bool {
        (TOKEN_BASE..TOKEN_END).contains(&t)
    }

    /// Requests are served: Redis answers, the library is loaded, nothing refuses.
    pub fn ready(&self) -> bool {
        self.ready && self.refusal.is_none() && self.data.first().is_some_and(RespConn::is_up)
    }

    /// The rev delivered to local watchers.
    pub fn rev(&self) -> u64 {
        self.delivered.max(self.latest_rev)
    }

    pub fn describe(&self, j: &mut Json) {
        if let Some(a) = self.primary() {
            j.str("backend_primary", &a.to_string());
        }
        j.str("backend", &self.target.describe())
            .bool("backend_up", self.ready())
            .u64("backend_inflight", self.inflight as u64);
        if let Some(r) = &self.refusal {
            j.str("backend_refusal", r);
        }
        if !self.ready() {
            if let Some(e) = self.data.first().and_then(|c| c.last_error.as_deref()) {
                j.str("backend_error", e);
            }
        }
        if let Some(e) = self.sentinel_error() {
            j.str("backend_sentinel_error", e);
        }
        if let Some(e) = &self.resolver.last_error {
            j.str("backend_resolve_error", e);
        }
    }

    /// `/metrics` series of gateway mode.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, f64)> {
        vec![
            (
                "dbx_backend_up",
                "1 while the backend serves requests (connected, library loaded)",
                f64::from(u8::from(self.ready())),
            ),
            ("dbx_backend_inflight", "Requests waiting on the backend", self.inflight as f64),
            ("dbx_backend_delivered_rev", "The last rev the change-stream follower delivered", self.delivered as f64),
        ]
    }

    /// `/metrics` counters and histograms of gateway mode (`metrics` has the gauges).
    pub fn histograms(&self, out: &mut String) {
        // A counter, typed as one (the gauges' path would call it a gauge).
        out.push_str(&format!(
            "# HELP dbx_backend_unavailable_total Requests answered unavailable because the backend failed or timed out\n\
             # TYPE dbx_backend_unavailable_total counter\ndbx_backend_unavailable_total {}\n",
            self.unavailable_total
        ));
        self.latency.write(out);
    }

    fn generation(&self, t: usize) -> u32 {
        self.generations.get(t).copied().unwrap_or(0)
    }

    fn waiting(&mut self, s: &Session, id: Option<&str>, kind: Kind) -> Waiting {
        self.flows.entry(s.conn).or_default().issued += 1;
        Waiting { conn: s.conn, generation: self.generation(s.conn), seq: s.seq, id: id.map(Into::into), kind }
    }

    // ---- requests ----

    /// One parsed request (the engine has read it and charged the rate limit).
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        l: &mut Local,
        s: &mut Session,
        id: Option<&str>,
        method: &str,
        params: &Params,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let now_reply = |out: &mut Vec<u8>, e: Error, method: Option<&'static str>| {
            envelope::error(out, id, &e, l.stamp);
            Outcome { reply: Reply::Now, method, error: Some(e.code), ops: 0, identity_changed: false }
        };
        if method == "batch" {
            return self.batch(l, s, id, params, out);
        }
        let Some(command) = cmd::lookup(method) else {
            let e = Error::new(Code::MethodNotFound, format!("Unknown method '{method}'"));
            return now_reply(out, e, Some("unknown"));
        };
        let name = command.name;
        match name {
            // Answered here, exactly as the embedded store answers them (its commands
            // run against the empty local store and the hub).
            "server.ping" | "server.time" | "auth.refresh" | "pubsub.subscribe" | "pubsub.unsubscribe"
            | "key.unwatch" => return self.local(l, s, id, method, params, out),
            "server.save" => {
                // Not a snapshot of ours to take: say where durability lives instead.
                let e = policy::admit(s.identity, command, params).err().unwrap_or_else(|| {
                    Error::new(
                        Code::Unavailable,
                        "Gateway mode: Redis persists the data (its appendonly / save settings); \
                         there is no DBX snapshot to take",
                    )
                });
                return now_reply(out, e, Some(name));
            }
            _ => {}
        }
        if let Err(e) = policy::admit(s.identity, command, params) {
            return now_reply(out, e, Some(name));
        }
        if let Err(e) = self.admission() {
            return now_reply(out, e, Some(name));
        }
        let now = l.mono_ms;
        match name {
            "pubsub.publish" => {
                let channel = match params.str("channel") {
                    Ok(c) => c,
                    Err(e) => return now_reply(out, e, Some(name)),
                };
                let data = params.raw("data").map_or("null", |r| r.get());
                if data.contains("\\u") && serde_json::from_str::<serde_json::Value>(data).is_err() {
                    let e = Error::invalid_params(
                        "Parameter 'data' holds a lone surrogate escape (\\uD800–\\uDFFF without its pair), which is not valid Unicode",
                    );
                    return now_reply(out, e, Some(name));
                }
                let full = format!("{CHANNEL_PREFIX}{channel}");
                let w = self.waiting(s, id, Kind::Publish);
                self.send_data(&[b"PUBLISH", full.as_bytes(), data.as_bytes()], w, now);
            }
            "server.info" => {
                let w = self.waiting(s, id, Kind::Info);
                self.send_data(&[b"FCALL", b"dbx_info", b"0"], w, now);
            }
            "key.watch" => match watch_ask(s.identity, params) {
                Ok(ask) => {
                    let spec = serde_json::json!({"keys": &ask.keys, "patterns": &ask.patterns}).to_string();
                    let now_ms = l.unix_ms.to_string();
                    let w = self.waiting(s, id, Kind::Watch(Box::new(ask)));
                    self.send_data(&[b"FCALL_RO", b"dbx_watch_read", b"0", now_ms.as_bytes(), spec.as_bytes()], w, now);
                }
                Err(e) => return now_reply(out, e, Some(name)),
            },
            "string.get" if params.str("key").is_ok() => {
                // Native commands instead of the library (fast.rs). A key that is not a
                // string goes to the library, which words that error.
                let key: Box<str> = params.str("key").map(|k| k.as_ref().into()).unwrap_or_default();
                let w = self.waiting(s, id, Kind::Get { key, field: None, now_ms: l.unix_ms });
                self.fast_get(w, now);
            }
            "string.mget" if params.str_list("keys").is_ok() => {
                let keys: Vec<Box<str>> =
                    params.str_list("keys").unwrap_or_default().iter().map(|k| k.as_ref().into()).collect();
                let w = self.waiting(s, id, Kind::MGet { keys, now_ms: l.unix_ms });
                self.fast_get(w, now);
            }
            "hash.get" if params.str("key").is_ok() && params.str("field").is_ok() => {
                // One field: native HGET (fast.rs); the whole hash goes to the library.
                let key: Box<str> = params.str("key").map(|k| k.as_ref().into()).unwrap_or_default();
                let field: Box<str> = params.str("field").map(|k| k.as_ref().into()).unwrap_or_default();
                let w = self.waiting(s, id, Kind::Get { key, field: Some(field), now_ms: l.unix_ms });
                self.fast_get(w, now);
            }
            _ => {
                let w = self.waiting(s, id, Kind::Single(scan_filter(name, s.identity)));
                self.add_to_group(name, params, command.flags & DENYOOM != 0, w, l.unix_ms, now);
            }
        }
        l.facts.ops_total += 1;
        Outcome { reply: Reply::Later, method: Some(name), error: None, ops: 1, identity_changed: false }
    }

    /// Whether a request may go to Redis now.
    fn admission(&self) -> Result<(), Error> {
        if let Some(r) = &self.refusal {
            return Err(Error::new(Code::Unavailable, format!("Backend refused: {r}")));
        }
        if !self.ready() {
            let why = self.data.first().and_then(|c| c.last_error.clone()).unwrap_or_else(|| "connecting".into());
            return Err(Error::new(
                Code::Unavailable,
                format!("Backend {} unavailable: {why}", self.target.describe()),
            ));
        }
        if self.inflight >= self.max_inflight {
            let mut e = Error::new(
                Code::Overloaded,
                format!("{} requests are waiting on the backend (DBX_BACKEND_MAX_INFLIGHT)", self.inflight),
            );
            e.retry_after_ms = Some(OVERLOAD_RETRY_MS);
            return Err(e);
        }
        Ok(())
    }

    /// A gateway-side method, run by the embedded command against the local state.
    fn local(
        &mut self,
        l: &mut Local,
        s: &mut Session,
        id: Option<&str>,
        method: &str,
        params: &Params,
        out: &mut Vec<u8>,
    ) -> Outcome {
        l.fx.reset(false);
        let mut ctx = Ctx {
            store: l.store,
            hub: Some(l.hub),
            now_ms: l.unix_ms,
            facts: l.facts,
            identity: s.identity.clone(),
            auth: Some(l.auth),
            conn: s.conn,
            replaying: false,
        };
        let err = policy::respond(&mut ctx, l.fx, None, id, method, params, l.stamp, out);
        let mut identity_changed = false;
        for e in l.fx.effects.drain(..) {
            if let cmd::Effect::IdentityChanged(idt) = e {
                l.hub.set_scope(s.conn, idt.clone());
                *s.identity = idt;
                identity_changed = true;
            }
        }
        l.facts.ops_total += l.fx.ops;
        let mut reply = Reply::Now;
        if method.starts_with("pubsub.") {
            let added = self.mirror_subscriptions(l.hub);
            if !added.is_empty() && err.is_none() {
                // The reply waits for Redis to confirm the new subscriptions, so that a
                // publish made after it (on any gateway) reaches this subscriber.
                let w = self.waiting(s, id, Kind::Single(None));
                self.confirming.push((added, w, out.clone()));
                reply = Reply::Later;
            }
        }
        let name = l.fx.last_method();
        Outcome {
            reply,
            method: Some(if name.is_empty() { "unknown" } else { name }),
            error: err.map(|e| e.code),
            ops: l.fx.ops,
            identity_changed,
        }
    }

    fn batch(
        &mut self,
        l: &mut Local,
        s: &mut Session,
        id: Option<&str>,
        params: &Params,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let refuse = |out: &mut Vec<u8>, e: Error| {
            envelope::error(out, id, &e, l.stamp);
            Outcome { reply: Reply::Now, method: Some("batch"), error: Some(e.code), ops: 0, identity_changed: false }
        };
        let ops = match params.array("operations") {
            Ok(o) => o,
            Err(e) => return refuse(out, e),
        };
        if ops.is_empty() {
            return refuse(out, Error::invalid_params("Parameter 'operations' must be a non-empty array"));
        }
        if ops.len() > l.facts.max_batch {
            return refuse(
                out,
                Error::invalid_params(format!(
                    "Parameter 'operations' has {} operations, more than the limit of {}",
                    ops.len(),
                    l.facts.max_batch
                )),
            );
        }
        if let Err(e) = self.admission() {
            return refuse(out, e);
        }
        // Each operation is checked here; the admitted ones run in one FCALL (atomic),
        // the refused ones keep their place in `results` with their error.
        let mut local = Vec::with_capacity(ops.len());
        self.scratch.clear();
        self.scratch.push(b'[');
        let mut sent = 0;
        let mut denyoom = false;
        for raw in ops {
            let checked = request::op(raw).and_then(|op| {
                if op.method == "batch" {
                    return Err(Error::new(Code::InvalidRequest, "A batch may not contain a batch"));
                }
                let p = op.params()?;
                let c = cmd::lookup(&op.method)
                    .ok_or_else(|| Error::new(Code::MethodNotFound, format!("Unknown method '{}'", op.method)))?;
                if c.flags & NO_BATCH != 0 {
                    return Err(Error::new(
                        Code::InvalidRequest,
                        format!("'{}' is not allowed inside a batch", op.method),
                    ));
                }
                policy::admit(s.identity, c, &p)?;
                Ok((c, p))
            });
            match checked {
                Ok((c, p)) => {
                    let name = c.name;
                    denyoom |= c.flags & DENYOOM != 0;
                    if sent > 0 {
                        self.scratch.push(b',');
                    }
                    self.scratch.extend_from_slice(b"{\"method\":");
                    write_str(&mut self.scratch, name);
                    self.scratch.extend_from_slice(b",\"params\":");
                    p.write_json(&mut self.scratch);
                    self.scratch.push(b'}');
                    sent += 1;
                    local.push(Ok(scan_filter(name, s.identity)));
                }
                Err(e) => local.push(Err(e)),
            }
        }
        self.scratch.push(b']');
        let n = local.len() as u64;
        l.facts.ops_total += n;
        let w = self.waiting(s, id, Kind::Batch(local));
        if sent == 0 {
            // Nothing to run in Redis: answer now.
            self.finish_batch(w, &[], l.stamp);
            if let Some((_, _, reply)) = self.done.pop() {
                out.clear();
                out.extend_from_slice(&reply);
            }
            return Outcome { reply: Reply::Now, method: Some("batch"), error: None, ops: n, identity_changed: false };
        }
        let ops_json = std::mem::take(&mut self.scratch);
        self.exec(&ops_json, denyoom, w, l.unix_ms, l.mono_ms);
        self.scratch = ops_json;
        Outcome { reply: Reply::Later, method: Some("batch"), error: None, ops: n, identity_changed: false }
    }

    /// `denyoom`: some operation may grow memory. Redis refuses a function without
    /// `allow-oom` as a whole above maxmemory, so requests that only read or delete
    /// call the `allow-oom` twin and keep working there, as embedded.
    fn exec(&mut self, ops_json: &[u8], denyoom: bool, w: Waiting, unix_ms: u64, now: u64) {
        let now_ms = unix_ms.to_string();
        let backlog = self.backlog.to_string();
        let f: &[u8] = if denyoom { b"dbx_exec" } else { b"dbx_exec_allow_oom" };
        self.send_data(&[b"FCALL", f, b"0", now_ms.as_bytes(), backlog.as_bytes(), ops_json], w, now);
    }

    /// The data connection for client connection `conn`: its own (`conn % n`), so one
    /// client's requests share one pipeline and Redis runs them in the order they were
    /// sent (a read after a write sees it); another open one if that one is down.
    fn pick(&self, conn: usize) -> Option<usize> {
        let n = self.data.len().max(1);
        let open = |i: &usize| self.data.get(*i).is_some_and(RespConn::is_open);
        std::iter::once(conn % n).chain(0..n).find(open)
    }

    fn no_connection(&mut self, w: Waiting) {
        self.unavailable_total += 1;
        let e = Error::new(Code::Unavailable, "No backend connection is open");
        let mut b = Vec::new();
        envelope::error(&mut b, w.id.as_deref(), &e, "");
        self.reply_to(&w, b);
    }

    /// Queue a command on the client's data connection (behind the group of single
    /// methods gathered so far on it, which keeps the client's order).
    fn send_data(&mut self, args: &[&[u8]], w: Waiting, now: u64) {
        let Some(i) = self.pick(w.conn) else { return self.no_connection(w) };
        self.flush_group(i, now);
        self.inflight += 1;
        if let Some(c) = self.data.get_mut(i) {
            // Written at the end of the loop turn (`tick`): the turn's requests leave
            // in one write per connection.
            if let Err(tag) = c.try_send(args, Tag::Req(w), now) {
                self.orphans.push(tag);
            }
        }
    }

    /// A single data method joins this turn's group on its data connection: the group
    /// goes to Redis as one `dbx_run` of independent operations (many client requests
    /// per backend call: the library's per-call cost is paid once). Running them
    /// together is atomic, more than each needs; each keeps its own result, error and
    /// rev, and its place in its connection's order.
    fn add_to_group(&mut self, method: &str, params: &Params, denyoom: bool, w: Waiting, unix_ms: u64, now: u64) {
        let Some(i) = self.pick(w.conn) else { return self.no_connection(w) };
        // A fast-path transaction gathered before it goes first (the client's order).
        self.flush_fast(i, now);
        let full =
            self.groups.get(i).and_then(Option::as_ref).is_some_and(|g| {
                g.denyoom != denyoom || g.waits.len() >= GROUP_MAX_OPS || g.args.len() >= GROUP_MAX_BYTES
            });
        if full {
            self.flush_group(i, now);
        }
        if self.groups.len() < self.data.len() {
            self.groups.resize_with(self.data.len(), || None);
        }
        let Some(slot) = self.groups.get_mut(i) else { return self.no_connection(w) };
        let g = slot.get_or_insert_with(|| Group {
            args: Vec::new(),
            ends: Vec::new(),
            runs: Vec::new(),
            in_run: false,
            waits: Vec::new(),
            denyoom,
            unix_ms,
        });
        if g.waits.is_empty() {
            g.args.clear();
            g.ends.clear();
            g.runs.clear();
            g.in_run = false;
            g.denyoom = denyoom;
            g.unix_ms = unix_ms;
        }
        match plain_set(method, params) {
            // The commonest write in its compact form, key and value in a run of plain
            // sets (dbx.lua's `set_run`), which spares the library reading JSON.
            Some((key, value)) => {
                match g.runs.last_mut() {
                    Some(run) if g.in_run => run.1 += 1,
                    _ => g.runs.push((g.ends.len(), 1)),
                }
                g.in_run = true;
                for a in [key.as_bytes(), value.as_bytes()] {
                    g.args.extend_from_slice(a);
                    g.ends.push(g.args.len());
                }
            }
            None => {
                g.in_run = false;
                g.args.extend_from_slice(b"{\"method\":");
                write_str(&mut g.args, method);
                g.args.extend_from_slice(b",\"params\":");
                params.write_json(&mut g.args);
                g.args.push(b'}');
                g.ends.push(g.args.len());
            }
        }
        g.waits.push(w);
        self.inflight += 1;
    }

    /// Send what was gathered on data connection `i` this turn (at most one of the two
    /// is non-empty: each flushes the other before it gathers).
    fn flush_group(&mut self, i: usize, now: u64) {
        self.flush_lua_group(i, now);
        self.flush_fast(i, now);
    }

    /// Send the group of library calls gathered on data connection `i`, if any.
    fn flush_lua_group(&mut self, i: usize, now: u64) {
        // The group stays in place, emptied, so its buffers serve the next turn.
        let Some(Some(g)) = self.groups.get_mut(i) else { return };
        if g.waits.is_empty() {
            return;
        }
        let now_ms = g.unix_ms.to_string();
        let backlog = self.backlog.to_string();
        let f: &[u8] = if g.denyoom { b"dbx_run" } else { b"dbx_run_allow_oom" };
        let counts: Vec<String> = g.runs.iter().map(|r| r.1.to_string()).collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(5 + g.ends.len() + 2 * counts.len());
        args.extend_from_slice(&[b"FCALL", f, b"0", now_ms.as_bytes(), backlog.as_bytes()]);
        let mut runs = g.runs.iter().zip(&counts).peekable();
        let mut start = 0;
        for (k, &end) in g.ends.iter().enumerate() {
            if let Some((_, count)) = runs.next_if(|(r, _)| r.0 == k) {
                args.extend_from_slice(&[b"P", count.as_bytes()]);
            }
            args.push(g.args.get(start..end).unwrap_or_default());
            start = end;
        }
        let Some(c) = self.data.get_mut(i) else { return };
        if let Err(tag) = c.try_send(&args, Tag::Group(std::mem::take(&mut g.waits)), now) {
            self.orphans.push(tag);
        }
    }

    /// Requests that found their connection closed when they were to be sent: they
    /// are answered `unavailable` here (where the local state is at hand).
    fn fail_orphans(&mut self, l: &mut Local) {
        for tag in std::mem::take(&mut self.orphans) {
            match tag {
                Tag::Req(w) => self.complete(l, w, None),
                Tag::Group(ws) => self.complete_group(l, ws, None),
                Tag::Fast(ws) => self.complete_fast(l, ws, None),
                _ => {}
            }
        }
    }

    /// The answer to a group (`dbx_run`'s array: the rev and epoch after the call,
    /// then one element per request).
    fn complete_group(&mut self, l: &mut Local, waits: Vec<Waiting>, frame: Option<OwnedFrame>) {
        self.inflight = self.inflight.saturating_sub(waits.len());
        let (results, error) = match frame {
            None => {
                self.unavailable_total += waits.len() as u64;
                (None, Error::new(Code::Unavailable, "The backend connection failed or timed out before answering"))
            }
            Some(OwnedFrame::Error(msg)) => (None, redis_error(&msg)),
            Some(OwnedFrame::Array(items)) => match (items.first(), items.get(1).and_then(bulk_text)) {
                (Some(OwnedFrame::Integer(rev)), Some(epoch)) if items.len() == waits.len() + 2 => {
                    self.note_rev(l, (*rev).max(0) as u64, epoch);
                    (Some(items), bad_reply("dbx_run"))
                }
                _ => (None, bad_reply("dbx_run")),
            },
            Some(_) => (None, bad_reply("dbx_run")),
        };
        for (k, w) in waits.into_iter().enumerate() {
            let elem = results.as_ref().and_then(|r| r.get(k + 2));
            let b = match (elem, &w.kind) {
                // A plain string.set: its rev.
                (Some(OwnedFrame::Integer(rev)), _) => {
                    let mut b = Vec::with_capacity(96);
                    envelope::reply(&mut b, w.id.as_deref(), l.stamp, |j| {
                        set_result(j, (*rev).max(0) as u64);
                        Ok(())
                    });
                    b
                }
                (Some(e), kind) => {
                    let e = bulk_text(e).unwrap_or("");
                    match kind {
                        Kind::Single(Some(scope)) => single_reply(w.id.as_deref(), &scan_in_scope(e, scope), l.stamp),
                        _ => single_reply(w.id.as_deref(), e, l.stamp),
                    }
                }
                (None, _) => {
                    let mut b = Vec::new();
                    envelope::error(&mut b, w.id.as_deref(), &error, l.stamp);
                    b
                }
            };
            self.reply_to(&w, b);
        }
    }

    // ---- completions ----

    fn reply_to(&mut self, w: &Waiting, body: Vec<u8>) {
        if self.generation(w.conn) != w.generation {
            return;
        }
        self.done.push((w.conn, w.seq, body));
        if let Some(f) = self.flows.get_mut(&w.conn) {
            f.answered += 1;
            while f.held.front().is_some_and(|h| h.0 <= f.answered) {
                if let Some((_, e)) = f.held.pop_front() {
                    self.ready_events.push((w.conn, e));
                }
            }
        }
    }

    /// The hub's deliveries, each behind the replies of the requests its connection
    /// made before it arrived.
    pub fn route_events(&mut self, out: &mut Vec<(usize, Rc<[u8]>)>) -> std::vec::Drain<'_, (usize, Rc<[u8]>)> {
        for (t, e) in out.drain(..) {
            match self.flows.get_mut(&t) {
                Some(f) if f.answered < f.issued || !f.held.is_empty() => f.held.push_back((f.issued, e)),
                _ => self.ready_events.push((t, e)),
            }
        }
        self.ready_events.drain(..)
    }

    fn answer_error(&mut self, w: Waiting, e: &Error, stamp: &str) {
        let mut b = Vec::new();
        envelope::error(&mut b, w.id.as_deref(), e, stamp);
        self.reply_to(&w, b);
    }

    /// A client request's reply arrived (or its connection failed: `frame` None).
    fn complete(&mut self, l: &mut Local, w: Waiting, frame: Option<OwnedFrame>) {
        self.inflight = self.inflight.saturating_sub(1);
        let frame = match frame {
            None => {
                self.unavailable_total += 1;
                let e = Error::new(Code::Unavailable, "The backend connection failed or timed out before answering");
                return self.answer_error(w, &e, l.stamp);
            }
            Some(OwnedFrame::Error(msg)) => {
                if msg.starts_with("READONLY") && self.target.sentinel_master.is_some() {
                    // Talking to a demoted primary: ask the sentinels now.
                    self.next_sentinel_ask = 0;
                }
                return self.answer_error(w, &redis_error(&msg), l.stamp);
            }
            Some(f) => f,
        };
        match &w.kind {
            Kind::Publish => {
                let n = match frame {
                    OwnedFrame::Integer(n) => n.max(0) as u64,
                    _ => 0,
                };
                let mut b = Vec::new();
                envelope::reply(&mut b, w.id.as_deref(), l.stamp, |j| {
                    j.u64("receivers", n);
                    Ok(())
                });
                self.reply_to(&w, b);
            }
            Kind::Info => {
                let text = bulk_text(&frame);
                let info: Option<InfoReply> = text.and_then(|t| serde_json::from_str(t).ok());
                let Some(info) = info else {
                    return self.answer_error(w, &bad_reply("dbx_info"), l.stamp);
                };
                self.note_rev(l, info.rev, &info.epoch);
                let f = &*l.facts;
                let mut b = Vec::new();
                envelope::reply(&mut b, w.id.as_deref(), l.stamp, |j| {
                    j.str("version", f.version)
                        .u64("uptime_s", f.uptime_s)
                        .u64("connections", f.connections as u64)
                        .u64("keys", info.keys)
                        .u64("used_memory", info.used_memory.unwrap_or(0))
                        .u64("ops_total", f.ops_total)
                        .u64("rev", info.rev)
                        .str("epoch", &info.epoch)
                        .u64("expired_keys", info.expired_keys.unwrap_or(0))
                        .u64("evicted_keys", 0)
                        .u64("maxmemory", info.maxmemory.unwrap_or(0))
                        .str("maxmemory_policy", info.maxmemory_policy.as_deref().unwrap_or("noeviction"))
                        .str("backend", &self.target.describe())
                        .str("backend_library", &info.lib);
                    Ok(())
                });
                self.reply_to(&w, b);
            }
            Kind::Single(_) | Kind::Batch(_) => {
                let text = bulk_text(&frame).unwrap_or("");
                let parsed: Option<ExecReply> = serde_json::from_str(text).ok();
                let Some(r) = parsed else {
                    log::error!("dbx_exec answered something unreadable: {:.200}", text);
                    return self.answer_error(w, &bad_reply("dbx_exec"), l.stamp);
                };
                self.note_rev(l, r.rev, &r.epoch);
                if let Kind::Single(filter) = &w.kind {
                    let elem = r.results.first().map(|e| e.get()).unwrap_or("");
                    let b = match filter {
                        Some(scope) => single_reply(w.id.as_deref(), &scan_in_scope(elem, scope), l.stamp),
                        None => single_reply(w.id.as_deref(), elem, l.stamp),
                    };
                    self.reply_to(&w, b);
                } else {
                    self.finish_batch(w, &r.results, l.stamp);
                }
            }
            // Fast-path gets are answered by `complete_fast`, never as a `Req`.
            Kind::Get { .. } | Kind::MGet { .. } => self.answer_error(w, &bad_reply("EXEC"), l.stamp),
            Kind::Watch(_) => {
                let text = bulk_text(&frame).unwrap_or("");
                let Ok(read) = serde_json::from_str::<WatchRead>(text) else {
                    return self.answer_error(w, &bad_reply("dbx_watch_read"), l.stamp);
                };
                let Waiting { conn, generation, seq, id, kind: Kind::Watch(ask) } = w else { return };
                self.inflight += 1; // still waiting (parked) until the follower catches up
                self.parked.push(Parked {
                    w: Waiting { conn, generation, seq, id, kind: Kind::Single(None) },
                    ask,
                    rev: read.rev,
                    epoch: read.epoch,
                    values: read.values,
                    since_ms: l.mono_ms,
                });
                self.release_parked(l);
            }
        }
    }

    fn finish_batch(&mut self, w: Waiting, results: &[&RawValue], stamp: &str) {
        let Kind::Batch(local) = &w.kind else { return };
        let mut b = Vec::new();
        let mut remote = results.iter();
        envelope::reply(&mut b, w.id.as_deref(), stamp, |j| {
            j.arr("results", |a| {
                for slot in local {
                    let buf = a.elem();
                    match slot {
                        Err(e) => {
                            buf.extend_from_slice(b"{\"error\":");
                            envelope::write_error(buf, e);
                            buf.push(b'}');
                        }
                        Ok(filter) => match remote.next() {
                            Some(r) => match filter {
                                Some(scope) => buf.extend_from_slice(scan_in_scope(r.get(), scope).as_bytes()),
                                None => buf.extend_from_slice(r.get().as_bytes()),
                            },
                            None => {
                                buf.extend_from_slice(b"{\"error\":");
                                envelope::write_error(buf, &bad_reply("dbx_exec"));
                                buf.push(b'}');
                            }
                        },
                    }
                }
            });
            Ok(())
        });
        self.reply_to(&w, b);
    }

    /// Redis told us its rev and epoch: a new epoch means history was cut (a flush, or
    /// a failover to a primary that is behind).
    fn note_rev(&mut self, l: &mut Local, rev: u64, epoch: &str) {
        self.latest_rev = self.latest_rev.max(rev);
        if l.facts.epoch != epoch {
            if !l.facts.epoch.is_empty() {
                log::info!("backend epoch is now {epoch} (was {})", l.facts.epoch);
                l.hub.reset_history(rev);
            }
            l.facts.epoch = epoch.to_string();
        }
    }

    /// Parked watches whose read rev the follower has reached are answered now.
    fn release_parked(&mut self, l: &mut Local) {
        let mut i = 0;
        while let Some(p) = self.parked.get(i) {
            let reached = self.delivered >= p.rev || p.epoch != l.facts.epoch;
            let late = l.mono_ms.saturating_sub(p.since_ms) > self.timeout_ms;
            if !(reached || late) {
                i += 1;
                continue;
            }
            let p = self.parked.swap_remove(i);
            self.inflight = self.inflight.saturating_sub(1);
            if !reached {
                self.unavailable_total += 1;
                let e = Error::new(Code::Unavailable, "The change stream did not reach the watch's rev in time");
                self.answer_error(p.w, &e, l.stamp);
                continue;
            }
            self.answer_watch(l, p);
        }
    }

    fn answer_watch(&mut self, l: &mut Local, p: Parked) {
        if self.generation(p.w.conn) != p.w.generation {
            return;
        }
        let keys: Vec<&str> = p.ask.keys.iter().map(|k| &**k).collect();
        let pats: Vec<&str> = p.ask.patterns.iter().map(|k| &**k).collect();
        // Register first; then the reply; then what the follower delivered after the
        // read (rev > p.rev), in order, behind the reply.
        l.hub.watch(p.w.conn, &keys, &pats, p.ask.scope.clone());
        let current = self.delivered;
        let mut b = Vec::new();
        let mut after: Vec<Rc<[u8]>> = Vec::new();
        let epoch = l.facts.epoch.clone();
        let values = p.values.get();
        envelope::reply(&mut b, p.w.id.as_deref(), l.stamp, |out| {
            let resume = p.ask.since.as_ref().map(|(since, ep)| (*since, **ep == *epoch));
            if cmd::watch_head(out, l.hub, &keys, &pats, &p.ask.scope, resume, current, &epoch) {
                return Ok(());
            }
            out.u64("rev", p.rev);
            let buf = &mut *out.buf;
            buf.extend_from_slice(b",\"values\":");
            write_values_in_scope(buf, values, &p.ask.scope);
            if let Some(ev) = l.hub.replay(p.rev, &keys, &pats, &p.ask.scope) {
                after = ev;
            }
            Ok(())
        });
        self.reply_to(&p.w, b);
        for e in after {
            l.hub.out.push((p.w.conn, e));
        }
    }

    // ---- the loop ----

    /// Poll readiness on a backend token.
    pub fn on_event(&mut self, l: &mut Local, token: usize, readable: bool, writable: bool) {
        let now = l.mono_ms;
        if token == SUB {
            self.sub_event(l, readable, writable);
            return;
        }
        let idx = token.wrapping_sub(TOKEN_BASE);
        let mut frames = std::mem::take(&mut self.frames);
        let res = {
            let c = match token {
                FOLLOW => Some(&mut self.follow),
                SENTINEL => Some(&mut self.sentinel),
                _ => self.data.get_mut(idx),
            };
            let Some(c) = c else {
                self.frames = frames;
                return;
            };
            let was_up = c.is_up();
            let mut r = Ok(());
            if writable {
                r = c.on_writable();
            }
            if r.is_ok() && !was_up && c.is_up() {
                if token == SENTINEL {
                    // (Reconnected every second while sentinels refuse: not news.)
                    log::debug!("sentinel connection up");
                } else {
                    log::info!("backend connection {idx} up");
                }
            }
            if r.is_ok() && readable {
                r = c.on_readable(&mut frames);
            }
            r
        };
        for (tag, f, us) in frames.drain(..) {
            self.latency.record(&tag, us);
            self.on_reply(l, token, tag, Some(f));
        }
        self.frames = frames;
        if let Err(e) = res {
            if token == FOLLOW {
                self.fail_follow(now, format!("{e}"));
            } else if token == SENTINEL {
                let which = self.sentinel.peer.map_or_else(String::new, |a| format!(" {a}"));
                self.fail_sentinel(now, format!("sentinel{which}: {e}"));
            } else {
                self.fail_data_local(l, idx, format!("{e}"));
            }
        }
        self.fail_orphans(l);
        self.release_parked(l);
    }

    fn on_reply(&mut self, l: &mut Local, token: usize, tag: Tag, f: Option<OwnedFrame>) {
        let idx = token.wrapping_sub(TOKEN_BASE);
        match tag {
            Tag::Req(w) => self.complete(l, w, f),
            Tag::Group(ws) => self.complete_group(l, ws, f),
            Tag::Fast(ws) => self.complete_fast(l, ws, f),
            Tag::Setup => match f {
                Some(OwnedFrame::Error(e)) if token == SENTINEL => {
                    let why = format!("refused AUTH: {e} (DBX_BACKEND_SENTINEL_PASSWORD is the sentinels' password)");
                    self.sentinel_refused(l.mono_ms, why);
                }
                Some(OwnedFrame::Error(e)) => {
                    self.refusal_or_fail(l, token, format!("Redis refused the connection setup: {e}"))
                }
                _ => {}
            },
            Tag::Policy => {
                let policy = match &f {
                    Some(OwnedFrame::Array(a)) => a.get(1).and_then(frame_text).map(str::to_string),
                    _ => None,
                };
                match policy {
                    Some(p) if evicts(&p) && !self.allow_eviction => {
                        let why = format!(
                            "Redis maxmemory-policy is {p}: it evicts keys without any watcher hearing of it \
                             (set maxmemory-policy noeviction, or DBX_BACKEND_ALLOW_EVICTION=true)"
                        );
                        log::error!("{why}");
                        self.refusal = Some(why);
                    }
                    Some(_) => self.refusal = None,
                    // CONFIG may be disabled (managed Redis): say so, go on.
                    None => log::warn!("could not read Redis maxmemory-policy (CONFIG GET refused?)"),
                }
            }
            Tag::Load => {
                if let Some(OwnedFrame::Error(e)) = f {
                    self.refusal_or_fail(l, token, format!("FUNCTION LOAD of the dbx library failed: {e}"));
                }
            }
            Tag::Init => match f.as_ref().and_then(bulk_text).and_then(|t| serde_json::from_str::<RevEpoch>(t).ok()) {
                Some(r) => {
                    let behind = self.delivered > 0
                        && r.rev < self.delivered
                        && self.known_epoch.as_deref().is_some_and(|k| k != r.epoch);
                    self.note_rev(l, r.rev, &r.epoch);
                    if behind {
                        // A data set that restarted below what was delivered (an empty
                        // Redis, a failover to a replica that had nothing): its history
                        // is another one. Watchers get the new epoch now, and the
                        // follower reads the new stream from its start (its ids are below
                        // the last one delivered and would be skipped).
                        log::warn!(
                            "backend history restarted at rev {} epoch {} (delivered rev {}): new epoch for watchers",
                            r.rev,
                            r.epoch,
                            self.delivered
                        );
                        l.hub.changed(None, "epoch", r.rev, &r.epoch, l.unix_ms);
                        self.delivered = 0;
                        self.delivered_n = 0;
                        self.follow_from = "0-0".into();
                        self.follow_last = None;
                        self.follow_started = false;
                        self.latest_rev = r.rev;
                        self.known_epoch = Some(r.epoch.clone());
                        self.fail_follow(l.mono_ms, "history restarted".into());
                        self.follow.retry_now();
                    }
                    if !self.ready {
                        log::info!("backend {} ready: rev {} epoch {}", self.target.describe(), r.rev, r.epoch);
                    }
                    self.ready = true;
                    self.logged_down = false;
                }
                None => {
                    let why = match f {
                        Some(OwnedFrame::Error(e)) => e,
                        _ => "unreadable answer".into(),
                    };
                    self.fail_data_local(l, idx, format!("dbx_init failed: {why}"));
                }
            },
            Tag::Expire => {
                self.expire_outstanding = false;
                if let Some(OwnedFrame::Error(e)) = f {
                    log::warn!("dbx_expire_due failed: {e}");
                }
            }
            Tag::Follow => self.on_follow(l, f),
            Tag::Master => self.on_master(l, f),
        }
    }

    fn refusal_or_fail(&mut self, l: &mut Local, token: usize, why: String) {
        log::error!("{why}");
        if token == FOLLOW {
            self.fail_follow(l.mono_ms, why);
        } else {
            self.fail_data_local(l, token.wrapping_sub(TOKEN_BASE), why);
        }
    }

    fn fail_data_local(&mut self, l: &mut Local, idx: usize, why: String) {
        let now = l.mono_ms;
        let Some(c) = self.data.get_mut(idx) else { return };
        if !self.logged_down {
            log::warn!("backend connection {idx} down: {why}");
        }
        let failed = c.fail(&self.registry, now, why);
        if self.target.sentinel_master.is_some() {
            // The primary may have moved: ask the sentinels before reconnecting.
            self.addr = None;
            self.next_sentinel_ask = 0;
        } else if idx == 0 {
            // The name may point elsewhere now, or its next address may answer.
            self.address_failed();
        }
        if idx == 0 {
            if self.ready {
                log::warn!("backend {} unavailable", self.target.describe());
            }
            self.ready = false;
            self.logged_down = true;
        }
        for tag in failed {
            match tag {
                Tag::Req(w) => self.complete(l, w, None),
                Tag::Group(ws) => self.complete_group(l, ws, None),
                Tag::Fast(ws) => self.complete_fast(l, ws, None),
                Tag::Expire => self.expire_outstanding = false,
                _ => {}
            }
        }
    }

    fn fail_follow(&mut self, now: u64, why: String) {
        log::warn!("change-stream follower down: {why}");
        let _ = self.follow.fail(&self.registry, now, why);
    }

    /// Timers: reconnects, timeouts, expiry. Called once per loop turn.
    pub fn tick(&mut self, l: &mut Local) {
        let now = l.mono_ms;
        if !l.facts.epoch.is_empty() {
            self.known_epoch = Some(l.facts.epoch.clone());
        }
        // Timeouts: a connection whose oldest command is overdue is dropped (its
        // pending requests get `unavailable`) and reopened.
        for i in 0..self.data.len() {
            let overdue = self
                .data
                .get(i)
                .and_then(RespConn::oldest_sent)
                .is_some_and(|t| now.saturating_sub(t) > self.timeout_ms);
            if overdue {
                self.fail_data_local(l, i, format!("no answer within DBX_BACKEND_TIMEOUT ({} ms)", self.timeout_ms));
            }
        }
        if self.follow.oldest_sent().is_some_and(|t| now.saturating_sub(t) > self.timeout_ms + FOLLOW_BLOCK_MS) {
            self.fail_follow(now, "XREAD timed out".into());
        }
        if self.target.sentinel_master.is_some() {
            self.sentinel_timeouts(now);
        }
        self.reconnect(now);
        if self.sub_resubscribe {
            self.sub_resubscribe = false;
            self.mirrored_channels.clear();
            self.mirrored_patterns.clear();
            self.mirror_subscriptions(l.hub);
        }
        if self.ready() && !self.expire_outstanding && now >= self.next_expire_ms {
            self.next_expire_ms = now + EXPIRE_EVERY_MS;
            let (a, b, c) = (l.unix_ms.to_string(), EXPIRE_LIMIT.to_string(), self.backlog.to_string());
            if let Some(c0) = self.data.get_mut(0) {
                c0.send(
                    &[b"FCALL", b"dbx_expire_due", b"0", a.as_bytes(), b.as_bytes(), c.as_bytes()],
                    Tag::Expire,
                    now,
                );
                self.expire_outstanding = true;
            }
        }
        for i in 0..self.data.len() {
            self.flush_group(i, now);
            if let Some(c) = self.data.get_mut(i) {
                if let Err(e) = c.flush() {
                    self.fail_data_local(l, i, format!("write failed: {e}"));
                }
            }
        }
        let _ = self.follow.flush();
        let _ = self.sub.flush();
        self.fail_orphans(l);
        self.release_parked(l);
    }

    /// `redis://` / `rediss://`: the server's address, if known (`resolve.rs`).
    fn resolve_target(&mut self) -> Option<SocketAddr> {
        if self.target.sentinel_master.is_some() {
            return None;
        }
        let (h, p) = self.target.addrs.first()?;
        self.resolver.lookup(h, *p)
    }

    /// Connecting to the server failed: next time, its next address or a fresh lookup
    /// (a literal address stays as it is).
    fn address_failed(&mut self) {
        if self.target.sentinel_master.is_some() {
            return;
        }
        if let Some((h, p)) = self.target.addrs.first() {
            self.resolver.failed(h, *p);
        }
        self.addr = None;
    }

    /// Open what is down and due.
    fn reconnect(&mut self, now: u64) {
        if self.target.sentinel_master.is_some() {
            self.ask_sentinel(now);
        }
        self.resolver.poll();
        let Some(addr) = self.addr.or_else(|| self.resolve_target()) else { return };
        self.addr = Some(addr);
        let setup = setup_commands(&self.target);
        for i in 0..self.data.len() {
            let Some(c) = self.data.get_mut(i) else { continue };
            if !c.due(now) {
                continue;
            }
            if let Err(e) = c.connect(&self.registry, addr, now) {
                c.last_error = Some(format!("connect to {addr}: {e}"));
                if i == 0 {
                    self.address_failed();
                }
                continue;
            }
            for cmd in &setup {
                let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                c.send(&args, Tag::Setup, now);
            }
            if i == 0 {
                c.send(&[b"CONFIG", b"GET", b"maxmemory-policy"], Tag::Policy, now);
                c.send(&[b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.as_bytes()], Tag::Load, now);
                let backlog = self.backlog.to_string();
                // What this gateway delivered, or had acknowledged (its own writes'
                // revs, which its follower may not have delivered yet): a primary behind
                // it (a failover to a replica that missed writes) starts a new epoch, so
                // watchers resync instead of seeing those revs reused by new writes.
                let delivered = self.delivered.max(self.latest_rev).to_string();
                match (&self.known_epoch, &self.follow_last) {
                    // And the last entry read, which must still be there as it was.
                    (Some(ep), Some([t, k, e])) if self.delivered.max(self.latest_rev) > 0 => c.send(
                        &[
                            b"FCALL",
                            b"dbx_init",
                            b"0",
                            backlog.as_bytes(),
                            delivered.as_bytes(),
                            ep.as_bytes(),
                            self.follow_from.as_bytes(),
                            t.as_bytes(),
                            k.as_bytes(),
                            e.as_bytes(),
                        ],
                        Tag::Init,
                        now,
                    ),
                    (Some(ep), _) if self.delivered.max(self.latest_rev) > 0 => c.send(
                        &[b"FCALL", b"dbx_init", b"0", backlog.as_bytes(), delivered.as_bytes(), ep.as_bytes()],
                        Tag::Init,
                        now,
                    ),
                    _ => c.send(&[b"FCALL", b"dbx_init", b"0", backlog.as_bytes()], Tag::Init, now),
                }
            }
        }
        // The follower and the subscriber start once data[0] has initialised the
        // bookkeeping (the stream may not exist before).
        if self.follow.due(now) && self.ready && self.follow.connect(&self.registry, addr, now).is_ok() {
            for cmd in &setup {
                let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                self.follow.send(&args, Tag::Setup, now);
            }
            self.read_stream(now);
        }
        if self.sub.due(now) && self.ready && self.sub.connect(&self.registry, addr, now).is_ok() {
            for cmd in &setup {
                let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                self.sub.send_untracked(&args);
            }
            self.sub_resubscribe = true;
        }
    }
}

/// `rediss://`: the TLS client settings (DBX_BACKEND_TLS_CA or the system's CAs) and
/// the name the certificate must carry (the host of the URL). An error names the setting.
pub fn tls_to(cfg: &Config, t: &RedisTarget) -> Result<Option<resp::TlsTo>, String> {
    if !t.tls {
        return Ok(None);
    }
    let trust = match &cfg.backend_tls_ca {
        Some(p) => crate::tls_client::Trust::CaFile(p.clone()),
        None => crate::tls_client::Trust::System,
    };
    let config = crate::tls_client::client_config(&trust).map_err(|e| format!("DBX_BACKEND_TLS_CA: {e}"))?;
    // Redis speaks no ALPN.
    let mut config = (*config).clone();
    config.alpn_protocols.clear();
    let host = t.addrs.first().map(|a| a.0.clone()).unwrap_or_default();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| format!("DBX_BACKEND: '{host}' is not a name a TLS certificate can carry"))?;
    Ok(Some(resp::TlsTo { config: std::sync::Arc::new(config), name }))
}

/// `allkeys-*` and `volatile-*` evict keys.
fn evicts(policy: &str) -> bool {
    policy.starts_with("allkeys-") || policy.starts_with("volatile-")
}

/// AUTH and SELECT for a new connection.
fn setup_commands(t: &RedisTarget) -> Vec<Vec<Vec<u8>>> {
    let mut v = Vec::new();
    if let Some(p) = &t.password {
        let mut c = vec![b"AUTH".to_vec()];
        if let Some(u) = &t.user {
            c.push(u.as_bytes().to_vec());
        }
        c.push(p.as_bytes().to_vec());
        v.push(c);
    }
    if t.db != 0 {
        v.push(vec![b"SELECT".to_vec(), t.db.to_string().into_bytes()]);
    }
    v
}

fn frame_text(f: &OwnedFrame) -> Option<&str> {
    match f {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn bulk_text(f: &OwnedFrame) -> Option<&str> {
    frame_text(f)
}

fn bad_reply(function: &str) -> Error {
    Error::new(Code::Internal, format!("The backend function {function} answered something unreadable"))
}

/// A RESP error from Redis itself (not one the library reported in its JSON).
fn redis_error(msg: &str) -> Error {
    let word = msg.split_whitespace().next().unwrap_or("");
    match word {
        "OOM" => Error::new(Code::Oom, format!("The backend refused the write for memory: {msg}")),
        "READONLY" | "LOADING" | "MASTERDOWN" | "BUSY" | "CLUSTERDOWN" | "TRYAGAIN" => {
            Error::new(Code::Unavailable, format!("Backend unavailable: {msg}"))
        }
        _ => Error::new(Code::Internal, format!("Backend error: {msg}")),
    }
}

/// A plain `string.set` (`cmd::plain_set`) as the key and value texts to store,
/// for its compact form in `dbx_run`; None when either is not what `string.set` takes
/// (the library then words the error from the JSON form).
fn plain_set<'p>(method: &str, params: &Params<'p>) -> Option<(std::borrow::Cow<'p, str>, std::borrow::Cow<'p, str>)> {
    let (key, value) = cmd::plain_set(method, params)?;
    Some((crate::proto::raw_str(key)?, Params::value_of("value", Some(value)).ok()?))
}

/// `key.scan` by a credential confined to some keys: its results need filtering.
fn scan_filter(method: &str, identity: &Rc<Identity>) -> Option<Rc<Identity>> {
    (method == "key.scan" && identity.key_globs.is_some()).then(|| identity.clone())
}

/// A `key.scan` result element without the keys outside `scope` (the embedded scan
/// skips them the same way; the cursor is unchanged).
fn scan_in_scope(elem: &str, scope: &Identity) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(elem) else { return elem.to_string() };
    if let Some(keys) = v.pointer_mut("/result/keys").and_then(|k| k.as_array_mut()) {
        keys.retain(|k| k.as_str().is_some_and(|k| scope.key_allowed(k)));
    }
    v.to_string()
}

/// The reply of a single method from its `dbx_exec` result element.
fn single_reply(id: Option<&str>, elem: &str, stamp: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let parsed = serde_json::from_str::<Elem>(elem).ok();
    match parsed {
        Some(Elem { result: Some(r), .. }) => {
            b.extend_from_slice(b"{\"id\":");
            b.extend_from_slice(id.unwrap_or("null").as_bytes());
            b.extend_from_slice(b",\"result\":");
            b.extend_from_slice(r.get().as_bytes());
            b.extend_from_slice(b",\"timestamp\":\"");
            b.extend_from_slice(stamp.as_bytes());
            b.extend_from_slice(b"\"}");
        }
        Some(Elem { error: Some(e), .. }) => {
            let code = Code::from_name(&e.code).unwrap_or(Code::Internal);
            envelope::error(&mut b, id, &Error::new(code, e.message), stamp);
        }
        _ => envelope::error(&mut b, id, &bad_reply("dbx_exec"), stamp),
    }
    b
}

#[derive(Deserialize)]
struct InfoReply {
    rev: u64,
    epoch: String,
    #[serde(default)]
    keys: u64,
    #[serde(default)]
    lib: String,
    #[serde(default)]
    used_memory: Option<u64>,
    #[serde(default)]
    expired_keys: Option<u64>,
    /// Redis's own limit and policy (INFO memory).
    #[serde(default)]
    maxmemory: Option<u64>,
    #[serde(default)]
    maxmemory_policy: Option<String>,
}

/// key.watch's parameters, checked as the embedded command checks them.
fn watch_ask(identity: &Rc<Identity>, p: &Params) -> Result<WatchAsk, Error> {
    let w = cmd::WatchParams::parse(p)?;
    let owned = |v: Vec<std::borrow::Cow<str>>| v.into_iter().map(|s| s.as_ref().into()).collect();
    Ok(WatchAsk {
        keys: owned(w.keys),
        patterns: owned(w.patterns),
        since: w.since.map(|(s, e)| (s, e.as_ref().into())),
        scope: identity.clone(),
    })
}

/// The `values` object of a watch read, without the keys outside the scope (a pattern
/// may match keys the credential may not see).
fn write_values_in_scope(buf: &mut Vec<u8>, values: &str, scope: &Identity) {
    if scope.key_globs.is_none() {
        buf.extend_from_slice(values.as_bytes());
        return;
    }
    let map: Vec<(String, Box<RawValue>)> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(values)
        .ok()
        .map(|m| m.into_iter().filter_map(|(k, v)| serde_json::value::to_raw_value(&v).ok().map(|r| (k, r))).collect())
        .unwrap_or_default();
    buf.push(b'{');
    let mut first = true;
    for (k, v) in map.iter().filter(|(k, _)| scope.key_allowed(k)) {
        if !first {
            buf.push(b',');
        }
        first = false;
        write_str(buf, k);
        buf.push(b':');
        buf.extend_from_slice(v.get().as_bytes());
    }
    buf.push(b'}');
}

#[cfg(test)]
mod tests;
