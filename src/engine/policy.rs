//! The command table's policy, applied around every command in one place (Redis's
//! `call()`): roles and key scopes, refusal while the log cannot be written, the
//! memory limit, one rev per executed write, logging, and the rules of `batch`.
//! Single requests, batch operations and log replay all go through `run`.

use crate::auth::Identity;
use crate::cmd::{self, Command, Ctx, Outcome, ServerFacts, ALL_KEYS, DENYOOM, KEYLESS, NO_BATCH};
use crate::config::MaxMemoryPolicy;
use crate::persist::aof::OpLog;
use crate::proto::envelope;
use crate::proto::{request, Code, Error, Json, Params, Result};
use crate::store::{Gone, Store};

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

/// Run one request and write its whole reply envelope into `buf` (cleared first).
/// Returns the error, if the request failed, for the caller's logs and metrics.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    ctx: &mut Ctx,
    fx: &mut Outcome,
    log: Option<&mut OpLog>,
    id: Option<&str>,
    method: &str,
    params: &Params,
    stamp: &str,
    buf: &mut Vec<u8>,
) -> Option<Error> {
    envelope::reply(buf, id, stamp, |out| execute(ctx, fx, log, method, params, out))
}

/// Run one request. The result's fields are written into `out` (whose `{` the caller
/// has written); on error nothing useful is in `out` and the caller rolls it back.
/// `log`: where operations that changed something are recorded (None: not logged).
pub fn execute(
    ctx: &mut Ctx,
    fx: &mut Outcome,
    log: Option<&mut OpLog>,
    method: &str,
    params: &Params,
    out: &mut Json,
) -> Result<()> {
    if method == "batch" {
        return batch(ctx, fx, log, params, out);
    }
    let entry = fx.entry_for(method).ok_or_else(|| unknown(method))?;
    run(ctx, fx, log, entry, params, out)
}

fn unknown(method: &str) -> Error {
    Error::new(Code::MethodNotFound, format!("Unknown method '{method}'"))
}

/// Refuse a call the credential may not make: the role on the command's flags, the key
/// scope on every key-naming parameter. A refused call changes nothing.
fn check_access(ctx: &Ctx, cmd: &Command, params: &Params) -> Result<()> {
    check_identity(&ctx.identity, cmd, params)
}

fn check_identity(identity: &Identity, cmd: &Command, params: &Params) -> Result<()> {
    let need = cmd.required_role();
    if identity.role < need {
        return Err(Error::new(
            Code::Forbidden,
            format!("Role '{}' may not call '{}' (needs '{}')", identity.role.as_str(), cmd.name, need.as_str()),
        ));
    }
    if identity.key_globs.is_none() {
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
    match find_key(params, |k| !identity.key_allowed(k)) {
        Some(k) => Err(outside(&k)),
        None => Ok(()),
    }
}

/// The first key named by `params` (every key-naming parameter) for which `bad` holds.
fn find_key(params: &Params, bad: impl Fn(&str) -> bool) -> Option<String> {
    for name in cmd::KEY_PARAMS {
        if let Ok(Some(k)) = params.opt_str(name) {
            if bad(&k) {
                return Some(k.into_owned());
            }
        }
    }
    // Only the parameters present are read: a missing one's error (a formatted
    // message) would be built and thrown away on every request.
    for name in cmd::KEY_LIST_PARAMS.iter().filter(|n| params.has(n)) {
        if let Ok(keys) = params.str_list(name) {
            if let Some(k) = keys.iter().find(|k| bad(k)) {
                return Some(k.to_string());
            }
        }
    }
    for name in cmd::KEY_OBJECT_PARAMS.iter().filter(|n| params.has(n)) {
        if let Ok(pairs) = params.object(name) {
            if let Some((k, _)) = pairs.iter().find(|(k, _)| bad(k)) {
                return Some(k.to_string());
            }
        }
    }
    None
}

/// Gateway mode (issue 16): the key prefix under which DBX keeps its own bookkeeping
/// in Redis (docs/BACKEND.md). No client key may live under it.
pub const RESERVED_PREFIX: &str = "__dbx:";

/// Gateway mode: what `run` checks before a command body, for a command that will run
/// inside Redis — unknown parameters, role, key scope — plus the reserved prefix.
pub fn admit(identity: &Identity, cmd: &Command, params: &Params) -> Result<()> {
    cmd::signature::check(cmd.name, params)?;
    check_identity(identity, cmd, params)?;
    if let Some(k) = find_key(params, |k| k.starts_with(RESERVED_PREFIX)) {
        return Err(Error::invalid_params(format!(
            "Key '{k}' is reserved: the prefix '{RESERVED_PREFIX}' belongs to DBX's own bookkeeping"
        )));
    }
    Ok(())
}

fn run(
    ctx: &mut Ctx,
    fx: &mut Outcome,
    log: Option<&mut OpLog>,
    entry: &'static cmd::Entry,
    params: &Params,
    out: &mut Json,
) -> Result<()> {
    let cmd = entry.cmd;
    fx.begin(cmd.name);
    // Replay applies records as they were accepted: a log written before unknown
    // parameters were refused may hold some, which that version ignored.
    if !ctx.replaying {
        cmd::signature::check_accepted(cmd.name, entry.accepted, params)?;
    }
    check_access(ctx, cmd, params)?;
    if cmd.is_write() && !ctx.replaying {
        if let Some(why) = &ctx.facts.writes_refused {
            return Err(Error::new(Code::Unavailable, format!("Writes are refused: {why}; reads still work")));
        }
    }
    // Evictions made from here on (before the command body) are logged with it.
    let gone_mark = ctx.store.gone_len();
    // Replay re-applies what was accepted: no memory refusal (evictions are in the log).
    if cmd.flags & DENYOOM != 0 && !ctx.replaying {
        make_room(ctx)?;
    }
    let res = (cmd.run)(ctx, params, out, fx);
    let rewrite = fx.log_as.take();
    if let Some(log) = log {
        // First the keys it evicted, then the operation itself if it changed
        // something — or the rewrite it asked for.
        for (key, why, _) in ctx.store.gone_since(gone_mark) {
            if *why == Gone::Evicted {
                log.evicted(key);
            }
        }
        if fx.changed() {
            match &rewrite {
                Some((method, params)) => log.op_json(method, params),
                None => match cmd::plain_set(cmd.name, params) {
                    Some((key, value)) => log.set(key, value),
                    None => log.op(cmd.name, params),
                },
            }
        }
    }
    if fx.changed() {
        // One executed write that changed something = one rev, shared by all its events.
        let rev = ctx.store.bump_rev();
        fx.end_with_rev(rev);
    }
    res?;
    if cmd.is_write() {
        out.u64("rev", ctx.store.rev());
    }
    Ok(())
}

/// Start-up replay of the log: each logged operation runs again, through the same
/// `run` as a request, at its recorded clock, with no policy refusal (it was accepted
/// when it first ran) and nothing logged or published.
pub struct Replayer {
    facts: ServerFacts,
    fx: Outcome,
    scratch: Vec<u8>,
}

impl Default for Replayer {
    fn default() -> Replayer {
        Replayer {
            facts: ServerFacts { max_batch: usize::MAX, persist_enabled: true, ..ServerFacts::default() },
            fx: Outcome::default(),
            scratch: Vec::with_capacity(4096),
        }
    }
}

impl Replayer {
    pub fn apply(&mut self, store: &mut Store, now_ms: u64, method: &str, params: &Params) {
        let mut ctx = Ctx::new(store, now_ms, &self.facts);
        ctx.replaying = true;
        self.scratch.clear();
        self.scratch.push(b'{');
        self.fx.reset(false);
        let res = execute(&mut ctx, &mut self.fx, None, method, params, &mut Json::fields(&mut self.scratch, true));
        if let Err(e) = res {
            // Errors are deterministic and were returned the first time too; an
            // unknown method means the log was written by a newer version.
            if e.code == Code::MethodNotFound {
                log::error!("log replay: unknown method '{method}' skipped (written by a newer dbx?)");
            }
        }
    }
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

/// `batch`: operations in order, nothing from another connection in between (we are
/// single-threaded), each with its own result or error.
fn batch(ctx: &mut Ctx, fx: &mut Outcome, mut log: Option<&mut OpLog>, params: &Params, out: &mut Json) -> Result<()> {
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
            envelope::batch_element(a.elem(), |out| {
                let op = request::op(raw)?;
                if op.method == "batch" {
                    return Err(Error::new(Code::InvalidRequest, "A batch may not contain a batch"));
                }
                let params = op.params()?;
                let entry = cmd::entry(&op.method).ok_or_else(|| unknown(&op.method))?;
                if entry.cmd.flags & NO_BATCH != 0 {
                    return Err(Error::new(
                        Code::InvalidRequest,
                        format!("'{}' is not allowed inside a batch", op.method),
                    ));
                }
                run(ctx, fx, log.as_deref_mut(), entry, &params, out)
            });
        }
    });
    Ok(())
}
