//! `server.*`: liveness, time, statistics and whole-store operations.

use super::{Command, Ctx, Effect, Outcome, ADMIN, ALL_KEYS, KEYLESS, NO_BATCH, READ, WRITE};
use crate::proto::{Code, Error, Json, Params, Result};

pub const COMMANDS: &[Command] = &[
    Command { name: "server.ping", flags: READ | KEYLESS, run: ping },
    Command { name: "server.time", flags: READ | KEYLESS, run: time },
    Command { name: "server.info", flags: READ | KEYLESS, run: info },
    Command { name: "server.dbsize", flags: READ | KEYLESS, run: dbsize },
    Command { name: "server.flush", flags: WRITE | ADMIN | KEYLESS | ALL_KEYS, run: flush },
    Command { name: "server.save", flags: ADMIN | KEYLESS | NO_BATCH, run: save },
];

fn ping(_: &mut Ctx, _: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    out.bool("pong", true);
    Ok(())
}

fn time(ctx: &mut Ctx, _: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    out.u64("unix_ms", ctx.now_ms);
    Ok(())
}

fn info(ctx: &mut Ctx, _: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let f = ctx.facts;
    out.str("version", f.version)
        .u64("uptime_s", f.uptime_s)
        .u64("connections", f.connections as u64)
        .u64("keys", ctx.store.len() as u64)
        .u64("used_memory", ctx.store.used_memory() as u64)
        .u64("ops_total", f.ops_total + fx.ops)
        .u64("rev", ctx.store.rev())
        .str("epoch", &f.epoch)
        .u64("expired_keys", ctx.store.expired_total)
        .u64("evicted_keys", ctx.store.evicted_total)
        .u64("maxmemory", f.maxmemory)
        .str(
            "maxmemory_policy",
            match f.maxmemory_policy {
                crate::config::MaxMemoryPolicy::Noeviction => "noeviction",
                crate::config::MaxMemoryPolicy::AllkeysLru => "allkeys-lru",
            },
        );
    Ok(())
}

fn dbsize(ctx: &mut Ctx, _: &Params, out: &mut Json, _: &mut Outcome) -> Result<()> {
    out.u64("keys", ctx.store.len() as u64);
    Ok(())
}

fn flush(ctx: &mut Ctx, _: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let n = ctx.store.flush();
    // A flush is one write (one rev) even on an empty store: history is cut either way.
    fx.touched_all();
    fx.effect(Effect::Flushed);
    out.u64("flushed", n as u64);
    Ok(())
}

/// Start a background snapshot (the engine forks once this returns); `started` is
/// false when one is already running.
fn save(ctx: &mut Ctx, _: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    if !ctx.facts.persist_enabled {
        return Err(Error::new(
            Code::Unavailable,
            "Persistence is off (DBX_PERSIST=false): there is nothing to save to",
        ));
    }
    if let Some(why) = &ctx.facts.writes_refused {
        return Err(Error::new(Code::Unavailable, format!("No snapshot while the log cannot be written: {why}")));
    }
    let started = !ctx.facts.snapshot_running;
    if started {
        fx.effect(Effect::SaveRequested);
    }
    out.bool("started", started);
    Ok(())
}
