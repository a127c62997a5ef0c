//! Harness for the authentication end-to-end tests (`tests/auth.rs`): an in-process
//! server on 127.0.0.1:0, a blocking WebSocket client, raw HTTP for refusals, token
//! makers, and helpers to run the real `dbx` binary as a process.
//!
//! Named `support_auth` so it does not clash with the other test harnesses.
#![allow(dead_code)]

use base64::Engine as _;
use dbx::config::Config;
use dbx::server::{Server, Shutdown};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any single read may block before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// HS256 secret used by the JWT servers of these tests.
pub const SECRET: &str = "e2e-hs256-secret-5c1f0d9b7a3e4f62";

// ---------------------------------------------------------------------------------
// In-process server
// ---------------------------------------------------------------------------------

/// A config with no credential, memory only; tests set the auth fields.
pub fn config() -> Config {
    Config::for_tests()
}

pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `cfg` on 127.0.0.1:0 in its own thread.
    pub fn start(mut cfg: Config) -> TestServer {
        cfg.host = "127.0.0.1".into();
        cfg.persist = false;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut server = match Server::with_listener(cfg, listener) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(Ok(server.shutdown_handle()));
            server.run().expect("server run");
        });
        let shutdown = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => panic!("server did not start: {e}"),
            Err(e) => panic!("server did not start: {e}"),
        };
        TestServer { addr, shutdown, thread: Some(thread) }
    }

    /// `ws://addr/ws` plus `query` (without the `?`, may be empty).
    pub fn url(&self, query: &str) -> String {
        ws_url(self.addr, query)
    }

    /// A WebSocket connection with `query`; panics if refused.
    pub fn connect(&self, query: &str) -> Client {
        Client::connect(self.addr, query, &[]).expect("connect")
    }

    /// A WebSocket connection with the credential in `?api_key=`; panics if refused.
    pub fn connect_key(&self, credential: &str) -> Client {
        self.connect(&format!("api_key={credential}"))
    }

    /// A WebSocket connection with `Authorization: Bearer <token>`.
    pub fn connect_bearer(&self, token: &str) -> Client {
        Client::connect(self.addr, "", &[("Authorization", &format!("Bearer {token}"))]).expect("connect with bearer")
    }

    /// Raw upgrade request with `query` and extra header lines; the parsed answer.
    pub fn raw_upgrade(&self, query: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        raw_upgrade(self.addr, query, headers)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn ws_url(addr: SocketAddr, query: &str) -> String {
    if query.is_empty() {
        format!("ws://{addr}/ws")
    } else {
        format!("ws://{addr}/ws?{query}")
    }
}

// ---------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------

pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub hello: Value,
    next_id: u64,
}

/// How a connection ended, as seen by [`Client::wait_close`].
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code.
    Close(u16),
    /// The TCP connection ended without a close frame.
    NoFrame(String),
    /// Still open when the deadline passed.
    StillOpen,
}

impl Client {
    /// Connects to `/ws?query` with extra request headers; reads the hello.
    pub fn connect(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
        Client::connect_full(addr, query, headers).map(|(c, _)| c)
    }

    /// As [`Client::connect`], also returning the HTTP 101 response.
    pub fn connect_full(
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Client, Response), tungstenite::Error> {
        let mut req = ws_url(addr, query).into_client_request()?;
        for (name, value) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                tungstenite::http::HeaderValue::from_str(value).expect("header value"),
            );
        }
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let (ws, resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::Error::other("handshake interrupted"))
            }
        })?;
        let mut c = Client { ws, hello: Value::Null, next_id: 1 };
        let hello = c.next_json().expect("hello frame");
        assert_eq!(hello["type"], "hello", "first frame is the hello: {hello}");
        c.hello = hello;
        Ok((c, resp))
    }

    /// The next text frame as JSON (control frames are skipped).
    pub fn next_json(&mut self) -> Result<Value, tungstenite::Error> {
        loop {
            match self.ws.read()? {
                Message::Text(t) => return Ok(serde_json::from_str(t.as_str()).expect("server sent JSON")),
                Message::Close(f) => {
                    return Err(tungstenite::Error::Io(std::io::Error::other(format!("closed by server: {f:?}"))))
                }
                _ => continue,
            }
        }
    }

    /// Sends a request and returns the whole response envelope (unsolicited
    /// messages in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(req.to_string())).unwrap_or_else(|e| panic!("send {method}: {e}"));
        loop {
            let v = self.next_json().unwrap_or_else(|e| panic!("reply to {method}: {e}"));
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            assert!(v.get("type").is_some(), "unexpected message {v}");
        }
    }

    /// The `result` of a call that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params.clone());
        match v.get("result") {
            Some(r) => r.clone(),
            None => panic!("{method} {params} failed: {v}"),
        }
    }

    /// The error code of a call that must fail.
    pub fn err(&mut self, method: &str, params: Value) -> String {
        let v = self.call(method, params.clone());
        match v.get("error") {
            Some(e) => e["code"].as_str().expect("error code").to_string(),
            None => panic!("{method} {params} succeeded, expected an error: {v}"),
        }
    }

    /// Whether the connection still answers a ping.
    pub fn alive(&mut self) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"id": id, "method": "server.ping"});
        if self.ws.send(Message::text(req.to_string())).is_err() {
            return false;
        }
        loop {
            match self.next_json() {
                Ok(v) if v.get("id") == Some(&json!(id)) => return v["result"]["pong"] == true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Reads until the server closes the connection or `deadline` passes.
    pub fn wait_close(&mut self, deadline: Instant) -> Ended {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ended::StillOpen;
            }
            let _ = self.ws.get_mut().set_read_timeout(Some(left.min(Duration::from_millis(500))));
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return Ended::Close(u16::from(f.code)),
                Ok(Message::Close(None)) => return Ended::Close(u16::from(CloseCode::Status)),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Ended::NoFrame(e.to_string()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpAnswer {
    pub status_line: String,
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a 401 `unauthorized` refusal with the JSON error body.
    pub fn assert_unauthorized(&self) {
        assert_eq!(self.status, 401, "expected 401, got {:?} / {}", self.status_line, self.body);
        assert!(self.status_line.starts_with("HTTP/1.1 401"), "{}", self.status_line);
        assert!(
            self.header("content-type").is_some_and(|v| v.contains("application/json")),
            "content-type of {:?}",
            self.headers
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], "unauthorized", "body {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {v}");
        assert!(
            self.header("upgrade").is_none() && self.header("sec-websocket-accept").is_none(),
            "no upgrade on a refusal: {:?}",
            self.headers
        );
    }
}

/// Sends `request` as is and reads the whole answer (until EOF, or until the body
/// given by Content-Length is complete).
pub fn raw_http(addr: SocketAddr, request: &str) -> HttpAnswer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(ans) = parse_http(&buf) {
            if let Some(len) = ans.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
                if ans.body.len() >= len {
                    return ans;
                }
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the HTTP answer: {e}; got so far {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    parse_http(&buf).unwrap_or_else(|| panic!("incomplete HTTP answer: {:?}", String::from_utf8_lossy(&buf)))
}

fn parse_http(buf: &[u8]) -> Option<HttpAnswer> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.to_string();
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpAnswer { status_line, status, headers, body: body.to_string() })
}

/// A complete WebSocket upgrade request for `/ws?query` with extra header lines.
pub fn upgrade_request(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> String {
    let target = if query.is_empty() { "/ws".to_string() } else { format!("/ws?{query}") };
    let mut r = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

pub fn raw_upgrade(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    raw_http(addr, &upgrade_request(addr, query, headers))
}

// ---------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("encode token")
}

/// HS256 with [`SECRET`].
pub fn hs(claims: Value) -> String {
    hs_with(SECRET, claims)
}

pub fn hs_with(secret: &str, claims: Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), &claims)
}

pub fn rs(claims: Value) -> String {
    rs_with("rsa_private.pem", claims)
}

pub fn rs_with(private_pem: &str, claims: Value) -> String {
    let k = EncodingKey::from_rsa_pem(&fixture(private_pem)).expect("rsa key");
    sign(Algorithm::RS256, &k, &claims)
}

pub fn es(claims: Value) -> String {
    let k = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    sign(Algorithm::ES256, &k, &claims)
}

pub fn ed(claims: Value) -> String {
    let k = EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).expect("ed key");
    sign(Algorithm::EdDSA, &k, &claims)
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsigned token: header `{"alg":"none","typ":"JWT"}` and an empty signature.
pub fn alg_none(claims: Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!("{}.{}.", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// Claims valid for ten minutes for subject `sub`, plus `extra` fields.
pub fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({"sub": sub, "exp": now_s() + 600});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

// ---------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------

/// A free port: bind 127.0.0.1:0 and release it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `target/debug/dbx` with a clean `DBX_*` environment plus `env`; stdout and
/// stderr piped.
pub fn spawn_dbx(env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbx"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DBX_") {
            cmd.env_remove(k);
        }
    }
    let data_dir = std::env::temp_dir().join(format!("dbx-auth-e2e-{}", std::process::id()));
    cmd.env("DBX_PERSIST", "false")
        .env("DBX_DATA_DIR", data_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn target/debug/dbx")
}

/// Waits until `port` on 127.0.0.1 accepts connections; panics if the process
/// exits or `deadline` passes first.
pub fn wait_listening(child: &mut Child, port: u16, deadline: Instant) {
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("dbx exited early with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "dbx did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the process to exit; kills it and panics after `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Instant) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dbx did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM (a graceful stop), then waits; SIGKILL if it does not stop in time.
pub fn stop(child: &mut Child) -> ExitStatus {
    let pid = child.id() as libc::pid_t;
    // SAFETY: `pid` is our own child, not yet reaped (we hold the `Child`).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_exit(child, Instant::now() + Duration::from_secs(10))
}

/// Everything the process wrote to stderr (call after it exited).
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(e) = child.stderr.as_mut() {
        e.read_to_string(&mut s).expect("read stderr");
    }
    s
}
