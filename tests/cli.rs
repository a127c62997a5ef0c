//! dbx-cli end to end: the real `dbx-cli` binary against the real server (in-process,
//! on an ephemeral port): one-shot calls, parameter forms, output forms, errors and
//! exit codes, commands piped on stdin, watch/subscribe streaming and leaving them with
//! Ctrl-C, and the interactive prompt driven through a pseudo-terminal.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_dbx-cli");

/// `dbx-cli -u ws://ADDR/ws` with a clean environment (no DBX_* from the caller) and
/// HOME in a temp dir (the prompt's history file).
fn cli(addr: std::net::SocketAddr, home: &TempDir) -> Command {
    let mut c = Command::new(CLI);
    for (k, _) in std::env::vars() {
        if k.starts_with("DBX_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home.path()).arg("-u").arg(format!("ws://{addr}/ws"));
    c
}

fn run(mut c: Command, args: &[&str]) -> Output {
    c.args(args).stdin(Stdio::null()).output().expect("run dbx-cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn metrics(addr: std::net::SocketAddr) -> String {
    http_status(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").1
}

/// Requests the server has handled (the sum of `dbx_requests_total`).
fn requests(addr: std::net::SocketAddr) -> f64 {
    metrics(addr)
        .lines()
        .filter(|l| l.starts_with("dbx_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[track_caller]
fn ok_line(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "stdout {} stderr {}", stdout(o), stderr(o));
    let out = stdout(o);
    assert_eq!(out.lines().count(), 1, "piped output is one line: {out:?}");
    serde_json::from_str(out.trim_end()).expect("JSON result")
}

#[test]
fn one_shot_calls_with_pairs_bare_words_and_a_json_object() {
    let s = start_default();
    let home = TempDir::new("cli-home");
    // name=value pairs: ttl=60 is a number, value=hello a string.
    let r = ok_line(&run(cli(s.addr, &home), &["string.set", "key=greeting", "value=hello", "ttl=60"]));
    assert_eq!(r, json!({"set": true, "rev": 1}));
    let r = ok_line(&run(cli(s.addr, &home), &["string.get", "key=greeting"]));
    assert_eq!(r["value"], "hello");
    assert_eq!(r["ttl"], 60);
    // --raw prints a string value bare.
    let o = run(cli(s.addr, &home), &["string.get", "greeting", "--raw"]);
    assert_eq!(stdout(&o), "hello\n");
    // A value that parses as JSON is JSON: an array.
    let r = ok_line(&run(cli(s.addr, &home), &["list.push", "key=l", r#"values=["a","b"]"#]));
    assert_eq!(r["length"], 2);
    // Bare words follow the method table; negative numbers are values, not flags.
    let r = ok_line(&run(cli(s.addr, &home), &["list.range", "l", "0", "-1"]));
    assert_eq!(r, json!({"values": ["a", "b"]}));
    // One JSON object.
    let r = ok_line(&run(cli(s.addr, &home), &["hash.set", r#"{"key":"h","fields":{"a":"1","b":"2"}}"#]));
    assert_eq!(r["created"], 2);
    // A key that looks like a number stays a string key (the table says `key` is a string).
    ok_line(&run(cli(s.addr, &home), &["string.set", "key=123", "value=x"]));
    assert_eq!(s.client().ok("string.get", json!({"key": "123"}))["value"], "x");
    // --raw leaves results without a string `value` as JSON.
    let o = run(cli(s.addr, &home), &["--raw", "server.ping"]);
    assert_eq!(stdout(&o), "{\"pong\":true}\n");
}

#[test]
fn errors_go_to_stderr_with_exit_codes() {
    let s = start_default();
    let home = TempDir::new("cli-home");
    // The server's error: `code: message` on stderr, nothing on stdout, exit 1.
    let o = run(cli(s.addr, &home), &["string.get", "key=missing"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "not_found: Key 'missing' not found\n");
    let o = run(cli(s.addr, &home), &["no.such", "a=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("method_not_found: "), "{}", stderr(&o));
    let o = run(cli(s.addr, &home), &["string.set", "key=k", "value=v", "ttl=-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("invalid_params: "), "{}", stderr(&o));
    // PARAMS the CLI cannot read: usage, exit 2, nothing sent.
    let before = requests(s.addr);
    for args in [&["string.get", "{\"key\":"][..], &["string.get", "a", "b"], &["string.get", "key=a", "key=b"]] {
        let o = run(cli(s.addr, &home), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("usage: "), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(requests(s.addr), before, "nothing reached the server");
    // Nothing listening: exit 2 with the reason.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let o = run(cli(dead, &home), &["server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot connect to"), "{}", stderr(&o));
    // Not a ws:// URL.
    let o = run(Command::new(CLI), &["-u", "http://127.0.0.1:1/ws", "server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ws:// or wss://"), "{}", stderr(&o));
    // clap's own usage errors keep clap's status 2.
    let o = run(cli(s.addr, &home), &["--ca", "x", "--insecure", "server.ping"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn credentials_from_flags_and_environment_and_a_refused_handshake() {
    let s = start(|c| c.api_keys = Some("sekrit:admin,viewer:read".into()));
    let home = TempDir::new("cli-home");
    // No credential: the upgrade is refused, exit 2 with the server's reason.
    let o = run(cli(s.addr, &home), &["server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("handshake refused: HTTP 401"), "{}", stderr(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = run(cli(s.addr, &home), &["--api-key", "wrong", "server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    // --api-key, DBX_API_KEY, and DBX_URL.
    ok_line(&run(cli(s.addr, &home), &["--api-key", "sekrit", "server.ping"]));
    let mut c = cli(s.addr, &home);
    c.env("DBX_API_KEY", "viewer");
    let o = run(c, &["string.set", "k", "v"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("forbidden: "), "the read key was used: {}", stderr(&o));
    let mut c = Command::new(CLI);
    c.env("HOME", home.path()).env("DBX_URL", format!("ws://{}/ws", s.addr)).env("DBX_TOKEN", "sekrit");
    ok_line(&run(c, &["server.ping"]));
}

#[test]
fn commands_piped_on_stdin_answer_one_line_each() {
    let s = start_default();
    let home = TempDir::new("cli-home");
    let script = "# a comment\n\
                  string.set key=a value=1\n\
                  \n\
                  string.incr a by=41\n\
                  string.get key=nope\n\
                  list.push l values='[\"x\", \"y z\"]'\n\
                  list.range l 0 -1\n";
    let mut child =
        cli(s.addr, &home).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 4, "{}", stdout(&o));
    assert_eq!(lines[0]["set"], true);
    assert_eq!(lines[1]["value"], 42);
    assert_eq!(lines[2]["length"], 2);
    assert_eq!(lines[3]["values"], json!(["x", "y z"]));
    assert_eq!(stderr(&o), "not_found: Key 'nope' not found\n");
    assert_eq!(o.status.code(), Some(1), "a failed command makes the status 1");
    // All good: 0.
    let mut child = cli(s.addr, &home).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"server.ping\nserver.dbsize\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 2);
}

/// A `dbx-cli watch|subscribe` child whose stdout is read line by line.
struct Streamer {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streamer {
    fn start(mut c: Command, args: &[&str]) -> Streamer {
        let mut child = c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("spawn");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Streamer { child, lines }
    }

    fn next(&self) -> Value {
        let l = self.lines.recv_timeout(IO_TIMEOUT).expect("a line from dbx-cli");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    }

    /// Ctrl-C: the stream is left and the program exits 0.
    fn interrupt(mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let st = poll_until(Duration::from_secs(5), "dbx-cli exits after Ctrl-C", || self.child.try_wait().unwrap());
        assert_eq!(st.code(), Some(0));
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_streams_keyspace_events_as_json_lines_until_ctrl_c() {
    let s = start_default();
    let home = TempDir::new("cli-home");
    let mut c = s.client();
    c.ok("string.set", json!({"key": "k", "value": "v0"}));
    let w = Streamer::start(cli(s.addr, &home), &["watch", "k", "user:*"]);
    // First the confirmation with the current values, then one line per change.
    let first = w.next();
    assert_eq!(first["watching"], json!(["k", "user:*"]));
    assert_eq!(first["values"]["k"]["value"], "v0");
    c.ok("string.set", json!({"key": "k", "value": "v1"}));
    c.ok("hash.set", json!({"key": "user:1", "field": "name", "value": "ann"}));
    c.ok("string.set", json!({"key": "other", "value": "x"}));
    c.ok("key.del", json!({"key": "k"}));
    let evs: Vec<Value> = (0..3).map(|_| w.next()).collect();
    assert_eq!(evs.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(), ["keyspace"; 3]);
    assert_eq!(
        evs.iter().map(|e| (e["key"].as_str().unwrap(), e["event"].as_str().unwrap())).collect::<Vec<_>>(),
        [("k", "string.set"), ("user:1", "hash.set"), ("k", "key.del")]
    );
    assert!(evs[0]["rev"].as_u64() < evs[2]["rev"].as_u64());
    w.interrupt();
}

#[test]
fn subscribe_streams_events_and_ctrl_c_unsubscribes() {
    let s = start_default();
    let home = TempDir::new("cli-home");
    let mut c = s.client();
    let sub = Streamer::start(cli(s.addr, &home), &["subscribe", "news", "chat.*"]);
    assert_eq!(sub.next()["subscribed"], json!(["news", "chat.*"]));
    assert_eq!(c.ok("pubsub.publish", json!({"channel": "news", "data": {"n": 1}}))["receivers"], 1);
    assert_eq!(c.ok("pubsub.publish", json!({"channel": "chat.room", "data": "hi"}))["receivers"], 1);
    let e1 = sub.next();
    assert_eq!(
        (e1["type"].as_str(), e1["channel"].as_str(), &e1["data"]),
        (Some("event"), Some("news"), &json!({"n": 1}))
    );
    let e2 = sub.next();
    assert_eq!((e2["channel"].as_str(), e2["pattern"].as_str()), (Some("chat.room"), Some("chat.*")));
    sub.interrupt();
    assert_eq!(c.ok("pubsub.publish", json!({"channel": "news", "data": 2}))["receivers"], 0);
}

#[test]
fn help_lists_every_method_of_clients_methods_json_without_a_server() {
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/methods.json")).unwrap(),
    )
    .unwrap();
    let home = TempDir::new("cli-home");
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let o = run(cli(dead, &home), &["help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: Vec<String> =
        stdout(&o).lines().filter_map(|l| l.trim().split(' ').next().map(str::to_string)).collect();
    for m in table["methods"].as_object().unwrap().keys() {
        assert!(listed.contains(m), "help does not list {m}");
    }
    let o = run(cli(dead, &home), &["help", "string.set"]);
    assert!(stdout(&o).contains("ttl (num, optional)"), "{}", stdout(&o));
    let o = run(cli(dead, &home), &["help", "nope.nope"]);
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// The interactive prompt, through a pseudo-terminal
// ---------------------------------------------------------------------------

/// A child on a pseudo-terminal: its stdin, stdout and stderr are the slave side,
/// and it is the session leader with the terminal as its controlling terminal, so
/// a typed Ctrl-C reaches it as SIGINT exactly as in a terminal emulator.
struct Pty {
    master: std::fs::File,
    child: Child,
    seen: String,
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize { ws_row: 40, ws_col: 160, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two descriptors into the ints we pass.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm");
        // SAFETY: setsid and ioctl are async-signal-safe; run in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on a pty");
        drop(cmd); // closes our copies of the slave side
        Pty { master, child, seen: String::new() }
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Read until `needle` appears; returns what came before it (and consumes both).
    #[track_caller]
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.seen.find(needle) {
                let before = self.seen[..i].to_string();
                self.seen.drain(..i + needle.len());
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {needle:?}; screen so far: {:?}", self.seen);
            let mut pfd = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(500) as i32) };
            if n <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => panic!("the terminal closed while waiting for {needle:?}; screen: {:?}", self.seen),
                Ok(k) => self.seen.push_str(&String::from_utf8_lossy(&buf[..k])),
            }
            // A line editor may ask where the cursor is: answer "row 1, column 1".
            if self.seen.contains("\x1b[6n") {
                self.seen = self.seen.replace("\x1b[6n", "");
                self.send("\x1b[1;1R");
            }
        }
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let st = poll_until(Duration::from_secs(10), "dbx-cli exits", || self.child.try_wait().unwrap());
        st.code()
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn interactive_prompt_with_completion_help_history_watch_and_ctrl_keys() {
    let s = start_default();
    let home = TempDir::new("cli-home");
    let prompt = format!("{}> ", s.addr);
    let mut t = Pty::spawn(cli(s.addr, &home));
    t.expect(&prompt);
    // A command; on a terminal the result is pretty-printed.
    t.send("string.set greeting hello\r");
    let out = t.expect(&prompt);
    assert!(out.contains("\"set\": true"), "{out:?}");
    // Tab completes a method name from the table, then a parameter name.
    t.send("string.g\t");
    t.expect("string.get ");
    t.send("gree\x15"); // Ctrl-U: drop the line typed so far
    t.send("string.get k\t");
    t.expect("key=");
    t.send("greeting\r");
    let out = t.expect(&prompt);
    assert!(out.contains("\"value\": \"hello\""), "{out:?}");
    // Errors are printed and the prompt goes on.
    t.send("string.get nope\r");
    let out = t.expect(&prompt);
    assert!(out.contains("not_found: Key 'nope' not found"), "{out:?}");
    // help and help METHOD from the method table.
    t.send("help zset.range\r");
    let out = t.expect(&prompt);
    assert!(out.contains("zset.range key start stop [rev=bool]"), "{out:?}");
    // Ctrl-C at the prompt drops the line; the session goes on.
    t.send("string.get greeting\x03");
    t.expect(&prompt);
    // watch streams events; Ctrl-C leaves it and the prompt comes back.
    t.send("watch greeting\r");
    t.expect("\"watching\":[\"greeting\"]");
    let mut c = s.client();
    c.ok("string.set", json!({"key": "greeting", "value": "bye"}));
    t.expect("\"event\":\"string.set\"");
    t.send("\x03");
    t.expect(&prompt);
    assert!(metrics(s.addr).contains("\ndbx_watchers 0\n"), "the watch was undone");
    t.send("server.ping\r");
    let out = t.expect(&prompt);
    assert!(out.contains("\"pong\": true"), "{out:?}");
    // Ctrl-D quits with status 0.
    t.send("\x04");
    assert_eq!(t.wait_exit(), Some(0));
    let hist = std::fs::read_to_string(home.path().join(".dbx_cli_history")).expect("history file in HOME");
    assert!(hist.contains("string.set greeting hello"), "{hist}");
    assert!(hist.contains("watch greeting"), "{hist}");
    // The next session sees the history: Up recalls the last command.
    let mut t = Pty::spawn(cli(s.addr, &home));
    t.expect(&prompt);
    t.send("\x1b[A");
    t.expect("server.ping");
    t.send("\r");
    t.expect("\"pong\": true");
    t.expect(&prompt);
    t.send("quit\r");
    assert_eq!(t.wait_exit(), Some(0));
}

// ---------------------------------------------------------------------------
// wss://: until the server speaks TLS itself, a TLS-terminating relay in front of
// the real server (test-only certificates from tests/fixtures/make-cli-tls.sh)
// ---------------------------------------------------------------------------

/// Accepts TLS connections on 127.0.0.1:0 and relays the plaintext to `backend` (the
/// real server), one thread per connection; the replies are the server's own.
fn tls_relay(backend: std::net::SocketAddr) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(format!("{fixtures}/cli-tls-server.pem")).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(format!("{fixtures}/cli-tls-server-key.pem")).unwrap();
    #[allow(deprecated)] // ring's provider, as dbx-cli's
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { break };
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                let mut tls = rustls::StreamOwned::new(conn, sock);
                let Ok(mut up) = std::net::TcpStream::connect(backend) else { return };
                let tick = Some(Duration::from_millis(5));
                tls.sock.set_read_timeout(tick).unwrap();
                up.set_read_timeout(tick).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let idle = |e: &std::io::Error| {
                    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                };
                loop {
                    match tls.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if up.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if idle(&e) => {}
                        Err(_) => break,
                    }
                    match up.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                                break;
                            }
                        }
                        Err(e) if idle(&e) => {}
                        Err(_) => break,
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn wss_with_ca_file_or_insecure_and_certificate_errors() {
    let s = start_default();
    let relay = tls_relay(s.addr);
    let home = TempDir::new("cli-home");
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cli-tls-ca.pem");
    let url = format!("wss://127.0.0.1:{}/ws", relay.port());
    let wss = |args: &[&str]| {
        let mut c = Command::new(CLI);
        c.env("HOME", home.path()).env_remove("DBX_URL").arg("-u").arg(&url);
        run(c, args)
    };
    // The CA that signed the server's certificate: the real server answers through TLS.
    let r = ok_line(&wss(&["--ca", ca, "string.set", "k", "over-tls"]));
    assert_eq!(r["set"], true);
    assert_eq!(s.client().ok("string.get", json!({"key": "k"}))["value"], "over-tls");
    // localhost is in the certificate too.
    let mut c = Command::new(CLI);
    c.env("HOME", home.path()).args(["-u", &format!("wss://localhost:{}/ws", relay.port()), "--ca", ca]);
    assert_eq!(ok_line(&run(c, &["string.get", "k"]))["value"], "over-tls");
    // --insecure: any certificate.
    assert_eq!(ok_line(&wss(&["--insecure", "server.ping"])), json!({"pong": true}));
    // The system store does not know the test CA: a certificate error, exit 2.
    let o = wss(&["server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("TLS") || stderr(&o).contains("--ca"), "{}", stderr(&o));
    // Another CA: refused as an unknown issuer.
    let other = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cli-tls-server.pem");
    let o = wss(&["--ca", other, "server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("TLS handshake"), "{}", stderr(&o));
    // A --ca file that is missing, or holds no certificate.
    let o = wss(&["--ca", "/nonexistent/ca.pem", "server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--ca /nonexistent/ca.pem"), "{}", stderr(&o));
    let o = wss(&["--ca", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"), "server.ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no certificate"), "{}", stderr(&o));
    // Plain ws:// to a TLS port fails the handshake (exit 2), it does not hang.
    let mut c = Command::new(CLI);
    c.env("HOME", home.path()).args(["-u", &format!("ws://127.0.0.1:{}/ws", relay.port()), "--timeout", "2"]);
    assert_eq!(run(c, &["server.ping"]).status.code(), Some(2));
}

#[test]
fn interactive_prompt_reconnects_after_the_server_closed_an_idle_connection() {
    // Nothing reads the socket while the prompt waits for typing, so the server's
    // liveness timeout (interval + timeout) closes it; the next command reconnects.
    let s = start(|c| {
        c.ws_heartbeat_interval = 0.2;
        c.ws_timeout = 0.2;
    });
    let home = TempDir::new("cli-home");
    let prompt = format!("{}> ", s.addr);
    let mut t = Pty::spawn(cli(s.addr, &home));
    t.expect(&prompt);
    t.send("string.set k v\r");
    t.expect(&prompt);
    std::thread::sleep(Duration::from_millis(1500));
    t.send("string.get k\r");
    let out = t.expect(&prompt);
    assert!(out.contains("(reconnected: the server closed the connection (1001"), "{out:?}");
    assert!(out.contains("\"value\": \"v\""), "{out:?}");
    t.send("\x04");
    assert_eq!(t.wait_exit(), Some(0));
}
