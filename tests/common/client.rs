//! A blocking tungstenite client: requests with ids, replies matched to them,
//! unsolicited messages (events, keyspace changes) queued for `next_event`.

use super::server::{ws_target, TestServer};
use super::{Value, IO_TIMEOUT};
use serde_json::json;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// A TCP connection with read/write timeouts and no Nagle delay.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("tcp connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set_read_timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("set_write_timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
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

/// A blocking WebSocket client. `hello` is the server's first message.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub hello: Value,
    next_id: u64,
    /// How long one wait for a message may take.
    timeout: Duration,
    /// Unsolicited messages (raw text) read while waiting for replies; heartbeats are
    /// dropped.
    queue: VecDeque<String>,
}

impl Client {
    /// Handshake on `target` (path and query) with extra request headers, reading with
    /// `timeout`; reads the hello. Also returns the HTTP 101 response.
    pub fn open(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(Client, Response), tungstenite::Error> {
        Client::over(tcp(addr), addr, target, headers, timeout)
    }

    /// As [`Client::open`], over an already connected socket.
    pub fn over(
        stream: TcpStream,
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(Client, Response), tungstenite::Error> {
        let mut req = format!("ws://{addr}{target}").into_client_request()?;
        for (name, value) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                tungstenite::http::HeaderValue::from_str(value).expect("header value"),
            );
        }
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // `tungstenite::connect` would open the socket itself, without a read timeout
        // during the handshake; `client` runs the same handshake on our socket.
        let (ws, resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::Io(ErrorKind::WouldBlock.into()),
        })?;
        let mut c = Client { ws, hello: Value::Null, next_id: 1, timeout, queue: VecDeque::new() };
        let hello = c.next_json()?;
        assert_eq!(hello["type"], "hello", "first message must be hello: {hello}");
        c.hello = hello;
        Ok((c, resp))
    }

    /// `/ws?query` with extra headers, `IO_TIMEOUT`; reads the hello.
    pub fn connect(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
        Client::connect_full(addr, query, headers).map(|(c, _)| c)
    }

    /// As [`Client::connect`], also returning the HTTP 101 response.
    pub fn connect_full(
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Client, Response), tungstenite::Error> {
        Client::open(addr, &ws_target(query), headers, IO_TIMEOUT)
    }

    /// The read timeout of every later wait.
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d;
        self.ws.get_mut().set_read_timeout(Some(d)).expect("set_read_timeout");
    }

    // -- reading ------------------------------------------------------------------

    /// One text message (raw), waiting at most `timeout`: `Ok(None)` on timeout,
    /// `Err` when the connection ends (a close frame is an error too).
    fn read_text(&mut self, timeout: Duration) -> Result<Option<String>, tungstenite::Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws.get_mut().set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(Some(t.as_str().to_string())),
                Ok(Message::Close(f)) => {
                    return Err(tungstenite::Error::Io(std::io::Error::other(format!("closed by server: {f:?}"))))
                }
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => return Ok(None),
                // A signal reached this thread (the gateway tests stop and kill child
                // processes): read again, as tungstenite resumes where it stopped.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn parse(raw: &str) -> Value {
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("server sent bad JSON ({e}): {raw}"))
    }

    /// The next text message as JSON, whatever it is (control frames skipped).
    pub fn next_json(&mut self) -> Result<Value, tungstenite::Error> {
        match self.read_text(self.timeout)? {
            Some(t) => Ok(Client::parse(&t)),
            None => Err(tungstenite::Error::Io(ErrorKind::TimedOut.into())),
        }
    }

    /// The next JSON text message, whatever it is; panics on timeout or close.
    pub fn recv_json_any(&mut self) -> Value {
        self.next_json().unwrap_or_else(|e| panic!("read (timed out or connection lost): {e}"))
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

    /// One raw read (any message, or the close/I/O error).
    pub fn try_recv(&mut self) -> Result<Message, tungstenite::Error> {
        self.ws.read()
    }

    // -- requests -----------------------------------------------------------------

    fn request(&mut self, method: &str, params: Value) -> (u64, String) {
        let id = self.next_id;
        self.next_id += 1;
        (id, json!({"id": id, "method": method, "params": params}).to_string())
    }

    /// Send a request without waiting (flushed). Returns its id.
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        let (id, text) = self.request(method, params);
        self.send_raw(&text);
        id
    }

    /// Queue a request without flushing (for pipelining many); call `flush` after.
    pub fn write(&mut self, method: &str, params: Value) -> u64 {
        let (id, text) = self.request(method, params);
        self.write_raw(&text);
        id
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

    /// Read until the reply whose `id` equals `id`; unsolicited messages (with a `type`,
    /// no `id`) are queued, heartbeats dropped; any other reply is a test failure.
    pub fn recv_reply(&mut self, id: &Value) -> Value {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self
                .read_text(left)
                .unwrap_or_else(|e| panic!("reply to request {id}: {e}"))
                .unwrap_or_else(|| panic!("no reply to request {id} within {:?}", self.timeout));
            let v = Client::parse(&raw);
            if v.get("id") == Some(id) {
                return v;
            }
            if v.get("type").is_some() && v.get("id").is_none() {
                if v["type"] != "heartbeat" {
                    self.queue.push_back(raw);
                }
                continue;
            }
            panic!("reply out of order (waiting for {id}): {raw}");
        }
    }

    /// The reply to request `id` (see `recv_reply`).
    pub fn reply(&mut self, id: u64) -> Value {
        self.recv_reply(&json!(id))
    }

    /// The reply to request `id`, skipping everything else; None on timeout or close.
    pub fn try_reply(&mut self, id: u64) -> Option<Value> {
        loop {
            let v = Client::parse(&self.read_text(self.timeout).ok()??);
            if v["id"] == json!(id) {
                return Some(v);
            }
        }
    }

    /// Send `{"id":N,"method":..,"params":..}` and return the whole reply.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.reply(id)
    }

    /// Send a raw request text whose id is `id`; return the whole reply.
    pub fn call_raw(&mut self, text: &str, id: Value) -> Value {
        self.send_raw(text);
        self.recv_reply(&id)
    }

    /// `string.get`'s value, or Null when the call fails (missing key, wrong type).
    pub fn string_value(&mut self, key: &str) -> Value {
        let r = self.call("string.get", serde_json::json!({ "key": key }));
        if r.get("error").is_some() {
            Value::Null
        } else {
            r["result"]["value"].clone()
        }
    }

    /// `call` and return `result`; panics (with the reply) on an error.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        match r.get("result") {
            Some(v) if r.get("error").is_none() => v.clone(),
            _ => panic!("{method} {params} failed: {r}"),
        }
    }

    /// `call` and return `error`; panics (with the reply) on success.
    pub fn err(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        match r.get("error") {
            Some(e) if r.get("result").is_none() => e.clone(),
            _ => panic!("{method} {params} should fail: {r}"),
        }
    }

    /// The error code of a call that must fail.
    pub fn err_code(&mut self, method: &str, params: Value) -> String {
        let e = self.err(method, params.clone());
        e["code"].as_str().unwrap_or_else(|| panic!("{method} {params}: error without a code: {e}")).to_string()
    }

    /// The current global revision (from `server.info`).
    pub fn rev(&mut self) -> u64 {
        self.ok("server.info", json!({}))["rev"].as_u64().expect("rev")
    }

    /// Whether the connection still answers a ping.
    pub fn alive(&mut self) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        if self.ws.send(Message::text(json!({"id": id, "method": "server.ping"}).to_string())).is_err() {
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

    // -- unsolicited messages -----------------------------------------------------

    /// Unsolicited messages already buffered.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Next unsolicited message (raw text, heartbeats skipped), waiting at most
    /// `timeout`; queued ones first. A reply arriving meanwhile is a test failure.
    pub fn next_event_raw(&mut self, timeout: Duration) -> Option<String> {
        if let Some(e) = self.queue.pop_front() {
            return Some(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self.read_text(left).unwrap_or_else(|e| panic!("read failed: {e}"))?;
            let v = Client::parse(&raw);
            if v.get("id").is_some() {
                panic!("a reply arrived while waiting for an event: {raw}");
            }
            if v["type"] == "heartbeat" {
                continue;
            }
            return Some(raw);
        }
    }

    /// Next unsolicited message (heartbeats skipped), waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        self.next_event_raw(timeout).map(|r| Client::parse(&r))
    }

    /// The next event, which must arrive within the client's timeout.
    pub fn event(&mut self) -> Value {
        self.next_event(self.timeout).expect("an event within the deadline")
    }

    /// Assert that no unsolicited message arrives within `wait`.
    pub fn no_event(&mut self, wait: Duration) {
        if let Some(e) = self.next_event_raw(wait) {
            panic!("unexpected event: {e}");
        }
    }

    // -- closing ------------------------------------------------------------------

    /// Close politely (best effort).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// Read until a close frame, the end of the connection or `deadline`.
    fn close_frame_until(&mut self, deadline: Instant) -> Result<Option<CloseFrame>, Ended> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Ended::StillOpen);
            }
            let _ = self.ws.get_mut().set_read_timeout(Some(left.min(Duration::from_millis(500))));
            match self.ws.read() {
                Ok(Message::Close(f)) => return Ok(f),
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(Ended::NoFrame(e.to_string())),
            }
        }
    }

    /// Reads until the server closes the connection or `deadline` passes.
    pub fn wait_close(&mut self, deadline: Instant) -> Ended {
        match self.close_frame_until(deadline) {
            Ok(Some(f)) => Ended::Close(u16::from(f.code)),
            Ok(None) => Ended::Close(u16::from(CloseCode::Status)),
            Err(e) => e,
        }
    }

    /// The close frame the server sends within `within` (None if the connection ended
    /// without one, or the frame had no payload); panics if none comes in time.
    pub fn read_close(&mut self, within: Duration) -> Option<CloseFrame> {
        match self.close_frame_until(Instant::now() + within) {
            Ok(f) => f,
            Err(Ended::StillOpen) => panic!("no close within {within:?}"),
            Err(_) => None,
        }
    }
}

/// Connect to `/ws` of `server` and consume the hello message (in `client.hello`).
pub fn connect(server: &TestServer) -> Client {
    server.client()
}

/// Connect to `path` (with an optional query) and consume the hello message.
pub fn connect_path(addr: SocketAddr, path: &str) -> Client {
    try_connect_path(addr, path).unwrap_or_else(|e| panic!("connect {path}: {e}"))
}

/// Like `connect_path`, but the handshake error is returned.
pub fn try_connect_path(addr: SocketAddr, path: &str) -> Result<Client, tungstenite::Error> {
    Client::open(addr, path, &[], IO_TIMEOUT).map(|(c, _)| c)
}
