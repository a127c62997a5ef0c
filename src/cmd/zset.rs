//! `zset.*`: sorted sets — members ordered by score, ties by member (Redis ZSETs).
//! Scores are JSON numbers; ±infinity is spelled `"+inf"` / `"-inf"` both in params and
//! in results (JSON has no infinities).

use super::{Command, Ctx, Outcome, DENYOOM, READ, WRITE};
use crate::proto::{raw_str, Error, Json, Params, Raw, Result};
use crate::store::{ScoreBound, Value, ZSet};

pub const COMMANDS: &[Command] = &[
    Command { name: "zset.add", flags: WRITE | DENYOOM, run: add },
    Command { name: "zset.score", flags: READ, run: score },
    Command { name: "zset.incr", flags: WRITE | DENYOOM, run: incr },
    Command { name: "zset.remove", flags: WRITE, run: remove },
    Command { name: "zset.rank", flags: READ, run: rank },
    Command { name: "zset.range", flags: READ, run: range },
    Command { name: "zset.range_by_score", flags: READ, run: range_by_score },
    Command { name: "zset.card", flags: READ, run: card },
];

fn read<'s>(ctx: &'s mut Ctx, key: &str) -> Result<Option<&'s ZSet>> {
    match ctx.store.get(key, ctx.now_ms).map(|it| &it.value) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z)),
        Some(_) => Err(Error::wrong_type()),
    }
}

fn write<R>(ctx: &mut Ctx, key: &str, create: bool, f: impl FnOnce(&mut ZSet) -> Result<R>) -> Result<Option<R>> {
    let init = create.then_some(Value::new_zset as fn() -> Value);
    ctx.store
        .modify(key, ctx.now_ms, init, |v| match v {
            Value::ZSet(z) => f(z),
            _ => Err(Error::wrong_type()),
        })
        .transpose()
}

/// A score: a JSON number, or a string holding one or `"+inf"` / `"-inf"`. NaN is refused.
fn parse_score(raw: Raw, name: &str) -> Result<f64> {
    let bad = || Error::invalid_params(format!("Parameter '{name}' must be a number, \"+inf\" or \"-inf\""));
    let v = match raw_str(raw) {
        Some(s) => s.trim().parse::<f64>().map_err(|_| bad())?,
        None => serde_json::from_str::<f64>(raw.get()).map_err(|_| bad())?,
    };
    if v.is_nan() {
        return Err(bad());
    }
    Ok(v)
}

fn score_param(p: &Params, name: &str) -> Result<f64> {
    let raw = p.raw(name).ok_or_else(|| Error::invalid_params(format!("Missing parameter '{name}'")))?;
    parse_score(raw, name)
}

/// A range bound: a number, `"-inf"`, `"+inf"`, or a string with a `"("` prefix for an
/// exclusive bound (`"(1.5"`).
fn bound_param(p: &Params, name: &str) -> Result<ScoreBound> {
    let raw = p.raw(name).ok_or_else(|| Error::invalid_params(format!("Missing parameter '{name}'")))?;
    match raw_str(raw) {
        Some(s) => ScoreBound::parse_str(s.trim()).ok_or_else(|| {
            Error::invalid_params(format!("Parameter '{name}' must be a number, \"-inf\", \"+inf\" or \"(\" + number"))
        }),
        None => Ok(ScoreBound::inclusive(parse_score(raw, name)?)),
    }
}

fn write_pairs(out: &mut Json, pairs: &[(&str, f64)]) {
    out.arr("members", |a| {
        for (m, s) in pairs {
            a.obj(|o| {
                o.str("member", m).f64("score", *s);
            });
        }
    });
}

fn add(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    // Validate everything before changing anything.
    let pairs: Vec<(String, f64)> = if p.has("member") {
        vec![(p.str("member")?.into_owned(), score_param(p, "score")?)]
    } else if p.has("members") {
        let list = p.array("members")?;
        if list.is_empty() {
            return Err(Error::invalid_params("Parameter 'members' must be a non-empty array"));
        }
        list.into_iter()
            .map(|raw| {
                let bad = || {
                    Error::invalid_params("Each element of 'members' must be {\"member\": string, \"score\": number}")
                };
                let fields = crate::proto::object_fields(raw).ok_or_else(bad)?;
                let el = Params::from_fields(fields);
                Ok((el.str("member").map_err(|_| bad())?.into_owned(), score_param(&el, "score")?))
            })
            .collect::<Result<_>>()?
    } else {
        return Err(Error::invalid_params("Missing parameter 'member' (with 'score') or 'members'"));
    };
    let (added, changed) = write(ctx, &key, true, |z| {
        let (mut added, mut changed) = (0u64, false);
        for (m, s) in &pairs {
            let old = z.score(m);
            if old == Some(*s) {
                continue;
            }
            changed = true;
            match z.try_insert(m, *s) {
                Some(true) => added += 1,
                Some(false) => {}
                None => return Err(Error::invalid_params("Sorted set is full")),
            }
        }
        Ok((added, changed))
    })?
    .unwrap_or((0, false));
    if changed {
        fx.touched(&key);
    }
    out.u64("added", added);
    Ok(())
}

fn score(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let member = p.str("member")?;
    match read(ctx, &key)? {
        None => Err(Error::key_not_found(&key)),
        Some(z) => match z.score(&member) {
            Some(s) => {
                out.f64("score", s);
                Ok(())
            }
            None => Err(Error::new(crate::proto::Code::NotFound, format!("Member '{member}' not found in '{key}'"))),
        },
    }
}

fn incr(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let member = p.str("member")?;
    let by = score_param(p, "by")?;
    let (new, changed) = write(ctx, &key, true, |z| {
        let cur = z.score(&member);
        let new = cur.unwrap_or(0.0) + by;
        if new.is_nan() {
            return Err(Error::invalid_params("Resulting score is not a number (NaN)"));
        }
        z.try_insert(&member, new).ok_or_else(|| Error::invalid_params("Sorted set is full"))?;
        // A score that stays the same changes nothing: no rev, no event.
        Ok((new, cur != Some(new)))
    })?
    .unwrap_or((by, false));
    if changed {
        fx.touched(&key);
    }
    out.f64("score", new);
    Ok(())
}

fn remove(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let members = p.one_or_many("member", "members")?;
    let n = write(ctx, &key, false, |z| Ok(members.iter().filter(|m| z.remove(m)).count() as u64))?.unwrap_or(0);
    if n > 0 {
        fx.touched(&key);
    }
    out.u64("removed", n);
    Ok(())
}

fn rank(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let member = p.str("member")?;
    let rev = p.opt_bool("rev")?;
    match read(ctx, &key)? {
        None => Err(Error::key_not_found(&key)),
        Some(z) => match z.rank(&member, rev) {
            Some(r) => {
                out.u64("rank", r as u64);
                Ok(())
            }
            None => Err(Error::new(crate::proto::Code::NotFound, format!("Member '{member}' not found in '{key}'"))),
        },
    }
}

fn range(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let (start, stop) = (p.i64("start")?, p.i64("stop")?);
    let rev = p.opt_bool("rev")?;
    let z = read(ctx, &key)?;
    write_pairs(out, &z.map(|z| z.range_by_rank(start, stop, rev)).unwrap_or_default());
    Ok(())
}

fn range_by_score(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    let (min, max) = (bound_param(p, "min")?, bound_param(p, "max")?);
    let offset = p.opt_usize("offset")?.unwrap_or(0);
    let limit = p.opt_usize("limit")?;
    let rev = p.opt_bool("rev")?;
    let z = read(ctx, &key)?;
    write_pairs(out, &z.map(|z| z.range_by_score(min, max, offset, limit, rev)).unwrap_or_default());
    Ok(())
}

fn card(ctx: &mut Ctx, p: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    let key = p.str("key")?;
    out.u64("count", read(ctx, &key)?.map_or(0, |z| z.len()) as u64);
    Ok(())
}
