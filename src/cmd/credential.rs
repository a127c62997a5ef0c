//! `auth.refresh`: replace the connection's JWT before it expires.

use super::{Command, Ctx, Effect, Outcome, KEYLESS, NO_BATCH, READ};
use crate::auth::AuthError;
use crate::proto::{Code, Error, Json, Params, Result};
use std::rc::Rc;

pub const COMMANDS: &[Command] = &[Command { name: "auth.refresh", flags: READ | KEYLESS | NO_BATCH, run: refresh }];

fn refresh(ctx: &mut Ctx, p: &Params, out: &mut Json, fx: &mut Outcome) -> Result<()> {
    let token = p.str("token")?;
    let Some(auth) = ctx.auth else {
        return Err(Error::new(Code::Unauthorized, "No credentials are configured on this server"));
    };
    let now_s = ctx.now_ms / 1000;
    match auth.refresh(&ctx.identity, &token, now_s) {
        Ok(id) => {
            out.opt_i64("expires_at", id.expires_at.map(|e| e as i64));
            fx.effect(Effect::IdentityChanged(Rc::new(id)));
            Ok(())
        }
        // The current credential stays in force (PROTOCOL.md §8).
        Err(AuthError::Missing) => Err(Error::new(Code::Unauthorized, "Missing token")),
        Err(AuthError::Invalid(m)) => Err(Error::new(Code::Unauthorized, m)),
    }
}
