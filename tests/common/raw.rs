//! Raw TCP/HTTP helpers, hand-built WebSocket frames, and a WebSocket spoken by hand
//! over a plain socket (nothing "fixes" a malformed frame before it reaches the server).

use super::client::tcp;
use super::{Value, IO_TIMEOUT};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// After its close frame (and our reply, if we send one) the server must close TCP
/// within this (its own grace timer for a missing close reply is 2 s).
pub const CLOSE_PROMPTLY: Duration = Duration::from_millis(1000);

// ---------------------------------------------------------------------------
// Raw TCP / HTTP
// ---------------------------------------------------------------------------

/// Open a raw TCP connection (read timeout set).
pub fn raw_tcp(addr: SocketAddr) -> TcpStream {
    tcp(addr)
}

/// Write everything, tolerating a peer that already closed (that is an outcome too).
pub fn send_all(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
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
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// A header's value (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
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

/// Parse a response head and body; None while the head is incomplete.
pub fn try_parse_http(text: &str) -> Option<HttpResponse> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.to_string();
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Some(HttpResponse { status_line, status, headers, body: body.to_string() })
}

/// Parse an HTTP/1.1 response; panics on anything else.
pub fn parse_http(text: &str) -> HttpResponse {
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let status_line = head.split("\r\n").next().unwrap_or("");
    assert!(status_line.starts_with("HTTP/1.1 "), "status line {status_line:?}");
    try_parse_http(text).unwrap_or_else(|| panic!("status line {status_line:?}"))
}

/// `raw_http` + `parse_http`.
pub fn http(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    parse_http(&raw_http(addr, bytes))
}

/// Sends `request` and reads the answer until EOF, or until the body given by
/// Content-Length is complete (the connection may stay open).
pub fn http_answer(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut s = tcp(addr);
    s.write_all(request.as_bytes()).expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(ans) = try_parse_http(&String::from_utf8_lossy(&buf)) {
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
    let text = String::from_utf8_lossy(&buf);
    try_parse_http(&text).unwrap_or_else(|| panic!("incomplete HTTP answer: {text:?}"))
}

/// Send `req` and read whatever comes until the server closes (or the read times
/// out): (status, body); (0, "") when the connection is refused or nothing parses.
pub fn http_status(addr: SocketAddr, req: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set_read_timeout");
    s.write_all(req.as_bytes()).expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A valid upgrade request for `target`, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Header lines `name: value\r\n` for `upgrade_request`'s `extra`.
pub fn header_lines(headers: &[(&str, &str)]) -> String {
    headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect()
}

/// An upgrade request for `/ws?query` with extra headers; the parsed answer.
pub fn raw_upgrade(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_answer(addr, &upgrade_request(&super::server::ws_target(query), &header_lines(headers)))
}

/// The accept value for the key used by `upgrade_request` (RFC 6455's example).
pub const ACCEPT_FOR_SAMPLE_KEY: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------------------
// Hand-built WebSocket frames
// ---------------------------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

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
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(first);
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

/// One WebSocket frame: `rsv` is the three RSV bits (0..=7), `masked` applies a fixed
/// mask key as a client must.
pub fn frame(opcode: u8, payload: &[u8], masked: bool, fin: bool, rsv: u8) -> Vec<u8> {
    frame_with(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f), masked, Len::Auto, payload)
}

/// A masked frame with minimal length: `fin`, opcode and payload.
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(opcode, payload, true, fin, 0)
}

/// A masked, final text frame (what a well-behaved client sends).
pub fn text_frame(text: &str) -> Vec<u8> {
    masked_frame(true, OP_TEXT, text.as_bytes())
}

/// A close frame payload: code and raw reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A masked close frame with `code`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    masked_frame(true, OP_CLOSE, &close_payload(code, reason.as_bytes()))
}

/// The close code of a close frame payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
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
        close_code(&self.payload).unwrap_or(1005)
    }
}

/// Parse one complete frame at the start of `b` (unmasking it if masked): (frame,
/// bytes used), or None if more bytes are needed.
pub fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    let first = *b.first()?;
    let second = *b.get(1)?;
    let (len, mut pos) = match second & 0x7f {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (n as usize, 2),
    };
    let masked = second & 0x80 != 0;
    let key = if masked {
        let k: [u8; 4] = b.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(k)
    } else {
        None
    };
    let data = b.get(pos..pos.checked_add(len)?)?;
    let payload = match key {
        Some(k) => data.iter().enumerate().map(|(i, x)| x ^ k.get(i % 4).copied().unwrap_or(0)).collect(),
        None => data.to_vec(),
    };
    let f = Frame { fin: first & 0x80 != 0, rsv: (first >> 4) & 7, opcode: first & 0x0f, masked, payload };
    Some((f, pos + len))
}

// ---------------------------------------------------------------------------
// What the server did with an input
// ---------------------------------------------------------------------------

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
    /// Nothing happened within `IO_TIMEOUT`.
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
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                if buf.is_empty() {
                    return Outcome::Hang;
                }
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // reset: judge what arrived
        }
        if start.elapsed() > IO_TIMEOUT {
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

// ---------------------------------------------------------------------------
// A raw WebSocket connection
// ---------------------------------------------------------------------------

/// A WebSocket spoken by hand over a TCP stream: the handshake, then raw frames. It
/// answers nothing by itself.
pub struct RawWs {
    pub sock: TcpStream,
    /// Bytes read past the last parsed frame.
    buf: Vec<u8>,
    pub hello: Value,
    /// For `outcome`: answer the server's close frame (a polite peer) or stay silent
    /// (a peer that already sent its own close, or is gone).
    pub reply_to_close: bool,
}

impl RawWs {
    fn new(sock: TcpStream) -> RawWs {
        RawWs { sock, buf: Vec::new(), hello: Value::Null, reply_to_close: true }
    }

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
        let mut ws = RawWs::new(sock);
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

    /// Upgrade on `/ws` and check the 101, leaving the hello frame unread.
    pub fn connect(addr: SocketAddr) -> RawWs {
        let mut ws = RawWs::new(tcp(addr));
        ws.send(upgrade_request("/ws", "").as_bytes());
        let head = ws.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "handshake refused: {head}");
        ws
    }

    /// Upgrade on `path`; on the WebSocket path the server's hello is read too.
    pub fn open_path(addr: SocketAddr, path: &str) -> RawWs {
        let mut ws = RawWs::new(tcp(addr));
        send_all(&mut ws.sock, upgrade_request(path, "").as_bytes());
        let head = ws.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        if path.starts_with("/ws") {
            let hello = ws.next_frame().expect("hello frame");
            assert!(String::from_utf8_lossy(&hello.payload).contains("\"type\":\"hello\""), "{hello:?}");
        }
        ws
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 65536];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
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

    /// Send bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write frame");
    }

    /// Send one masked final frame.
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.sock.write_all(&masked_frame(true, opcode, payload)).expect("write frame");
    }

    pub fn send_text(&mut self, s: &str) {
        self.send_frame(OP_TEXT, s.as_bytes());
    }

    /// The next frame, reading with the socket's timeout: `Ok(None)` on EOF, `Err` on
    /// timeout or another error.
    fn try_frame(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if let Some((f, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some(f));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next frame from the server. `None` on EOF/reset; panics on timeout.
    pub fn read_frame(&mut self) -> Option<Frame> {
        match self.try_frame() {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("timed out waiting for a frame")
            }
            Err(_) => None,
        }
    }

    /// The next complete server frame, or None on EOF/reset/timeout.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.try_frame().ok().flatten()
    }

    /// Next frame (opcode, payload) before `deadline`; `None` on timeout; `Err` at EOF
    /// or on a socket error.
    pub fn frame(&mut self, deadline: Instant) -> Result<Option<(u8, Vec<u8>)>, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() && parse_frame(&self.buf).is_none() {
            return Ok(None);
        }
        self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("set_read_timeout");
        match self.try_frame() {
            Ok(Some(f)) => Ok(Some((f.opcode, f.payload))),
            Ok(None) => Err("eof".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e.to_string()),
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

    /// Judge what the server does next: a close frame (and a completed closing
    /// handshake), a drop, a text reply containing `want` (when given), or a hang.
    pub fn outcome(&mut self, want: Option<&str>) -> Outcome {
        let start = Instant::now();
        loop {
            if start.elapsed() > IO_TIMEOUT {
                return Outcome::Hang;
            }
            let Some(f) = self.next_frame() else {
                return if start.elapsed() >= IO_TIMEOUT { Outcome::Hang } else { Outcome::Dropped };
            };
            match f.opcode {
                OP_TEXT => {
                    let t = String::from_utf8_lossy(&f.payload).into_owned();
                    if let Some(w) = want {
                        if t.contains(w) {
                            return Outcome::Reply(t);
                        }
                    }
                }
                OP_CLOSE => return self.after_close(&f),
                OP_PING | OP_PONG => {}
                op => return Outcome::Other(format!("unexpected server frame opcode {op:#x}")),
            }
        }
    }

    /// The server sent a close frame: nothing may follow it; answer it (or not) and
    /// expect the server to end the TCP connection promptly.
    fn after_close(&mut self, f: &Frame) -> Outcome {
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
        if !f.fin || f.payload.len() > 125 {
            return Outcome::Other("malformed server close frame".into());
        }
        if self.reply_to_close {
            // Complete the closing handshake (may fail if the server already closed).
            let reply = masked_frame(true, OP_CLOSE, f.payload.get(..2).unwrap_or_default());
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
            Some(g) => Outcome::Other(format!("close {code}: frame with opcode {:#x} after close", g.opcode)),
        }
    }
}

/// A fresh connection on the WebSocket path gets `server.ping` answered.
pub fn ping_ok(addr: SocketAddr) -> Result<(), String> {
    let mut c = RawWs::open_path(addr, "/ws");
    send_all(&mut c.sock, &text_frame(r#"{"id":"probe","method":"server.ping"}"#));
    match c.outcome(Some("\"pong\":true")) {
        Outcome::Reply(_) => {
            send_all(&mut c.sock, &close_frame(1000, ""));
            Ok(())
        }
        other => Err(format!("server.ping on a new connection: {other:?}")),
    }
}
