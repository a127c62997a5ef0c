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
