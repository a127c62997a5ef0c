//! `string.*`: plain values with optional TTL (Redis strings).

use super::{ms_to_ttl_secs, secs_to_ms, Command, Ctx, Outcome, DENYOOM, READ, WRITE};
use crate::proto::{Code, Error, Json, Params, Raw, Result};
use crate::store::{Value, ValueKind};

/// A `string.set` with `key` and `value` and nothing else (the commonest write): the
/// raw JSON of both. The log writes it in a short form (`OpLog::set`) and the gateway
/// sends it to Redis as part of a run of plain sets (`dbx.lua`'s `set_run`).
pub fn plain_set<'p>(method: &str, params: &Params<'p>) -> Option<(Raw<'p>, Raw<'p>)> {
    if method != "string.set" || params.names().count() != 2 {
        return None;
    }
    params.raw("key").zip(params.raw("value"))
}

pub const COMMANDS: &[Command] = &[
    Command { name: "string.get", flags: READ, run: get },
    Command { name: "string.set", flags: WRITE | DENYOOM, run: set },
    Command { name: "string.mget", flags: READ, run: mget },
    Command { name: "string.mset", flags: WRITE | DENYOOM, run: mset },
    Command { name: "string.incr", flags: WRITE | DENYOOM, run: incr },
    Command { name: "string.decr", flags: WRITE | DENYOOM, run: decr },
    Command { name: "string.append", flags: WRITE | DENYOOM, run: append },
    Command { name: "string.strlen", flags: READ, run: strlen },
];

/// The string at `key`: Ok(None) if missing, `wrong_type` if another kind.
fn read<'s>(ctx: &'s mut Ctx, key: &str) -> Result<Option<(&'s str, u64)>> {
    match ctx.store.get(key, ctx.now_ms) {
        None => Ok(None),
        Some(it) => match &it.value {
            Value::Str(s) => Ok(Some((s, it.expires_at))),
            _ => Err(Error::wrong_type()),
        },
    }
}

fn get(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let now = ctx.now_ms;
    match read(ctx, &key)? {
        None => Err(Error::key_not_found(&key)),
        Some((v, exp)) => {
            out.str("value", v).opt_i64("ttl", (exp != 0).then(|| ms_to_ttl_secs(exp.saturating_sub(now))));
            Ok(())
        }
    }
}

/// An absolute deadline from a `ttl` parameter in seconds; `ttl <= 0` is refused.
fn deadline(ttl: Option<Raw>, now_ms: u64) -> Result<u64> {
    match Params::opt_f64_of("ttl", ttl)? {
        None => Ok(0),
        Some(t) if t <= 0.0 => Err(Error::invalid_params("Parameter 'ttl' must be greater than 0")),
        Some(t) => Ok(now_ms.saturating_add(secs_to_ms(t).max(1))),
    }
}

fn set(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    // All six parameters in one pass over the fields; checked in the order they always
    // were (key, value, ttl, nx, xx, get), so a request with several bad ones gets the
    // same error.
    let [key, value, ttl, nx, xx, get] = p.pick(["key", "value", "ttl", "nx", "xx", "get"]);
    let key = Params::str_of("key", key)?;
    let value = Params::value_of("value", value)?;
    let exp = deadline(ttl, ctx.now_ms)?;
    let (nx, xx, want_prev) =
        (Params::opt_bool_of("nx", nx)?, Params::opt_bool_of("xx", xx)?, Params::opt_bool_of("get", get)?);
    if nx && xx {
        return Err(Error::invalid_params("Parameters 'nx' and 'xx' exclude each other"));
    }
    let prev: Option<Option<Box<str>>> = if want_prev {
        // As Redis SET … GET: the previous value must be a string.
        Some(read(ctx, &key)?.map(|(v, _)| v.into()))
    } else {
        None
    };
    let exists = match &prev {
        Some(v) => v.is_some(),
        None if nx || xx => ctx.store.contains(&key, ctx.now_ms),
        None => false,
    };
    let do_set = !(nx && exists || xx && !exists);
    if do_set {
        ctx.store.set_str(&key, &value, exp, ctx.now_ms);
        fx.touched(&key);
    }
    out.bool("set", do_set);
    if let Some(prev) = prev {
        out.opt_str("previous", prev.as_deref());
    }
    Ok(())
}

fn mget(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let keys = p.str_list("keys")?;
    let now = ctx.now_ms;
    out.arr("values", |a| {
        for k in &keys {
            match ctx.store.get(k, now).map(|it| &it.value) {
                Some(Value::Str(s)) => a.str(s),
                _ => a.opt_str(None),
            }
        }
    });
    Ok(())
}

fn mset(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let pairs = p.object("pairs")?;
    if pairs.is_empty() {
        return Err(Error::invalid_params("Parameter 'pairs' must be a non-empty object"));
    }
    // Validate everything before changing anything: an mset is all or nothing.
    let mut vals = Vec::with_capacity(pairs.len());
    for (k, raw) in &pairs {
        let v = crate::proto::value_text(*raw)
            .ok_or_else(|| Error::invalid_params(format!("Value of '{k}' in 'pairs' must be a string or a number")))?;
        vals.push((k, v));
    }
    for (k, v) in &vals {
        ctx.store.set_str(k, v, 0, ctx.now_ms);
        fx.touched(k);
    }
    out.u64("set", vals.len() as u64);
    Ok(())
}

fn incr(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let by = p.opt_i64("by")?.unwrap_or(1);
    add(ctx, p, by, out, fx)
}

fn decr(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let by = p.opt_i64("by")?.unwrap_or(1);
    let by = by.checked_neg().ok_or_else(|| Error::new(Code::NotInteger, "Increment would overflow"))?;
    add(ctx, p, by, out, fx)
}

fn add(ctx: &mut Ctx, p: &Params, by: i64, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let now = ctx.now_ms;
    let mut buf = itoa::Buffer::new();
    let (new, exp, same) = match read(ctx, &key)? {
        None => (by, 0, false),
        Some((v, exp)) => {
            let cur = v
                .parse::<i64>()
                .map_err(|_| Error::new(Code::NotInteger, "Value is not an integer or out of range"))?;
            let new = cur.checked_add(by).ok_or_else(|| Error::new(Code::NotInteger, "Increment would overflow"))?;
            (new, exp, buf.format(new) == v)
        }
    };
    // Adding 0 to a stored integer changes nothing: no rev, no event.
    if !same {
        // INCR keeps the key's TTL, as in Redis.
        ctx.store.set(&key, Value::Str(buf.format(new).into()), exp, now);
        fx.touched(&key);
    }
    out.i64("value", new);
    Ok(())
}

fn append(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let value = p.value("value")?;
    let now = ctx.now_ms;
    let (new, exp): (String, u64) = match read(ctx, &key)? {
        None => (value.to_string(), 0),
        Some((v, exp)) => {
            let mut s = String::with_capacity(v.len() + value.len());
            s.push_str(v);
            s.push_str(&value);
            (s, exp)
        }
    };
    let len = new.len();
    ctx.store.set(&key, Value::Str(new.into()), exp, now);
    if !value.is_empty() || len == 0 {
        fx.touched(&key);
    }
    out.u64("length", len as u64);
    Ok(())
}

fn strlen(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let len = read(ctx, &key)?.map_or(0, |(v, _)| v.len());
    out.u64("length", len as u64);
    Ok(())
}

/// Used by `key.type` etc.: the kind name or "none".
pub fn kind_name(k: Option<ValueKind>) -> &'static str {
    k.map_or("none", |k| k.as_str())
}
