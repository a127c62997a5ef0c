//! Harness for the persistence tests (`tests/persistence.rs`): the real `dbx` binary
//! as a child process on a free 127.0.0.1 port with its own data directory, a small
//! blocking WebSocket client, raw HTTP GET, and a temporary directory.
//!
//! Named `support_persist` so it does not clash with the other test harnesses.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "dbx-persist-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port: bind 127.0.0.1:0 and release it.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The `dbx` binary running as a child process.
pub struct Dbx {
    pub child: Option<Child>,
    pub port: u16,
    pub stderr_path: PathBuf,
}

/// How to start one server.
#[derive(Clone)]
pub struct Opts {
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl Opts {
    pub fn new(data_dir: &Path) -> Opts {
        Opts { data_dir: data_dir.to_path_buf(), env: Vec::new(), args: Vec::new() }
    }

    pub fn env(mut self, k: &str, v: &str) -> Opts {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn arg(mut self, a: &str) -> Opts {
        self.args.push(a.into());
        self
    }
}

impl Dbx {
    /// Spawn without waiting for it to listen.
    pub fn spawn(o: &Opts) -> Dbx {
        let port = free_port();
        let stderr_path = std::env::temp_dir().join(format!("dbx-persist-stderr-{}-{port}.log", std::process::id()));
        let err = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbx"));
        cmd.env_clear()
            .env("DBX_HOST", "127.0.0.1")
            .env("DBX_PORT", port.to_string())
            .env("DBX_DATA_DIR", &o.data_dir)
            .env("DBX_WS_RATE_LIMIT", "0")
            .env("DBX_LOG", "info");
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        cmd.args(&o.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(err));
        let child = cmd.spawn().expect("spawn dbx");
        Dbx { child: Some(child), port, stderr_path }
    }

    /// Spawn and wait until it accepts connections (or panic with its stderr).
    pub fn start(o: &Opts) -> Dbx {
        let mut d = Dbx::spawn(o);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // "listening on" is logged once the data is loaded.
            if d.stderr().contains("listening on") && TcpStream::connect(("127.0.0.1", d.port)).is_ok() {
                return d;
            }
            if let Some(st) = d.try_wait() {
                panic!("dbx exited early ({st}):\n{}", d.stderr());
            }
            assert!(Instant::now() < deadline, "dbx did not listen:\n{}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for an exit (start-up refusal); None if still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// SIGKILL: no flushing, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "dbx did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a process that aborts by itself (DBX_TEST_CRASH_AT).
    pub fn wait_crash(&mut self, within: Duration) -> ExitStatus {
        let st =
            self.wait_exit(within).unwrap_or_else(|| panic!("dbx did not crash within {within:?}:\n{}", self.stderr()));
        self.child = None;
        st
    }

    pub fn health(&self) -> (u16, Value) {
        http_get(self.port, "/health")
    }
}

impl Drop for Dbx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// GET `path` over plain HTTP: (status, JSON body).
pub fn http_get(port: u16, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad HTTP answer: {text}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A blocking WebSocket client.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    next_id: u64,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/ws")).expect("ws connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            s.set_nodelay(true).unwrap();
        }
        let mut c = Client { ws, hello: Value::Null, next_id: 1 };
        c.hello = c.recv().expect("hello");
        assert_eq!(c.hello["type"], "hello");
        c
    }

    pub fn set_timeout(&mut self, d: Duration) {
        if let MaybeTlsStream::Plain(s) = self.ws.get_ref() {
            s.set_read_timeout(Some(d)).unwrap();
        }
    }

    /// The next text message (None on timeout or close).
    pub fn recv(&mut self) -> Option<Value> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON")),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Send a request without waiting; returns its id.
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string())).expect("send");
        id
    }

    /// The reply to `id` (unsolicited messages skipped); None on timeout.
    pub fn reply(&mut self, id: u64) -> Option<Value> {
        loop {
            let m = self.recv()?;
            if m["id"] == json!(id) {
                return Some(m);
            }
        }
    }

    /// Call and return the whole reply (`result` or `error`).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.reply(id).unwrap_or_else(|| panic!("no reply to {method}"))
    }

    /// Call and return `result`, panicking on an error.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        assert!(r.get("error").is_none(), "{method} {params} failed: {r}");
        r["result"].clone()
    }
}

/// Poll `f` until it returns Some or `within` passes.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names of the files in `dir`, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
