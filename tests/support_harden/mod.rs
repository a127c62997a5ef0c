//! Test harness for the hardening tests (issue 9): an in-process server on a loopback
//! port, a raw-socket WebSocket client that can send any byte sequence, and a reader
//! that reports what the server did with it (HTTP status, close code, drop).
//!
//! Kept apart from other test helpers (`tests/support_harden/`) so the suites do not
//! step on each other. Only std and the `dbx` library: no WebSocket client crate, so
//! that nothing "fixes" a malformed frame before it reaches the server.
#![allow(dead_code)]

use dbx::config::Config;
use dbx::server::{Server, Shutdown};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single expectation may take before the test calls it a hang.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// After its close frame (and our reply, if we send one) the server must close TCP
/// within this (its own grace timer for a missing close reply is 2 s).
pub const CLOSE_PROMPTLY: Duration = Duration::from_millis(1000);

/// A server on 127.0.0.1:0, run on its own thread (the reactor holds `Rc`s, so it is
/// built on that thread). Stopped by `stop()` or on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    /// The test configuration: no persistence, no rate limit, `/echo` on, a 1 s HTTP
    /// timeout (so slow-request cases finish fast), 1 MiB messages.
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = Config::for_tests();
        cfg.persist = false;
        cfg.ws_rate_limit = 0;
        cfg.echo_path = Some("/echo".into());
        cfg.ws_timeout = 1.0;
        cfg.max_message_size = 1 << 20;
        cfg.api_keys = None;
        cfg.jwt_secret = None;
        cfg.jwt_public_key = None;
        tweak(&mut cfg);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dbx-harden-server".into())
            .spawn(move || {
                let mut srv = Server::with_listener(cfg, listener)?;
                let _ = tx.send(srv.shutdown_handle());
                srv.run()
            })
            .expect("spawn server thread");
        let shutdown = rx.recv_timeout(PATIENCE).expect("server did not start");
        TestServer { addr, shutdown, thread: Some(thread) }
    }

    /// Stop the server and fail if its thread panicked or returned an error.
    pub fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("server loop failed: {e}"),
                Err(_) => panic!("server thread panicked"),
            }
        }
    }

    /// True while the server thread is alive (a panic ends it).
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
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

/// A connected socket with timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    s.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    let _ = s.set_nodelay(true);
    s
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid upgrade request for `path`, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Write everything, tolerating a peer that already closed (that is an outcome too).
pub fn send_all(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

/// What the server did with an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status (then the connection ended).
    Http(u16),
    /// A WebSocket close frame with this code (1005 = close frame without a code),
    /// after which the server completed the closing handshake and closed TCP.
    Close(u16),
    /// The connection ended without an HTTP response or a close frame.
    Dropped,
    /// The connection stays open and a text frame containing this arrived.
    Reply(String),
    /// Nothing happened within `PATIENCE`.
    Hang,
    /// Something the harness did not expect (described).
    Other(String),
}

/// Read an HTTP response until the server ends the connection; its status or Dropped.
pub fn read_http_outcome(s: &mut TcpStream) -> Outcome {
    let mut buf = Vec::new();
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                if buf.is_empty() {
                    return Outcome::Hang;
                }
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // reset: judge what arrived
        }
        if start.elapsed() > PATIENCE {
            break;
        }
    }
    if buf.is_empty() {
        return Outcome::Dropped;
    }
    let text = String::from_utf8_lossy(&buf);
    match text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok()) {
        Some(code) => Outcome::Http(code),
        None => Outcome::Other(format!("not an HTTP response: {:?}", text.chars().take(80).collect::<String>())),
    }
}

/// Length encoding of a client frame.
#[derive(Clone, Copy, Debug)]
pub enum Len {
    /// Minimal encoding of the real payload length (RFC 6455 §5.2).
    Auto,
    /// 7-bit field with this value (0..=125 are lengths; 126/127 announce an extension
    /// that is then NOT written — for truncated headers).
    Small(u8),
    /// 126 + this 16-bit length.
    U16(u16),
    /// 127 + this 64-bit length.
    U64(u64),
}

/// Build one client frame: `first` is the first octet (FIN, RSV1-3, opcode), `masked`
/// sets the MASK bit and masks the payload with a fixed key.
pub fn frame_with(first: u8, masked: bool, len: Len, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    let m = if masked { 0x80 } else { 0 };
    match len {
        Len::Auto => {
            let n = payload.len();
            if n < 126 {
                f.push(m | n as u8);
            } else if n <= 0xFFFF {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        Len::Small(b) => f.push(m | (b & 0x7F)),
        Len::U16(n) => {
            f.push(m | 126);
            f.extend_from_slice(&n.to_be_bytes());
        }
        Len::U64(n) => {
            f.push(m | 127);
            f.extend_from_slice(&n.to_be_bytes());
        }
    }
    if masked {
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key.get(i % 4).copied().unwrap_or(0)));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A masked frame with minimal length: `fin`, opcode and payload.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(if fin { 0x80 } else { 0 } | (opcode & 0x0F), true, Len::Auto, payload)
}

pub fn text(payload: &str) -> Vec<u8> {
    frame(true, 1, payload.as_bytes())
}

/// A close frame payload: code and raw reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A raw WebSocket client over a plain socket.
pub struct Client {
    pub sock: TcpStream,
    buf: Vec<u8>,
    /// Answer the server's close frame (a polite peer) or stay silent (a peer that
    /// already sent its own close, or is gone): either way the server must close TCP.
    pub reply_to_close: bool,
}

/// One server frame: first octet and (unmasked) payload.
#[derive(Debug)]
pub struct ServerFrame {
    pub first: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn opcode(&self) -> u8 {
        self.first & 0x0F
    }
}

impl Client {
    /// Upgrade on `path`; on the WebSocket path the server's `hello` is read too.
    pub fn open(addr: SocketAddr, path: &str) -> Client {
        let mut sock = connect(addr);
        send_all(&mut sock, &upgrade_request(path, ""));
        let mut c = Client { sock, buf: Vec::new(), reply_to_close: true };
        let head_end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(c.fill(), "no 101 response for {path}");
        };
        let head = String::from_utf8_lossy(c.buf.get(..head_end).unwrap_or_default()).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        c.buf.drain(..head_end);
        if path.starts_with("/ws") {
            let hello = c.next_frame().expect("hello frame");
            assert!(String::from_utf8_lossy(&hello.payload).contains("\"type\":\"hello\""), "{hello:?}");
        }
        c
    }

    /// Read more bytes into the buffer; false on EOF, reset or timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// The next complete server frame, or None on EOF/reset/timeout.
    pub fn next_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        send_all(&mut self.sock, bytes);
    }

    /// Judge what the server does next: a close frame (and a completed closing
    /// handshake), a drop, a text reply containing `want` (when given), or a hang.
    pub fn outcome(&mut self, want: Option<&str>) -> Outcome {
        let start = Instant::now();
        loop {
            if start.elapsed() > PATIENCE {
                return Outcome::Hang;
            }
            let Some(f) = self.next_frame() else {
                return if start.elapsed() >= PATIENCE { Outcome::Hang } else { Outcome::Dropped };
            };
            match f.opcode() {
                0x1 => {
                    let t = String::from_utf8_lossy(&f.payload).into_owned();
                    if let Some(w) = want {
                        if t.contains(w) {
                            return Outcome::Reply(t);
                        }
                    }
                }
                0x8 => return self.after_close(&f),
                0x9 | 0xA => {}
                op => return Outcome::Other(format!("unexpected server frame opcode {op:#x}")),
            }
        }
    }

    /// The server sent a close frame: nothing may follow it; answer it (or not) and
    /// expect the server to end the TCP connection promptly.
    fn after_close(&mut self, f: &ServerFrame) -> Outcome {
        let code = match f.payload.as_slice() {
            [] => 1005,
            [a, b, rest @ ..] => {
                if std::str::from_utf8(rest).is_err() {
                    return Outcome::Other("server close reason is not UTF-8".into());
                }
                u16::from_be_bytes([*a, *b])
            }
            _ => return Outcome::Other("server close frame with a 1-byte payload".into()),
        };
        if f.first & 0x80 == 0 || f.payload.len() > 125 {
            return Outcome::Other("malformed server close frame".into());
        }
        if self.reply_to_close {
            // Complete the closing handshake (may fail if the server already closed).
            let reply = frame(true, 0x8, f.payload.get(..2).unwrap_or_default());
            let _ = self.sock.write_all(&reply);
        }
        // Promptly: well before the server's 2 s grace timer would cut it off anyway
        // (waiting that long means the server could not read our close reply).
        let start = Instant::now();
        match self.next_frame() {
            None => {
                let waited = start.elapsed();
                if waited >= CLOSE_PROMPTLY {
                    Outcome::Other(format!("close {code}: server closed TCP only after {} ms", waited.as_millis()))
                } else {
                    Outcome::Close(code)
                }
            }
            Some(g) => Outcome::Other(format!("close {code}: frame with opcode {:#x} after close", g.opcode())),
        }
    }
}

/// Parse one unmasked server frame from `buf`: (frame, bytes used) or None if incomplete.
pub fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    let first = *buf.first()?;
    let second = *buf.get(1)?;
    let (len, mut at) = match second & 0x7F {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (n as usize, 2),
    };
    let mask = if second & 0x80 != 0 {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = buf.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m.get(i % 4).copied().unwrap_or(0);
        }
    }
    Some((ServerFrame { first, payload }, at + len))
}

/// A fresh connection on the WebSocket path gets `server.ping` answered.
pub fn ping_ok(addr: SocketAddr) -> Result<(), String> {
    let mut c = Client::open(addr, "/ws");
    c.send(&text(r#"{"id":"probe","method":"server.ping"}"#));
    match c.outcome(Some("\"pong\":true")) {
        Outcome::Reply(_) => {
            c.send(&frame(true, 0x8, &close_payload(1000, b"")));
            Ok(())
        }
        other => Err(format!("server.ping on a new connection: {other:?}")),
    }
}
