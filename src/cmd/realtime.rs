//! `pubsub.*` and `key.watch` / `key.unwatch`: the commands that register a connection
//! with the hub. Deliveries are queued in the hub; the reactor sends them after the reply.

use super::{Command, Ctx, Outcome, KEYLESS, PUBLISH, READ};
use crate::auth::Identity;
use crate::proto::{write_str, Code, Error, Json, Params, Result};
use crate::pubsub::Hub;
use crate::store::Value;
use std::borrow::Cow;

pub const COMMANDS: &[Command] = &[
    Command { name: "pubsub.subscribe", flags: READ | KEYLESS, run: subscribe },
    Command { name: "pubsub.unsubscribe", flags: READ | KEYLESS, run: unsubscribe },
    Command { name: "pubsub.publish", flags: PUBLISH | KEYLESS, run: publish },
    Command { name: "key.watch", flags: READ, run: watch },
    Command { name: "key.unwatch", flags: READ | KEYLESS, run: unwatch },
];

fn hub<'c>(ctx: &'c mut Ctx) -> Result<&'c mut Hub> {
    ctx.hub.as_deref_mut().ok_or_else(|| Error::new(Code::Internal, "no real-time hub in this context"))
}

/// An optional list param: absent → empty.
fn opt_list<'a>(p: &Params<'a>, name: &str) -> Result<Vec<Cow<'a, str>>> {
    if p.has(name) {
        p.str_list(name)
    } else {
        Ok(Vec::new())
    }
}

fn refs<'s>(v: &'s [Cow<'_, str>]) -> Vec<&'s str> {
    v.iter().map(|s| s.as_ref()).collect()
}

fn names(out: &mut Json, field: &str, list: &[Box<str>]) {
    out.arr(field, |a| {
        for n in list {
            a.str(n);
        }
    });
}

fn subscribe(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let channels = opt_list(p, "channels")?;
    let patterns = opt_list(p, "patterns")?;
    if channels.is_empty() && patterns.is_empty() {
        return Err(Error::invalid_params("Missing parameter 'channels' or 'patterns'"));
    }
    let conn = ctx.conn;
    let done = hub(ctx)?.subscribe(conn, &refs(&channels), &refs(&patterns));
    names(out, "subscribed", &done);
    Ok(())
}

fn unsubscribe(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let channels = p.has("channels").then(|| p.str_list("channels")).transpose()?;
    let patterns = p.has("patterns").then(|| p.str_list("patterns")).transpose()?;
    let conn = ctx.conn;
    let c = channels.as_deref().map(refs);
    let pt = patterns.as_deref().map(refs);
    let done = hub(ctx)?.unsubscribe(conn, c.as_deref(), pt.as_deref());
    names(out, "unsubscribed", &done);
    Ok(())
}

fn publish(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let channel = p.str("channel")?;
    let data = p.raw("data").map_or("null", |r| r.get());
    // Relayed verbatim, so it must be JSON every client can read: the scan lets an
    // escaped lone surrogate ("\ud800") through, which is not Unicode and which strict
    // parsers refuse. Only data holding a `\u` escape needs the full check.
    if data.contains("\\u") && serde_json::from_str::<serde_json::Value>(data).is_err() {
        return Err(Error::invalid_params(
            "Parameter 'data' holds a lone surrogate escape (\\uD800–\\uDFFF without its pair), which is not valid Unicode",
        ));
    }
    let n = hub(ctx)?.publish(&channel, data);
    out.u64("receivers", n as u64);
    Ok(())
}

/// A watched value as JSON: a string is a string, a hash an object, a list an array,
/// a set a sorted array, a sorted set an array of `{"member","score"}` in rank order.
pub fn write_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => write_str(buf, s),
        Value::Hash(h) => {
            let mut fields: Vec<_> = h.iter().collect();
            fields.sort_unstable();
            buf.push(b'{');
            let mut j = Json::fields(buf, true);
            for (k, v) in fields {
                write_str(j.dyn_key(k), v);
            }
            buf.push(b'}');
        }
        Value::Set(s) => {
            let mut members: Vec<_> = s.iter().collect();
            members.sort_unstable();
            buf.push(b'[');
            for (i, m) in members.into_iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_str(buf, m);
            }
            buf.push(b']');
        }
        Value::List(l) => {
            buf.push(b'[');
            for (i, m) in l.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_str(buf, m);
            }
            buf.push(b']');
        }
        Value::ZSet(z) => {
            buf.push(b'[');
            for (i, (m, score)) in z.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.push(b'{');
                Json::fields(buf, true).str("member", m).f64("score", score);
                buf.push(b'}');
            }
            buf.push(b']');
        }
    }
}

/// The start of a `key.watch` result, the same for the embedded store and a gateway:
/// `watching`, then for a resume (`since`, and whether the client's epoch is the current
/// one) either the replay of the changes after `since` — true: the result is complete —
/// or `gap` with the current epoch, after which the caller writes `rev` and the values
/// to start again from.
#[allow(clippy::too_many_arguments)]
pub fn watch_head(
    out: &mut Json,
    hub: &Hub,
    keys: &[&str],
    patterns: &[&str],
    scope: &Identity,
    resume: Option<(u64, bool)>,
    rev: u64,
    epoch: &str,
) -> bool {
    out.arr("watching", |a| {
        for n in keys.iter().chain(patterns.iter()) {
            a.str(n);
        }
    });
    let Some((since, same_epoch)) = resume else { return false };
    let replay = if same_epoch && since <= rev { hub.replay(since, keys, patterns, scope) } else { None };
    if let Some(events) = replay {
        out.u64("rev", rev).arr("replay", |a| {
            for e in &events {
                a.raw(e);
            }
        });
        return true;
    }
    // History is gone: say so, and hand over the current state to start again from.
    out.bool("gap", true).str("epoch", epoch);
    false
}

/// `key.watch`'s parameters, checked the same way by the embedded command and a gateway.
pub struct WatchParams<'a> {
    pub keys: Vec<Cow<'a, str>>,
    pub patterns: Vec<Cow<'a, str>>,
    /// A resume: `since` and the epoch the client saw it in.
    pub since: Option<(u64, Cow<'a, str>)>,
}

impl<'a> WatchParams<'a> {
    pub fn parse(p: &Params<'a>) -> Result<WatchParams<'a>> {
        let keys = opt_list(p, "keys")?;
        let patterns = opt_list(p, "patterns")?;
        if keys.is_empty() && patterns.is_empty() {
            return Err(Error::invalid_params("Missing parameter 'keys' or 'patterns'"));
        }
        let since = match p.raw("since") {
            None => None,
            Some(_) => Some(p.opt_usize("since")?.unwrap_or(0) as u64),
        };
        let since = match (since, p.opt_str("epoch")?) {
            (Some(_), None) => return Err(Error::invalid_params("Parameter 'epoch' is required with 'since'")),
            (Some(s), Some(e)) => Some((s, e)),
            (None, _) => None,
        };
        Ok(WatchParams { keys, patterns, since })
    }
}

fn watch(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let WatchParams { keys, patterns, since } = WatchParams::parse(p)?;
    let (k, pt) = (refs(&keys), refs(&patterns));
    let conn = ctx.conn;
    let scope = ctx.identity.clone();
    let rev = ctx.store.rev();
    let current_epoch = ctx.facts.epoch.clone();
    let h = hub(ctx)?;
    // Register first: nothing that happens after this reply can be missed.
    h.watch(conn, &k, &pt, scope.clone());
    let resume = since.map(|(s, epoch)| (s, epoch == current_epoch.as_str()));
    if watch_head(out, h, &k, &pt, &scope, resume, rev, &current_epoch) {
        return Ok(());
    }
    out.u64("rev", rev);
    let now = ctx.now_ms;
    let buf = &mut *out.buf;
    // values: exact keys, then every existing key matching a pattern (inside the scope).
    let mut seen: Vec<Box<str>> = Vec::new();
    let mut first = true;
    buf.extend_from_slice(b",\"values\":{");
    let mut emit = |buf: &mut Vec<u8>, key: &str, v: &Value| {
        if !first {
            buf.push(b',');
        }
        first = false;
        write_str(buf, key);
        buf.extend_from_slice(b":{\"type\":");
        write_str(buf, v.kind().as_str());
        buf.extend_from_slice(b",\"value\":");
        write_value(buf, v);
        buf.push(b'}');
    };
    for key in &k {
        if let Some(it) = ctx.store.get(key, now) {
            emit(buf, key, &it.value);
            seen.push((*key).into());
        }
    }
    if !pt.is_empty() {
        for it in ctx.store.iter() {
            if it.expires_at != 0 && it.expires_at <= now {
                continue;
            }
            if scope.key_allowed(&it.key)
                && pt.iter().any(|p| crate::glob::glob_match(p, &it.key))
                && !seen.iter().any(|s| it.key == **s)
            {
                emit(buf, &it.key, &it.value);
            }
        }
    }
    buf.push(b'}');
    Ok(())
}

fn unwatch(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let keys = p.has("keys").then(|| p.str_list("keys")).transpose()?;
    let patterns = p.has("patterns").then(|| p.str_list("patterns")).transpose()?;
    let conn = ctx.conn;
    let k = keys.as_deref().map(refs);
    let pt = patterns.as_deref().map(refs);
    let done = hub(ctx)?.unwatch(conn, k.as_deref(), pt.as_deref());
    names(out, "unwatched", &done);
    Ok(())
}
