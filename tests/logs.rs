//! Log lines of the real binary (issue 17): RFC 3339 UTC timestamp, level, module and
//! logfmt fields; `DBX_LOG_FORMAT=json`; journald's priority prefixes when stderr is
//! the journal's stream (`JOURNAL_STREAM`).

mod common;

use common::{free_port, Dbx, Opts};
use std::os::unix::fs::MetadataExt;

fn lines_of(o: &Opts) -> Vec<String> {
    let mut s = Dbx::start(o);
    let mut c = s.client();
    c.ok("server.ping", serde_json::json!({}));
    drop(c);
    s.term();
    s.stderr().lines().map(str::to_string).collect()
}

fn is_rfc3339_utc_ms(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn text_lines_carry_timestamp_level_and_module() {
    let lines = lines_of(&Opts::memory());
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let (ts, rest) = l.split_once(' ').unwrap();
        assert!(is_rfc3339_utc_ms(ts), "{l}");
        let (level, rest) = rest.split_once(' ').unwrap();
        assert!(["INFO", "WARN", "ERROR", "DEBUG"].contains(&level), "{l}");
        let module = rest.trim_start().split_once(": ").unwrap().0;
        assert!(module == "dbx" || module.starts_with("dbx::"), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("INFO  dbx: dbx ") && l.contains("listening on")), "{lines:?}");
}

#[test]
fn json_lines_are_one_object_each() {
    let lines = lines_of(&Opts::memory().env("DBX_LOG_FORMAT", "json"));
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(is_rfc3339_utc_ms(v["ts"].as_str().unwrap()), "{l}");
        assert!(["info", "warn", "error", "debug"].contains(&v["level"].as_str().unwrap()), "{l}");
        assert!(v["module"].as_str().unwrap().starts_with("dbx"), "{l}");
        assert!(v["msg"].is_string(), "{l}");
    }
    let e = Dbx::spawn(&Opts::memory().env("DBX_LOG_FORMAT", "yaml"));
    let mut e = e;
    let st = e.wait_exit(std::time::Duration::from_secs(10)).expect("refused");
    assert_eq!(st.code(), Some(2));
    assert!(e.stderr().contains("DBX_LOG_FORMAT"), "{}", e.stderr());
}

#[test]
fn under_journald_lines_start_with_their_priority() {
    // The harness writes stderr to this path; create it first so that its device and
    // inode (kept when the harness truncates it) can be named in JOURNAL_STREAM.
    let port = free_port();
    let path = std::env::temp_dir().join(format!("dbx-test-stderr-{}-{port}.log", std::process::id()));
    std::fs::write(&path, b"").unwrap();
    let md = std::fs::metadata(&path).unwrap();
    let stream = format!("{}:{}", md.dev(), md.ino());
    let o =
        Opts::memory().env("DBX_PORT", &port.to_string()).env("JOURNAL_STREAM", &stream).env("DBX_HOST", "127.0.0.1");
    let lines = lines_of(&o);
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let p = l.get(..3).unwrap();
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&p), "{l}");
        assert!(!is_rfc3339_utc_ms(l.get(3..27).unwrap_or("")), "no timestamp under journald: {l}");
    }
    assert!(lines.iter().any(|l| l.starts_with("<6>INFO  dbx: dbx ")), "{lines:?}");
    // A JOURNAL_STREAM naming another file changes nothing.
    let lines = lines_of(&Opts::memory().env("JOURNAL_STREAM", "1:1"));
    assert!(lines.iter().all(|l| is_rfc3339_utc_ms(l.split(' ').next().unwrap())), "{lines:?}");
}
