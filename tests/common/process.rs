//! The real `dbx` binary as a child process on a free 127.0.0.1 port: memory only or
//! with a data directory, stderr captured to a file, SIGTERM/SIGKILL, RSS and CPU
//! time from /proc.

use super::client::Client;
use super::raw::http_status;
use super::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Read timeout of the clients made by [`Dbx::client`].
pub const PROCESS_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A free port: bind 127.0.0.1:0 and release it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "dbx-test-{tag}-{}-{}",
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

/// How to start one server. The environment starts clean of `DBX_*` variables, then
/// `DBX_HOST=127.0.0.1`, `DBX_PORT=<free port>`, `DBX_LOG=info` and either
/// `DBX_DATA_DIR` (with `DBX_WS_RATE_LIMIT=0`) or `DBX_PERSIST=false`; `env` comes last.
#[derive(Clone)]
pub struct Opts {
    pub data_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// A command the binary runs under (such as `prlimit --nofile=64 --`).
    pub wrapper: Vec<String>,
    /// How long `Dbx::start` waits for the server to listen.
    pub start_within: Duration,
}

impl Opts {
    /// Persistent, in `data_dir`, without a rate limit.
    pub fn new(data_dir: &Path) -> Opts {
        Opts {
            data_dir: Some(data_dir.to_path_buf()),
            env: vec![("DBX_WS_RATE_LIMIT".into(), "0".into())],
            args: Vec::new(),
            wrapper: Vec::new(),
            start_within: Duration::from_secs(30),
        }
    }

    /// Memory only (`DBX_PERSIST=false`).
    pub fn memory() -> Opts {
        Opts { data_dir: None, env: Vec::new(), ..Opts::new(Path::new("")) }
    }

    pub fn env(mut self, k: &str, v: &str) -> Opts {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn envs(mut self, env: &[(&str, &str)]) -> Opts {
        self.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub fn arg(mut self, a: &str) -> Opts {
        self.args.push(a.into());
        self
    }

    pub fn wrapper(mut self, w: &[&str]) -> Opts {
        self.wrapper = w.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn start_within(mut self, d: Duration) -> Opts {
        self.start_within = d;
        self
    }
}

/// The `dbx` binary running as a child process; killed on drop.
pub struct Dbx {
    pub child: Option<Child>,
    pub port: u16,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
}

impl Dbx {
    /// Spawn without waiting for it to listen.
    pub fn spawn(o: &Opts) -> Dbx {
        let port = o
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "DBX_PORT")
            .map(|(_, v)| v.parse().expect("DBX_PORT"))
            .unwrap_or_else(free_port);
        let stderr_path = std::env::temp_dir().join(format!("dbx-test-stderr-{}-{port}.log", std::process::id()));
        let err = std::fs::File::create(&stderr_path).expect("stderr file");
        let bin = env!("CARGO_BIN_EXE_dbx");
        let mut cmd = match o.wrapper.split_first() {
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
        cmd.env("DBX_HOST", "127.0.0.1").env("DBX_PORT", port.to_string()).env("DBX_LOG", "info");
        match &o.data_dir {
            Some(d) => cmd.env("DBX_DATA_DIR", d),
            None => cmd.env("DBX_PERSIST", "false"),
        };
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        cmd.args(&o.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(err));
        let child = cmd.spawn().expect("spawn dbx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Dbx { child: Some(child), port, addr, stderr_path }
    }

    /// Spawn and wait until it accepts connections (or panic with its stderr).
    pub fn start(o: &Opts) -> Dbx {
        let mut d = Dbx::spawn(o);
        let deadline = Instant::now() + o.start_within;
        loop {
            // "listening on" is logged once the data is loaded.
            if d.stderr().contains("listening on") && TcpStream::connect(d.addr).is_ok() {
                return d;
            }
            if let Some(st) = d.try_wait() {
                panic!("dbx exited early ({st}):\n{}", d.stderr());
            }
            assert!(Instant::now() < deadline, "dbx did not listen:\n{}", d.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the port accepts connections; panics if the process exits or
    /// `deadline` passes first.
    pub fn wait_listening(&mut self, deadline: Instant) {
        loop {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Some(st) = self.try_wait() {
                panic!("dbx exited early with {st}: {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "dbx did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Send `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Wait for an exit; None if still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        poll_exit(deadline, || self.try_wait())
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A WebSocket client on `/ws` (reads with `PROCESS_CLIENT_TIMEOUT`).
    pub fn client(&self) -> Client {
        process_client(self.port)
    }

    /// SIGKILL: no flushing, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (20 s).
    pub fn term(&mut self) -> ExitStatus {
        self.term_within(Duration::from_secs(20))
    }

    /// SIGTERM and wait for the exit; fails the test after `within`.
    pub fn term_within(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        let st = poll_exit(deadline, || c.try_wait().ok().flatten());
        if st.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        st.unwrap_or_else(|| panic!("dbx did not exit on SIGTERM"))
    }

    /// Wait for a process that aborts by itself (DBX_TEST_CRASH_AT).
    pub fn wait_crash(&mut self, within: Duration) -> ExitStatus {
        let st =
            self.wait_exit(within).unwrap_or_else(|| panic!("dbx did not crash within {within:?}:\n{}", self.stderr()));
        self.child = None;
        st
    }

    /// GET /health: (status, JSON body or Null).
    pub fn health(&self) -> (u16, Value) {
        let (status, body) = http_status(self.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(status != 0, "no HTTP answer from /health");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
    }

    /// CPU time (user + system) of the process, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        stat_ticks(&format!("/proc/{}/stat", self.pid()))
    }
}

impl Drop for Dbx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

fn poll_exit(deadline: Instant, mut f: impl FnMut() -> Option<ExitStatus>) -> Option<ExitStatus> {
    loop {
        if let Some(st) = f() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// utime + stime (fields 14 and 15) of a /proc stat file, in clock ticks.
pub fn stat_ticks(path: &str) -> u64 {
    let s = std::fs::read_to_string(path).expect("/proc stat");
    // The command name (field 2) may contain spaces: split after its closing paren.
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
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

/// A WebSocket client on `ws://127.0.0.1:<port>/ws` (reads with `PROCESS_CLIENT_TIMEOUT`).
pub fn process_client(port: u16) -> Client {
    Client::open(SocketAddr::from(([127, 0, 0, 1], port)), "/ws", &[], PROCESS_CLIENT_TIMEOUT).expect("ws connect").0
}
