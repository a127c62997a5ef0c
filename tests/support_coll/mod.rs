//! A small harness for the collection tests: a real server on 127.0.0.1:0 in a thread,
//! and a blocking WebSocket client. (Kept apart from `tests/common` on purpose; the two
//! can be merged later.)
#![allow(dead_code)]

use dbx::config::Config;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<dbx::server::Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// Start with `Config::for_tests()` (rate limit off) adjusted by `f`.
    pub fn with(f: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = Config::for_tests();
        cfg.ws_rate_limit = 0;
        f(&mut cfg);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel();
        // The server holds non-Send state: build it on its own thread.
        let thread = std::thread::spawn(move || {
            let mut srv = dbx::server::Server::with_listener(cfg, listener).expect("server");
            tx.send(srv.shutdown_handle()).expect("send handle");
            srv.run().expect("run");
        });
        let shutdown = rx.recv_timeout(Duration::from_secs(10)).expect("server started");
        TestServer { addr, shutdown: Some(shutdown), thread: Some(thread) }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.trigger();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Client {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    pub hello: Value,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("handshake");
        let mut c = Client { ws, next_id: 0, hello: Value::Null };
        c.hello = c.read_json();
        assert_eq!(c.hello["type"], "hello", "first message is the hello: {}", c.hello);
        c
    }

    fn read_json(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
                Message::Close(f) => panic!("connection closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// Send a request and return the whole response (skipping unsolicited messages).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let req = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(req.to_string())).expect("send");
        loop {
            let v = self.read_json();
            if v.get("type").is_some() {
                continue;
            }
            assert_eq!(v["id"], id, "responses come in order: {v}");
            return v;
        }
    }

    /// The `result` of a call that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params.clone());
        assert!(v.get("error").is_none(), "{method} {params} failed: {v}");
        v["result"].clone()
    }

    /// The error code of a call that must fail.
    pub fn err(&mut self, method: &str, params: Value) -> String {
        let v = self.call(method, params.clone());
        match v["error"]["code"].as_str() {
            Some(c) => c.to_string(),
            None => panic!("{method} {params} should fail: {v}"),
        }
    }
}

/// A JSON array of strings, sorted (for comparing unordered results).
pub fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        v.as_array().expect("array").iter().map(|x| x.as_str().expect("string").to_string()).collect();
    out.sort();
    out
}

/// One key of every type: `t:string`, `t:hash`, `t:set`, `t:zset`, `t:list`.
pub const TYPED_KEYS: [(&str, &str); 5] =
    [("string", "t:string"), ("hash", "t:hash"), ("set", "t:set"), ("zset", "t:zset"), ("list", "t:list")];

pub fn seed_all_types(c: &mut Client) {
    c.ok("string.set", json!({"key": "t:string", "value": "v"}));
    c.ok("hash.set", json!({"key": "t:hash", "field": "f", "value": "v"}));
    c.ok("set.add", json!({"key": "t:set", "member": "m"}));
    c.ok("zset.add", json!({"key": "t:zset", "member": "m", "score": 1}));
    c.ok("list.push", json!({"key": "t:list", "value": "v"}));
    for (ty, key) in TYPED_KEYS {
        assert_eq!(c.ok("key.type", json!({"key": key}))["type"], ty);
    }
}

/// Every method in `calls` (method, params without `key`) answers `wrong_type` on every
/// key that is not of type `own`, and leaves that key as it was.
pub fn assert_wrong_type(c: &mut Client, own: &str, calls: &[(&str, Value)]) {
    seed_all_types(c);
    for (ty, key) in TYPED_KEYS {
        if ty == own {
            continue;
        }
        for (method, params) in calls {
            let mut p = params.clone();
            p["key"] = json!(key);
            if p.get("keys").is_some() {
                p["keys"] = json!([key]);
            }
            assert_eq!(c.err(method, p.clone()), "wrong_type", "{method} {p} on a {ty}");
            assert_eq!(c.ok("key.type", json!({"key": key}))["type"], ty, "{method} left {key} alone");
        }
    }
}
