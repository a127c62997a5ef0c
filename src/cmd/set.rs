//! `set.*`: unordered sets of distinct members (Redis sets).

use super::{Command, Ctx, Outcome, DENYOOM, READ, WRITE};
use crate::proto::{Error, Json, Params, Result};
use crate::store::{SetValue, Value};

pub const COMMANDS: &[Command] = &[
    Command { name: "set.add", flags: WRITE | DENYOOM, run: add },
    Command { name: "set.remove", flags: WRITE, run: remove },
    Command { name: "set.members", flags: READ, run: members },
    Command { name: "set.contains", flags: READ, run: contains },
    Command { name: "set.card", flags: READ, run: card },
    Command { name: "set.inter", flags: READ, run: inter },
    Command { name: "set.union", flags: READ, run: union },
    Command { name: "set.diff", flags: READ, run: diff },
    Command { name: "set.pop", flags: WRITE, run: pop },
];

fn read<'s>(ctx: &'s mut Ctx, key: &str) -> Result<Option<&'s SetValue>> {
    match ctx.store.get(key, ctx.now_ms).map(|it| &it.value) {
        None => Ok(None),
        Some(Value::Set(s)) => Ok(Some(s)),
        Some(_) => Err(Error::wrong_type()),
    }
}

fn write<R>(ctx: &mut Ctx, key: &str, create: bool, f: impl FnOnce(&mut SetValue) -> R) -> Result<Option<R>> {
    let init = create.then_some(Value::new_set as fn() -> Value);
    ctx.store
        .modify(key, ctx.now_ms, init, |v| match v {
            Value::Set(s) => Ok(f(s)),
            _ => Err(Error::wrong_type()),
        })
        .transpose()
}

fn add(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let members = p.one_or_many("member", "members")?;
    let n = write(ctx, &key, true, |s| members.iter().filter(|m| s.insert(m)).count() as u64)?.unwrap_or(0);
    if n > 0 {
        fx.touched(&key);
    }
    out.u64("added", n);
    Ok(())
}

fn remove(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let members = p.one_or_many("member", "members")?;
    let n = write(ctx, &key, false, |s| members.iter().filter(|m| s.remove(m)).count() as u64)?.unwrap_or(0);
    if n > 0 {
        fx.touched(&key);
    }
    out.u64("removed", n);
    Ok(())
}

fn members(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let s = read(ctx, &key)?;
    out.arr("members", |a| s.iter().flat_map(|s| s.iter()).for_each(|m| a.str(m)));
    Ok(())
}

fn contains(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let member = p.str("member")?;
    out.bool("contains", read(ctx, &key)?.is_some_and(|s| s.contains(&member)));
    Ok(())
}

fn card(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    out.u64("count", read(ctx, &key)?.map_or(0, |s| s.len()) as u64);
    Ok(())
}

/// The sets named by `keys`, type-checked all at once (a missing key is an empty set).
fn sets<'s>(ctx: &'s mut Ctx, keys: &[std::borrow::Cow<str>]) -> Result<Vec<Option<&'s SetValue>>> {
    // Lazy expiry needs `&mut`, so expire first, then borrow everything shared.
    for k in keys {
        read(ctx, k)?;
    }
    let store: &'s crate::store::Store = &*ctx.store;
    keys.iter()
        .map(|k| match store.peek(k).map(|it| &it.value) {
            None => Ok(None),
            Some(Value::Set(s)) => Ok(Some(&**s)),
            Some(_) => Err(Error::wrong_type()),
        })
        .collect()
}

fn write_members<'a>(out: &mut Json, members: impl Iterator<Item = &'a str>) {
    out.arr("members", |a| members.for_each(|m| a.str(m)));
}

fn inter(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let keys = p.str_list("keys")?;
    let mut sets = sets(ctx, &keys)?;
    // Walk the smallest set and probe the others (Redis SINTER's order).
    sets.sort_by_key(|s| s.map_or(0, |s| s.len()));
    match sets.split_first() {
        Some((Some(first), rest)) if rest.iter().all(|s| s.is_some()) => {
            write_members(out, first.iter().filter(|m| rest.iter().flatten().all(|s| s.contains(m))))
        }
        _ => write_members(out, std::iter::empty()),
    }
    Ok(())
}

fn union(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let keys = p.str_list("keys")?;
    let sets = sets(ctx, &keys)?;
    let mut seen = crate::store::value::HashSet::new();
    write_members(out, sets.iter().flatten().flat_map(|s| s.iter()).filter(|m| seen.insert(*m)));
    Ok(())
}

fn diff(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let keys = p.str_list("keys")?;
    let sets = sets(ctx, &keys)?;
    match sets.split_first() {
        Some((Some(first), rest)) => {
            write_members(out, first.iter().filter(|m| !rest.iter().flatten().any(|s| s.contains(m))))
        }
        _ => write_members(out, std::iter::empty()),
    }
    Ok(())
}

fn pop(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let count = p.opt_usize("count")?.unwrap_or(1);
    let popped = write(ctx, &key, false, |s| s.pop(count))?.unwrap_or_default();
    if !popped.is_empty() {
        fx.touched(&key);
        // Which members a pop takes depends on the hash seed of this process: log the
        // effect (a set.remove of exactly these members) so replay is deterministic.
        let mut params = b"{\"key\":".to_vec();
        crate::proto::write_str(&mut params, &key);
        params.extend_from_slice(b",\"members\":[");
        for (i, m) in popped.iter().enumerate() {
            if i > 0 {
                params.push(b',');
            }
            crate::proto::write_str(&mut params, m);
        }
        params.extend_from_slice(b"]}");
        fx.log_as = Some(("set.remove", params));
    }
    write_members(out, popped.iter().map(|m| &**m));
    Ok(())
}
