//! The one writer of everything the server sends in a text frame (PROTOCOL.md §2–§5):
//! replies, errors, batch elements, pub/sub and key-space events, `hello` and
//! `heartbeat`. Everything else writes through here, so the envelope's shape is
//! defined once. Appends into a reused byte buffer; no `Value` tree.

use super::{write_str, write_u64, Error, Json, Result};
use std::rc::Rc;

/// The error object `{"code":..,"message":..[,"retry_after_ms":..]}`.
pub fn write_error(buf: &mut Vec<u8>, e: &Error) {
    buf.push(b'{');
    let mut j = Json::fields(buf, true);
    j.str("code", e.code.as_str()).str("message", &e.message);
    if let Some(ms) = e.retry_after_ms {
        j.u64("retry_after_ms", ms);
    }
    buf.push(b'}');
}

/// `"result":{…}` written by `f`, or `"error":{…}` if `f` fails (what `f` wrote is
/// rolled back). The caller has written everything before it and writes what follows.
pub fn result_or_error(buf: &mut Vec<u8>, f: impl FnOnce(&mut Json) -> Result<()>) -> Option<Error> {
    let mark = buf.len();
    buf.extend_from_slice(b"\"result\":{");
    match f(&mut Json::fields(buf, true)) {
        Ok(()) => {
            buf.push(b'}');
            None
        }
        Err(e) => {
            buf.truncate(mark);
            buf.extend_from_slice(b"\"error\":");
            write_error(buf, &e);
            Some(e)
        }
    }
}

/// A whole reply into `buf` (cleared first): `{"id":…,"result":{…},"timestamp":"…"}`
/// or `{"id":…,"error":{…},"timestamp":"…"}`. `id` is the request's raw JSON id.
/// Returns the error, if the request failed, for the caller's logs and metrics.
pub fn reply(
    buf: &mut Vec<u8>,
    id: Option<&str>,
    stamp: &str,
    f: impl FnOnce(&mut Json) -> Result<()>,
) -> Option<Error> {
    buf.clear();
    buf.extend_from_slice(b"{\"id\":");
    buf.extend_from_slice(id.unwrap_or("null").as_bytes());
    buf.push(b',');
    let err = result_or_error(buf, f);
    end(buf, stamp);
    err
}

/// An error reply into `buf` (cleared first) for a request that never ran.
pub fn error(buf: &mut Vec<u8>, id: Option<&str>, e: &Error, stamp: &str) {
    buf.clear();
    buf.extend_from_slice(b"{\"id\":");
    buf.extend_from_slice(id.unwrap_or("null").as_bytes());
    buf.extend_from_slice(b",\"error\":");
    write_error(buf, e);
    end(buf, stamp);
}

fn end(buf: &mut Vec<u8>, stamp: &str) {
    buf.extend_from_slice(b",\"timestamp\":\"");
    buf.extend_from_slice(stamp.as_bytes());
    buf.extend_from_slice(b"\"}");
}

/// One element of a batch's `results`: `{"result":{…}}` or `{"error":{…}}`.
pub fn batch_element(buf: &mut Vec<u8>, f: impl FnOnce(&mut Json) -> Result<()>) {
    buf.push(b'{');
    result_or_error(buf, f);
    buf.push(b'}');
}

/// The server's heartbeat frame (PROTOCOL.md §4), into `buf` (cleared first).
pub fn heartbeat(buf: &mut Vec<u8>, stamp: &str) {
    buf.clear();
    buf.extend_from_slice(b"{\"type\":\"heartbeat\",\"timestamp\":\"");
    buf.extend_from_slice(stamp.as_bytes());
    buf.extend_from_slice(b"\"}");
}

/// What the `hello` frame tells a new connection (PROTOCOL.md §2).
pub struct Hello<'a> {
    pub serial: u64,
    pub heartbeat_interval: f64,
    pub rate_limit: u64,
    pub max_message_size: u64,
    pub epoch: &'a str,
    pub rev: u64,
    pub stamp: &'a str,
}

/// The `hello` frame, into `buf` (cleared first).
pub fn hello(buf: &mut Vec<u8>, h: &Hello) {
    buf.clear();
    buf.push(b'{');
    Json::fields(buf, true)
        .str("type", "hello")
        .str("version", "1.0")
        .str("connection_id", &format!("c{}", h.serial))
        .f64("heartbeat_interval", h.heartbeat_interval)
        .u64("rate_limit", h.rate_limit)
        .u64("max_message_size", h.max_message_size)
        .str("epoch", h.epoch)
        .u64("rev", h.rev)
        .str("timestamp", h.stamp);
    buf.push(b'}');
}

/// A pub/sub message (`"type":"event"`), serialized once and shared by its receivers.
pub fn event(channel: &str, pattern: Option<&str>, data: &str, stamp: &str) -> Rc<[u8]> {
    let mut b = Vec::with_capacity(64 + channel.len() + data.len());
    b.push(b'{');
    Json::fields(&mut b, true)
        .str("type", "event")
        .str("channel", channel)
        .opt_str("pattern", pattern)
        .raw("data", data.as_bytes())
        .str("timestamp", stamp);
    b.push(b'}');
    b.into()
}

/// A key-space change (`"type":"keyspace"`); `key` None = every key (`server.flush`,
/// which carries the new `epoch`).
pub fn keyspace(key: Option<&str>, event: &str, rev: u64, stamp: &str, epoch: Option<&str>) -> Rc<[u8]> {
    let mut b = Vec::with_capacity(96);
    b.extend_from_slice(b"{\"type\":\"keyspace\",\"key\":");
    match key {
        Some(k) => write_str(&mut b, k),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"event\":");
    write_str(&mut b, event);
    b.extend_from_slice(b",\"rev\":");
    write_u64(&mut b, rev);
    if let Some(e) = epoch {
        b.extend_from_slice(b",\"epoch\":");
        write_str(&mut b, e);
    }
    b.extend_from_slice(b",\"timestamp\":");
    write_str(&mut b, stamp);
    b.push(b'}');
    b.into()
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-01-15T10:30:00.123Z`, from unix ms.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Howard Hinnant's days → civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
