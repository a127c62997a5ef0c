//! The command table. Each command parses its own params (typed, via `proto::Params`),
//! applies to the store and writes its result fields. Shared policy — revisions,
//! permissions, memory refusal, batch rules — hangs off each command's flags here,
//! not inside the commands. No mio, no tungstenite.

mod auth;
mod hash;
mod keys;
mod list;
mod realtime;
mod server;
mod set;
pub mod signature;
mod strings;
mod zset;

use crate::auth::{Authenticator, Identity, Role};
use crate::config::MaxMemoryPolicy;
use crate::proto::{Code, Error, Json, Params, Result};
use crate::pubsub::Hub;
use crate::store::{Gone, Store};
use hashbrown::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;

/// The command reads data.
pub const READ: u16 = 1;
/// The command may change data: raises `rev`, is logged, needs the `write` role.
pub const WRITE: u16 = 1 << 1;
/// Needs the `admin` role (`server.flush`, `server.save`).
pub const ADMIN: u16 = 1 << 2;
/// May grow memory: refused with `oom` when over `DBX_MAXMEMORY` under `noeviction`.
pub const DENYOOM: u16 = 1 << 3;
/// Touches no key (server.*, pub/sub): key scopes do not apply.
pub const KEYLESS: u16 = 1 << 4;
/// Not allowed inside `batch`.
pub const NO_BATCH: u16 = 1 << 5;
/// Needs the `write` role without changing data (`pubsub.publish`).
pub const PUBLISH: u16 = 1 << 6;
/// Changes every key at once (`server.flush`): refused to a credential confined by a
/// key scope, since it would reach keys outside the scope.
pub const ALL_KEYS: u16 = 1 << 7;

pub type Handler = fn(&mut Ctx, &Params, &mut Json) -> Result<()>;

pub struct Command {
    pub name: &'static str,
    pub flags: u16,
    pub run: Handler,
}

impl Command {
    pub fn is_write(&self) -> bool {
        self.flags & WRITE != 0
    }

    /// The weakest role allowed to call this command.
    pub fn required_role(&self) -> Role {
        if self.flags & ADMIN != 0 {
            Role::Admin
        } else if self.flags & (WRITE | PUBLISH) != 0 {
            Role::Write
        } else {
            Role::Read
        }
    }
}

/// Parameters that name keys, checked against a credential's key scope before any
/// command runs (one place instead of in every command).
const KEY_PARAMS: [&str; 2] = ["key", "new_key"];
const KEY_LIST_PARAMS: [&str; 1] = ["keys"];
const KEY_OBJECT_PARAMS: [&str; 1] = ["pairs"];

/// One key-space change made by a command, for watchers (the `rev` is filled in by
/// `execute` once the command has finished: one write = one rev).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// None: every key (`server.flush`).
    pub key: Option<Box<str>>,
    pub event: &'static str,
    pub rev: u64,
}

/// Facts about the server that `server.info` and friends report; filled by the reactor.
#[derive(Clone, Debug, Default)]
pub struct ServerFacts {
    pub version: &'static str,
    pub uptime_s: u64,
    pub connections: usize,
    pub ops_total: u64,
    pub epoch: String,
    pub max_batch: usize,
    /// `DBX_MAXMEMORY` in bytes; 0 = no limit.
    pub maxmemory: u64,
    pub maxmemory_policy: MaxMemoryPolicy,
    /// Persistence (issue 7): why writes are refused right now (the append-only log
    /// cannot be written), `None` when they are accepted.
    pub writes_refused: Option<String>,
    pub persist_enabled: bool,
    pub snapshot_running: bool,
}

/// What a command sees: the store, the clock, the server facts, and where it records
/// the keys it changed.
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    pub now_ms: u64,
    pub facts: &'a ServerFacts,
    /// Whether anything changed in the current operation.
    changed: bool,
    /// Changes of all operations run through this context, with their revs. The
    /// current operation's start at `op_changes` and get their rev when it ends. The
    /// server hands in an empty vector it keeps, so a write allocates nothing here.
    pub changes: Vec<Change>,
    op_changes: usize,
    /// Record per-key changes (only when someone watches; otherwise a flag is enough).
    pub track_changes: bool,
    /// Operations executed (a batch counts each of its operations).
    pub ops: u64,
    /// Set by `server.flush`: history is gone, the reactor starts a new epoch.
    pub flushed: bool,
    /// Set by `server.save`: the reactor should start a snapshot.
    pub save_requested: bool,
    /// Who is calling: role and key scope.
    pub identity: Rc<Identity>,
    /// Set by `auth.refresh`: the reactor re-arms the credential's expiry timer.
    pub identity_changed: bool,
    pub auth: Option<&'a Authenticator>,
    /// Subscriptions and watches (None in contexts without connections).
    pub hub: Option<&'a mut Hub>,
    /// The calling connection's token, for subscriptions.
    pub conn: usize,
    method: &'static str,
    // ---- persistence (issue 7; see `persist` and docs/PERSISTENCE.md) ----
    /// When on, every operation that changes something is appended to `log` in
    /// replayable form, `{"method":…,"params":…}` objects separated by commas.
    pub log_ops: bool,
    pub log: Vec<u8>,
    /// Operations in `log`.
    pub log_count: usize,
    /// Set by a command whose effect is not a function of its params and the store
    /// (`set.pop` picks members at random): one `{"method":…,"params":…}` JSON object
    /// that replays to the same effect (e.g. `set.remove` of the members it popped).
    /// It is logged instead of the call.
    pub log_override: Option<Vec<u8>>,
    /// Replaying the log at start-up: policy refusals (`unavailable`, `oom`, …) must
    /// not apply — the operation was accepted when it was first run.
    pub replaying: bool,
}

impl<'a> Ctx<'a> {
    /// A context for the anonymous admin (log replay, tests, benchmarks).
    pub fn new(store: &'a mut Store, now_ms: u64, facts: &'a ServerFacts) -> Ctx<'a> {
        Ctx::with_identity(store, now_ms, facts, Rc::new(Identity::anonymous()))
    }

    /// A context acting for `identity` (the server passes the connection's, so a
    /// request allocates nothing for it).
    pub fn with_identity(store: &'a mut Store, now_ms: u64, facts: &'a ServerFacts, identity: Rc<Identity>) -> Ctx<'a> {
        Ctx {
            store,
            now_ms,
            facts,
            changed: false,
            changes: Vec::new(),
            op_changes: 0,
            track_changes: false,
            ops: 0,
            flushed: false,
            save_requested: false,
            identity,
            identity_changed: false,
            auth: None,
            hub: None,
            conn: 0,
            method: "",
            log_ops: false,
            log: Vec::new(),
            log_count: 0,
            log_override: None,
            replaying: false,
        }
    }

    /// The table name of the last command this context ran ("" if none: unknown method
    /// or a malformed batch), so callers need not look the method up again.
    pub fn last_method(&self) -> &'static str {
        self.method
    }

    /// Whether the caller's key scope includes `key`.
    pub fn key_allowed(&self, key: &str) -> bool {
        self.identity.key_allowed(key)
    }

    /// Record that the current command changed `key`.
    pub fn touched(&mut self, key: &str) {
        self.changed = true;
        if self.track_changes {
            self.changes.push(Change { key: Some(key.into()), event: self.method, rev: 0 });
        }
    }

    /// Record that the current command changed every key (`server.flush`).
    pub fn touched_all(&mut self) {
        self.changed = true;
        if self.track_changes {
            self.changes.push(Change { key: None, event: self.method, rev: 0 });
        }
    }
}

fn table() -> &'static HashMap<&'static str, &'static Command> {
    static TABLE: OnceLock<HashMap<&'static str, &'static Command>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = HashMap::new();
        for list in [
            strings::COMMANDS,
            keys::COMMANDS,
            server::COMMANDS,
            auth::COMMANDS,
            realtime::COMMANDS,
            hash::COMMANDS,
            set::COMMANDS,
            zset::COMMANDS,
            list::COMMANDS,
        ] {
            for c in list {
                t.insert(c.name, c);
            }
        }
        t
    })
}

pub fn lookup(method: &str) -> Option<&'static Command> {
    table().get(method).copied()
}

/// Every method name, sorted (metrics, docs).
pub fn method_names() -> Vec<&'static str> {
    let mut v: Vec<_> = table().keys().copied().chain(["batch"]).collect();
    v.sort_unstable();
    v
}

/// Tokens a request costs against the rate limit: one per operation, the `batch`
/// envelope none. A batch that will be refused anyway (unreadable, empty or over
/// `max_batch`) costs one, so it is answered with its real error, not `rate_limited`.
pub fn cost(method: &str, params: &Params, max_batch: usize) -> u32 {
    if method == "batch" {
        match params.array("operations") {
            Ok(ops) if !ops.is_empty() && ops.len() <= max_batch => ops.len().min(u32::MAX as usize) as u32,
            _ => 1,
        }
    } else {
        1
    }
}

/// Run one request and write its whole reply envelope into `buf` (cleared first):
/// `{"id":…,"result":{…},"timestamp":"…"}` or `{"id":…,"error":{…},"timestamp":"…"}`.
/// Returns the error, if the request failed, for the caller's logs and metrics.
pub fn respond(
    ctx: &mut Ctx,
    id: Option<&str>,
    method: &str,
    params: &Params,
    stamp: &str,
    buf: &mut Vec<u8>,
) -> Option<Error> {
    buf.clear();
    buf.extend_from_slice(b"{\"id\":");
    buf.extend_from_slice(id.unwrap_or("null").as_bytes());
    buf.push(b',');
    let mark = buf.len();
    buf.extend_from_slice(b"\"result\":{");
    let res = execute(ctx, method, params, &mut Json::fields(buf, true));
    let err = match res {
        Ok(()) => {
            buf.push(b'}');
            None
        }
        Err(e) => {
            buf.truncate(mark);
            buf.extend_from_slice(b"\"error\":");
            crate::proto::write_error(buf, &e);
            Some(e)
        }
    };
    buf.extend_from_slice(b",\"timestamp\":\"");
    buf.extend_from_slice(stamp.as_bytes());
    buf.extend_from_slice(b"\"}");
    err
}

/// Run one request. The result's fields are written into `out` (whose `{` the caller
/// has written); on error nothing useful is in `out` and the caller rolls it back.
pub fn execute(ctx: &mut Ctx, method: &str, params: &Params, out: &mut Json) -> Result<()> {
    if method == "batch" {
        return batch(ctx, params, out);
    }
    let cmd = lookup(method).ok_or_else(|| Error::new(Code::MethodNotFound, format!("Unknown method '{method}'")))?;
    run(ctx, cmd, params, out)
}

/// Refuse a call the credential may not make: the role on the command's flags, the key
/// scope on every key-naming parameter. A refused call changes nothing.
fn check_access(ctx: &Ctx, cmd: &Command, params: &Params) -> Result<()> {
    let need = cmd.required_role();
    if ctx.identity.role < need {
        return Err(Error::new(
            Code::Forbidden,
            format!("Role '{}' may not call '{}' (needs '{}')", ctx.identity.role.as_str(), cmd.name, need.as_str()),
        ));
    }
    if ctx.identity.key_globs.is_none() {
        return Ok(());
    }
    if cmd.flags & ALL_KEYS != 0 {
        return Err(Error::new(
            Code::Forbidden,
            format!("'{}' touches every key, and this credential is confined to some keys", cmd.name),
        ));
    }
    if cmd.flags & KEYLESS != 0 {
        return Ok(());
    }
    let outside = |k: &str| Error::new(Code::Forbidden, format!("Key '{k}' is outside this credential's scope"));
    for name in KEY_PARAMS {
        if let Ok(Some(k)) = params.opt_str(name) {
            if !ctx.key_allowed(&k) {
                return Err(outside(&k));
            }
        }
    }
    for name in KEY_LIST_PARAMS {
        if let Ok(keys) = params.str_list(name) {
            if let Some(k) = keys.iter().find(|k| !ctx.key_allowed(k)) {
                return Err(outside(k));
            }
        }
    }
    for name in KEY_OBJECT_PARAMS {
        if let Ok(pairs) = params.object(name) {
            if let Some((k, _)) = pairs.iter().find(|(k, _)| !ctx.key_allowed(k)) {
                return Err(outside(k));
            }
        }
    }
    Ok(())
}

fn run(ctx: &mut Ctx, cmd: &'static Command, params: &Params, out: &mut Json) -> Result<()> {
    ctx.method = cmd.name;
    // Replay applies records as they were accepted: a log written before unknown
    // parameters were refused may hold some, which that version ignored.
    if !ctx.replaying {
        signature::check(cmd.name, params)?;
    }
    check_access(ctx, cmd, params)?;
    if cmd.is_write() && !ctx.replaying {
        if let Some(why) = &ctx.facts.writes_refused {
            return Err(Error::new(Code::Unavailable, format!("Writes are refused: {why}; reads still work")));
        }
    }
    // Evictions made from here on (before the command body) are logged with it.
    let gone_mark = ctx.store.gone_len();
    ctx.changed = false;
    ctx.op_changes = ctx.changes.len();
    ctx.ops += 1;
    // Replay re-applies what was accepted: no memory refusal (evictions are in the log).
    if cmd.flags & DENYOOM != 0 && !ctx.replaying {
        make_room(ctx)?;
    }
    let res = (cmd.run)(ctx, params, out);
    let rewrite = ctx.log_override.take();
    if ctx.log_ops {
        log_op(ctx, gone_mark, cmd.name, params, rewrite);
    }
    if ctx.changed {
        // One executed write that changed something = one rev, shared by all its events.
        let rev = ctx.store.bump_rev();
        for c in ctx.changes.get_mut(ctx.op_changes..).unwrap_or_default() {
            c.rev = rev;
        }
        ctx.changed = false;
    }
    res?;
    if cmd.is_write() {
        out.u64("rev", ctx.store.rev());
    }
    Ok(())
}

/// Keys sampled per eviction (Redis's `maxmemory-samples` default).
const EVICTION_SAMPLES: usize = 5;

/// The `DBX_MAXMEMORY` policy, checked before every command that may grow memory
/// (DENYOOM) — here, once, so single requests and batch operations alike are covered.
/// As in Redis the check is made before the write: a write is refused (or keys are
/// evicted) only while usage is already over the limit, so one write may overshoot it
/// by its own size. Reads and deletes are never refused.
fn make_room(ctx: &mut Ctx) -> Result<()> {
    let limit = ctx.facts.maxmemory;
    if limit == 0 || ctx.store.used_memory() as u64 <= limit {
        return Ok(());
    }
    if ctx.facts.maxmemory_policy == MaxMemoryPolicy::AllkeysLru {
        // Sampling needs only cheap, varying randomness, not a persistent generator.
        let mut rng = (ctx.store.rev() ^ ctx.now_ms.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15) | 1;
        while ctx.store.used_memory() as u64 > limit {
            if !ctx.store.evict_one(EVICTION_SAMPLES, &mut rng) {
                break;
            }
        }
        if ctx.store.used_memory() as u64 <= limit {
            return Ok(());
        }
    }
    Err(Error::new(Code::Oom, format!("Command not allowed when used memory > maxmemory ({limit} bytes)")))
}

/// Append the operation just run to `ctx.log` in replayable form: first the keys it
/// evicted, as `key.del` (eviction samples at random, so it is logged as its effect),
/// then the operation itself if it changed something — or the rewrite it asked for.
fn log_op(ctx: &mut Ctx, gone_mark: usize, name: &str, params: &Params, rewrite: Option<Vec<u8>>) {
    let sep = |log: &mut Vec<u8>, n: &mut usize| {
        if *n > 0 {
            log.push(b',');
        }
        *n += 1;
    };
    for (key, why, _) in ctx.store.gone_since(gone_mark) {
        if *why == Gone::Evicted {
            sep(&mut ctx.log, &mut ctx.log_count);
            ctx.log.extend_from_slice(b"{\"method\":\"key.del\",\"params\":{\"key\":");
            crate::proto::write_str(&mut ctx.log, key);
            ctx.log.extend_from_slice(b"}}");
        }
    }
    if !ctx.changed {
        return;
    }
    sep(&mut ctx.log, &mut ctx.log_count);
    match rewrite {
        Some(op) => ctx.log.extend_from_slice(&op),
        None => {
            ctx.log.extend_from_slice(b"{\"method\":");
            crate::proto::write_str(&mut ctx.log, name);
            ctx.log.extend_from_slice(b",\"params\":");
            params.write_json(&mut ctx.log);
            ctx.log.push(b'}');
        }
    }
}

/// `batch`: operations in order, nothing from another connection in between (we are
/// single-threaded), each with its own result or error.
fn batch(ctx: &mut Ctx, params: &Params, out: &mut Json) -> Result<()> {
    let ops = params.array("operations")?;
    if ops.is_empty() {
        return Err(Error::invalid_params("Parameter 'operations' must be a non-empty array"));
    }
    if ops.len() > ctx.facts.max_batch {
        return Err(Error::invalid_params(format!(
            "Parameter 'operations' has {} operations, more than the limit of {}",
            ops.len(),
            ctx.facts.max_batch
        )));
    }
    // Parse every operation first: a malformed one is that operation's error.
    out.arr("results", |a| {
        for raw in ops {
            let buf = a.elem();
            buf.push(b'{');
            let mark = buf.len();
            let res = batch_op(ctx, raw, buf);
            if let Err(e) = res {
                buf.truncate(mark);
                buf.extend_from_slice(b"\"error\":");
                crate::proto::write_error(buf, &e);
            }
            buf.push(b'}');
        }
    });
    Ok(())
}

fn batch_op(ctx: &mut Ctx, raw: crate::proto::Raw, buf: &mut Vec<u8>) -> Result<()> {
    let bad = |m: &str| Error::new(Code::InvalidRequest, m.to_string());
    let fields = crate::proto::object_fields(raw).ok_or_else(|| bad("Each operation must be an object"))?;
    let op = Params::from_fields(fields);
    let method = op.str("method").map_err(|_| bad("Each operation needs a string 'method'"))?;
    if method == "batch" {
        return Err(bad("A batch may not contain a batch"));
    }
    let params = match op.raw("params") {
        None => Params::default(),
        Some(p) => Params::parse(Some(p)).map_err(|m| bad(&m))?,
    };
    let cmd = lookup(&method).ok_or_else(|| Error::new(Code::MethodNotFound, format!("Unknown method '{method}'")))?;
    if cmd.flags & NO_BATCH != 0 {
        return Err(bad(&format!("'{method}' is not allowed inside a batch")));
    }
    buf.extend_from_slice(b"\"result\":{");
    run(ctx, cmd, &params, &mut Json::fields(buf, true))?;
    buf.push(b'}');
    Ok(())
}

/// Seconds → ms, rounded to the millisecond, saturating.
pub fn secs_to_ms(secs: f64) -> u64 {
    let ms = (secs * 1000.0).round();
    if ms >= u64::MAX as f64 {
        u64::MAX
    } else {
        ms as u64
    }
}

/// Remaining ms → whole seconds rounded up (PROTOCOL.md §8).
pub fn ms_to_ttl_secs(ms: u64) -> i64 {
    ms.div_ceil(1000) as i64
}

/// Each command module lists its commands as `Def`s: the table entry itself.
pub type Def = Command;
