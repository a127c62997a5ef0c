//! Harness for the real-time end-to-end tests (`tests/realtime.rs`): an in-process
//! server on 127.0.0.1:0 and a blocking WebSocket client that separates replies from
//! unsolicited messages (events, keyspace changes).
//!
//! Named `support_rt` so it does not clash with the other test harnesses.
#![allow(dead_code)]

use dbx::config::Config;
use dbx::server::{Server, Shutdown};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// How long a single wait for a reply may take before the test fails instead of hanging.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Defaults for these tests: memory only, no rate limit (some tests send thousands
/// of requests on one connection), no credential.
pub fn config() -> Config {
    let mut c = Config::for_tests();
    c.persist = false;
    c.ws_rate_limit = 0;
    c
}

pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
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

    /// An anonymous client (allowed: no credential configured, loopback).
    pub fn client(&self) -> Client {
        Client::connect(self.addr, "", &[]).expect("connect")
    }

    pub fn client_key(&self, api_key: &str) -> Client {
        Client::connect(self.addr, &format!("api_key={api_key}"), &[]).expect("connect with api key")
    }

    pub fn client_bearer(&self, token: &str) -> Client {
        Client::connect(self.addr, "", &[("Authorization", &format!("Bearer {token}"))]).expect("connect with bearer")
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

/// Open a TCP connection to the server (for tests that tune the socket before the
/// WebSocket handshake).
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("tcp connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub hello: Value,
    next_id: u64,
    /// Unsolicited messages (raw text) read while waiting for replies; heartbeats are
    /// dropped.
    queue: VecDeque<String>,
}

impl Client {
    pub fn connect(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
        Client::over(tcp(addr), addr, query, headers)
    }

    /// WebSocket handshake over an already connected socket; reads the hello.
    pub fn over(
        stream: TcpStream,
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let url = if query.is_empty() { format!("ws://{addr}/ws") } else { format!("ws://{addr}/ws?{query}") };
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).expect("write timeout");
        let (ws, _resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::Error::other("handshake interrupted"))
            }
        })?;
        let mut c = Client { ws, hello: Value::Null, next_id: 1, queue: VecDeque::new() };
        let hello = c.read_raw(REPLY_TIMEOUT).expect("hello");
        c.hello = serde_json::from_str(&hello).expect("hello json");
        assert_eq!(c.hello["type"], "hello", "first message is the hello: {hello}");
        Ok(c)
    }

    /// Read one text message (raw), waiting at most `timeout`. None on timeout.
    /// Panics if the connection ends.
    pub fn read_raw(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws.get_ref().set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("set timeout");
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(t.as_str().to_string()),
                Ok(Message::Close(f)) => panic!("connection closed by the server: {f:?}"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    pub fn send_json(&mut self, v: &Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    /// Queue a request without waiting (flushes). Returns its id.
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_json(&json!({"id": id, "method": method, "params": params}));
        id
    }

    /// Queue a request without flushing (for pipelining many); call `flush` after.
    pub fn write(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let v = json!({"id": id, "method": method, "params": params});
        self.ws.write(Message::text(v.to_string())).expect("write");
        id
    }

    pub fn flush(&mut self) {
        self.ws.flush().expect("flush");
    }

    /// Wait for the reply with `id`, buffering the unsolicited messages that come first.
    pub fn reply(&mut self, id: u64) -> Value {
        self.reply_to(&json!(id))
    }

    /// Send a raw request text whose id is `id`; return the whole reply.
    pub fn call_raw(&mut self, text: &str, id: Value) -> Value {
        self.ws.send(Message::text(text)).expect("send");
        self.reply_to(&id)
    }

    fn reply_to(&mut self, id: &Value) -> Value {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw =
                self.read_raw(left).unwrap_or_else(|| panic!("no reply to request {id} within {REPLY_TIMEOUT:?}"));
            let v: Value = serde_json::from_str(&raw).expect("json");
            if v.get("id") == Some(id) {
                return v;
            }
            if v.get("type").is_some() && v.get("id").is_none() {
                if v["type"] != "heartbeat" {
                    self.queue.push_back(raw);
                }
                continue;
            }
            panic!("unexpected message while waiting for reply {id}: {raw}");
        }
    }

    /// Send a request and return the whole reply (result or error).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.reply(id)
    }

    /// Send a request and return its result; panics on an error reply.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        match r.get("result") {
            Some(v) => v.clone(),
            None => panic!("{method} {params} failed: {r}"),
        }
    }

    /// The error code of a call that must fail.
    pub fn err(&mut self, method: &str, params: Value) -> String {
        let r = self.call(method, params.clone());
        match r["error"]["code"].as_str() {
            Some(c) => c.to_string(),
            None => panic!("{method} {params} should have failed: {r}"),
        }
    }

    /// Unsolicited messages already buffered.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Next unsolicited message (raw text), waiting at most `timeout`.
    pub fn next_event_raw(&mut self, timeout: Duration) -> Option<String> {
        if let Some(e) = self.queue.pop_front() {
            return Some(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self.read_raw(left)?;
            let v: Value = serde_json::from_str(&raw).expect("json");
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
        self.next_event_raw(timeout).map(|r| serde_json::from_str(&r).expect("json"))
    }

    /// The next event, which must arrive within a generous deadline.
    pub fn event(&mut self) -> Value {
        self.next_event(REPLY_TIMEOUT).expect("an event within the deadline")
    }

    /// Assert that no unsolicited message arrives within `wait`.
    pub fn no_event(&mut self, wait: Duration) {
        if let Some(e) = self.next_event_raw(wait) {
            panic!("unexpected event: {e}");
        }
    }

    /// Close politely (best effort).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// `(key, event, rev)` of a keyspace message, for compact comparisons.
pub fn ks(v: &Value) -> (Option<String>, String, u64) {
    assert_eq!(v["type"], "keyspace", "not a keyspace message: {v}");
    assert!(v["timestamp"].is_string(), "keyspace message without timestamp: {v}");
    (
        v["key"].as_str().map(str::to_string),
        v["event"].as_str().expect("event").to_string(),
        v["rev"].as_u64().expect("rev"),
    )
}

pub fn k(key: &str, event: &str, rev: u64) -> (Option<String>, String, u64) {
    (Some(key.to_string()), event.to_string(), rev)
}
