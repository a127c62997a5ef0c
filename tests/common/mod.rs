//! The one harness of the end-to-end tests:
//!
//! * [`server`]: a real `dbx::server::Server` on 127.0.0.1:0 in a thread, with a
//!   config mutator; stopped (trigger + join) on drop.
//! * [`client`]: a blocking tungstenite client (`call`/`ok`/`err`, unsolicited
//!   messages queued for `next_event`, close codes).
//! * [`raw`]: raw TCP/HTTP, hand-built WebSocket frames and a WebSocket spoken by hand.
//! * [`process`]: the real `dbx` binary on a free port (memory only or a data dir),
//!   stderr captured, SIGTERM/SIGKILL, RSS and CPU time.
//! * [`tokens`]: JWTs for the authentication tests.
//!
//! Every socket has a read timeout so no test can hang. Each test binary compiles this
//! module on its own and uses a part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod client;
pub mod process;
pub mod raw;
pub mod redis;
pub mod server;
pub mod tokens;

// A test binary may use only some of these.
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use serde_json::{json, Value};
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use tokens::*;

use dbx::config::Config;
use std::time::{Duration, Instant};

/// Longest any single read may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Poll `f` until it returns `Some` or `deadline` passes (then panics with `what`).
pub fn poll_until<T>(deadline: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_within(deadline, f).unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for: {what}"))
}

/// Poll `f` (every 20 ms) until it returns `Some`; None once `within` has passed.
pub fn poll_within<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names of the files in `dir`, sorted.
pub fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Collection suites (hash, list, set, zset, scan, memory policy)
// ---------------------------------------------------------------------------

/// The collection suites' server: `Config::for_tests()` with the rate limit off, then
/// `f`; clients read with a 10 s timeout.
pub fn coll_server(f: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with(|c| {
        c.ws_rate_limit = 0;
        f(c);
    })
    .timeout(Duration::from_secs(10))
}

/// A JSON array of strings, sorted (for comparing unordered results).
pub fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        v.as_array().expect("array").iter().map(|x| x.as_str().expect("string").to_string()).collect();
    out.sort();
    out
}

/// One key of every type: `t:string`, `t:hash`, `t:set`, `t:zset`, `t:list`.
pub const TYPED_KEYS: [(&str, &str); 5] =
    [("string", "t:string"), ("hash", "t:hash"), ("set", "t:set"), ("zset", "t:zset"), ("list", "t:list")];

pub fn seed_all_types(c: &mut Client) {
    c.ok("string.set", json!({"key": "t:string", "value": "v"}));
    c.ok("hash.set", json!({"key": "t:hash", "field": "f", "value": "v"}));
    c.ok("set.add", json!({"key": "t:set", "member": "m"}));
    c.ok("zset.add", json!({"key": "t:zset", "member": "m", "score": 1}));
    c.ok("list.push", json!({"key": "t:list", "value": "v"}));
    for (ty, key) in TYPED_KEYS {
        assert_eq!(c.ok("key.type", json!({"key": key}))["type"], ty);
    }
}

/// Every method in `calls` (method, params without `key`) answers `wrong_type` on every
/// key that is not of type `own`, and leaves that key as it was.
pub fn assert_wrong_type(c: &mut Client, own: &str, calls: &[(&str, Value)]) {
    seed_all_types(c);
    for (ty, key) in TYPED_KEYS {
        if ty == own {
            continue;
        }
        for (method, params) in calls {
            // `keys` for the multi-key methods, `key` for the others (a method refuses
            // a parameter it does not take).
            let mut p = params.clone();
            if p.get("keys").is_some() {
                p["keys"] = json!([key]);
            } else {
                p["key"] = json!(key);
            }
            assert_eq!(c.err_code(method, p.clone()), "wrong_type", "{method} {p} on a {ty}");
            assert_eq!(c.ok("key.type", json!({"key": key}))["type"], ty, "{method} left {key} alone");
        }
    }
}

// -------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

/// RFC 3339 UTC with a 'Z' suffix, e.g. 2024-01-15T10:30:00.123Z.
pub fn assert_rfc3339_utc(ts: &Value) {
    let s = ts.as_str().unwrap_or_else(|| panic!("timestamp must be a string: {ts}"));
    let b = s.as_bytes();
    let ok = b.len() >= 20
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19].iter().all(|r| b[r.clone()].iter().all(u8::is_ascii_digit))
        && (b.len() == 20 || (b[19] == b'.' && b.len() > 21 && b[20..b.len() - 1].iter().all(u8::is_ascii_digit)));
    assert!(ok, "not an RFC 3339 UTC timestamp: {s:?}");
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    let hour: u32 = s[11..13].parse().unwrap_or(99);
    assert!((1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24, "bad date/time in {s:?}");
}

/// An error object has exactly this code, and a message string.
#[track_caller]
pub fn assert_error(err: &Value, code: &str) {
    assert_eq!(err["code"], code, "error: {err}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "error needs a message: {err}");
}

/// An `invalid_params` error whose message names `param` (in quotes).
#[track_caller]
pub fn assert_invalid_param(err: &Value, param: &str) {
    assert_error(err, "invalid_params");
    let msg = err["message"].as_str().unwrap_or("");
    assert!(msg.contains(&format!("'{param}'")), "message should name '{param}': {err}");
}
