//! `watch` and `subscribe`: one request, then every matching event as a JSON line until
//! Ctrl-C (which unwatches / unsubscribes and returns) or the connection ends.

use crate::conn::{Conn, Reply};
use crate::out::{self, Out};
use crate::params::split_patterns;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT handler while a stream runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C handling for the length of a stream, the previous handler put back on drop.
/// Written with sigaction rather than signal-hook because the prompt's line editor
/// (rustyline) installs its own SIGINT handler for the editor's lifetime: a handler
/// registered once at start-up would be shadowed by it, so this one is installed over
/// it while streaming and the editor's is restored after.
struct CatchCtrlC {
    old: libc::sigaction,
}

impl CatchCtrlC {
    fn install() -> Result<CatchCtrlC, String> {
        INTERRUPTED.store(false, Ordering::Relaxed);
        // SAFETY: plain sigaction calls on zero-initialised structs; the handler only
        // stores to an atomic, which is async-signal-safe. No SA_RESTART: a blocked
        // read returns EINTR at once (socket reads with a timeout would anyway).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, &sa, &mut old) != 0 {
                return Err(format!("cannot handle Ctrl-C: {}", std::io::Error::last_os_error()));
            }
            Ok(CatchCtrlC { old })
        }
    }
}

impl Drop for CatchCtrlC {
    fn drop(&mut self) {
        // SAFETY: restores the action saved by install().
        unsafe { libc::sigaction(libc::SIGINT, &self.old, std::ptr::null_mut()) };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Watch,
    Subscribe,
}

impl Kind {
    pub fn from_word(w: &str) -> Option<Kind> {
        match w {
            "watch" => Some(Kind::Watch),
            "subscribe" => Some(Kind::Subscribe),
            _ => None,
        }
    }
}

/// The params naming `targets`: plain names as keys/channels, globs as patterns.
fn params(kind: Kind, targets: &[String]) -> Value {
    let (plain, patterns) = split_patterns(targets);
    let mut p = Map::new();
    let name = if kind == Kind::Watch { "keys" } else { "channels" };
    if !plain.is_empty() {
        p.insert(name.into(), json!(plain));
    }
    if !patterns.is_empty() {
        p.insert("patterns".into(), json!(patterns));
    }
    Value::Object(p)
}

/// Ok(true) when it ran and was stopped, Ok(false) when the server refused the
/// watch/subscribe (already printed), Err on a transport failure.
pub fn run(conn: &mut Conn, kind: Kind, targets: &[String], out: &Out) -> Result<bool, String> {
    let (method, undo, event_type) = match kind {
        Kind::Watch => ("key.watch", "key.unwatch", "keyspace"),
        Kind::Subscribe => ("pubsub.subscribe", "pubsub.unsubscribe", "event"),
    };
    if targets.is_empty() {
        return Err(format!("usage: {} NAME|PATTERN...", if kind == Kind::Watch { "watch" } else { "subscribe" }));
    }
    let p = params(kind, targets);
    let _ctrl_c = CatchCtrlC::install()?;
    // Whatever was queued before belongs to an earlier command.
    conn.queued.clear();
    match conn.call(method, &p)? {
        Reply::Err { code, message } => {
            out::error(&code, &message);
            return Ok(false);
        }
        // The confirmation (for a watch: the rev and current values) comes first.
        Reply::Ok(r) => out.line(&r),
    }
    let is_event = |v: &Value| v.get("type").and_then(Value::as_str) == Some(event_type);
    while !INTERRUPTED.load(Ordering::Relaxed) {
        while let Some(v) = conn.queued.pop_front() {
            if is_event(&v) {
                out.line(&v);
            }
        }
        if let Some(v) = conn.read_json()? {
            if is_event(&v) {
                out.line(&v);
            }
        }
    }
    match conn.call(undo, &p)? {
        Reply::Ok(_) => {}
        Reply::Err { code, message } => out::error(&code, &message),
    }
    conn.queued.clear();
    Ok(true)
}
