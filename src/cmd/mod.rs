//! The command table. Each command parses its own params (typed, via `proto::Params`),
//! applies to the store, writes its result fields and reports its effects in an
//! `Outcome`. Shared policy — revisions, permissions, memory refusal, batch rules,
//! logging — hangs off each command's flags and is applied by `engine::policy`, not
//! inside the commands. No sockets, no log format.

mod admin;
mod credential;
mod hash;
mod keys;
mod list;
mod realtime;
mod set;
pub mod signature;
mod strings;
pub use strings::plain_set;
mod zset;

/// `key.watch`'s parameters and the start of its result, shared with the gateway.
pub use realtime::{watch_head, WatchParams};

use crate::auth::{Authenticator, Identity, Role};
use crate::config::MaxMemoryPolicy;
use crate::proto::{Json, Params, Result};
use crate::pubsub::Hub;
use crate::store::{Key, Store};
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

/// A command: reads its params, acts through `Ctx`, writes its result fields into the
/// reply and reports what it changed in the `Outcome`.
pub type Handler = fn(&mut Ctx, &Params, &mut Json, &mut Outcome) -> Result<()>;

#[derive(Debug)]
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
pub const KEY_PARAMS: [&str; 2] = ["key", "new_key"];
pub const KEY_LIST_PARAMS: [&str; 1] = ["keys"];
pub const KEY_OBJECT_PARAMS: [&str; 1] = ["pairs"];

/// One key-space change made by a command, for watchers (the `rev` is filled in by
/// the engine once the command has finished: one write = one rev).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// None: every key (`server.flush`). A `Key`: a short key is copied inline, so
    /// recording a write's change for `key.watch` history allocates nothing (and
    /// dropping it from the history frees nothing).
    pub key: Option<Key>,
    pub event: &'static str,
    pub rev: u64,
}

/// Facts about the server that `server.info` and friends report; kept by the engine.
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

/// What a command reads — the clock, the server facts, who is calling — and the state
/// it acts on (the store, the real-time hub). Nothing flows back through it: a command
/// reports what it did in its `Outcome`.
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    /// Subscriptions and watches (None in contexts without connections).
    pub hub: Option<&'a mut Hub>,
    pub now_ms: u64,
    pub facts: &'a ServerFacts,
    /// Who is calling: role and key scope.
    pub identity: Rc<Identity>,
    /// For `auth.refresh` (None where no connection can refresh).
    pub auth: Option<&'a Authenticator>,
    /// The calling connection's token, for subscriptions.
    pub conn: usize,
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
        Ctx { store, hub: None, now_ms, facts, identity, auth: None, conn: 0, replaying: false }
    }

    /// Whether the caller's key scope includes `key`.
    pub fn key_allowed(&self, key: &str) -> bool {
        self.identity.key_allowed(key)
    }
}

/// Something a command asks of the layers around it, applied by the engine once the
/// command has returned.
#[derive(Clone, Debug)]
pub enum Effect {
    /// `server.flush`: history is gone, a new epoch starts.
    Flushed,
    /// `server.save`: start a snapshot.
    SaveRequested,
    /// `auth.refresh`: the connection now acts for this identity (its expiry timer is
    /// re-armed, its watches follow the new scope).
    IdentityChanged(Rc<Identity>),
}

/// What the commands run for one request did: the keys they changed (with revs), how
/// to log an operation whose effect is not a function of its params, and effects for
/// the engine. The engine keeps one and reuses it, so a write allocates nothing here.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Changes of all operations run, with their revs. The current operation's start at
    /// `op_changes` and get their rev when it ends.
    pub changes: Vec<Change>,
    /// Record per-key changes (only when someone may watch; otherwise a flag is enough).
    pub track_changes: bool,
    /// Operations executed (a batch counts each of its operations).
    pub ops: u64,
    pub effects: Vec<Effect>,
    /// Set by a command whose effect is not a function of its params and the store
    /// (`set.pop` picks members at random): a method and its params object (JSON) that
    /// replay to the same effect (e.g. `set.remove` of the members it popped). It is
    /// logged instead of the call.
    pub log_as: Option<(&'static str, Vec<u8>)>,
    method: &'static str,
    /// The table entry of the last method looked up (`entry_for`): consecutive requests
    /// mostly name the same method, and comparing the name is cheaper than hashing it.
    last_entry: Option<&'static Entry>,
    /// Whether anything changed in the current operation.
    changed: bool,
    op_changes: usize,
}

impl Outcome {
    /// Ready for a new request (keeps the allocations).
    pub fn reset(&mut self, track_changes: bool) {
        self.changes.clear();
        self.track_changes = track_changes;
        self.ops = 0;
        self.effects.clear();
        self.log_as = None;
        self.method = "";
        self.changed = false;
        self.op_changes = 0;
    }

    /// An operation of `method` starts (the engine calls this before the command).
    pub fn begin(&mut self, method: &'static str) {
        self.method = method;
        self.changed = false;
        self.op_changes = self.changes.len();
        self.ops += 1;
    }

    /// The table entry of `method` (as `entry`), remembering the last one found.
    pub fn entry_for(&mut self, method: &str) -> Option<&'static Entry> {
        if let Some(e) = self.last_entry.filter(|e| e.cmd.name == method) {
            return Some(e);
        }
        let e = entry(method)?;
        self.last_entry = Some(e);
        Some(e)
    }

    /// Whether the current operation changed something.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The current operation is over and took `rev`: its changes get it.
    pub fn end_with_rev(&mut self, rev: u64) {
        for c in self.changes.get_mut(self.op_changes..).unwrap_or_default() {
            c.rev = rev;
        }
        self.changed = false;
    }

    /// The table name of the last command run ("" if none: unknown method or a
    /// malformed batch), so callers need not look the method up again.
    pub fn last_method(&self) -> &'static str {
        self.method
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

    pub fn effect(&mut self, e: Effect) {
        self.effects.push(e);
    }
}

/// A command table entry: the command and the parameter names its method accepts
/// (`signature`), so one lookup by name per request finds both.
#[derive(Debug)]
pub struct Entry {
    pub cmd: &'static Command,
    /// None: the method is not in `clients/methods.json` (any parameter passes).
    pub accepted: Option<&'static [String]>,
}

fn table() -> &'static HashMap<&'static str, Entry> {
    static TABLE: OnceLock<HashMap<&'static str, Entry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = HashMap::new();
        for list in [
            strings::COMMANDS,
            keys::COMMANDS,
            admin::COMMANDS,
            credential::COMMANDS,
            realtime::COMMANDS,
            hash::COMMANDS,
            set::COMMANDS,
            zset::COMMANDS,
            list::COMMANDS,
        ] {
            for c in list {
                t.insert(c.name, Entry { cmd: c, accepted: signature::accepted(c.name) });
            }
        }
        t
    })
}

pub fn lookup(method: &str) -> Option<&'static Command> {
    table().get(method).map(|e| e.cmd)
}

/// The table entry of `method`: its command and accepted parameter names.
pub fn entry(method: &str) -> Option<&'static Entry> {
    table().get(method)
}

/// Every method name, sorted (metrics, docs).
pub fn method_names() -> Vec<&'static str> {
    let mut v: Vec<_> = table().keys().copied().chain(["batch"]).collect();
    v.sort_unstable();
    v
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

#[cfg(test)]
mod tests {
    /// The append-only log copies a command's name into its record without JSON
    /// escaping (`persist::aof::OpLog::op`): every name must be plain.
    #[test]
    fn method_names_need_no_json_escaping() {
        for name in super::method_names() {
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'),
                "{name}"
            );
        }
    }
}
