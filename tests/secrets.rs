//! Secrets from files (issue 17): DBX_API_KEYS_FILE (`key:role[:label]` lines) and
//! DBX_JWT_SECRET_FILE, relative to $CREDENTIALS_DIRECTORY as systemd's LoadCredential=
//! provides them; the refusal message says what was wrong once.

mod common;

use common::{Client, Dbx, Opts, TempDir};
use std::net::SocketAddr;
use std::time::Duration;

fn open(s: &Dbx, key: &str) -> Result<Client, tungstenite::Error> {
    Client::open(s.addr, &format!("/ws?api_key={key}"), &[], Duration::from_secs(5)).map(|(c, _)| c)
}

fn refusal(addr: SocketAddr, key: &str) -> String {
    match Client::open(addr, &format!("/ws?api_key={key}"), &[], Duration::from_secs(5)) {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 401);
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned()
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted {key}"),
    }
}

#[test]
fn keys_and_secret_files_from_the_credentials_directory() {
    let dir = TempDir::new("creds");
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("api_keys"), "# reader for the dashboard\nr-key:read:dashboard\nw-key:write:ingest\n")
        .unwrap();
    std::fs::write(creds.join("jwt_secret"), "s3cret-s3cret-s3cret-s3cret-s3cret\n").unwrap();
    let o = Opts::memory()
        .env("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())
        .env("DBX_API_KEYS_FILE", "api_keys")
        .env("DBX_JWT_SECRET_FILE", "jwt_secret");
    let s = Dbx::start(&o);
    let mut r = open(&s, "r-key").expect("read key");
    let e = r.call("string.set", serde_json::json!({"key": "k", "value": "v"}));
    assert_eq!(e["error"]["code"], "forbidden", "{e}");
    let mut w = open(&s, "w-key").expect("write key");
    w.ok("string.set", serde_json::json!({"key": "k", "value": "v"}));
    let body = refusal(s.addr, "nope");
    assert!(body.contains("Invalid credential: neither a known API key nor a token"), "{body}");
    assert!(!body.contains("invalid credential"), "said once: {body}");
    // The secrets never reach the log.
    let err = s.stderr();
    assert!(!err.contains("r-key") && !err.contains("w-key") && !err.contains("s3cret"), "{err}");
}

#[test]
fn a_bad_keys_file_stops_the_start_naming_file_and_line() {
    let dir = TempDir::new("badcreds");
    let f = dir.path().join("keys");
    std::fs::write(&f, "k1:read\nk2:superuser\n").unwrap();
    let mut s = Dbx::spawn(&Opts::memory().env("DBX_API_KEYS_FILE", f.to_str().unwrap()));
    let st = s.wait_exit(Duration::from_secs(10)).expect("refused");
    assert_eq!(st.code(), Some(2));
    let err = s.stderr();
    assert!(err.contains("DBX_API_KEYS_FILE") && err.contains("line 2 has an unknown role"), "{err}");
    assert!(!err.contains("k2"), "{err}");
    // Both a list and a file: one source, please.
    let mut s = Dbx::spawn(&Opts::memory().env("DBX_API_KEYS_FILE", f.to_str().unwrap()).env("DBX_API_KEYS", "x:read"));
    assert_eq!(s.wait_exit(Duration::from_secs(10)).expect("refused").code(), Some(2));
    assert!(s.stderr().contains("DBX_API_KEYS"), "{}", s.stderr());
}

fn wait_log(s: &Dbx, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.stderr().contains(what) {
        assert!(std::time::Instant::now() < deadline, "no '{what}' in the log:\n{}", s.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGHUP re-reads the keys file: a new key works, a removed one is refused, an open
/// connection keeps its identity; a bad file keeps the previous keys, and the server
/// never stops.
#[test]
fn sighup_rereads_the_keys_file_and_keeps_the_old_keys_on_a_bad_one() {
    let dir = TempDir::new("reloadkeys");
    let f = dir.path().join("keys");
    std::fs::write(&f, "old-key:admin:old\n").unwrap();
    let s = Dbx::start(&Opts::memory().env("DBX_API_KEYS_FILE", f.to_str().unwrap()));
    let mut open_conn = open(&s, "old-key").expect("old key");
    std::fs::write(&f, "new-key:write:new\nadm-key:admin:adm\n").unwrap();
    s.signal(libc::SIGHUP);
    wait_log(&s, "reload: credentials re-read");
    assert!(open(&s, "new-key").is_ok(), "the new key works");
    let body = refusal(s.addr, "old-key");
    assert!(body.contains("not a known API key"), "{body}");
    open_conn.ok("string.set", serde_json::json!({"key": "k", "value": "still here"}));
    // Metrics name keys by label: one connection with "old", one with "new".
    let (_, m) = common::http_status(
        s.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer adm-key\r\nConnection: close\r\n\r\n",
    );
    assert!(m.contains("dbx_connections_opened_by_key_total{key=\"old\"} 1"), "{m}");
    assert!(m.contains("dbx_connections_opened_by_key_total{key=\"new\"} 1"), "{m}");
    assert!(!m.contains("old-key") && !m.contains("new-key"), "never the key");
    // A bad file: logged, the keys in force stay.
    std::fs::write(&f, "broken:superuser\n").unwrap();
    s.signal(libc::SIGHUP);
    wait_log(&s, "reload: keeping the previous credentials");
    assert!(open(&s, "new-key").is_ok(), "still the previous keys");
    assert!(!s.stderr().contains("broken"), "never the key");
}

/// Refusals are logged at info, five a second at most, with the count of those
/// suppressed and never the credential; connection open/close lines are debug.
#[test]
fn refusals_are_logged_at_info_and_bounded() {
    let s = Dbx::start(&Opts::memory().env("DBX_API_KEYS", "good:admin:ops"));
    for i in 0..30 {
        let _ = refusal(s.addr, &format!("wrong-{i}"));
    }
    let c = open(&s, "good").expect("good key");
    drop(c);
    std::thread::sleep(Duration::from_millis(1100));
    let _ = refusal(s.addr, "wrong-last");
    // Every refusal is either a line or counted on a later line (`suppressed=N`): the
    // first line of a later second carries the count.
    let sum = |err: &str| -> (usize, u64) {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("refused #")).collect();
        let suppressed = lines
            .iter()
            .filter_map(|l| l.split("suppressed=").nth(1))
            .filter_map(|v| v.split(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        (lines.len(), suppressed)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sum(&s.stderr()).0 as u64 + sum(&s.stderr()).1 < 31 {
        assert!(std::time::Instant::now() < deadline, "{}", s.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = s.stderr();
    let (lines, suppressed) = sum(&err);
    assert!(
        lines <= 12 && suppressed >= 19,
        "at most five lines a second ({lines} lines, {suppressed} suppressed):\n{err}"
    );
    let refused: Vec<&str> = err.lines().filter(|l| l.contains("refused #")).collect();
    assert!(refused.iter().all(|l| l.contains(" INFO ")), "{err}");
    assert!(refused.iter().any(|l| l.contains("suppressed=") && !l.contains("suppressed=0")), "{err}");
    assert!(!err.contains("wrong-1") && !err.contains("good"), "never the credential:\n{err}");
    assert!(!err.contains("open #") && !err.contains("close #"), "open/close are debug lines:\n{err}");
}
