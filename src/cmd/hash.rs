//! `hash.*`: field → value maps (Redis hashes).

use super::{Command, Ctx, Outcome, DENYOOM, READ, WRITE};
use crate::proto::{value_text, Code, Error, Json, Params, Result};
use crate::store::{HashValue, Value};
use std::borrow::Cow;

pub const COMMANDS: &[Command] = &[
    Command { name: "hash.get", flags: READ, run: get },
    Command { name: "hash.mget", flags: READ, run: mget },
    Command { name: "hash.set", flags: WRITE | DENYOOM, run: set },
    Command { name: "hash.del", flags: WRITE, run: del },
    Command { name: "hash.exists", flags: READ, run: exists },
    Command { name: "hash.len", flags: READ, run: len },
    Command { name: "hash.keys", flags: READ, run: keys },
    Command { name: "hash.values", flags: READ, run: values },
    Command { name: "hash.incr", flags: WRITE | DENYOOM, run: incr },
];

/// The hash at `key`: Ok(None) if missing, `wrong_type` if another kind.
fn read<'s>(ctx: &'s mut Ctx, key: &str) -> Result<Option<&'s HashValue>> {
    match ctx.store.get(key, ctx.now_ms).map(|it| &it.value) {
        None => Ok(None),
        Some(Value::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(Error::wrong_type()),
    }
}

/// Apply `f` to the hash at `key` (created when `create`, deleted if left empty).
/// Ok(None): the key is missing and was not created.
fn write<R>(ctx: &mut Ctx, key: &str, create: bool, f: impl FnOnce(&mut HashValue) -> Result<R>) -> Result<Option<R>> {
    let init = create.then_some(Value::new_hash as fn() -> Value);
    let res = ctx.store.modify(key, ctx.now_ms, init, |v| match v {
        Value::Hash(h) => f(h),
        _ => Err(Error::wrong_type()),
    });
    res.transpose()
}

fn get(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let field = p.opt_str("field")?;
    let h = read(ctx, &key)?;
    match field {
        Some(f) => match h.and_then(|h| h.get(&f)) {
            Some(v) => {
                out.str("value", v);
                Ok(())
            }
            None if h.is_none() => Err(Error::key_not_found(&key)),
            None => Err(Error::new(Code::NotFound, format!("Field '{f}' not found in hash '{key}'"))),
        },
        None => {
            out.obj("fields", |o| {
                for (f, v) in h.iter().flat_map(|h| h.iter()) {
                    crate::proto::write_str(o.dyn_key(f), v);
                }
            });
            Ok(())
        }
    }
}

fn mget(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let fields = p.str_list("fields")?;
    let h = read(ctx, &key)?;
    out.arr("values", |a| {
        for f in &fields {
            a.opt_str(h.and_then(|h| h.get(f)));
        }
    });
    Ok(())
}

fn set(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    // Validate everything before changing anything.
    let pairs: Vec<(Cow<str>, Cow<str>)> = if p.has("field") {
        vec![(p.str("field")?, p.value("value")?)]
    } else if p.has("fields") {
        let obj = p.object("fields")?;
        if obj.is_empty() {
            return Err(Error::invalid_params("Parameter 'fields' must be a non-empty object"));
        }
        obj.into_iter()
            .map(|(f, raw)| {
                let v = value_text(raw).ok_or_else(|| {
                    Error::invalid_params(format!("Value of '{f}' in 'fields' must be a string or a number"))
                })?;
                Ok((f, v))
            })
            .collect::<Result<_>>()?
    } else {
        return Err(Error::invalid_params("Missing parameter 'field' (with 'value') or 'fields'"));
    };
    let (created, changed) = write(ctx, &key, true, |h| {
        let (mut created, mut changed) = (0u64, false);
        for (f, v) in &pairs {
            let (c, ch) = h.insert(f, v);
            created += u64::from(c);
            changed |= ch;
        }
        Ok((created, changed))
    })?
    .unwrap_or((0, false));
    if changed {
        fx.touched(&key);
    }
    out.u64("created", created);
    Ok(())
}

fn del(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let fields = p.one_or_many("field", "fields")?;
    let n = write(ctx, &key, false, |h| Ok(fields.iter().filter(|f| h.remove(f)).count() as u64))?.unwrap_or(0);
    if n > 0 {
        fx.touched(&key);
    }
    out.u64("deleted", n);
    Ok(())
}

fn exists(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let field = p.str("field")?;
    let found = read(ctx, &key)?.is_some_and(|h| h.get(&field).is_some());
    out.bool("exists", found);
    Ok(())
}

fn len(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    out.u64("length", read(ctx, &key)?.map_or(0, |h| h.len()) as u64);
    Ok(())
}

fn keys(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let h = read(ctx, &key)?;
    out.arr("fields", |a| h.iter().flat_map(|h| h.iter()).for_each(|(f, _)| a.str(f)));
    Ok(())
}

fn values(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let h = read(ctx, &key)?;
    out.arr("values", |a| h.iter().flat_map(|h| h.iter()).for_each(|(_, v)| a.str(v)));
    Ok(())
}

fn incr(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let field = p.str("field")?;
    let by = p.opt_i64("by")?.unwrap_or(1);
    let (new, changed) = write(ctx, &key, true, |h| {
        let cur = match h.get(&field) {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| Error::new(Code::NotInteger, "Hash value is not an integer or out of range"))?,
            ),
        };
        let new =
            cur.unwrap_or(0).checked_add(by).ok_or_else(|| Error::new(Code::NotInteger, "Increment would overflow"))?;
        h.insert(&field, itoa::Buffer::new().format(new));
        // Adding 0 to an existing field changes nothing: no rev, no event.
        Ok((new, by != 0 || cur.is_none()))
    })?
    .unwrap_or((0, false));
    if changed {
        fx.touched(&key);
    }
    out.i64("value", new);
    Ok(())
}
