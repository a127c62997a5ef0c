//! The admin surface (issue 17): `DBX_ADMIN_PORT` serves `/health` and `/metrics` on a
//! second plain-HTTP listener (and the client port stops serving `/metrics`); without
//! it, `/metrics` on the client port needs an admin credential once credentials are
//! configured; `HEAD` on both endpoints. End to end: the real binary for the admin port
//! (it is bound by `Server::bind`), the in-process server for the credential rules.

mod common;

use common::*;
use std::time::Duration;

const KEYS: &str = "adm-key:admin,rw-key:write,ro-key:read";

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
}

fn head(path: &str) -> String {
    format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The raw answer to `req`, read until the server closes (HEAD answers have a
/// Content-Length but no body, so reading to EOF is the only way to see that).
fn raw(addr: std::net::SocketAddr, req: &str) -> (HttpResponse, String) {
    let text = raw_http(addr, req.as_bytes());
    (parse_http(&text), text)
}

fn assert_refusal(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{} / {}", r.status_line, r.body);
    assert!(r.header("content-type").is_some_and(|v| v.contains("application/json")), "{:?}", r.headers);
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

fn admin_dbx(extra: &[(&str, &str)]) -> (Dbx, std::net::SocketAddr) {
    let admin_port = free_port();
    let mut o = Opts::memory().env("DBX_ADMIN_PORT", &admin_port.to_string());
    for (k, v) in extra {
        o = o.env(k, v);
    }
    let d = Dbx::start(&o);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    // The admin listener is bound before "listening on" is logged.
    poll_until(Duration::from_secs(10), "admin port", || std::net::TcpStream::connect(admin).ok());
    (d, admin)
}

#[test]
fn admin_port_serves_health_and_metrics_and_nothing_else() {
    let (d, admin) = admin_dbx(&[]);
    assert!(d.stderr().contains(&format!("admin (/health, /metrics) listening on http://{admin}")), "{}", d.stderr());
    let m = http(admin, get("/metrics", "").as_bytes());
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.header("content-type").is_some_and(|v| v.starts_with("text/plain")));
    assert!(m.body.contains("dbx_build_info"), "{}", m.body);
    let h = http(admin, get("/health", "").as_bytes());
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    // No WebSocket, no echo, no other path on the admin port.
    let up = http(admin, upgrade_request("/ws", "").as_bytes());
    assert_refusal(&up, 404, "not_found");
    assert_refusal(&http(admin, get("/nope", "").as_bytes()), 404, "not_found");
    let post = http(admin, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_refusal(&post, 405, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // The client port: /metrics gone (404), /health still there, WebSocket works.
    assert_refusal(&http(d.addr, get("/metrics", "").as_bytes()), 404, "not_found");
    assert_eq!(http(d.addr, get("/health", "").as_bytes()).status, 200);
    let mut c = Client::connect(d.addr, "", &[]).expect("ws on the client port");
    c.ok("string.set", json!({"key": "k", "value": "v"}));
    // The admin port counts what the client port did.
    let m = http(admin, get("/metrics", "").as_bytes());
    assert!(m.body.contains("dbx_requests_total") || m.body.contains("string.set"), "{}", m.body);
}

#[test]
fn admin_port_needs_no_credential_but_client_port_keeps_its_own() {
    let (d, admin) = admin_dbx(&[("DBX_API_KEYS", KEYS)]);
    // The admin port is the operator's (loopback by default): no credential asked.
    assert_eq!(http(admin, get("/metrics", "").as_bytes()).status, 200);
    // The client port does not serve /metrics at all, even to an admin key.
    assert_refusal(&http(d.addr, get("/metrics?api_key=adm-key", "").as_bytes()), 404, "not_found");
    assert_eq!(http(d.addr, get("/health", "").as_bytes()).status, 200);
}

#[test]
fn admin_port_bind_error_names_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut d = Dbx::spawn(&Opts::memory().env("DBX_ADMIN_PORT", &port.to_string()));
    let st = d.wait_exit(Duration::from_secs(10)).expect("dbx should exit");
    assert_eq!(st.code(), Some(1), "{}", d.stderr());
    let err = d.stderr();
    assert!(err.contains("DBX_ADMIN_PORT") && err.contains(&format!("127.0.0.1:{port}")), "{err}");
    drop(taken);
    let mut d = Dbx::spawn(&Opts::memory().env("DBX_ADMIN_PORT", "0"));
    let st = d.wait_exit(Duration::from_secs(10)).expect("dbx should exit");
    assert_eq!(st.code(), Some(2), "{}", d.stderr());
    assert!(d.stderr().contains("DBX_ADMIN_PORT"), "{}", d.stderr());
}

#[test]
fn metrics_on_client_port_needs_an_admin_credential() {
    let s = start(|c| c.api_keys = Some(KEYS.into()));
    // Admin: ?api_key= or Authorization: Bearer.
    let ok = http(s.addr, get("/metrics?api_key=adm-key", "").as_bytes());
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("dbx_build_info"));
    let ok = http(s.addr, get("/metrics", "Authorization: Bearer adm-key\r\n").as_bytes());
    assert_eq!(ok.status, 200, "{}", ok.body);
    // None, or a bad one: 401 with the handshake's refusal body and WWW-Authenticate.
    let none = http(s.addr, get("/metrics", "").as_bytes());
    none.assert_unauthorized();
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    http(s.addr, get("/metrics?api_key=wrong", "").as_bytes()).assert_unauthorized();
    http(s.addr, get("/metrics", "Authorization: Bearer wrong\r\n").as_bytes()).assert_unauthorized();
    // A read or write key: 403.
    for key in ["ro-key", "rw-key"] {
        let r = http(s.addr, get(&format!("/metrics?api_key={key}"), "").as_bytes());
        assert_refusal(&r, 403, "forbidden");
        assert!(r.status_line.starts_with("HTTP/1.1 403 Forbidden"), "{}", r.status_line);
        let r = http(s.addr, get("/metrics", &format!("Authorization: Bearer {key}\r\n")).as_bytes());
        assert_refusal(&r, 403, "forbidden");
    }
    // /health stays open for load balancers.
    let h = http(s.addr, get("/health", "").as_bytes());
    assert_eq!(h.status, 200);
    // Refusals are counted like the handshake's.
    let m = http(s.addr, get("/metrics?api_key=adm-key", "").as_bytes()).body;
    assert!(m.contains("forbidden") && m.contains("unauthorized"), "{m}");
}

#[test]
fn metrics_stay_open_without_credentials() {
    let s = start_default();
    assert_eq!(http(s.addr, get("/metrics", "").as_bytes()).status, 200);
}

#[test]
fn head_answers_like_get_without_a_body() {
    let s = start(|c| c.api_keys = Some(KEYS.into()));
    for (path, ok) in [("/health", true), ("/metrics?api_key=adm-key", true), ("/metrics?api_key=ro-key", false)] {
        let g = http(s.addr, get(path, "").as_bytes());
        let (h, text) = raw(s.addr, &head(path));
        assert_eq!(h.status, g.status, "{path}");
        assert_eq!(g.status == 200, ok, "{path}");
        assert!(text.ends_with("\r\n\r\n"), "HEAD {path} must end after the headers: {text:?}");
        assert!(h.body.is_empty(), "{path}: {:?}", h.body);
        assert_eq!(h.header("content-type"), g.header("content-type"), "{path}");
        // Content-Length is that of the GET body (metrics grow between requests, so
        // compare health exactly and metrics as non-zero).
        let len: usize = h.header("content-length").and_then(|v| v.parse().ok()).expect("content-length");
        if path == "/health" {
            assert_eq!(len, g.body.len());
        } else {
            assert!(len > 0);
        }
    }
    // No credential on HEAD /metrics: 401 without a body either.
    let (h, text) = raw(s.addr, &head("/metrics"));
    assert_eq!(h.status, 401);
    assert!(text.ends_with("\r\n\r\n") && h.body.is_empty(), "{text:?}");
    // HEAD on the WebSocket path is not an upgrade: 405.
    let (h, _) = raw(s.addr, &head("/ws"));
    assert_eq!(h.status, 405);
}

#[test]
fn head_on_the_admin_port() {
    let (_d, admin) = admin_dbx(&[]);
    for path in ["/health", "/metrics"] {
        let (h, text) = raw(admin, &head(path));
        assert_eq!(h.status, 200, "{path}");
        assert!(text.ends_with("\r\n\r\n") && h.body.is_empty(), "{path}: {text:?}");
        assert!(h.header("content-length").and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > 0));
    }
}

#[test]
fn tls_on_the_client_port_leaves_the_admin_port_plain() {
    let dir = TempDir::new("admin-tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (d, admin) = admin_dbx(&[("DBX_TLS_CERT", cert.to_str().unwrap()), ("DBX_TLS_KEY", key.to_str().unwrap())]);
    // Plain HTTP on the admin port while the client port speaks only TLS.
    let m = http(admin, get("/metrics", "").as_bytes());
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.body.contains("dbx_build_info"));
    assert_eq!(http(admin, get("/health", "").as_bytes()).status, 200);
    // The client port does not answer plain HTTP (a TLS alert or a close, no 200).
    let text = raw_http(d.addr, get("/health", "").as_bytes());
    assert!(!text.starts_with("HTTP/1.1 200"), "{text:?}");
}
