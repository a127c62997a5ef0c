//! The read fast path: `string.get`, `string.mget` and `hash.get` of a field as native Redis commands instead of `FCALL dbx_exec`
//! (the library's per-call Lua cost — JSON parsing, bookkeeping reads — is most of a
//! plain read's cost in Redis). The answer is built here exactly as the library builds it
//! (docs/BACKEND.md, section 2):
//!
//! One turn's gets on one data connection go out as one transaction, three commands per
//! get, so each get's value and deadline are read at one instant:
//! `MULTI`, then per get `GET k`, `PEXPIRETIME k`, `HGET __dbx:deadlines:exact k`, `EXEC`.
//! - the deadline: the library sets a native expiry at every deadline it records
//!   (`native_at`: exact up to 2^62 ms, clamped to 2^62 past it), so `PEXPIRETIME` is the
//!   deadline; from 2^53 on the exact one is the text in `__dbx:deadlines:exact`, as the
//!   library's `exact_deadline` reads it;
//! - a deadline at or before the gateway's clock is expired, as the library's `live`
//!   decides with the same clock (Redis's own clock may be behind); the library would
//!   also record the `expired` change right then — here `dbx_expire_due` records it on its
//!   next run (within `EXPIRE_EVERY_MS`), which is what happens to any key nobody reads;
//! - `WRONGTYPE` on a live key → `wrong_type`; nil → `not_found`;
//! - the value's bytes are made JSON text as the library's `jstr` does (bytes that are
//!   not UTF-8 — only written by something other than DBX — become U+FFFD one byte at a
//!   time, which differs from `String::from_utf8_lossy`).
//!
//! `hash.get` of one field is `HGET k f`, `PEXPIRETIME k`, `EXISTS k` (a missing field of
//! an existing hash has its own not_found); `string.mget` is `MGET k…` and one
//! `PEXPIRETIME` per key (null for a key missing, not a string or past its deadline).
//!
//! The transaction sits in the client's connection order like any command (the group of
//! library calls before it is flushed first), so a get after a set on one client
//! connection sees the set.

use super::{redis_error, Gateway, Kind, Local, Tag, Waiting};
use crate::proto::{envelope, Code, Error};
use redis_protocol::resp2::types::OwnedFrame;

/// Where `PEXPIRETIME` stops being the exact deadline (see the module comment).
const MAX_EXACT: i64 = 1 << 53;
const K_BIG: &[u8] = b"__dbx:deadlines:exact";
/// Most gets in one transaction.
const FAST_MAX: usize = 256;

/// Gets (and `hash.get` of one field) gathered in one loop turn for one data connection.
#[derive(Default)]
pub(super) struct FastGroup {
    waits: Vec<Waiting>,
}

impl Gateway {
    /// A `string.get` (admitted by policy) joins this turn's transaction on its client's
    /// data connection, behind whatever that connection already has queued.
    pub(super) fn fast_get(&mut self, w: Waiting, now: u64) {
        let Some(i) = self.pick(w.conn) else { return self.no_connection(w) };
        // The library calls gathered before it go first (the client's order).
        self.flush_lua_group(i, now);
        if self.fast.get(i).and_then(Option::as_ref).is_some_and(|g| g.waits.len() >= FAST_MAX) {
            self.flush_fast(i, now);
        }
        if self.fast.len() < self.data.len() {
            self.fast.resize_with(self.data.len(), || None);
        }
        let Some(slot) = self.fast.get_mut(i) else { return self.no_connection(w) };
        slot.get_or_insert_with(FastGroup::default).waits.push(w);
        self.inflight += 1;
    }

    /// Send the transaction gathered on data connection `i`, if any. Its replies: `+OK`
    /// and one `+QUEUED` per command (skipped unread, `RespConn::send_skipped`: a
    /// refused command makes EXEC fail as a whole), then EXEC's array (`Tag::Fast`).
    pub(super) fn flush_fast(&mut self, i: usize, now: u64) {
        let Some(g) = self.fast.get_mut(i).and_then(Option::take) else { return };
        if g.waits.is_empty() {
            return;
        }
        let Some(c) = self.data.get_mut(i) else { return };
        let mut ok = c.send_skipped(&[b"MULTI"]);
        for w in &g.waits {
            if let Kind::MGet { keys, .. } = &w.kind {
                // MGET, then each key's deadline.
                let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
                args.push(b"MGET");
                args.extend(keys.iter().map(|k| k.as_bytes()));
                ok = ok && c.send_skipped(&args);
                for k in keys {
                    ok = ok && c.send_skipped(&[b"PEXPIRETIME", k.as_bytes()]);
                }
                continue;
            }
            let Kind::Get { key, field, .. } = &w.kind else { continue };
            let k = key.as_bytes();
            ok =
                ok && match field {
                    None => c.send_skipped(&[b"GET", k]),
                    Some(f) => c.send_skipped(&[b"HGET", k, f.as_bytes()]),
                } && c.send_skipped(&[b"PEXPIRETIME", k])
                    && match field {
                        None => c.send_skipped(&[b"HGET", K_BIG, k]),
                        Some(_) => c.send_skipped(&[b"EXISTS", k]),
                    };
        }
        let tag = Tag::Fast(g.waits);
        if !ok {
            // Only on a connection that is not open (nothing was queued then).
            self.orphans.push(tag);
        } else if let Err(tag) = c.try_send(&[b"EXEC"], tag, now) {
            self.orphans.push(tag);
        }
    }

    /// EXEC's answer (None: the connection failed first): one reply per get.
    pub(super) fn complete_fast(&mut self, l: &mut Local, waits: Vec<Waiting>, frame: Option<OwnedFrame>) {
        self.inflight = self.inflight.saturating_sub(waits.len());
        let whole: Option<Error> = match &frame {
            None => {
                self.unavailable_total += waits.len() as u64;
                Some(Error::new(Code::Unavailable, "The backend connection failed or timed out before answering"))
            }
            Some(OwnedFrame::Error(msg)) => Some(redis_error(msg)),
            Some(OwnedFrame::Array(a)) if a.len() == waits.iter().map(replies).sum::<usize>() => None,
            Some(_) => Some(Error::new(Code::Internal, "The backend answered a transaction with something unreadable")),
        };
        let items: &[OwnedFrame] = match &frame {
            Some(OwnedFrame::Array(a)) if whole.is_none() => a,
            _ => &[],
        };
        let mut at = 0;
        for w in waits {
            let mut b = Vec::new();
            let n = replies(&w);
            let mine = items.get(at..at + n).unwrap_or_default();
            at += n;
            if let Kind::MGet { now_ms, .. } = &w.kind {
                match &whole {
                    Some(e) => envelope::error(&mut b, w.id.as_deref(), e, l.stamp),
                    None => match mget_values(mine, *now_ms) {
                        Ok(values) => {
                            let _ = envelope::reply(&mut b, w.id.as_deref(), l.stamp, |j| {
                                j.arr("values", |a| {
                                    for v in &values {
                                        a.opt_str(v.as_deref());
                                    }
                                });
                                Ok(())
                            });
                        }
                        Err(e) => envelope::error(&mut b, w.id.as_deref(), &e, l.stamp),
                    },
                }
                self.reply_to(&w, b);
                continue;
            }
            let answer = match &whole {
                Some(e) => Err(e.clone()),
                None => get_answer(&w, mine),
            };
            let is_hash = matches!(&w.kind, Kind::Get { field: Some(_), .. });
            match answer {
                Ok((value, ttl)) => {
                    let _ = envelope::reply(&mut b, w.id.as_deref(), l.stamp, |j| {
                        j.str("value", &value);
                        if !is_hash {
                            j.opt_i64("ttl", ttl);
                        }
                        Ok(())
                    });
                }
                Err(e) => envelope::error(&mut b, w.id.as_deref(), &e, l.stamp),
            }
            self.reply_to(&w, b);
        }
    }
}

/// How many replies inside EXEC belong to `w`.
fn replies(w: &Waiting) -> usize {
    match &w.kind {
        Kind::MGet { keys, .. } => 1 + keys.len(),
        _ => 3,
    }
}

/// `string.mget`'s values from MGET's array and each key's `PEXPIRETIME`: null for a key
/// that is missing, not a string (MGET's nil, as in the library) or past its deadline.
fn mget_values(r: &[OwnedFrame], now_ms: u64) -> Result<Vec<Option<String>>, Error> {
    let Some((OwnedFrame::Array(vals), pexps)) = r.split_first() else { return Err(unreadable()) };
    if vals.len() != pexps.len() {
        return Err(unreadable());
    }
    vals.iter()
        .zip(pexps)
        .map(|(v, p)| {
            let expired = match p {
                OwnedFrame::Integer(t) => *t >= 0 && (*t as u64) <= now_ms,
                _ => return Err(unreadable()),
            };
            match v {
                _ if expired => Ok(None),
                OwnedFrame::BulkString(b) => Ok(Some(lua_text(b))),
                OwnedFrame::Null => Ok(None),
                _ => Err(unreadable()),
            }
        })
        .collect()
}

/// One get's answer from its three replies: `GET`, `PEXPIRETIME`, `HGET` of the exact
/// deadline for `string.get`; `HGET`, `PEXPIRETIME`, `EXISTS` for `hash.get` of a field.
fn get_answer(w: &Waiting, r: &[OwnedFrame]) -> Result<(String, Option<i64>), Error> {
    let Kind::Get { key, field, now_ms } = &w.kind else { return Err(unreadable()) };
    let [value, pexp, big] = r else { return Err(unreadable()) };
    let big = if field.is_some() { &OwnedFrame::Null } else { big };
    let deadline: Option<u64> = match pexp {
        // -1: no expiry; -2: no key.
        OwnedFrame::Integer(t) if *t < 0 => None,
        OwnedFrame::Integer(t) if *t >= MAX_EXACT => Some(match big {
            OwnedFrame::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(*t as u64),
            _ => *t as u64,
        }),
        OwnedFrame::Integer(t) => Some(*t as u64),
        _ => return Err(unreadable()),
    };
    if deadline.is_some_and(|d| d <= *now_ms) {
        return Err(Error::key_not_found(key));
    }
    let bytes = match value {
        OwnedFrame::BulkString(b) => b,
        OwnedFrame::Null => match (field, r.get(2)) {
            // The library: a missing field of an existing hash is its own not_found.
            (Some(f), Some(OwnedFrame::Integer(1))) => {
                return Err(Error::new(Code::NotFound, format!("Field '{f}' not found in hash '{key}'")))
            }
            _ => return Err(Error::key_not_found(key)),
        },
        OwnedFrame::Error(msg) if msg.starts_with("WRONGTYPE") => return Err(Error::wrong_type()),
        OwnedFrame::Error(msg) => return Err(redis_error(msg)),
        _ => return Err(unreadable()),
    };
    let ttl = deadline.map(|d| crate::cmd::ms_to_ttl_secs(d.saturating_sub(*now_ms)));
    Ok((lua_text(bytes), ttl))
}

fn unreadable() -> Error {
    Error::new(Code::Internal, "The backend answered a transaction with something unreadable")
}

/// Bytes as JSON-able text, exactly as the library's `fix_utf8`: a byte that does not
/// start a well-formed UTF-8 sequence (Unicode's table 3-7) becomes one U+FFFD and the
/// scan goes on at the next byte.
pub(super) fn lua_text(b: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(b) {
        return s.to_string();
    }
    let mut out = String::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        // The longest valid prefix at `i` is copied whole.
        let rest = b.get(i..).unwrap_or_default();
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(rest.get(..good).unwrap_or_default()).unwrap_or_default());
                // The byte at i + good starts no valid sequence: one U+FFFD for it alone.
                out.push('\u{FFFD}');
                i += good + 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::lua_text;

    #[test]
    fn invalid_bytes_become_one_replacement_each() {
        assert_eq!(lua_text(b"abc"), "abc");
        assert_eq!(lua_text("é\n\0".as_bytes()), "é\n\0");
        // A truncated 3-byte sequence: the library replaces each byte (lossy would
        // replace the maximal subpart E2 82 with one).
        assert_eq!(lua_text(b"\xE2\x82A"), "\u{FFFD}\u{FFFD}A");
        assert_eq!(lua_text(b"\xFF\xC0\x80x"), "\u{FFFD}\u{FFFD}\u{FFFD}x");
        assert_eq!(lua_text(b"\xED\xA0\x80"), "\u{FFFD}\u{FFFD}\u{FFFD}");
        assert_eq!(lua_text(b"a\xF0\x9F\x98\x80\x80"), "a\u{1F600}\u{FFFD}");
    }
}
