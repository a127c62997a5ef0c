//! Log lines on stderr, in one of three shapes:
//!
//! - `text` (default): `2026-12-05T10:30:00.123Z INFO  dbx::server: message key=value …`
//!   — an RFC 3339 UTC timestamp, the level, the module, the message, then the record's
//!   structured fields in logfmt (`key=value`, quoted when needed);
//! - `json` (`DBX_LOG_FORMAT=json`): one object per line,
//!   `{"ts":"…","level":"info","module":"dbx::server","msg":"…","key":"value",…}`;
//! - under journald (stderr is the journal's stream: `JOURNAL_STREAM` names stderr's
//!   device and inode), text lines drop the timestamp (the journal has its own) and start
//!   with the syslog priority, `<3>` error … `<7>` debug (sd-daemon(3)), so that
//!   `journalctl -p warning` filters by level.
//!
//! Structured fields are the `log` crate's key-values (`log::info!(peer:% = addr; "…")`):
//! the well-kept facade every Rust logger understands. The formatting is ours: no crate
//! writes logfmt, JSON lines and sd-daemon priority prefixes to stderr without bringing
//! a whole tracing stack, and it is a page of code.

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::OnceLock;

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

struct Stderr {
    format: Format,
    /// stderr goes to journald: priority prefixes, no timestamps.
    journal: bool,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = match self.format {
            Format::Json => json_line(r, &now()),
            Format::Text if self.journal => text_line(r, None),
            Format::Text => text_line(r, Some(&now())),
        };
        // One write per line, so lines from the fsync thread never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn now() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    crate::proto::rfc3339_ms(ms)
}

/// The syslog priority of a level (sd-daemon(3)): err, warning, info, debug.
fn priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One text line: `[ts ]LEVEL module: message k=v …\n`, or with `<p>` instead of the
/// timestamp under journald (`ts` None).
pub fn text_line(r: &Record, ts: Option<&str>) -> String {
    let mut s = String::with_capacity(128);
    match ts {
        Some(ts) => {
            s.push_str(ts);
            s.push(' ');
        }
        None => s.push_str(&format!("<{}>", priority(r.level()))),
    }
    s.push_str(&format!("{:<5} {}: {}", r.level(), r.target(), r.args()));
    let _ = r.key_values().visit(&mut Logfmt(&mut s));
    s.push('\n');
    s
}

/// One JSON object per line.
pub fn json_line(r: &Record, ts: &str) -> String {
    let mut b = Vec::with_capacity(160);
    b.extend_from_slice(b"{\"ts\":");
    crate::proto::write_str(&mut b, ts);
    b.extend_from_slice(b",\"level\":");
    crate::proto::write_str(&mut b, &r.level().as_str().to_ascii_lowercase());
    b.extend_from_slice(b",\"module\":");
    crate::proto::write_str(&mut b, r.target());
    b.extend_from_slice(b",\"msg\":");
    crate::proto::write_str(&mut b, &r.args().to_string());
    let _ = r.key_values().visit(&mut JsonFields(&mut b));
    b.extend_from_slice(b"}\n");
    String::from_utf8(b).unwrap_or_default()
}

struct Logfmt<'s>(&'s mut String);

impl<'kvs> VisitSource<'kvs> for Logfmt<'_> {
    fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), log::kv::Error> {
        let v = v.to_string();
        self.0.push(' ');
        self.0.push_str(k.as_str());
        self.0.push('=');
        if v.is_empty() || v.contains([' ', '"', '=', '\\']) || v.chars().any(char::is_control) {
            // Quoted as a JSON string: every logfmt reader accepts that escaping.
            let mut q = Vec::with_capacity(v.len() + 2);
            crate::proto::write_str(&mut q, &v);
            self.0.push_str(&String::from_utf8_lossy(&q));
        } else {
            self.0.push_str(&v);
        }
        Ok(())
    }
}

struct JsonFields<'b>(&'b mut Vec<u8>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push(b',');
        crate::proto::write_str(self.0, k.as_str());
        self.0.push(b':');
        match v.to_u64() {
            Some(n) => self.0.extend_from_slice(n.to_string().as_bytes()),
            None => crate::proto::write_str(self.0, &v.to_string()),
        }
        Ok(())
    }
}

/// Whether stderr is journald's stream: `JOURNAL_STREAM` is `device:inode` of it.
fn stderr_is_journal() -> bool {
    let Ok(js) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = js.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 into a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

static LOGGER: OnceLock<Stderr> = OnceLock::new();

pub fn init(level: LevelFilter, format: Format) {
    let logger = LOGGER.get_or_init(|| Stderr { format, journal: stderr_is_journal() });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_journal_lines() {
        let kvs: &[(&str, &str)] = &[("peer", "127.0.0.1:5"), ("key", "ops team")];
        let r = Record::builder()
            .args(format_args!("refused"))
            .level(Level::Warn)
            .target("dbx::server")
            .key_values(&kvs)
            .build();
        assert_eq!(
            text_line(&r, Some("2026-12-05T10:30:00.123Z")),
            "2026-12-05T10:30:00.123Z WARN  dbx::server: refused peer=127.0.0.1:5 key=\"ops team\"\n"
        );
        assert_eq!(text_line(&r, None), "<4>WARN  dbx::server: refused peer=127.0.0.1:5 key=\"ops team\"\n");
        let j: serde_json::Value = serde_json::from_str(&json_line(&r, "T")).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"ts":"T","level":"warn","module":"dbx::server","msg":"refused","peer":"127.0.0.1:5","key":"ops team"})
        );
    }
}
