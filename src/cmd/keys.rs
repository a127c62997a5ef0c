//! `key.*`: operations on keys of any type.

use super::{ms_to_ttl_secs, secs_to_ms, strings::kind_name, Command, Ctx, Outcome, READ, WRITE};
use crate::proto::{Error, Json, Params, Result};
use crate::store::ValueKind;

pub const COMMANDS: &[Command] = &[
    Command { name: "key.del", flags: WRITE, run: del },
    Command { name: "key.exists", flags: READ, run: exists },
    Command { name: "key.type", flags: READ, run: key_type },
    Command { name: "key.expire", flags: WRITE, run: expire },
    Command { name: "key.ttl", flags: READ, run: ttl },
    Command { name: "key.persist", flags: WRITE, run: persist },
    Command { name: "key.rename", flags: WRITE, run: rename },
    Command { name: "key.scan", flags: READ, run: scan },
];

fn del(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let keys = p.one_or_many("key", "keys")?;
    let mut n = 0;
    for k in &keys {
        if ctx.store.remove(k, ctx.now_ms).is_some() {
            n += 1;
            fx.touched(k);
        }
    }
    out.u64("deleted", n);
    Ok(())
}

fn exists(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    if p.has("key") {
        let key = p.str("key")?;
        out.bool("exists", ctx.store.contains(&key, ctx.now_ms));
    } else {
        let keys = p.one_or_many("key", "keys")?;
        let n = keys.iter().filter(|k| ctx.store.contains(k, ctx.now_ms)).count();
        out.u64("count", n as u64);
    }
    Ok(())
}

fn key_type(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    out.str("type", kind_name(ctx.store.kind(&key, ctx.now_ms)));
    Ok(())
}

fn expire(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let t = p.opt_f64("ttl")?.ok_or_else(|| Error::invalid_params("Missing parameter 'ttl'"))?;
    let updated = if t <= 0.0 {
        // As Redis EXPIRE with a non-positive TTL: delete.
        ctx.store.remove(&key, ctx.now_ms).is_some()
    } else {
        let at = ctx.now_ms.saturating_add(secs_to_ms(t).max(1));
        ctx.store.set_expiry(&key, at, ctx.now_ms)
    };
    if updated {
        fx.touched(&key);
    }
    out.bool("updated", updated);
    Ok(())
}

fn ttl(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    match ctx.store.ttl_ms(&key, ctx.now_ms) {
        None => Err(Error::key_not_found(&key)),
        Some(t) => {
            out.opt_i64("ttl", t.map(ms_to_ttl_secs));
            Ok(())
        }
    }
}

fn persist(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let had_ttl = matches!(ctx.store.ttl_ms(&key, ctx.now_ms), Some(Some(_)));
    if had_ttl {
        ctx.store.set_expiry(&key, 0, ctx.now_ms);
        fx.touched(&key);
    }
    out.bool("updated", had_ttl);
    Ok(())
}

fn rename(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let new_key = p.str("new_key")?;
    let nx = p.opt_bool("nx")?;
    match ctx.store.rename(&key, &new_key, nx, ctx.now_ms) {
        None => Err(Error::key_not_found(&key)),
        Some(renamed) => {
            if renamed && key != new_key {
                fx.touched(&key);
                fx.touched(&new_key);
            }
            out.bool("renamed", renamed);
            Ok(())
        }
    }
}

/// Most slots one `key.scan` call visits, whatever `count` asks for.
const MAX_SCAN_COUNT: usize = 100_000;

fn scan(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let cursor = match p.opt_str("cursor")? {
        None => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| Error::invalid_params("Parameter 'cursor' is not a cursor returned by key.scan"))?,
    };
    let count = p.opt_usize("count")?.unwrap_or(10).clamp(1, MAX_SCAN_COUNT);
    let pattern = p.opt_str("match")?;
    let kind =
        match p.opt_str("type")? {
            None => None,
            Some(t) => Some(ValueKind::parse(&t).ok_or_else(|| {
                Error::invalid_params("Parameter 'type' must be one of string, hash, set, zset, list")
            })?),
        };
    // `Key`, not `Box<str>`: cloning a short key copies 24 bytes and allocates nothing.
    let mut keys: Vec<crate::store::Key> = Vec::new();
    let identity = ctx.identity.clone();
    let next = ctx.store.scan(cursor, count, ctx.now_ms, |it| {
        // A scoped credential sees only the keys inside its scope.
        if !identity.key_allowed(&it.key) {
            return;
        }
        if kind.is_some_and(|k| it.value.kind() != k) {
            return;
        }
        if pattern.as_deref().is_some_and(|pat| !crate::glob::glob_match(pat, &it.key)) {
            return;
        }
        keys.push(it.key.clone());
    });
    out.str("cursor", itoa::Buffer::new().format(next)).arr("keys", |a| {
        for k in &keys {
            a.str(k);
        }
    });
    Ok(())
}
