//! A real `redis-server` (7.0+) on a free 127.0.0.1 port with its own temp dir, for the
//! gateway tests (`DBX_BACKEND=redis://…`). Missing redis-server is a failure that says
//! so — never a silent skip (CI installs it: .ci/run).

use super::process::{free_port, TempDir};
use super::server::TestServer;
use dbx::config::{parse_backend, Config};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

fn redis_binary() -> String {
    let b = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let ok = Command::new(&b)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "redis-server not found ({b}): the gateway tests need Redis 7+ (apt-get install redis-server; .ci/run does)"
    );
    b
}

impl Redis {
    /// Start a Redis with no persistence, `noeviction`, on a free port.
    pub fn start() -> Redis {
        Redis::start_with(&["--maxmemory-policy", "noeviction"])
    }

    /// A Redis on a given port (a gateway was told about it before it existed).
    pub fn start_on(port: u16) -> Redis {
        let mut r = Redis { port, dir: TempDir::new("redis"), child: None, extra: vec![] };
        r.spawn();
        r
    }

    /// Start with extra `--name value` arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: TempDir::new("redis"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = redis_binary();
        let mut c = Command::new(bin);
        c.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--protected-mode", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(c.spawn().expect("spawn redis-server"));
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.cmd(&["PING"]).is_ok_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on port {} within 10 s", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL Redis (its data goes unless persisted).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send `sig` (SIGSTOP / SIGCONT: a Redis that stops answering).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("redis running").id() as i32;
        // SAFETY: a signal to our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Start Redis again on the same port and dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// One command, its raw RESP answer (first line, or the whole of a short reply).
    pub fn cmd(&self, args: &[&str]) -> std::io::Result<String> {
        raw_cmd(self.port, args)
    }

    /// A gateway (in-process server) on this Redis; `f` may change the config further.
    pub fn gateway(&self, f: impl FnOnce(&mut Config)) -> TestServer {
        let url = self.url();
        TestServer::with(|c| {
            c.backend = parse_backend(&url).expect("backend url");
            c.ws_rate_limit = 0;
            f(c);
        })
        .timeout(Duration::from_secs(10))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until a gateway answers requests (it connects to Redis after start).
/// (`/health` is 200 once the backend serves: no credential needed.)
pub fn wait_ready(srv: &TestServer) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) =
            super::raw::http_status(srv.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if status == 200 {
            return;
        }
        assert!(Instant::now() < end, "gateway not ready within 10 s: {status} {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `DBX_TEST_BACKEND=redis`: every `TestServer` is a gateway on its own Redis.
pub fn suites_on_redis() -> bool {
    std::env::var("DBX_TEST_BACKEND").is_ok_and(|v| v == "redis")
}

/// A Redis Sentinel (`redis-server <conf> --sentinel`) monitoring `master` at
/// 127.0.0.1:`primary` with quorum 1 and short timeouts (failover in a few seconds).
pub struct Sentinel {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    /// Its `requirepass` (also sent by `cmd` / `cmd_all`).
    password: Option<String>,
}

/// How a test sentinel is set up (`Sentinel::start_opts`).
pub struct SentinelOpts<'a> {
    pub port: Option<u16>,
    pub quorum: u32,
    /// The sentinel's own `requirepass`.
    pub password: Option<&'a str>,
    /// The primary's password (`sentinel auth-pass`).
    pub primary_password: Option<&'a str>,
}

impl Default for SentinelOpts<'_> {
    fn default() -> Self {
        SentinelOpts { port: None, quorum: 1, password: None, primary_password: None }
    }
}

impl Sentinel {
    pub fn start(master: &str, primary: u16) -> Sentinel {
        Sentinel::start_opts(master, primary, SentinelOpts::default())
    }

    pub fn start_opts(master: &str, primary: u16, o: SentinelOpts) -> Sentinel {
        let bin = redis_binary();
        let port = o.port.unwrap_or_else(free_port);
        let dir = TempDir::new("sentinel");
        let conf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {master} 127.0.0.1 {primary} {}\n\
             sentinel down-after-milliseconds {master} 400\nsentinel failover-timeout {master} 2000\n\
             sentinel parallel-syncs {master} 1\n",
            dir.path().display(),
            o.quorum
        );
        if let Some(p) = o.password {
            // Sentinels with a requirepass use it with each other too.
            text.push_str(&format!("requirepass {p}\n"));
        }
        if let Some(p) = o.primary_password {
            text.push_str(&format!("sentinel auth-pass {master} {p}\n"));
        }
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new(bin)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let s = Sentinel { port, dir, child: Some(child), password: o.password.map(str::to_string) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if s.cmd(&["SENTINEL", "get-master-addr-by-name", master]).is_ok_and(|r| r.starts_with('*')) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sentinel did not answer on port {port}");
    }

    pub fn cmd(&self, args: &[&str]) -> std::io::Result<String> {
        raw_cmd_as(self.port, self.password.as_deref(), args)
    }

    /// Send `sig` (SIGSTOP / SIGCONT: a sentinel that accepts connections and never
    /// answers).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("sentinel running").id() as i32;
        // SAFETY: a signal to our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGKILL the sentinel.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The whole RESP answer as text (arrays included), for polling.
    pub fn cmd_all(&self, args: &[&str]) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return String::new() };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if let Some(p) = &self.password {
            let _ = s.write_all(format!("AUTH {p}\r\n").as_bytes());
            let mut ok = [0u8; 5];
            let _ = s.read_exact(&mut ok); // "+OK\r\n"
        }
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let _ = s.write_all(req.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = vec![0; 65536];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One command, its raw RESP answer (first line, or the whole of a short reply).
fn raw_cmd(port: u16, args: &[&str]) -> std::io::Result<String> {
    raw_cmd_as(port, None, args)
}

/// `raw_cmd` after `AUTH password` (a server with a requirepass).
pub fn raw_cmd_as(port: u16, password: Option<&str>, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = String::new();
    if let Some(p) = password {
        req.push_str(&format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()));
    }
    req.push_str(&format!("*{}\r\n", args.len()));
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if password.is_some() {
        r.read_line(&mut line)?;
        if !line.starts_with("+OK") {
            return Ok(line);
        }
        line.clear();
    }
    r.read_line(&mut line)?;
    if let Some(n) = line.strip_prefix('$').and_then(|n| n.trim().parse::<usize>().ok()) {
        let mut body = vec![0; n + 2];
        r.read_exact(&mut body)?;
        return Ok(String::from_utf8_lossy(&body[..n]).into_owned());
    }
    Ok(line)
}
