//! Test harness for the end-to-end tests: a real `dbx::server::Server` on 127.0.0.1:0
//! in a thread, a blocking tungstenite client, raw TCP/HTTP helpers and hand-built
//! WebSocket frames. Every socket has a read timeout so no test can hang.
#![allow(dead_code)]

use dbx::config::Config;
use dbx::server::{Server, Shutdown};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub use serde_json::json;

/// Longest any single read may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A server running on its own thread; stopped (trigger + join) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: Shutdown,
    thread: Option<JoinHandle<()>>,
}

/// Start a server with `Config::for_tests()` changed by `f`, on 127.0.0.1:0.
///
/// The server is built inside its thread (it need not be `Send`); its address and
/// shutdown handle come back through a channel.
pub fn start(f: impl FnOnce(&mut Config)) -> TestServer {
    let mut cfg = Config::for_tests();
    cfg.host = "127.0.0.1".into();
    f(&mut cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("dbx-test-server".into())
        .spawn(move || {
            let mut server = Server::with_listener(cfg, listener).expect("Server::with_listener");
            tx.send((server.local_addr(), server.shutdown_handle())).expect("report address");
            server.run().expect("server run");
        })
        .expect("spawn server thread");
    let (addr, handle) = rx.recv_timeout(IO_TIMEOUT).expect("server did not start");
    TestServer { addr, handle, thread: Some(thread) }
}

/// A server with the default test config.
pub fn start_default() -> TestServer {
    start(|_| {})
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.trigger();
        if let Some(t) = self.thread.take() {
            // The server's shutdown grace is bounded (2 s); a panic in the server
            // thread should fail the test, but not double-panic during unwinding.
            let res = t.join();
            if res.is_err() && !std::thread::panicking() {
                panic!("server thread panicked");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

/// A blocking WebSocket client. `hello` is the server's first message.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub hello: Value,
    next_id: u64,
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("tcp connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set_read_timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("set_write_timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Connect to `/ws` and consume the hello message (in `client.hello`).
pub fn connect(server: &TestServer) -> Client {
    connect_path(server.addr, "/ws")
}

/// Connect to `path` (with an optional query) and consume the hello message.
pub fn connect_path(addr: SocketAddr, path: &str) -> Client {
    try_connect_path(addr, path).unwrap_or_else(|e| panic!("connect {path}: {e}"))
}

/// Like `connect_path`, but the handshake error is returned.
pub fn try_connect_path(addr: SocketAddr, path: &str) -> Result<Client, tungstenite::Error> {
    // tungstenite::connect would open the socket itself, without a read timeout during
    // the handshake; `client` runs the same handshake on a socket we configured first.
    let url = format!("ws://{addr}{path}");
    let (ws, _resp) = tungstenite::client(url.as_str(), tcp(addr)).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::Io(ErrorKind::WouldBlock.into()),
    })?;
    let mut c = Client { ws, hello: Value::Null, next_id: 1 };
    let hello = c.recv_json();
    assert_eq!(hello["type"], "hello", "first message must be hello: {hello}");
    c.hello = hello;
    Ok(c)
}

impl Client {
    /// Send `{"id":N,"method":..,"params":..}` and return the reply with that id
    /// (unsolicited messages, which have a `type`, are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"id": id, "method": method, "params": params});
        self.send_raw(&req.to_string());
        self.recv_reply(&json!(id))
    }

    /// `call` and return `result`; panics (with the reply) on an error.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        assert!(r.get("error").is_none(), "{method} {params} failed: {r}");
        r["result"].clone()
    }

    /// `call` and return `error`; panics (with the reply) on success.
    pub fn err(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        assert!(r.get("result").is_none(), "{method} {params} should fail: {r}");
        r["error"].clone()
    }

    /// The current global revision (from `server.info`).
    pub fn rev(&mut self) -> u64 {
        self.ok("server.info", json!({}))["rev"].as_u64().expect("rev")
    }

    /// Read messages until the reply whose `id` equals `id`; unsolicited messages
    /// (with a `type`) are skipped; any other reply is a test failure.
    pub fn recv_reply(&mut self, id: &Value) -> Value {
        loop {
            let v = self.recv_json();
            if v.get("type").is_some() && v.get("id").is_none() {
                continue;
            }
            assert_eq!(&v["id"], id, "reply out of order: {v}");
            return v;
        }
    }

    /// Send one text frame.
    pub fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// Send one message without flushing (pipelining); call `flush` afterwards.
    pub fn write_raw(&mut self, text: &str) {
        self.ws.write(Message::text(text)).expect("write");
    }

    pub fn flush(&mut self) {
        self.ws.flush().expect("flush");
    }

    /// The next JSON text message, heartbeats skipped (they may come at any time).
    pub fn recv_json(&mut self) -> Value {
        loop {
            let v = self.recv_json_any();
            if v["type"] == "heartbeat" && v.get("id").is_none() {
                continue;
            }
            return v;
        }
    }

    /// The next JSON text message, whatever it is.
    pub fn recv_json_any(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read (timed out or connection lost)") {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent bad JSON ({e}): {t}"))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message: {other:?}"),
            }
        }
    }

    /// Read the next non-heartbeat message, `Err` on a close or I/O error.
    pub fn try_recv(&mut self) -> Result<Message, tungstenite::Error> {
        self.ws.read()
    }
}

// ---------------------------------------------------------------------------
// Raw TCP / HTTP
// ---------------------------------------------------------------------------

/// Open a raw TCP connection (read timeout set).
pub fn raw_tcp(addr: SocketAddr) -> TcpStream {
    tcp(addr)
}

/// Send `bytes` on a new TCP connection and read until EOF (or `IO_TIMEOUT`, which
/// fails the test). Returns the response as (lossy) text.
pub fn raw_http(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = tcp(addr);
    // A refusal may come before the whole request was written (431): ignore write
    // errors, the answer is what matters.
    let _ = s.write_all(bytes);
    String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned()
}

/// Read until EOF; panics on timeout. A reset after some bytes counts as EOF.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("timed out waiting for EOF; got so far: {:?}", String::from_utf8_lossy(&out))
            }
            Err(_) => return out,
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

pub fn parse_http(text: &str) -> HttpResponse {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {status_line:?}");
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    HttpResponse { status, headers, body: body.to_string() }
}

/// `raw_http` + `parse_http`.
pub fn http(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    parse_http(&raw_http(addr, bytes))
}

/// A valid upgrade request for `target`, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// The accept value for the key used by `upgrade_request` (RFC 6455's example).
pub const ACCEPT_FOR_SAMPLE_KEY: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Poll `f` until it returns `Some` or `deadline` passes (then panics with `what`).
pub fn poll_until<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Hand-built WebSocket frames and a raw WebSocket connection
// ---------------------------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One WebSocket frame: `rsv` is the three RSV bits (0..=7), `masked` applies a fixed
/// mask key as a client must.
pub fn frame(opcode: u8, payload: &[u8], masked: bool, fin: bool, rsv: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let mask_bit = if masked { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        f.push(mask_bit | n as u8);
    } else if n <= u16::MAX as usize {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if masked {
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A masked, final text frame (what a well-behaved client sends).
pub fn text_frame(text: &str) -> Vec<u8> {
    frame(OP_TEXT, text.as_bytes(), true, true, 0)
}

/// A masked close frame with `code`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    frame(OP_CLOSE, &p, true, true, 0)
}

/// A frame as received from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("text frame is UTF-8")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("bad JSON ({e}): {:?}", self.text()))
    }
    /// The close code of a close frame (1005 when it has no payload).
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, OP_CLOSE);
        match self.payload.get(..2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 1005,
        }
    }
}

/// A WebSocket spoken by hand over a TCP stream: the handshake, then raw frames.
pub struct RawWs {
    pub sock: TcpStream,
    /// Bytes read past the last parsed frame.
    buf: Vec<u8>,
    pub hello: Value,
}

impl RawWs {
    /// Upgrade on `/ws` (101 expected), read the hello frame.
    pub fn open(addr: SocketAddr) -> RawWs {
        Self::open_with(addr, upgrade_request("/ws", "").as_bytes())
    }

    /// Send `request` (which may carry frame bytes after the head) and expect 101.
    pub fn open_with(addr: SocketAddr, request: &[u8]) -> RawWs {
        let mut sock = tcp(addr);
        sock.write_all(request).expect("write handshake");
        Self::finish(sock)
    }

    /// Read the 101 response and the hello frame from an already-sent handshake.
    pub fn finish(sock: TcpStream) -> RawWs {
        let mut ws = RawWs { sock, buf: Vec::new(), hello: Value::Null };
        let head = ws.read_head();
        let resp = parse_http(&head);
        assert_eq!(resp.status, 101, "expected 101, got {head:?}");
        assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(ACCEPT_FOR_SAMPLE_KEY));
        let hello = ws.read_frame().expect("hello frame");
        assert_eq!(hello.opcode, OP_TEXT);
        ws.hello = hello.json();
        assert_eq!(ws.hello["type"], "hello");
        ws
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 8192];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            match self.fill() {
                Ok(0) => panic!("EOF before the HTTP head ended: {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(_) => {}
                Err(e) => panic!("reading HTTP head: {e}"),
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write frame");
    }

    /// The next frame from the server. `None` on EOF/reset; panics on timeout.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(f);
            }
            match self.fill() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("timed out waiting for a frame")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next JSON text frame, skipping heartbeats and pings.
    pub fn read_json(&mut self) -> Value {
        loop {
            let f = self.read_frame().expect("connection closed while waiting for JSON");
            match f.opcode {
                OP_TEXT => {
                    let v = f.json();
                    if v["type"] == "heartbeat" && v.get("id").is_none() {
                        continue;
                    }
                    return v;
                }
                OP_PING | OP_PONG => continue,
                _ => panic!("unexpected frame {f:?}"),
            }
        }
    }

    /// Skip text/ping frames until a close frame; returns its code. Panics on EOF
    /// without a close frame.
    pub fn read_close_code(&mut self) -> u16 {
        loop {
            let f = self.read_frame().expect("connection ended without a close frame");
            if f.opcode == OP_CLOSE {
                assert!(!f.masked, "server frames must not be masked");
                return f.close_code();
            }
        }
    }

    /// After a close: the server closes the TCP connection (EOF or reset) before the
    /// read timeout.
    pub fn expect_eof(&mut self) {
        loop {
            match self.fill() {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("server did not close the TCP connection")
                }
                Err(_) => return,
            }
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.sock.shutdown(NetShutdown::Write);
    }
}

/// Parse one complete frame at the start of `b`: (frame, bytes used), or None if more
/// bytes are needed.
pub fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let rsv = (b[0] >> 4) & 7;
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut pos) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let key = if masked {
        let k: [u8; 4] = b.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(k)
    } else {
        None
    };
    let data = b.get(pos..pos + len)?;
    let payload = match key {
        Some(k) => data.iter().enumerate().map(|(i, x)| x ^ k[i % 4]).collect(),
        None => data.to_vec(),
    };
    Some((Frame { fin, rsv, opcode, masked, payload }, pos + len))
}

// ---------------------------------------------------------------------------
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
