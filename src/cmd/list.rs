//! `list.*`: sequences with O(1) push and pop at both ends (Redis lists).

use super::{Command, Ctx, Outcome, DENYOOM, READ, WRITE};
use crate::proto::{Code, Error, Json, Params, Result};
use crate::store::{ListValue, Value};

pub const COMMANDS: &[Command] = &[
    Command { name: "list.push", flags: WRITE | DENYOOM, run: push },
    Command { name: "list.pop", flags: WRITE, run: pop },
    Command { name: "list.range", flags: READ, run: range },
    Command { name: "list.len", flags: READ, run: len },
    Command { name: "list.index", flags: READ, run: index },
    Command { name: "list.trim", flags: WRITE, run: trim },
];

fn read<'s>(ctx: &'s mut Ctx, key: &str) -> Result<Option<&'s ListValue>> {
    match ctx.store.get(key, ctx.now_ms).map(|it| &it.value) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => Err(Error::wrong_type()),
    }
}

fn write<R>(ctx: &mut Ctx, key: &str, create: bool, f: impl FnOnce(&mut ListValue) -> R) -> Result<Option<R>> {
    let init = create.then_some(Value::new_list as fn() -> Value);
    ctx.store
        .modify(key, ctx.now_ms, init, |v| match v {
            Value::List(l) => Ok(f(l)),
            _ => Err(Error::wrong_type()),
        })
        .transpose()
}

/// `side`: true for left. `default_left` differs: push defaults right, pop left.
fn side(p: &Params, default_left: bool) -> Result<bool> {
    match p.opt_str("side")?.as_deref() {
        None => Ok(default_left),
        Some("left") => Ok(true),
        Some("right") => Ok(false),
        Some(_) => Err(Error::invalid_params("Parameter 'side' must be \"left\" or \"right\"")),
    }
}

/// Redis's inclusive `start..=stop` with negative indices from the end, as a clamped
/// half-open range (empty when it selects nothing).
fn span(start: i64, stop: i64, len: usize) -> (usize, usize) {
    let n = len as i64;
    let start = if start < 0 { (start + n).max(0) } else { start };
    let stop = if stop < 0 { stop + n } else { stop.min(n - 1) };
    if start > stop || start >= n {
        (0, 0)
    } else {
        (start as usize, stop as usize + 1)
    }
}

fn push(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let values = if p.has("value") { vec![p.value("value")?] } else { p.value_list("values")? };
    let left = side(p, false)?;
    let n = write(ctx, &key, true, |l| {
        // One after another: a left push of [a,b,c] leaves c,b,a at the head.
        for v in &values {
            if left {
                l.push_front(v);
            } else {
                l.push_back(v);
            }
        }
        l.len()
    })?
    .unwrap_or(0);
    fx.touched(&key);
    out.u64("length", n as u64);
    Ok(())
}

fn pop(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let left = side(p, true)?;
    let count = p.opt_usize("count")?.unwrap_or(1);
    let popped = write(ctx, &key, false, |l| {
        let mut v = Vec::with_capacity(count.min(l.len()));
        while v.len() < count {
            match if left { l.pop_front() } else { l.pop_back() } {
                Some(x) => v.push(x),
                None => break,
            }
        }
        v
    })?
    .unwrap_or_default();
    if !popped.is_empty() {
        fx.touched(&key);
    }
    out.arr("values", |a| popped.iter().for_each(|v| a.str(v)));
    Ok(())
}

fn range(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let (start, stop) = (p.i64("start")?, p.i64("stop")?);
    let l = read(ctx, &key)?;
    out.arr("values", |a| {
        if let Some(l) = l {
            let (s, e) = span(start, stop, l.len());
            l.range(s, e).for_each(|v| a.str(v));
        }
    });
    Ok(())
}

fn len(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    out.u64("length", read(ctx, &key)?.map_or(0, |l| l.len()) as u64);
    Ok(())
}

fn index(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let i = p.i64("index")?;
    let Some(l) = read(ctx, &key)? else { return Err(Error::key_not_found(&key)) };
    let at = if i < 0 { i.checked_add(l.len() as i64) } else { Some(i) };
    match at.and_then(|i| usize::try_from(i).ok()).and_then(|i| l.get(i)) {
        Some(v) => {
            out.str("value", v);
            Ok(())
        }
        None => Err(Error::new(Code::NotFound, format!("Index {i} is out of range for list '{key}'"))),
    }
}

fn trim(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let (start, stop) = (p.i64("start")?, p.i64("stop")?);
    let (before, after) = write(ctx, &key, false, |l| {
        let before = l.len();
        let (s, e) = span(start, stop, before);
        l.retain_range(s, e);
        (before, l.len())
    })?
    .unwrap_or((0, 0));
    if after != before {
        fx.touched(&key);
    }
    out.u64("length", after as u64);
    Ok(())
}
