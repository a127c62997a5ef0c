//! TLS on the client port (issue 15) and the reload signals (issue 17), end to end: the
//! real `dbx` binary, real TLS (rustls clients), certificates made by the test with
//! rcgen (a CA, leaves signed by it, an expired one, client certificates).

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

// ---------------------------------------------------------------------------
// Certificates

struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::new(p, rcgen::KeyPair::from_pem(&key.serialize_pem()).unwrap());
    Ca { key, cert, issuer }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

/// A leaf signed by `ca`: a server certificate for localhost / 127.0.0.1, or a client
/// certificate; `serial` distinguishes reloads; `expired` puts notAfter in the past.
fn leaf(ca: &Ca, server: bool, serial: u64, expired: bool) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = if server { vec!["localhost".to_string(), "127.0.0.1".to_string()] } else { vec![] };
    let mut p = rcgen::CertificateParams::new(names).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, if server { "localhost" } else { "dbx-test-client" });
    p.serial_number = Some(rcgen::SerialNumber::from(serial.to_be_bytes().to_vec()));
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let _ = &ca.key;
    Leaf { cert_pem: cert.pem() + &ca.cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
}

/// Files for one server: cert.pem, key.pem, ca.pem (the CA that signed them).
struct Files {
    dir: TempDir,
}

impl Files {
    fn new(ca: &Ca, l: &Leaf) -> Files {
        let f = Files { dir: TempDir::new("tls") };
        f.write(l);
        std::fs::write(f.p("ca.pem"), ca.cert.pem()).unwrap();
        f
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_string_lossy().into_owned()
    }
    fn write(&self, l: &Leaf) {
        std::fs::write(self.p("cert.pem"), &l.cert_pem).unwrap();
        std::fs::write(self.p("key.pem"), &l.key_pem).unwrap();
    }
    fn opts(&self) -> Opts {
        Opts::memory()
            .env("DBX_TLS_CERT", &self.s("cert.pem"))
            .env("DBX_TLS_KEY", &self.s("key.pem"))
            .env("DBX_WS_RATE_LIMIT", "0")
    }
}

// ---------------------------------------------------------------------------
// A blocking wss:// client

fn client_config(trust: &[&Ca], client_cert: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in trust {
        roots.add(ca.cert.der().clone()).unwrap();
    }
    let b = ClientConfig::builder_with_provider(dbx::server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut c = match client_cert {
        None => b.with_no_client_auth(),
        Some(l) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(l.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
            let key = PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// TCP + TLS handshake to completion (errors are the handshake's).
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<Tls> {
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

struct Wss {
    ws: WebSocket<Tls>,
    hello: Value,
    next_id: u64,
    events: Vec<Value>,
}

impl Wss {
    fn open(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Wss, String> {
        Wss::open_with(addr, config, &[])
    }

    fn open_with(addr: SocketAddr, config: &Arc<ClientConfig>, headers: &[(&str, &str)]) -> Result<Wss, String> {
        let s = tls_connect(addr, config).map_err(|e| format!("tls: {e}"))?;
        let mut req = format!("wss://localhost:{}/ws", addr.port()).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                tungstenite::http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let (ws, _) = tungstenite::client::client(req, s).map_err(|e| format!("ws: {e}"))?;
        let mut w = Wss { ws, hello: Value::Null, next_id: 1, events: Vec::new() };
        let hello = w.next().map_err(|e| format!("hello: {e}"))?;
        assert_eq!(hello["type"], "hello", "{hello}");
        w.hello = hello;
        Ok(w)
    }

    fn next(&mut self) -> Result<Value, tungstenite::Error> {
        loop {
            match self.ws.read()? {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] != "heartbeat" {
                        return Ok(v);
                    }
                }
                Message::Close(f) => {
                    return Err(tungstenite::Error::Io(std::io::Error::other(format!(
                        "close {}",
                        f.map_or(0, |f| u16::from(f.code))
                    ))))
                }
                _ => {}
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        loop {
            let v = self.next().unwrap();
            if v["id"] == id {
                return v;
            }
            self.events.push(v);
        }
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    fn event(&mut self) -> Value {
        if !self.events.is_empty() {
            return self.events.remove(0);
        }
        self.next().unwrap()
    }

    /// The DER of the certificate the server presented.
    fn server_cert(&self) -> Vec<u8> {
        self.ws.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Read until a close frame arrives; its code.
    fn close_code(&mut self, within: Duration) -> Option<u16> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.ws.read() {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

fn https_get(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> (u16, String) {
    let mut s = tls_connect(addr, config).expect("tls");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out); // a TCP EOF without close_notify is fine here
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn metric(addr: SocketAddr, config: &Arc<ClientConfig>, series: &str) -> u64 {
    let (_, body) = https_get(addr, config, "/metrics");
    body.lines()
        .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wait_log(p: &Dbx, needle: &str) {
    poll_until(Duration::from_secs(5), needle, || p.stderr().contains(needle).then_some(()));
}

fn setup() -> (Ca, Files) {
    let ca = ca("dbx test CA");
    let l = leaf(&ca, true, 1, false);
    let f = Files::new(&ca, &l);
    (ca, f)
}

// ---------------------------------------------------------------------------
// The data path over wss://

#[test]
fn set_get_watch_over_wss() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    assert!(p.stderr().contains("listening on wss://"), "{}", p.stderr());
    let cfg = client_config(&[&ca], None);
    let mut a = Wss::open(p.addr, &cfg).unwrap();
    let mut b = Wss::open(p.addr, &cfg).unwrap();
    assert_eq!(a.ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    a.ok("key.watch", json!({"keys": ["k"]}));
    assert_eq!(b.ok("string.set", json!({"key": "k", "value": "hello"}))["set"], true);
    assert_eq!(b.ok("string.get", json!({"key": "k"}))["value"], "hello");
    let ev = a.event();
    assert_eq!(ev["key"], "k", "{ev}");
    // Pipelined: 200 requests in one go, 200 replies in order.
    for i in 0..200 {
        let msg = json!({"id": 1000 + i, "method": "string.get", "params": {"key": "k"}}).to_string();
        b.ws.write(Message::text(msg)).unwrap();
    }
    b.ws.flush().unwrap();
    for i in 0..200 {
        let r = b.next().unwrap();
        assert_eq!(r["id"], 1000 + i);
        assert_eq!(r["result"]["value"], "hello");
    }
    // /health and /metrics over https.
    let (st, body) = https_get(p.addr, &cfg, "/health");
    assert_eq!(st, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["tls"], true, "{h}");
    assert!(h["tls_not_after"].as_str().is_some_and(|s| s.ends_with('Z')), "{h}");
    // Two full handshakes, the rest resumed from the tickets they got.
    assert_eq!(metric(p.addr, &cfg, "dbx_tls_handshakes_total{kind=\"full\"}"), 1);
    assert!(metric(p.addr, &cfg, "dbx_tls_handshakes_total{kind=\"resumed\"}") >= 2);
    let (_, m) = https_get(p.addr, &cfg, "/metrics");
    assert!(m.contains("dbx_tls_handshake_duration_seconds_count"), "{m}");
}

#[test]
fn resumed_handshakes_are_counted() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let cfg = client_config(&[&ca], None);
    for _ in 0..3 {
        let mut w = Wss::open(p.addr, &cfg).unwrap();
        w.ok("server.ping", json!({}));
    }
    let resumed = metric(p.addr, &cfg, "dbx_tls_handshakes_total{kind=\"resumed\"}");
    assert!(resumed >= 2, "resumed {resumed}");
}

#[test]
fn bearer_header_over_wss() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts().env("DBX_API_KEYS", "s3cret:admin"));
    let cfg = client_config(&[&ca], None);
    assert!(Wss::open(p.addr, &cfg).is_err(), "no credential must be refused");
    let mut w = Wss::open_with(p.addr, &cfg, &[("Authorization", "Bearer s3cret")]).unwrap();
    w.ok("string.set", json!({"key": "a", "value": "1"}));
}

// ---------------------------------------------------------------------------
// Trust

#[test]
fn client_trusting_another_ca_is_refused() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let other = self::ca("someone else");
    let Err(e) = tls_connect(p.addr, &client_config(&[&other], None)) else { panic!("must fail") };
    assert!(e.to_string().contains("UnknownIssuer") || e.to_string().contains("issuer"), "{e}");
    // The server counts it (the client's alert) and keeps serving.
    let good = client_config(&[&ca], None);
    let n = poll_until(Duration::from_secs(3), "failure counted", || {
        let n = metric(p.addr, &good, "dbx_tls_handshake_failures_total{reason=\"alert_received\"}");
        (n >= 1).then_some(n)
    });
    assert_eq!(n, 1);
}

#[test]
fn expired_certificate_is_refused_by_clients_and_logged() {
    let ca = ca("dbx test CA");
    let f = Files::new(&ca, &leaf(&ca, true, 7, true));
    let p = Dbx::start(&f.opts());
    assert!(p.stderr().contains("EXPIRED"), "no expiry error logged: {}", p.stderr());
    let Err(e) = tls_connect(p.addr, &client_config(&[&ca], None)) else { panic!("must fail") };
    assert!(e.to_string().contains("expired"), "{e}");
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    ((yoe + era * 400 + i64::from(m <= 2)) as i32, m as u8, d as u8)
}

#[test]
fn certificate_close_to_expiry_is_warned_about() {
    let ca = ca("dbx test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 / 86_400;
    let (y, m, d) = civil_from_days(today + 6);
    p.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let l = Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() };
    let f = Files::new(&ca, &l);
    let p = Dbx::start(&f.opts());
    wait_log(&p, "expires in 5 days: renew it and send SIGHUP");
    // Still served until then.
    Wss::open(p.addr, &client_config(&[&ca], None)).unwrap().ok("server.ping", json!({}));
}

#[test]
fn mutual_tls_accepts_signed_clients_and_refuses_others() {
    let (ca, f) = setup();
    let client_ca = self::ca("client CA");
    std::fs::write(f.p("client-ca.pem"), client_ca.cert.pem()).unwrap();
    let p = Dbx::start(&f.opts().env("DBX_TLS_CLIENT_CA", &f.s("client-ca.pem")));
    let good = leaf(&client_ca, false, 2, false);
    let mut w = Wss::open(p.addr, &client_config(&[&ca], Some(&good))).unwrap();
    w.ok("server.ping", json!({}));
    // No certificate, and one from another CA: refused (with TLS 1.3 the client learns
    // it at its first read).
    let stranger = leaf(&ca, false, 3, false);
    for cert in [None, Some(&stranger)] {
        let r = Wss::open(p.addr, &client_config(&[&ca], cert));
        assert!(r.is_err(), "client cert {:?} was accepted", cert.map(|_| "stranger"));
    }
    let no_cert = metric(
        p.addr,
        &client_config(&[&ca], Some(&good)),
        "dbx_tls_handshake_failures_total{reason=\"no_client_certificate\"}",
    );
    let bad_cert = metric(
        p.addr,
        &client_config(&[&ca], Some(&good)),
        "dbx_tls_handshake_failures_total{reason=\"bad_client_certificate\"}",
    );
    assert_eq!((no_cert, bad_cert), (1, 1));
}

#[test]
fn tls_1_3_minimum_refuses_1_2_clients() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts().env("DBX_TLS_MIN_VERSION", "1.3"));
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let only12 = Arc::new(
        ClientConfig::builder_with_provider(dbx::server::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    assert!(tls_connect(p.addr, &only12).is_err());
    Wss::open(p.addr, &client_config(&[&ca], None)).unwrap().ok("server.ping", json!({}));
}

// ---------------------------------------------------------------------------
// Start-up errors: one line naming the setting (and file), exit status 2

#[test]
fn bad_tls_settings_stop_the_start_with_status_2() {
    let (ca, f) = setup();
    std::fs::write(f.p("junk.pem"), "not a pem file\n").unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(f.p("other-key.pem"), other_key).unwrap();
    let _ = &ca;
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("DBX_TLS_CERT", f.s("cert.pem"))], "DBX_TLS_KEY", "not"),
        (vec![("DBX_TLS_KEY", f.s("key.pem"))], "DBX_TLS_CERT", "not"),
        (vec![("DBX_TLS_CERT", f.s("missing.pem")), ("DBX_TLS_KEY", f.s("key.pem"))], "DBX_TLS_CERT", "missing.pem"),
        (vec![("DBX_TLS_CERT", f.s("junk.pem")), ("DBX_TLS_KEY", f.s("key.pem"))], "DBX_TLS_CERT", "junk.pem"),
        (vec![("DBX_TLS_CERT", f.s("cert.pem")), ("DBX_TLS_KEY", f.s("junk.pem"))], "DBX_TLS_KEY", "junk.pem"),
        (
            vec![("DBX_TLS_CERT", f.s("cert.pem")), ("DBX_TLS_KEY", f.s("other-key.pem"))],
            "DBX_TLS_KEY",
            "does not match",
        ),
        (
            vec![
                ("DBX_TLS_CERT", f.s("cert.pem")),
                ("DBX_TLS_KEY", f.s("key.pem")),
                ("DBX_TLS_CLIENT_CA", f.s("junk.pem")),
            ],
            "DBX_TLS_CLIENT_CA",
            "junk.pem",
        ),
        (vec![("DBX_TLS_MIN_VERSION", "1.1".into())], "DBX_TLS_MIN_VERSION", "1.1"),
    ];
    for (env, setting, detail) in cases {
        let mut o = Opts::memory();
        for (k, v) in &env {
            o = o.env(k, v);
        }
        let mut p = Dbx::spawn(&o);
        let st = p.wait_exit(Duration::from_secs(10)).expect("dbx kept running");
        let err = p.stderr();
        assert_eq!(st.code(), Some(2), "{env:?}: {err}");
        let line = err.lines().find(|l| l.starts_with("dbx: ")).unwrap_or_else(|| panic!("{env:?}: {err}"));
        assert!(line.contains(setting) && line.contains(detail), "{env:?}: {line}");
    }
}

#[test]
fn plaintext_listener_with_credentials_warns_once() {
    let p = Dbx::start(&Opts::memory().env("DBX_API_KEYS", "k1").env("DBX_HOST", "0.0.0.0"));
    let n = p.stderr().matches("cross the network in clear").count();
    assert_eq!(n, 1, "{}", p.stderr());
    // Loopback: no warning.
    let q = Dbx::start(&Opts::memory().env("DBX_API_KEYS", "k1"));
    assert!(!q.stderr().contains("in clear"), "{}", q.stderr());
}

// ---------------------------------------------------------------------------
// SIGHUP, SIGUSR1, SIGPIPE

#[test]
fn sighup_swaps_the_certificate_for_new_connections_only() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let cfg = client_config(&[&ca], None);
    let mut open = Wss::open(p.addr, &cfg).unwrap();
    let old_der = open.server_cert();
    open.ok("string.set", json!({"key": "k", "value": "before"}));

    let new = leaf(&ca, true, 2, false);
    f.write(&new);
    p.signal(libc::SIGHUP);
    wait_log(&p, "reload: TLS certificate");
    // A client without a session to resume (a resumed session keeps the certificate
    // it was first made with, as with any TLS server).
    let cfg = client_config(&[&ca], None);
    let mut fresh = Wss::open(p.addr, &cfg).unwrap();
    assert_eq!(fresh.server_cert(), new.der, "a new connection must see the new certificate");
    assert_ne!(old_der, new.der);
    // The open connection keeps working, on its old session.
    assert_eq!(open.ok("string.get", json!({"key": "k"}))["value"], "before");
    assert_eq!(open.server_cert(), old_der);
    fresh.ok("server.ping", json!({}));

    // A bad file on SIGHUP keeps the current certificate and says so.
    std::fs::write(f.p("cert.pem"), "garbage").unwrap();
    p.signal(libc::SIGHUP);
    wait_log(&p, "keeping the previous TLS certificate");
    let mut after = Wss::open(p.addr, &client_config(&[&ca], None)).unwrap();
    assert_eq!(after.server_cert(), new.der);
    after.ok("server.ping", json!({}));
    // A key that does not match the certificate is a bad file too.
    let third = leaf(&ca, true, 3, false);
    std::fs::write(f.p("cert.pem"), &third.cert_pem).unwrap();
    p.signal(libc::SIGHUP);
    poll_until(Duration::from_secs(5), "second refusal", || {
        (p.stderr().matches("keeping the previous TLS certificate").count() == 2).then_some(())
    });
    assert!(p.stderr().contains("does not match"), "{}", p.stderr());
    assert_eq!(Wss::open(p.addr, &client_config(&[&ca], None)).unwrap().server_cert(), new.der);
    assert!(open.ok("server.ping", json!({}))["pong"] == true);
}

#[test]
fn sighup_sigusr1_sigpipe_without_tls_are_harmless() {
    let mut p = Dbx::start(&Opts::memory());
    let mut c = p.client();
    c.ok("string.set", json!({"key": "k", "value": "v"}));
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGPIPE, libc::SIGHUP] {
        p.signal(sig);
        std::thread::sleep(Duration::from_millis(100));
        assert!(p.try_wait().is_none(), "dbx exited on signal {sig}: {}", p.stderr());
    }
    wait_log(&p, "nothing to reload");
    wait_log(&p, "SIGUSR1 received: ignored");
    assert_eq!(c.ok("string.get", json!({"key": "k"}))["value"], "v");
    let mut d = p.client();
    d.ok("server.ping", json!({}));
    // SIGTERM still stops it cleanly.
    assert_eq!(p.term().code(), Some(0));
}

// ---------------------------------------------------------------------------
// Limits over TLS

#[test]
fn stalled_tls_handshake_is_cut_while_others_are_served() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts().env("DBX_WS_TIMEOUT", "1"));
    let cfg = client_config(&[&ca], None);
    // One silent socket, and one that sends half a ClientHello.
    let mut silent = TcpStream::connect(p.addr).unwrap();
    let mut half = TcpStream::connect(p.addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).unwrap();
    let t0 = Instant::now();
    // Others are served meanwhile.
    let mut w = Wss::open(p.addr, &cfg).unwrap();
    w.ok("server.ping", json!({}));
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        let r = s.read(&mut b);
        assert!(matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset), "{r:?}");
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(3000), "cut after {took:?}");
    w.ok("server.ping", json!({}));
    assert_eq!(metric(p.addr, &cfg, "dbx_tls_handshake_failures_total{reason=\"timeout\"}"), 2);
}

#[test]
fn plaintext_http_on_the_tls_port_is_closed_at_once() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    for req in [
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        s.write_all(req.as_bytes()).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert!(t0.elapsed() < Duration::from_millis(500), "took {:?}", t0.elapsed());
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains("101"), "upgraded over plaintext");
        // A plaintext answer that says what went wrong.
        assert!(text.starts_with("HTTP/1.1 400") && text.contains("use https:// or wss://"), "{text}");
    }
    let cfg = client_config(&[&ca], None);
    assert_eq!(metric(p.addr, &cfg, "dbx_tls_handshake_failures_total{reason=\"plaintext_http\"}"), 2);
}

#[test]
fn message_limit_holds_over_tls() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let cfg = client_config(&[&ca], None);
    // Just under 1 MiB: accepted.
    let mut w = Wss::open(p.addr, &cfg).unwrap();
    let v = "x".repeat((1 << 20) - 200);
    assert_eq!(w.ok("string.set", json!({"key": "big", "value": v}))["set"], true);
    assert_eq!(w.ok("string.strlen", json!({"key": "big"}))["length"], (1 << 20) - 200);
    // Over it: closed with 1009.
    let mut over = Wss::open(p.addr, &cfg).unwrap();
    let big = format!(r#"{{"id":1,"method":"string.set","params":{{"key":"b","value":"{}"}}}}"#, "y".repeat(1 << 20));
    let _ = over.ws.send(Message::text(big));
    assert_eq!(over.close_code(Duration::from_secs(5)), Some(1009));
    w.ok("server.ping", json!({}));
}

#[test]
fn slow_tls_subscriber_is_cut_with_1008() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts().env("DBX_WS_MAX_OUTBOUND", "64kb"));
    let cfg = client_config(&[&ca], None);
    let mut sub = Wss::open(p.addr, &cfg).unwrap();
    sub.ok("pubsub.subscribe", json!({"channels": ["firehose"]}));
    // The subscriber stops reading; events pile up past twice the mark.
    let mut publ = Wss::open(p.addr, &cfg).unwrap();
    let data = "d".repeat(64 * 1024);
    let mut cut = false;
    for i in 0..400 {
        let r = publ.call("pubsub.publish", json!({"channel": "firehose", "data": data}));
        if r["result"]["receivers"] == 0 {
            cut = true;
            break;
        }
        assert!(r.get("error").is_none(), "publish {i}: {r}");
    }
    assert!(cut, "TLS subscriber still receiving after 25 MiB of unread events");
    wait_log(&p, "DBX_WS_MAX_OUTBOUND");
    sub.ws.get_mut().sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut code = None;
    for _ in 0..1000 {
        match sub.ws.read() {
            Ok(Message::Close(f)) => {
                code = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(1008));
}

#[test]
fn non_reading_tls_client_is_paused_not_grown() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts().env("DBX_WS_MAX_OUTBOUND", "1mb"));
    let cfg = client_config(&[&ca], None);
    let mut setter = Wss::open(p.addr, &cfg).unwrap();
    setter.ok("string.set", json!({"key": "big", "value": "v".repeat(64 * 1024)}));
    let rss0 = p.rss_kib();
    let mut hog = Wss::open(p.addr, &cfg).unwrap();
    hog.ws.get_mut().sock.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let req = r#"{"id":1,"method":"string.get","params":{"key":"big"}}"#;
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < 3000 && t0.elapsed() < Duration::from_secs(8) {
        if hog.ws.write(Message::text(req)).is_err() || hog.ws.flush().is_err() {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_millis(1000));
    let grown = p.rss_kib().saturating_sub(rss0);
    assert!(grown < 64 * 1024, "server RSS grew by {grown} KiB after {sent} pipelined gets over TLS");
    setter.ok("server.ping", json!({}));
    assert!(!p.stderr().contains("slow consumer"), "{}", p.stderr());
}

// ---------------------------------------------------------------------------
// dbx-bench over wss://

fn bench(args: &[&str]) -> (bool, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbx-bench")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or("{}").to_string();
    (
        out.status.success(),
        serde_json::from_str(&last).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn dbx_bench_over_wss_with_ca_and_insecure() {
    let (_ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let url = format!("wss://localhost:{}/ws", p.port);
    let ca = f.s("ca.pem");
    let (ok, j, err) = bench(&["--url", &url, "--ca", &ca, "-c", "4", "-P", "4", "-d", "1s", "--warmup", "0s"]);
    assert!(ok, "{err}");
    assert!(j["ok"].as_u64().unwrap_or(0) > 100 && j["bad_replies"] == 0 && j["conns_closed"] == 0, "{j}");
    let (ok, j, err) = bench(&["--url", &url, "--insecure", "--connect-only", "20"]);
    assert!(ok && j["connect_only"] == 20 && j["resume"] == true, "{j} {err}");
    let (ok, j, err) = bench(&["--url", &url, "--insecure", "--connect-only", "10", "--no-resume"]);
    assert!(ok && j["resume"] == false, "{j} {err}");
    // Without a way to trust the certificate, or trusting another CA: refused.
    let (ok, j, _) = bench(&["--url", &url]);
    assert!(!ok && j["error"].as_str().is_some_and(|e| e.contains("--ca")), "{j}");
    let other = self::ca("other");
    std::fs::write(f.p("other.pem"), other.cert.pem()).unwrap();
    let (ok, j, _) = bench(&["--url", &url, "--ca", &f.s("other.pem"), "--connect-only", "1"]);
    assert!(!ok && j["error"].as_str().is_some_and(|e| e.contains("TLS")), "{j}");
}

/// Idle TLS connections stay under 32 KiB each (rustls's state, its 4 KiB read buffer,
/// and what a plaintext connection costs); scripts/idle-memory.sh TLS=1 measures 10,000.
#[test]
fn idle_tls_connections_cost_under_32_kib_each() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let cfg = client_config(&[&ca], None);
    // Warm the allocator and code paths first.
    let warm: Vec<Wss> = (0..20).map(|_| Wss::open(p.addr, &cfg).unwrap()).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = p.rss_kib();
    let n = 400;
    let conns: Vec<Wss> = (0..n).map(|_| Wss::open(p.addr, &cfg).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let per_kib = p.rss_kib().saturating_sub(before) as f64 / n as f64;
    assert!(per_kib < 32.0, "{per_kib:.1} KiB per idle TLS connection");
    drop(conns);
}

#[test]
fn port_probe_counts_as_eof_and_a_split_client_hello_is_not_plaintext() {
    let (ca, f) = setup();
    let p = Dbx::start(&f.opts());
    let cfg = client_config(&[&ca], None);
    // Connect and leave without a byte.
    drop(TcpStream::connect(p.addr).unwrap());
    // A ClientHello cut after its first bytes, then EOF: no "plaintext_http".
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"GARBAGE").unwrap();
    drop(s);
    let eof = poll_until(Duration::from_secs(5), "eof failures", || {
        let n = metric(p.addr, &cfg, "dbx_tls_handshake_failures_total{reason=\"eof\"}")
            + metric(p.addr, &cfg, "dbx_tls_handshake_failures_total{reason=\"bad_message\"}");
        (n >= 3).then_some(n)
    });
    let (_, m) = https_get(p.addr, &cfg, "/metrics");
    // Dbx::start's own readiness probe is the third.
    assert_eq!(eof, 3, "{}", m.lines().filter(|l| l.contains("failures_total{")).collect::<Vec<_>>().join("\n"));
    assert_eq!(metric(p.addr, &cfg, "dbx_tls_handshake_failures_total{reason=\"plaintext_http\"}"), 0);
}
