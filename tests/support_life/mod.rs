//! Harness for the connection-lifecycle tests (`tests/lifecycle.rs`).
//!
//! * [`Srv`]: an in-process server on 127.0.0.1:0, run on its own thread, stopped on Drop.
//! * [`Client`]: a blocking tungstenite client (answers pings by itself when it reads).
//! * [`Raw`]: a hand-rolled WebSocket client over a plain `TcpStream` that never
//!   answers anything unless told to — for liveness and heartbeat tests.
//! * [`Proc`]: the real `dbx` binary on a free port (signals, RSS, RLIMIT tests).
//!
//! Everything waits with a deadline; nothing sleeps for a fixed time to "let the
//! server catch up" except where the test is about time passing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use dbx::config::Config;
use dbx::server::{Server, Shutdown};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// A config for these tests: memory only, anonymous on loopback, short timers.
pub fn cfg() -> Config {
    let mut c = Config::for_tests();
    c.ws_heartbeat_interval = 30.0;
    c.ws_timeout = 30.0;
    c
}

// ---------------------------------------------------------------------------
// In-process server

pub struct Srv {
    pub addr: SocketAddr,
    /// Kernel thread id of the reactor thread (for its CPU time).
    pub tid: i64,
    stop: Shutdown,
    join: Option<JoinHandle<()>>,
}

impl Srv {
    pub fn start(cfg: Config) -> Srv {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // The server is not Send (Rc inside): build it on its own thread.
        let join = std::thread::spawn(move || {
            let mut server = Server::with_listener(cfg, listener).unwrap();
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as i64;
            tx.send((tid, server.shutdown_handle())).unwrap();
            server.run().unwrap();
        });
        let (tid, stop) = rx.recv().unwrap();
        Srv { addr, tid, stop, join: Some(join) }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// CPU time (user + system) of the reactor thread, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        stat_ticks(&format!("/proc/self/task/{}/stat", self.tid))
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// utime + stime (fields 14 and 15) of a /proc stat file, in clock ticks.
pub fn stat_ticks(path: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap();
    // The command name (field 2) may contain spaces: split after its closing paren.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

// ---------------------------------------------------------------------------
// tungstenite client

pub struct Client {
    pub ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Unsolicited messages seen while waiting for replies.
    pub unsolicited: Vec<Value>,
}

pub fn try_connect(addr: SocketAddr, query: &str) -> Result<Client, String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let url = format!("ws://{addr}/ws{query}");
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, _)) => Ok(Client { ws, next_id: 1, unsolicited: Vec::new() }),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn connect(addr: SocketAddr) -> Client {
    try_connect(addr, "").unwrap()
}

impl Client {
    pub fn set_timeout(&mut self, d: Duration) {
        self.ws.get_mut().set_read_timeout(Some(d)).unwrap();
    }

    pub fn send_json(&mut self, v: &Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    /// Next text message as JSON (pings are answered by tungstenite meanwhile).
    pub fn next_json(&mut self) -> Result<Value, tungstenite::Error> {
        loop {
            match self.ws.read()? {
                Message::Text(t) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(f) => {
                    panic!("unexpected close: {f:?}")
                }
                _ => {}
            }
        }
    }

    /// Send one request and wait for its reply (unsolicited messages are kept aside).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_json(&json!({"id": id, "method": method, "params": params}));
        self.reply(id)
    }

    pub fn reply(&mut self, id: u64) -> Value {
        loop {
            let v = self.next_json().unwrap();
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            self.unsolicited.push(v);
        }
    }

    /// Read until a close frame arrives (or the connection ends); returns it.
    pub fn wait_close(&mut self, within: Duration) -> Option<CloseFrame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no close within {within:?}");
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Close(f)) => return f,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Raw WebSocket client: answers nothing by itself.

pub const OP_TEXT: u8 = 1;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

pub struct Raw {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        sock.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = sock.read(&mut chunk).unwrap();
            assert!(n > 0, "EOF during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "handshake refused: {head}");
        buf.drain(..end);
        Raw { sock, buf }
    }

    /// Next frame (opcode, payload) before `deadline`; `None` on timeout; `Err` at EOF
    /// or on a socket error.
    pub fn frame(&mut self, deadline: Instant) -> Result<Option<(u8, Vec<u8>)>, String> {
        loop {
            if let Some((op, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some((op, payload)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Send one masked frame.
    pub fn send(&mut self, op: u8, payload: &[u8]) {
        self.sock.write_all(&mask_frame(op, payload)).unwrap();
    }

    pub fn send_text(&mut self, s: &str) {
        self.send(OP_TEXT, s.as_bytes());
    }
}

/// A masked client frame.
pub fn mask_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | op];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 65535 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let key = [0x11u8, 0x22, 0x33, 0x44];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Parse one unmasked server frame at the start of `b`: (opcode, payload, bytes used).
fn parse_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0f;
    let (len, hdr) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < hdr + len {
        return None;
    }
    Some((op, b[hdr..hdr + len].to_vec(), hdr + len))
}

/// The close code of a close frame payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

// ---------------------------------------------------------------------------
// Plain HTTP

/// Send `req`, read the whole answer (the server closes after it): (status, body).
pub fn http(addr: SocketAddr, req: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Poll `f` until it returns `Some` or `within` passes.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The real binary

pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Proc {
    /// Start `dbx` (optionally under a wrapper such as `prlimit`), memory only, on a free
    /// port, and wait until it accepts connections.
    pub fn spawn(wrapper: &[&str], env: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let bin = env!("CARGO_BIN_EXE_dbx");
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("DBX_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DBX_PORT", port.to_string())
            .env("DBX_HOST", "127.0.0.1")
            .env("DBX_PERSIST", "false")
            .env("DBX_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = eventually(Duration::from_secs(10), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("dbx exited early ({st}): {}", log.lock().unwrap());
            }
            let (status, _) = http(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            (status == 200).then_some(())
        });
        assert!(up.is_some(), "dbx did not come up: {}", log.lock().unwrap());
        Proc { child, addr, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn cpu_ticks(&self) -> u64 {
        stat_ticks(&format!("/proc/{}/stat", self.pid()))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait for the exit status within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        eventually(within, || child.try_wait().unwrap())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
