//! `dbx-bench`: a load generator for the DBX WebSocket data store.
//!
//! Each worker thread (one by default) runs its own mio loop driving a share of
//! the connections. Every connection keeps up to `--pipeline` requests in flight.
//! Two modes:
//!
//! * closed loop (default): a reply immediately frees a slot for the next request;
//!   latency = reply time - send time.
//! * open loop (`--rate R`): requests are scheduled at R per second in total; a
//!   request that cannot go out on time (all slots busy) waits, and its latency is
//!   measured from its *intended* send time (coordinated-omission correction).
//!
//! Pub/sub fan-out (`--subscribers N`): N extra connections subscribe to `--channel`
//! and count the events they receive; the active connections publish to it (use
//! `--mix publish=1`). Each publish carries its publisher, sequence number and send
//! time, so subscribers check per-publisher order and measure delivery latency.
//!
//! Phases (connect, preload, warm-up, measurement, drain) each have a deadline.
//! The last line of output is one JSON object with the results.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use dbx::proto::scan::{Scanner, SyntaxError};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Deserialize;
use sha1::{Digest, Sha1};

// ---------------------------------------------------------------------------
// Options

#[derive(Parser, Debug, Clone)]
#[command(
    name = "dbx-bench",
    version,
    about = "Load generator for the DBX WebSocket data store (closed- and open-loop)"
)]
struct Opts {
    /// WebSocket URL of the server (ws:// only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Active connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Measurement duration (e.g. 10s, 500ms, 1m; a bare number is seconds).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before measuring (load is applied, nothing is recorded).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Method mix as name=weight pairs. Names: get, set, incr, hget, hset, publish, ping.
    #[arg(long, default_value = "get=9,set=1")]
    mix: String,
    /// Number of distinct keys (chosen uniformly at random).
    #[arg(long, default_value_t = 10_000)]
    keyspace: u64,
    /// Value size in bytes for set/hset/publish.
    #[arg(long, default_value_t = 32)]
    value_size: usize,
    /// Prefix of every key and channel the benchmark touches.
    #[arg(long, default_value = "bench:")]
    key_prefix: String,
    /// Before the run, write every key the mix reads (string.set / hash.set).
    #[arg(long)]
    preload: bool,
    /// Deadline of the preload phase.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    preload_timeout: Duration,
    /// Open loop: total requests per second, spread over all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Extra connections that only answer pings (held open during the run).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Worker threads, each with its own mio loop (connections are split between them).
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// API key, sent as the `api_key` query parameter.
    #[arg(long, env = "DBX_BENCH_API_KEY")]
    api_key: Option<String>,
    /// JWT, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "DBX_BENCH_TOKEN")]
    token: Option<String>,
    /// Deadline of the whole connect phase (all active and idle connections).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// After the measurement, how long to wait for replies still in flight.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Print only the final JSON line.
    #[arg(long)]
    json_only: bool,
    /// Allow a host that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Pub/sub fan-out: extra connections subscribed to `--channel`, counting events.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Channel for `publish` and the subscribers (default: `<key-prefix>chan`).
    #[arg(long)]
    channel: Option<String>,
    /// Seed of the key/method random generator.
    #[arg(long, default_value_t = 0x5eed_1234_abcd_ef01)]
    seed: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad duration {s:?} (use e.g. 10s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * mult > 1e7 {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

// ---------------------------------------------------------------------------
// Methods and request building

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get = 0,
    Set = 1,
    Incr = 2,
    HGet = 3,
    HSet = 4,
    Publish = 5,
    Ping = 6,
}

const KINDS: [Kind; 7] = [Kind::Get, Kind::Set, Kind::Incr, Kind::HGet, Kind::HSet, Kind::Publish, Kind::Ping];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Set => "set",
            Kind::Incr => "incr",
            Kind::HGet => "hget",
            Kind::HSet => "hset",
            Kind::Publish => "publish",
            Kind::Ping => "ping",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.name() == s)
    }
}

fn parse_mix(s: &str) -> Result<Vec<(Kind, u32)>, String> {
    let mut out: Vec<(Kind, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = match part.split_once(['=', ':']) {
            Some((n, w)) => {
                (n.trim(), w.trim().parse::<u32>().map_err(|_| format!("bad weight in mix entry {part:?}"))?)
            }
            None => (part, 1),
        };
        let kind = Kind::parse(name)
            .ok_or_else(|| format!("unknown method {name:?} in --mix (get, set, incr, hget, hset, publish, ping)"))?;
        if w > 0 {
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some(e) => e.1 += w,
                None => out.push((kind, w)),
            }
        }
    }
    let total: u64 = out.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Err("--mix has no method with a positive weight".into());
    }
    if total > 1_000_000 {
        return Err("--mix weights too large (total must be <= 1000000)".into());
    }
    Ok(out)
}

/// xorshift64*: tiny, fast, good enough for picking keys.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Builds request texts. `prefix` and `value` are already JSON-escaped (without quotes).
struct Gen {
    table: Vec<Kind>,
    rng: Rng,
    keyspace: u64,
    prefix: String,
    value: String,
    /// JSON-escaped channel name (without quotes).
    channel: String,
}

impl Gen {
    #[inline]
    fn pick(&mut self) -> (Kind, u64) {
        let k = self.table[self.rng.below(self.table.len() as u64) as usize];
        let key = self.rng.below(self.keyspace);
        (k, key)
    }

    /// `publisher` and `now_ns` go into published data (fan-out order and latency).
    fn build(&self, buf: &mut Vec<u8>, id: u64, kind: Kind, key: u64, publisher: usize, now_ns: u64) {
        let mut n = itoa::Buffer::new();
        buf.clear();
        let p = self.prefix.as_bytes();
        let v = self.value.as_bytes();
        buf.extend_from_slice(br#"{"id":"#);
        buf.extend_from_slice(n.format(id).as_bytes());
        let (method, key_tag): (&[u8], &[u8]) = match kind {
            Kind::Get => (b"string.get", b""),
            Kind::Set => (b"string.set", b""),
            Kind::Incr => (b"string.incr", b"c"),
            Kind::HGet => (b"hash.get", b"h"),
            Kind::HSet => (b"hash.set", b"h"),
            Kind::Publish => {
                buf.extend_from_slice(br#","method":"pubsub.publish","params":{"channel":""#);
                buf.extend_from_slice(self.channel.as_bytes());
                buf.extend_from_slice(br#"","data":{"p":"#);
                buf.extend_from_slice(n.format(publisher).as_bytes());
                buf.extend_from_slice(br#","n":"#);
                buf.extend_from_slice(n.format(id).as_bytes());
                buf.extend_from_slice(br#","t":"#);
                buf.extend_from_slice(n.format(now_ns).as_bytes());
                buf.extend_from_slice(br#","v":""#);
                buf.extend_from_slice(v);
                buf.extend_from_slice(br#""}}}"#);
                return;
            }
            Kind::Ping => {
                buf.extend_from_slice(br#","method":"server.ping"}"#);
                return;
            }
        };
        buf.extend_from_slice(br#","method":""#);
        buf.extend_from_slice(method);
        buf.extend_from_slice(br#"","params":{"key":""#);
        buf.extend_from_slice(p);
        buf.extend_from_slice(key_tag);
        buf.extend_from_slice(n.format(key).as_bytes());
        buf.push(b'"');
        match kind {
            Kind::Set => {
                buf.extend_from_slice(br#","value":""#);
                buf.extend_from_slice(v);
                buf.push(b'"');
            }
            Kind::HGet => buf.extend_from_slice(br#","field":"f""#),
            Kind::HSet => {
                buf.extend_from_slice(br#","field":"f","value":""#);
                buf.extend_from_slice(v);
                buf.push(b'"');
            }
            _ => {}
        }
        buf.extend_from_slice(b"}}");
    }
}

// ---------------------------------------------------------------------------
// URL, address checks, handshake

struct Target {
    host: String,
    port: u16,
    path_and_query: String,
    addrs: Vec<SocketAddr>,
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_target(o: &Opts) -> Result<Target, String> {
    let rest = if let Some(r) = o.url.strip_prefix("ws://") {
        r
    } else if o.url.starts_with("wss://") {
        return Err("wss:// is not supported (DBX serves plain ws:// on loopback)".into());
    } else {
        return Err(format!("--url must start with ws:// (got {:?})", o.url));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let mut path = if path.starts_with('?') { format!("/{path}") } else { path };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or_else(|| format!("bad IPv6 host in {:?}", o.url))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in {:?}", o.url))?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("bad port in {:?}", o.url))?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {:?}", o.url));
    }
    if let Some(k) = &o.api_key {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str("api_key=");
        path.push_str(&pct_encode(k));
    }
    let addrs: Vec<SocketAddr> =
        (host.as_str(), port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !o.allow_remote {
        if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "refusing non-loopback target {host} ({}); pass --allow-remote to benchmark a remote server",
                a.ip()
            ));
        }
    }
    Ok(Target { host, port, path_and_query: path, addrs })
}

/// First half of the blocking handshake: connect and send the upgrade request.
/// Returns the socket and its `Sec-WebSocket-Key`.
fn start_handshake(
    t: &Target,
    token: Option<&str>,
    deadline: Instant,
    rng: &mut Rng,
) -> Result<(StdTcpStream, String), String> {
    let now = Instant::now();
    if now >= deadline {
        return Err("connect phase deadline passed".into());
    }
    let per = (deadline - now).min(Duration::from_secs(10));
    let mut last_err = String::new();
    let mut sock = None;
    for a in &t.addrs {
        match StdTcpStream::connect_timeout(a, per) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {a}: {e}"),
        }
    }
    let mut s = sock.ok_or(last_err)?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(per)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(per)).map_err(|e| e.to_string())?;

    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next().to_le_bytes());
    nonce[8..].copy_from_slice(&rng.next().to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let host_hdr =
        if t.host.contains(':') { format!("[{}]:{}", t.host, t.port) } else { format!("{}:{}", t.host, t.port) };
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {host_hdr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: dbx-bench\r\n",
        t.path_and_query
    );
    if let Some(tok) = token {
        req.push_str("Authorization: Bearer ");
        req.push_str(tok);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("handshake write: {e}"))?;
    Ok((s, key))
}

/// Second half: read and check the 101 response, then switch the socket to
/// non-blocking mode for mio.
fn finish_handshake(
    mut s: StdTcpStream,
    key: &str,
    deadline: Instant,
    read_buf: usize,
    mask_seed: u64,
) -> Result<Ws, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("handshake response head too large".into());
        }
        if Instant::now() >= deadline {
            return Err("handshake timed out".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("server closed during handshake".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("handshake read: {e}")),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("malformed handshake response".into()),
    }
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        // Show the JSON error body if it already arrived.
        let body = String::from_utf8_lossy(&buf[head_len..buf.len().min(head_len + 300)]);
        return Err(format!("handshake refused: HTTP {code} {} {}", resp.reason.unwrap_or(""), body.trim()));
    }
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let expect = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
    if accept.as_deref() != Some(expect.as_str()) {
        return Err("handshake: bad or missing Sec-WebSocket-Accept".into());
    }
    let leftover = &buf[head_len..];
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    s.set_write_timeout(None).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Ws::new(TcpStream::from_std(s), leftover, read_buf, mask_seed))
}

fn raise_nofile(need: u64) {
    // SAFETY: plain libc calls on a zero-initialised struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        if (rl.rlim_cur as u64) >= need {
            return;
        }
        let want = if rl.rlim_max == libc::RLIM_INFINITY {
            need as libc::rlim_t
        } else {
            (need as libc::rlim_t).min(rl.rlim_max)
        };
        rl.rlim_cur = want;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Duration::ZERO;
        }
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
    }
}

// ---------------------------------------------------------------------------
// Client side of RFC 6455, just what the generator needs
//
// tungstenite cost more than the requests it carried: a zero-filled read buffer,
// a `Message` allocation per reply, and a read that ends in EAGAIN after every
// reply. Here a connection reads into a reusable buffer, parses frames in place,
// and appends masked request frames to one write buffer that goes out in one
// write per loop turn.

/// Largest frame / message accepted from the server (tungstenite's defaults).
const MAX_FRAME: usize = 16 << 20;
const MAX_MESSAGE: usize = 64 << 20;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

struct Ws {
    sock: TcpStream,
    /// Bytes read from the socket: frames not yet consumed are `rbuf[rpos..rend]`.
    /// `rbuf.len()` is its capacity (never shrunk, so never zero-filled again).
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Bytes to write: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// A fragmented message being assembled (opcode of its first frame, or 0).
    frag: Vec<u8>,
    frag_op: u8,
    /// Source of masking keys.
    mask_rng: Rng,
    /// Registered for WRITABLE too (only while output waits for socket space: a
    /// write interest would otherwise wake the loop for every incoming ACK).
    want_write: bool,
}

/// `recv` / `send` as plain system calls: the libc wrappers are cancellation
/// points and toggle the thread's cancel state around every call (measurable at
/// one call per request).
#[cfg(target_os = "linux")]
fn sock_read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; no address is asked for.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            s.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(target_os = "linux")]
fn sock_write(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes; no address is given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            s.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn sock_read(mut s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    s.read(buf)
}

#[cfg(not(target_os = "linux"))]
fn sock_write(mut s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    s.write(buf)
}

/// One complete frame at the front of the read buffer.
struct FrameRef {
    fin: bool,
    op: u8,
    /// Payload position in `rbuf`.
    start: usize,
    end: usize,
}

enum Parse {
    Frame(FrameRef),
    Incomplete,
    /// Protocol error: the connection is unusable.
    Error,
}

impl Ws {
    fn new(sock: TcpStream, leftover: &[u8], read_buf: usize, mask_seed: u64) -> Ws {
        let mut rbuf = vec![0u8; read_buf.max(leftover.len()).max(256)];
        rbuf[..leftover.len()].copy_from_slice(leftover);
        Ws {
            sock,
            rbuf,
            rpos: 0,
            rend: leftover.len(),
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            frag: Vec::new(),
            frag_op: 0,
            mask_rng: Rng::new(mask_seed),
            want_write: false,
        }
    }

    #[inline]
    fn has_output(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Append one masked frame carrying `payload` (client frames must be masked).
    fn push_frame(&mut self, op: u8, payload: &[u8]) {
        let key = (self.mask_rng.next() >> 32) as u32;
        push_masked_frame(&mut self.wbuf, op, payload, key);
    }

    /// Write as much pending output as the socket takes. `Err` means the
    /// connection is broken; `Ok` with output left means wait for WRITABLE.
    fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match sock_write(&self.sock, &self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > 64 * 1024 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Read once from the socket. `Ok(Some(short))`: data arrived, `short` when the
    /// read did not fill the free space (the socket is drained: with edge-triggered
    /// readiness, later data raises a new event). `Ok(None)`: nothing to read.
    /// `Err`: closed or broken.
    fn fill(&mut self) -> io::Result<Option<bool>> {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            if self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                self.rend -= self.rpos;
                self.rpos = 0;
            } else {
                // One frame larger than the buffer (bounded by MAX_FRAME in parse).
                let n = self.rbuf.len() * 2;
                self.rbuf.resize(n, 0);
            }
        }
        let space = self.rbuf.len() - self.rend;
        loop {
            match sock_read(&self.sock, &mut self.rbuf[self.rend..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.rend += n;
                    return Ok(Some(n < space));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The frame at the front of the read buffer, if complete (not consumed).
    fn parse(&self) -> Parse {
        parse_frame(&self.rbuf[self.rpos..self.rend], self.rpos)
    }
}

/// The frame at the start of `b` (which starts at `off` in the read buffer).
fn parse_frame(b: &[u8], off: usize) -> Parse {
    if b.len() < 2 {
        return Parse::Incomplete;
    }
    let (b0, b1) = (b[0], b[1]);
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0f;
    // No extension was negotiated; the server must not mask.
    if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Parse::Error;
    }
    let (len, hdr) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(x) => (usize::from(u16::from_be_bytes([x[0], x[1]])), 4),
            None => return Parse::Incomplete,
        },
        127 => match b.get(2..10) {
            Some(x) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(x);
                (usize::try_from(u64::from_be_bytes(a)).unwrap_or(usize::MAX), 10)
            }
            None => return Parse::Incomplete,
        },
        n => (usize::from(n), 2),
    };
    match op {
        OP_CONT | OP_TEXT | OP_BINARY => {
            if len > MAX_FRAME {
                return Parse::Error;
            }
        }
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len > 125 {
                return Parse::Error;
            }
        }
        _ => return Parse::Error,
    }
    if b.len() - hdr < len {
        return Parse::Incomplete;
    }
    let start = off + hdr;
    Parse::Frame(FrameRef { fin, op, start, end: start + len })
}

/// Append one frame carrying `payload`, masked with `key`.
fn push_masked_frame(w: &mut Vec<u8>, op: u8, payload: &[u8], key: u32) {
    let len = payload.len();
    w.reserve(len + 14);
    w.push(0x80 | op);
    if len < 126 {
        w.push(0x80 | len as u8);
    } else if len <= 0xffff {
        w.push(0x80 | 126);
        w.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        w.push(0x80 | 127);
        w.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let m = key.to_ne_bytes();
    w.extend_from_slice(&m);
    let m8 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = payload.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        w.extend_from_slice(&(u64::from_ne_bytes(b) ^ m8).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key phase restarts at 0.
    for (i, b) in chunks.remainder().iter().enumerate() {
        w.push(b ^ m[i & 3]);
    }
}

// ---------------------------------------------------------------------------
// Replies

#[derive(Deserialize)]
struct ErrBody<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<ErrBody<'a>>,
}

/// What the generator needs from a reply: `id`, `type`, and `error` (with its
/// `code`). `error: Some(None)` is an error without a code.
struct ReplyInfo<'a> {
    id: Option<u64>,
    kind: Option<Cow<'a, str>>,
    error: Option<Option<Cow<'a, str>>>,
}

impl<'a> From<Reply<'a>> for ReplyInfo<'a> {
    fn from(r: Reply<'a>) -> ReplyInfo<'a> {
        ReplyInfo { id: r.id, kind: r.kind, error: r.error.map(|e| e.code) }
    }
}

/// Parse a reply. The common shape goes through [`scan_reply`], a single pass that
/// still checks the whole text is valid JSON; anything it is not sure about
/// (escapes, odd `id` values, duplicate keys, deep nesting, ...) goes to serde,
/// which decides exactly as before. `None`: not a valid reply.
fn parse_reply(t: &str) -> Option<ReplyInfo<'_>> {
    match scan_reply(t) {
        Ok(r) => Some(r),
        Err(_) => serde_json::from_str::<Reply>(t).ok().map(ReplyInfo::from),
    }
}

/// The text of a JSON string value without escapes; None for anything else (the
/// caller hands such replies to serde).
fn plain_string(v: &str) -> Option<&str> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Fast path of [`parse_reply`], on the server's own validating scanner
/// (`dbx::proto::scan`, fuzzed against serde_json): a top-level object whose `id` is a
/// non-negative integer or null, `type` a plain string or null, `error` an object
/// (with a plain string or null `code`) or null; every other member is skipped but
/// checked. Any error means "not sure": serde decides.
fn scan_reply(t: &str) -> Result<ReplyInfo<'_>, SyntaxError> {
    let mut r = ReplyInfo { id: None, kind: None, error: None };
    let (mut seen_id, mut seen_type, mut seen_err) = (false, false, false);
    let mut s = Scanner::new(t, dbx::proto::MAX_DEPTH);
    if s.next_byte() != Some(b'{') {
        return Err(s.error_here("not an object"));
    }
    s.object(|k, s| {
        let seen = match (k.escaped, k.inner()) {
            (false, "id") => &mut seen_id,
            (false, "type") => &mut seen_type,
            (false, "error") => &mut seen_err,
            (true, _) => return Err(s.error_here("escaped key")),
            _ => return s.value().map(drop),
        };
        if std::mem::replace(seen, true) {
            return Err(s.error_here("duplicate field"));
        }
        let name = k.inner();
        let v = s.value()?;
        let unsure = || s.error_here("unusual value");
        if v == "null" {
            return Ok(());
        }
        match name {
            "id" => r.id = Some(v.parse::<u64>().map_err(|_| unsure())?),
            "type" => r.kind = Some(Cow::Borrowed(plain_string(v).ok_or_else(unsure)?)),
            _ => {
                if !v.starts_with('{') {
                    return Err(unsure());
                }
                let (mut code, mut seen_code) = (None, false);
                Scanner::new(v, dbx::proto::MAX_DEPTH).object(|k, s| {
                    if k.escaped || k.inner() != "code" {
                        return if k.escaped { Err(s.error_here("escaped key")) } else { s.value().map(drop) };
                    }
                    if std::mem::replace(&mut seen_code, true) {
                        return Err(s.error_here("duplicate code"));
                    }
                    let c = s.value()?;
                    if c != "null" {
                        code = Some(Cow::Borrowed(plain_string(c).ok_or_else(|| s.error_here("unusual code"))?));
                    }
                    Ok(())
                })?;
                r.error = Some(code);
            }
        }
        Ok(())
    })?;
    s.end()?;
    Ok(r)
}

// ---------------------------------------------------------------------------
// Connections and the loop

#[derive(Clone, Copy)]
struct Pending {
    id: u64,
    /// Send time (closed loop) or intended send time (open loop), ns since `base`.
    t0: u64,
    kind: Kind,
}

struct Conn {
    ws: Ws,
    idle: bool,
    /// Fan-out subscriber (also `idle`: it sends no load).
    sub: bool,
    /// Global index of an active connection (publisher id in published data).
    gid: usize,
    /// Subscriber: last sequence number seen per publisher.
    last_seq: Vec<u64>,
    alive: bool,
    inflight: VecDeque<Pending>,
    /// Open loop: intended send times of requests waiting for a free slot.
    backlog: VecDeque<u64>,
    next_id: u64,
}

#[derive(Default)]
struct Counters {
    ok: u64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    unsolicited: BTreeMap<String, u64>,
    /// Fan-out: events received inside the measurement window / in total.
    deliveries: u64,
    deliveries_total: u64,
    /// Fan-out: events that came after a later one of the same publisher.
    out_of_order: u64,
    /// Fan-out: subscribe confirmations.
    subscribed: u64,
    id_mismatch: u64,
    bad_replies: u64,
    conns_closed: u64,
    active_closed: u64,
    lost_in_flight: u64,
    sent: u64,
}

struct Stats {
    hist: Histogram<u64>,
    /// Fan-out: publish send → event receipt, inside the measurement window.
    dhist: Histogram<u64>,
    by_kind: Vec<Histogram<u64>>,
    c: Counters,
    /// ns spent outside epoll_wait during the measurement window.
    busy_ns: u64,
    /// Open loop: requests scheduled but never sent / sent late.
    unsent: u64,
    late: u64,
    unanswered: u64,
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

impl Stats {
    fn new() -> Stats {
        Stats {
            hist: new_hist(),
            dhist: new_hist(),
            by_kind: KINDS.iter().map(|_| new_hist()).collect(),
            c: Counters::default(),
            busy_ns: 0,
            unsent: 0,
            late: 0,
            unanswered: 0,
        }
    }
    fn merge(&mut self, o: Stats) {
        let _ = self.hist.add(&o.hist);
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind.iter()) {
            let _ = a.add(b);
        }
        self.c.ok += o.c.ok;
        self.c.errors += o.c.errors;
        for (k, v) in o.c.error_codes {
            *self.c.error_codes.entry(k).or_default() += v;
        }
        for (k, v) in o.c.unsolicited {
            *self.c.unsolicited.entry(k).or_default() += v;
        }
        self.c.deliveries += o.c.deliveries;
        self.c.deliveries_total += o.c.deliveries_total;
        self.c.out_of_order += o.c.out_of_order;
        self.c.subscribed += o.c.subscribed;
        let _ = self.dhist.add(&o.dhist);
        self.c.id_mismatch += o.c.id_mismatch;
        self.c.bad_replies += o.c.bad_replies;
        self.c.conns_closed += o.c.conns_closed;
        self.c.active_closed += o.c.active_closed;
        self.c.lost_in_flight += o.c.lost_in_flight;
        self.c.sent += o.c.sent;
        self.busy_ns += o.busy_ns;
        self.unsent += o.unsent;
        self.late += o.late;
        self.unanswered += o.unanswered;
    }
}

/// One phase of load on one worker.
struct Phase {
    /// Preload: fixed list of (kind, key) operations to issue once.
    preload: Option<VecDeque<(Kind, u64)>>,
    /// Stop sending at this time (ns since base).
    send_until: u64,
    /// Record replies received in [rec_from, rec_until).
    rec_from: u64,
    rec_until: u64,
    /// Hard end (send_until + drain).
    hard_end: u64,
    /// Open loop: ns between scheduled requests on this worker.
    interval_ns: Option<f64>,
    start: u64,
    pipeline: usize,
}

struct Worker {
    poll: Poll,
    conns: Vec<Conn>,
    gen: Gen,
    base: Instant,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
}

fn interest(write: bool) -> Interest {
    if write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

#[inline]
fn ns_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

impl Worker {
    fn new(conns: Vec<Conn>, gen: Gen, base: Instant, stop: Arc<AtomicBool>) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut w = Worker { poll, conns, gen, base, buf: Vec::with_capacity(256), stop };
        for (i, c) in w.conns.iter_mut().enumerate() {
            c.ws.want_write = c.ws.has_output();
            w.poll.registry().register(&mut c.ws.sock, Token(i), interest(c.ws.want_write))?;
        }
        Ok(w)
    }

    /// Queue one request on connection `ci` with time stamp `t0` (it goes out with
    /// the connection's next flush, in the same loop turn).
    fn send(&mut self, ci: usize, kind: Kind, key: u64, t0: u64, st: &mut Stats) {
        let c = &mut self.conns[ci];
        let id = c.next_id;
        c.next_id += 1;
        let now_ns = if kind == Kind::Publish { ns_since(self.base) } else { 0 };
        self.gen.build(&mut self.buf, id, kind, key, c.gid, now_ns);
        c.ws.push_frame(OP_TEXT, &self.buf);
        c.inflight.push_back(Pending { id, t0, kind });
        st.c.sent += 1;
    }

    fn flush(&mut self, ci: usize, st: &mut Stats) {
        let c = &mut self.conns[ci];
        if !c.alive || !c.ws.has_output() {
            return;
        }
        if c.ws.flush().is_err() {
            kill(c, st);
            return;
        }
        // Output left after WouldBlock goes out on the WRITABLE event.
        let pending = c.ws.has_output();
        if pending != c.ws.want_write {
            c.ws.want_write = pending;
            if self.poll.registry().reregister(&mut c.ws.sock, Token(ci), interest(pending)).is_err() {
                kill(c, st);
            }
        }
    }

    /// Can connection `ci` take another request now?
    #[inline]
    fn has_slot(&self, ci: usize, ph: &Phase) -> bool {
        let c = &self.conns[ci];
        c.alive && !c.idle && c.inflight.len() < ph.pipeline
    }

    /// Issue the next request (closed loop / preload) on a free slot.
    fn refill(&mut self, ci: usize, ph: &mut Phase, now: u64, st: &mut Stats) {
        while self.has_slot(ci, ph) {
            if let Some(q) = ph.preload.as_mut() {
                match q.pop_front() {
                    Some((k, key)) => self.send(ci, k, key, now, st),
                    None => return,
                }
            } else if ph.interval_ns.is_some() {
                // Open loop: only requests already due (waiting in the backlog).
                if now >= ph.send_until {
                    return;
                }
                match self.conns[ci].backlog.pop_front() {
                    Some(t) => {
                        let (k, key) = self.gen.pick();
                        if now > t + 1_000_000 {
                            st.late += 1;
                        }
                        self.send(ci, k, key, t, st);
                    }
                    None => return,
                }
            } else {
                if now >= ph.send_until {
                    return;
                }
                let (k, key) = self.gen.pick();
                self.send(ci, k, key, now, st);
            }
        }
    }

    /// Read everything available on `ci` and handle every complete message (reply
    /// times are taken here). The freed slots are refilled by [`Worker::answer`].
    fn read_conn(&mut self, ci: usize, ph: &mut Phase, st: &mut Stats) {
        let mut drained = false;
        loop {
            let c = &mut self.conns[ci];
            if !c.alive {
                return;
            }
            // Frames already buffered (also the bytes read with the handshake).
            if !handle_frames(c, self.base, ph, st) {
                let _ = c.ws.flush(); // a close reply, if any
                kill(c, st);
                return;
            }
            if drained {
                break;
            }
            match c.ws.fill() {
                Ok(Some(short)) => drained = short,
                Ok(None) => break,
                Err(_) => {
                    kill(c, st);
                    return;
                }
            }
        }
    }

    /// Refill the free slots of `ci` and flush: one write for all its new requests
    /// (and any pong). Their time stamp is taken just before they are written.
    fn answer(&mut self, ci: usize, ph: &mut Phase, st: &mut Stats) {
        if self.has_slot(ci, ph) {
            let now = ns_since(self.base);
            self.refill(ci, ph, now, st);
        }
        self.flush(ci, st);
    }

    /// No request in flight on any active connection.
    fn all_idle(&self, active: &[usize]) -> bool {
        active.iter().all(|&i| {
            let c = &self.conns[i];
            !c.alive || c.inflight.is_empty()
        })
    }

    /// Run one phase to completion (or its hard deadline).
    fn run(&mut self, ph: &mut Phase) -> Stats {
        let mut st = Stats::new();
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<usize> = Vec::with_capacity(1024);
        let active: Vec<usize> = (0..self.conns.len()).filter(|&i| !self.conns[i].idle).collect();
        let mut next_sched = ph.start as f64;
        let mut rr = 0usize;
        // Wait for the phase start (workers share one start time).
        loop {
            let now = ns_since(self.base);
            if now >= ph.start {
                break;
            }
            std::thread::sleep(Duration::from_nanos((ph.start - now).min(1_000_000)));
        }
        let now = ns_since(self.base);
        for &ci in &active {
            self.refill(ci, ph, now, &mut st);
        }
        for ci in 0..self.conns.len() {
            self.read_conn(ci, ph, &mut st);
            self.answer(ci, ph, &mut st);
        }
        loop {
            let now = ns_since(self.base);
            let iter_start = now;
            let mut touched = false;
            if now >= ph.hard_end || self.stop.load(Ordering::Relaxed) {
                break;
            }
            let sending_done = now >= ph.send_until || ph.preload.as_ref().is_some_and(|q| q.is_empty());
            if sending_done && self.all_idle(&active) {
                break;
            }
            if st.c.active_closed as usize >= active.len() {
                break;
            }
            // Open loop: schedule everything that is due.
            if let Some(iv) = ph.interval_ns {
                while next_sched <= now as f64 && next_sched < ph.send_until as f64 {
                    let t = next_sched as u64;
                    next_sched += iv;
                    // Round-robin over live active connections.
                    let mut tries = 0;
                    while tries < active.len() && !self.conns[active[rr % active.len()]].alive {
                        rr += 1;
                        tries += 1;
                    }
                    let ci = active[rr % active.len()];
                    rr += 1;
                    if self.has_slot(ci, ph) && self.conns[ci].backlog.is_empty() {
                        let (k, key) = self.gen.pick();
                        if now > t + 1_000_000 {
                            st.late += 1;
                        }
                        self.send(ci, k, key, t, &mut st);
                    } else {
                        self.conns[ci].backlog.push_back(t);
                    }
                    touched = true;
                }
                if touched {
                    for &ci in &active {
                        self.flush(ci, &mut st);
                    }
                }
            }
            // Poll timeout.
            let now = ns_since(self.base);
            let mut until = ph.hard_end.min(now + 100_000_000);
            if now < ph.send_until && ph.interval_ns.is_some() && next_sched < ph.send_until as f64 {
                until = until.min(next_sched as u64);
            }
            if now < ph.send_until {
                until = until.min(ph.send_until);
            }
            if ph.rec_until > now {
                until = until.min(ph.rec_until);
            }
            let wait = until.saturating_sub(now);
            // epoll_wait has 1 ms resolution (mio rounds up): spin when closer than that.
            let timeout =
                if wait < 1_500_000 { Duration::ZERO } else { Duration::from_millis((wait - 1_000_000) / 1_000_000) };
            let before = if touched { ns_since(self.base) } else { iter_start };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("dbx-bench: poll: {e}");
                    break;
                }
            }
            let after = ns_since(self.base);
            // Read (and time) every reply first, then send: the replies of the last
            // connections in the batch do not wait behind the writes of the first.
            ready.clear();
            for ev in events.iter() {
                let ci = ev.token().0;
                if ci >= self.conns.len() {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read_conn(ci, ph, &mut st);
                    ready.push(ci);
                } else if ev.is_writable() {
                    self.flush(ci, &mut st);
                }
            }
            for &ci in &ready {
                self.answer(ci, ph, &mut st);
            }
            // Busy time inside the measurement window: work done outside epoll_wait
            // (a spinning poll that found nothing counts as idle).
            if iter_start >= ph.rec_from && after <= ph.rec_until {
                let mut busy = before - iter_start;
                if !events.is_empty() {
                    busy += ns_since(self.base) - after;
                }
                st.busy_ns += busy;
            }
        }
        for c in &self.conns {
            if !c.idle && c.alive {
                st.unanswered += c.inflight.len() as u64;
            }
            if !c.idle {
                st.unsent += c.backlog.len() as u64;
            }
        }
        if ph.interval_ns.is_some() && next_sched < ph.send_until as f64 {
            st.unsent += ((ph.send_until as f64 - next_sched) / ph.interval_ns.unwrap_or(1.0)) as u64;
        }
        for c in &mut self.conns {
            c.inflight.clear();
            c.backlog.clear();
        }
        for h in &st.by_kind {
            let _ = st.hist.add(h);
        }
        st
    }

    fn close_all(&mut self) {
        for c in &mut self.conns {
            if c.alive {
                c.ws.push_frame(OP_CLOSE, &[]);
                let _ = c.ws.flush();
            }
        }
    }
}

/// Integer after `"name":` in `b`, starting the search at `from`; returns the value
/// and the position after it.
fn num_after(b: &[u8], name: &[u8], from: usize) -> Option<(u64, usize)> {
    let rest = b.get(from..)?;
    let at = rest.windows(name.len()).position(|w| w == name)? + from + name.len();
    let mut v = 0u64;
    let mut i = at;
    while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
        v = v * 10 + u64::from(d - b'0');
        i += 1;
    }
    (i > at).then_some((v, i))
}

/// A subscriber's message: count events (cheap scan, no JSON parse), check order per
/// publisher, record delivery latency; count subscribe confirmations.
fn on_sub_message(last_seq: &mut Vec<u64>, b: &[u8], now: u64, ph: &Phase, st: &mut Stats) {
    if b.starts_with(br#"{"type":"event""#) {
        st.c.deliveries_total += 1;
        let Some((p, i)) = num_after(b, br#""data":{"p":"#, 0) else {
            st.c.bad_replies += 1;
            return;
        };
        let (Some((n, i)), p) = (num_after(b, br#""n":"#, i), p as usize) else {
            st.c.bad_replies += 1;
            return;
        };
        if last_seq.len() <= p {
            last_seq.resize(p + 1, 0);
        }
        if n <= last_seq[p] {
            st.c.out_of_order += 1;
        }
        last_seq[p] = n;
        if now >= ph.rec_from && now < ph.rec_until {
            st.c.deliveries += 1;
            if let Some((t, _)) = num_after(b, br#""t":"#, i) {
                st.dhist.saturating_record(now.saturating_sub(t).max(1));
            }
        }
    } else if b.starts_with(br#"{"id":"#) {
        if b.windows(14).any(|w| w == br#""subscribed":["#) {
            st.c.subscribed += 1;
        } else {
            st.c.errors += 1;
        }
    } else if let Ok(r) = serde_json::from_slice::<Reply>(b) {
        let kind = r.kind.as_deref().unwrap_or("?");
        *st.c.unsolicited.entry(kind.to_string()).or_default() += 1;
    } else {
        st.c.bad_replies += 1;
    }
}

/// Handle every complete frame in `c`'s read buffer. `false`: the connection is
/// finished (close received, a close reply is queued) or broke the protocol.
fn handle_frames(c: &mut Conn, base: Instant, ph: &Phase, st: &mut Stats) -> bool {
    let Conn { ws, inflight, last_seq, sub, .. } = c;
    loop {
        let f = match ws.parse() {
            Parse::Incomplete => return true,
            Parse::Error => return false,
            Parse::Frame(f) => f,
        };
        match f.op {
            OP_PING => {
                // Control payloads are at most 125 bytes (checked by parse).
                let mut p = [0u8; 125];
                let n = f.end - f.start;
                p[..n].copy_from_slice(&ws.rbuf[f.start..f.end]);
                ws.push_frame(OP_PONG, &p[..n]);
            }
            OP_PONG => {}
            OP_CLOSE => {
                // Echo the status code, as tungstenite did.
                let mut code = [0u8; 2];
                let n = if f.end - f.start >= 2 { 2 } else { 0 };
                code[..n].copy_from_slice(&ws.rbuf[f.start..f.start + n]);
                ws.push_frame(OP_CLOSE, &code[..n]);
                ws.rpos = f.end;
                return false;
            }
            OP_TEXT | OP_BINARY if ws.frag_op == 0 => {
                if f.fin {
                    on_message(f.op, &ws.rbuf[f.start..f.end], *sub, inflight, last_seq, base, ph, st);
                } else {
                    ws.frag_op = f.op;
                    ws.frag.clear();
                    ws.frag.extend_from_slice(&ws.rbuf[f.start..f.end]);
                }
            }
            OP_CONT if ws.frag_op != 0 => {
                if ws.frag.len() + (f.end - f.start) > MAX_MESSAGE {
                    return false;
                }
                ws.frag.extend_from_slice(&ws.rbuf[f.start..f.end]);
                if f.fin {
                    let op = std::mem::replace(&mut ws.frag_op, 0);
                    on_message(op, &ws.frag, *sub, inflight, last_seq, base, ph, st);
                    ws.frag.clear();
                }
            }
            // A data frame inside a fragmented message, or a stray continuation.
            _ => return false,
        }
        ws.rpos = f.end;
    }
}

/// One complete message on a connection.
#[allow(clippy::too_many_arguments)]
fn on_message(
    op: u8,
    data: &[u8],
    sub: bool,
    inflight: &mut VecDeque<Pending>,
    last_seq: &mut Vec<u64>,
    base: Instant,
    ph: &Phase,
    st: &mut Stats,
) {
    let now = ns_since(base);
    let text = match std::str::from_utf8(data) {
        Ok(t) if op == OP_TEXT => t,
        // Binary, or a text message that is not UTF-8.
        _ => {
            st.c.bad_replies += 1;
            return;
        }
    };
    if sub {
        on_sub_message(last_seq, text.as_bytes(), now, ph, st);
        return;
    }
    let Some(reply) = parse_reply(text) else {
        st.c.bad_replies += 1;
        return;
    };
    if reply.id.is_none() {
        if let Some(t) = reply.kind {
            *st.c.unsolicited.entry(t.into_owned()).or_default() += 1;
            return;
        }
        if reply.error.is_none() {
            st.c.bad_replies += 1;
            return;
        }
    }
    let Some(p) = inflight.pop_front() else {
        st.c.bad_replies += 1;
        return;
    };
    if reply.id != Some(p.id) {
        st.c.id_mismatch += 1;
    }
    let recording = now >= ph.rec_from && now < ph.rec_until;
    if let Some(code) = reply.error {
        if recording || ph.preload.is_some() {
            st.c.errors += 1;
            let code = code.as_deref().unwrap_or("?");
            match st.c.error_codes.get_mut(code) {
                Some(v) => *v += 1,
                None => {
                    st.c.error_codes.insert(code.to_string(), 1);
                }
            }
        }
    } else if recording {
        st.c.ok += 1;
        let lat = now.saturating_sub(p.t0).max(1);
        // The overall histogram is the sum of these (built at the end of the run).
        st.by_kind[p.kind as usize].saturating_record(lat);
    } else if ph.preload.is_some() {
        st.c.ok += 1;
    }
}

fn kill(c: &mut Conn, st: &mut Stats) {
    if c.alive {
        c.alive = false;
        st.c.conns_closed += 1;
        if !c.idle {
            st.c.active_closed += 1;
        }
        st.c.lost_in_flight += c.inflight.len() as u64;
        c.inflight.clear();
    }
}

// ---------------------------------------------------------------------------
// Main

fn q(h: &Histogram<u64>, quant: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quant) as f64 / 1000.0
    }
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn main() {
    let o = Opts::parse();
    if let Err(e) = real_main(o) {
        eprintln!("dbx-bench: {e}");
        // Still print a JSON line so scripts can parse the failure.
        println!("{}", serde_json::json!({ "error": e }));
        std::process::exit(1);
    }
}

fn real_main(o: Opts) -> Result<(), String> {
    if o.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if o.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if o.keyspace == 0 {
        return Err("--keyspace must be at least 1".into());
    }
    if o.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if let Some(r) = o.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number of requests per second".into());
        }
    }
    let threads = o.threads.clamp(1, o.connections);
    let mix = parse_mix(&o.mix)?;
    let target = parse_target(&o)?;
    let say = |s: String| {
        if !o.json_only {
            eprintln!("{s}");
        }
    };
    raise_nofile((o.connections + o.idle + o.subscribers) as u64 + 64);

    let base = Instant::now();
    let mut rng = Rng::new(o.seed ^ 0x9e37_79b9_7f4a_7c15);

    // --- connect (bounded by --connect-timeout)
    let t_conn = Instant::now();
    let deadline = t_conn + o.connect_timeout;
    let mut active = Vec::with_capacity(o.connections);
    let mut idle = Vec::with_capacity(o.idle);
    let mk = |ws: Ws, idle: bool, sub: bool, gid: usize| Conn {
        ws,
        idle: idle || sub,
        sub,
        gid,
        last_seq: Vec::new(),
        alive: true,
        inflight: VecDeque::with_capacity(o.pipeline.max(16)),
        backlog: VecDeque::new(),
        next_id: 1,
    };
    // Handshakes go out in batches so the server accepts many per loop turn.
    const BATCH: usize = 64;
    let token = o.token.as_deref();
    let open_batch = |n: usize, read_buf: usize, rng: &mut Rng| -> Result<Vec<Ws>, String> {
        let mut started = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, key) = start_handshake(&target, token, deadline, rng)?;
            started.push((s, key, rng.next()));
        }
        started.into_iter().map(|(s, key, seed)| finish_handshake(s, &key, deadline, read_buf, seed)).collect()
    };
    while active.len() < o.connections {
        let n = BATCH.min(o.connections - active.len());
        // The read buffer is allocated once (no zero-fill per read, unlike tungstenite's),
        // so it can hold many pipelined replies.
        let batch = open_batch(n, 32 * 1024, &mut rng)
            .map_err(|e| format!("opening active connections ({} open): {e}", active.len()))?;
        let first = active.len();
        active.extend(batch.into_iter().enumerate().map(|(i, ws)| mk(ws, false, false, first + i)));
    }
    while idle.len() < o.idle {
        let n = BATCH.min(o.idle - idle.len());
        let batch = open_batch(n, 4096, &mut rng)
            .map_err(|e| format!("opened only {} of {} idle connections: {e}", idle.len(), o.idle))?;
        idle.extend(batch.into_iter().map(|ws| mk(ws, true, false, 0)));
    }
    // Fan-out subscribers: subscribe right away; the confirmations are counted by
    // the workers (the warm-up gives them time to arrive).
    let channel = o.channel.clone().unwrap_or_else(|| format!("{}chan", o.key_prefix));
    let channel_json = serde_json::to_string(&channel).unwrap_or_default();
    let mut subs = Vec::with_capacity(o.subscribers);
    while subs.len() < o.subscribers {
        let n = BATCH.min(o.subscribers - subs.len());
        let batch = open_batch(n, 16 * 1024, &mut rng)
            .map_err(|e| format!("opened only {} of {} subscribers: {e}", subs.len(), o.subscribers))?;
        for mut ws in batch {
            let req = format!(r#"{{"id":0,"method":"pubsub.subscribe","params":{{"channels":[{channel_json}]}}}}"#);
            ws.push_frame(OP_TEXT, req.as_bytes());
            ws.flush().map_err(|e| format!("subscribe: {e}"))?;
            subs.push(mk(ws, true, true, 0));
        }
    }
    say(format!(
        "dbx-bench: {} active + {} idle + {} subscriber connections to {} in {:.2}s",
        active.len(),
        idle.len(),
        subs.len(),
        o.url.split('?').next().unwrap_or(""),
        t_conn.elapsed().as_secs_f64()
    ));

    // --- distribute connections over workers
    let mut per: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in active.into_iter().enumerate() {
        per[i % threads].push(c);
    }
    for (i, c) in idle.into_iter().chain(subs).enumerate() {
        per[i % threads].push(c);
    }
    let prefix = {
        let s = serde_json::to_string(&o.key_prefix).unwrap_or_default();
        s[1..s.len() - 1].to_string()
    };
    let value = "x".repeat(o.value_size);
    let mut table = Vec::new();
    for &(k, w) in &mix {
        table.extend(std::iter::repeat_n(k, w as usize));
    }
    let preload_kinds: Vec<Kind> = {
        let mut v = Vec::new();
        if mix.iter().any(|(k, _)| matches!(k, Kind::Get | Kind::Set)) {
            v.push(Kind::Set);
        }
        if mix.iter().any(|(k, _)| matches!(k, Kind::HGet | Kind::HSet)) {
            v.push(Kind::HSet);
        }
        v
    };

    // Shared timing: phase starts are published by the main thread.
    let stop = Arc::new(AtomicBool::new(false));
    let run_start = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let preload = o.preload;
    let warmup_ns = o.warmup.as_nanos() as u64;
    let dur_ns = o.duration.as_nanos() as u64;
    let drain_ns = o.drain_timeout.as_nanos() as u64;
    let preload_ns = o.preload_timeout.as_nanos() as u64;
    let rate = o.rate;
    let pipeline = o.pipeline;
    let keyspace = o.keyspace;

    let mut handles = Vec::new();
    for (w, conns) in per.into_iter().enumerate() {
        let gen = Gen {
            table: table.clone(),
            rng: Rng::new(o.seed.wrapping_add((w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            keyspace,
            prefix: prefix.clone(),
            value: value.clone(),
            channel: channel_json[1..channel_json.len() - 1].to_string(),
        };
        let stop = stop.clone();
        let run_start = run_start.clone();
        let barrier = barrier.clone();
        let preload_kinds = preload_kinds.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || -> Result<(Stats, Stats), String> {
                let mut wk = Worker::new(conns, gen, base, stop).map_err(|e| e.to_string());
                // Preload: this worker's share of the keys.
                let mut pre = Stats::new();
                if let Ok(wk) = wk.as_mut() {
                    if preload && !preload_kinds.is_empty() {
                        let mut qv = VecDeque::new();
                        for &k in &preload_kinds {
                            for key in (w as u64..keyspace).step_by(threads) {
                                qv.push_back((k, key));
                            }
                        }
                        let now = ns_since(base);
                        let mut ph = Phase {
                            preload: Some(qv),
                            send_until: now + preload_ns,
                            rec_from: u64::MAX,
                            rec_until: u64::MAX,
                            hard_end: now + preload_ns,
                            interval_ns: None,
                            start: now,
                            pipeline: pipeline.max(32),
                        };
                        pre = wk.run(&mut ph);
                        pre.unsent = ph.preload.map_or(0, |q| q.len() as u64);
                    }
                }
                barrier.wait();
                barrier.wait();
                let wk = wk?;
                let mut wk = wk;
                let start = run_start.load(Ordering::SeqCst);
                let mut ph = Phase {
                    preload: None,
                    start,
                    rec_from: start + warmup_ns,
                    rec_until: start + warmup_ns + dur_ns,
                    send_until: start + warmup_ns + dur_ns,
                    hard_end: start + warmup_ns + dur_ns + drain_ns,
                    interval_ns: rate.map(|r| 1e9 / (r / threads as f64)),
                    pipeline,
                };
                let st = wk.run(&mut ph);
                wk.close_all();
                Ok((pre, st))
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(h);
    }

    // Preload barrier, then publish the start of the run.
    let t_pre = Instant::now();
    barrier.wait();
    if preload {
        say(format!("dbx-bench: preload phase took {:.2}s", t_pre.elapsed().as_secs_f64()));
    }
    let start = ns_since(base) + 5_000_000;
    run_start.store(start, Ordering::SeqCst);
    barrier.wait();
    say(format!(
        "dbx-bench: {} (mix {}, {} conns x {} in flight{}), warm-up {:.1}s, measuring {:.1}s",
        if rate.is_some() { "open loop" } else { "closed loop" },
        o.mix,
        o.connections,
        o.pipeline,
        rate.map(|r| format!(", {r} req/s")).unwrap_or_default(),
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64()
    ));

    // Measure our own CPU over the measurement window. Stop early if every worker
    // is done before the window ends (the server closed all connections).
    let all_done = |hs: &[std::thread::JoinHandle<_>]| hs.iter().all(|h| h.is_finished());
    let sleep_until = |t: u64, hs: &[std::thread::JoinHandle<_>]| loop {
        let now = ns_since(base);
        if now >= t || all_done(hs) {
            break;
        }
        std::thread::sleep(Duration::from_nanos((t - now).min(10_000_000)));
    };
    sleep_until(start + warmup_ns, &handles);
    let cpu0 = cpu_time();
    let w0 = Instant::now();
    sleep_until(start + warmup_ns + dur_ns, &handles);
    let cpu1 = cpu_time();
    let wall = w0.elapsed();
    let aborted = ns_since(base) < start + warmup_ns + dur_ns;
    // Every worker ends by its hard deadline; this is a safety net.
    let guard_deadline = Instant::now() + o.drain_timeout + Duration::from_secs(5);
    while handles.iter().any(|h| !h.is_finished()) {
        if Instant::now() >= guard_deadline {
            stop.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut pre = Stats::new();
    let mut st = Stats::new();
    for h in handles {
        match h.join() {
            Ok(Ok((p, s))) => {
                pre.merge(p);
                st.merge(s);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("worker thread panicked".into()),
        }
    }
    if preload {
        let failed = pre.c.errors + pre.unsent + pre.unanswered + pre.c.lost_in_flight;
        if failed > 0 {
            say(format!(
                "dbx-bench: WARNING preload incomplete: {} ok, {} errors {:?}, {} not sent, {} unanswered",
                pre.c.ok, pre.c.errors, pre.c.error_codes, pre.unsent, pre.unanswered
            ));
        } else {
            say(format!("dbx-bench: preloaded {} keys", pre.c.ok));
        }
    }

    let secs = if aborted { wall.as_secs_f64().max(1e-3) } else { o.duration.as_secs_f64() };
    let ops = st.c.ok as f64 / secs;
    let cpu_pct = 100.0 * (cpu1.saturating_sub(cpu0)).as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let busy_pct = 100.0 * st.busy_ns as f64 / (dur_ns as f64 * threads as f64);
    let h = &st.hist;
    let mut by_method = serde_json::Map::new();
    for k in KINDS {
        let hk = &st.by_kind[k as usize];
        if !hk.is_empty() {
            by_method.insert(
                k.name().into(),
                serde_json::json!({
                    "ops": hk.len(),
                    "p50_us": r1(q(hk, 0.5)),
                    "p99_us": r1(q(hk, 0.99)),
                    "max_us": r1(hk.max() as f64 / 1000.0),
                }),
            );
        }
    }
    if !o.json_only {
        eprintln!("ops/s      {:>12.0}   ({} ok in {:.1}s)", ops, st.c.ok, secs);
        eprintln!(
            "latency us p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}{}",
            q(h, 0.5),
            q(h, 0.9),
            q(h, 0.99),
            q(h, 0.999),
            h.max() as f64 / 1000.0,
            if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            if rate.is_some() { "  (from intended send time)" } else { "" }
        );
        for (name, v) in &by_method {
            eprintln!("  {name:<8} {v}");
        }
        eprintln!(
            "errors     {} {:?}   bad replies {}   id mismatches {}   closed conns {} (lost {} in flight)",
            st.c.errors, st.c.error_codes, st.c.bad_replies, st.c.id_mismatch, st.c.conns_closed, st.c.lost_in_flight
        );
        if rate.is_some() {
            eprintln!("open loop  sent late (>1ms) {}   never sent {}", st.late, st.unsent);
        }
        eprintln!(
            "bench cpu  {cpu_pct:.1}% of one core (loop busy {busy_pct:.1}%){}",
            if cpu_pct > 90.0 && rate.is_none() {
                "  -- WARNING: the generator may be the bottleneck (try --threads)"
            } else {
                ""
            }
        );
        if o.subscribers > 0 {
            let d = &st.dhist;
            eprintln!(
                "fan-out    {:.0} deliveries/s to {} subscribers ({} subscribed; {} in window, {} total)   out of order {}",
                st.c.deliveries as f64 / secs,
                o.subscribers,
                st.c.subscribed,
                st.c.deliveries,
                st.c.deliveries_total,
                st.c.out_of_order
            );
            eprintln!(
                "delivery us p50 {:.1}  p99 {:.1}  max {:.1}  (publish sent -> event received)",
                q(d, 0.5),
                q(d, 0.99),
                d.max() as f64 / 1000.0
            );
        }
        if !st.c.unsolicited.is_empty() {
            eprintln!("unsolicited {:?}", st.c.unsolicited);
        }
    }
    let mut out = serde_json::json!({
        "ops_per_sec": r1(ops),
        "p50_us": r1(q(h, 0.5)),
        "p90_us": r1(q(h, 0.9)),
        "p99_us": r1(q(h, 0.99)),
        "p999_us": r1(q(h, 0.999)),
        "max_us": r1(h.max() as f64 / 1000.0),
        "mean_us": r1(if h.is_empty() { 0.0 } else { h.mean() / 1000.0 }),
        "errors": st.c.errors,
        "errors_by_code": st.c.error_codes,
        "cpu_pct": r1(cpu_pct),
        "busy_pct": r1(busy_pct),
        "ok": st.c.ok,
        "sent": st.c.sent,
        "unanswered": st.unanswered,
        "bad_replies": st.c.bad_replies,
        "id_mismatch": st.c.id_mismatch,
        "conns_closed": st.c.conns_closed,
        "mode": if rate.is_some() { "open" } else { "closed" },
        "rate": rate,
        "late": st.late,
        "unsent": st.unsent,
        "connections": o.connections,
        "pipeline": o.pipeline,
        "idle": o.idle,
        "threads": threads,
        "duration_s": secs,
        "warmup_s": o.warmup.as_secs_f64(),
        "mix": o.mix,
        "keyspace": o.keyspace,
        "value_size": o.value_size,
        "preloaded": pre.c.ok,
        "by_method": by_method,
    });
    if o.subscribers > 0 {
        let d = &st.dhist;
        out["subscribers"] = o.subscribers.into();
        out["subscribed"] = st.c.subscribed.into();
        out["deliveries"] = st.c.deliveries.into();
        out["deliveries_total"] = st.c.deliveries_total.into();
        out["deliveries_per_sec"] = r1(st.c.deliveries as f64 / secs).into();
        out["out_of_order"] = st.c.out_of_order.into();
        out["delivery_p50_us"] = r1(q(d, 0.5)).into();
        out["delivery_p99_us"] = r1(q(d, 0.99)).into();
        out["delivery_max_us"] = r1(d.max() as f64 / 1000.0).into();
    }
    if aborted {
        let msg = format!(
            "run aborted: all active connections were closed ({} closed, {} requests lost)",
            st.c.conns_closed, st.c.lost_in_flight
        );
        out["error"] = serde_json::Value::String(msg.clone());
        println!("{out}");
        eprintln!("dbx-bench: {msg}");
        std::process::exit(1);
    }
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request texts of the earlier `format!`-based builder.
    fn old_build(g: &Gen, id: u64, kind: Kind, key: u64, publisher: usize, now_ns: u64) -> String {
        let p = &g.prefix;
        let v = &g.value;
        match kind {
            Kind::Get => format!(r#"{{"id":{id},"method":"string.get","params":{{"key":"{p}{key}"}}}}"#),
            Kind::Set => {
                format!(r#"{{"id":{id},"method":"string.set","params":{{"key":"{p}{key}","value":"{v}"}}}}"#)
            }
            Kind::Incr => format!(r#"{{"id":{id},"method":"string.incr","params":{{"key":"{p}c{key}"}}}}"#),
            Kind::HGet => {
                format!(r#"{{"id":{id},"method":"hash.get","params":{{"key":"{p}h{key}","field":"f"}}}}"#)
            }
            Kind::HSet => {
                format!(r#"{{"id":{id},"method":"hash.set","params":{{"key":"{p}h{key}","field":"f","value":"{v}"}}}}"#)
            }
            Kind::Publish => format!(
                r#"{{"id":{id},"method":"pubsub.publish","params":{{"channel":"{}","data":{{"p":{publisher},"n":{id},"t":{now_ns},"v":"{v}"}}}}}}"#,
                g.channel
            ),
            Kind::Ping => format!(r#"{{"id":{id},"method":"server.ping"}}"#),
        }
    }

    #[test]
    fn requests_match_the_format_builder() {
        let g = Gen {
            table: vec![Kind::Get],
            rng: Rng::new(1),
            keyspace: 10,
            prefix: r#"be\"nch:"#.into(),
            value: "xyz".repeat(20),
            channel: "bench:chan".into(),
        };
        let mut buf = Vec::new();
        for kind in KINDS {
            for (id, key) in [(0, 0), (1, 9), (123_456, 99_999), (u64::MAX, u64::MAX)] {
                g.build(&mut buf, id, kind, key, 7, 1_234_567_890);
                assert_eq!(String::from_utf8(buf.clone()).unwrap(), old_build(&g, id, kind, key, 7, 1_234_567_890));
            }
        }
    }

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        let (len, hdr) = match frame[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (usize::from(n), 2),
        };
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let m = &frame[hdr..hdr + 4];
        let p = &frame[hdr + 4..];
        assert_eq!(p.len(), len);
        (frame[0], p.iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect())
    }

    #[test]
    fn masked_frames_round_trip() {
        for len in [0usize, 1, 7, 8, 9, 125, 126, 127, 1000, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut w = Vec::new();
            push_masked_frame(&mut w, OP_TEXT, &payload, 0xdead_beef);
            let (b0, p) = unmask(&w);
            assert_eq!(b0, 0x80 | OP_TEXT);
            assert_eq!(p, payload, "len {len}");
        }
    }

    fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | op];
        let n = payload.len();
        if n < 126 {
            f.push(n as u8);
        } else if n <= 0xffff {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_parse() {
        for n in [0usize, 5, 125, 126, 300, 65_535, 65_536] {
            let p = vec![b'a'; n];
            let f = server_frame(true, OP_TEXT, &p);
            match parse_frame(&f, 3) {
                Parse::Frame(fr) => {
                    assert!(fr.fin);
                    assert_eq!(fr.op, OP_TEXT);
                    assert_eq!(fr.end - fr.start, n);
                    assert_eq!(fr.end - 3, f.len());
                }
                _ => panic!("frame of {n} bytes not parsed"),
            }
            for cut in [0, 1, f.len() / 2, f.len().saturating_sub(1)] {
                if cut < f.len() {
                    assert!(matches!(parse_frame(&f[..cut], 0), Parse::Incomplete), "n {n} cut {cut}");
                }
            }
        }
        // Masked frame from the server, reserved bits, unknown opcode, long or
        // fragmented control frames: protocol errors.
        assert!(matches!(parse_frame(&[0x81, 0x80, 0, 0, 0, 0], 0), Parse::Error));
        assert!(matches!(parse_frame(&[0xc1, 0x00], 0), Parse::Error));
        assert!(matches!(parse_frame(&[0x83, 0x00], 0), Parse::Error));
        assert!(matches!(parse_frame(&server_frame(true, OP_PING, &[0; 126]), 0), Parse::Error));
        assert!(matches!(parse_frame(&server_frame(false, OP_PING, b"x"), 0), Parse::Error));
    }

    type Norm = Option<(Option<u64>, Option<String>, Option<Option<String>>)>;

    fn norm(r: Option<ReplyInfo<'_>>) -> Norm {
        r.map(|r| (r.id, r.kind.map(|k| k.into_owned()), r.error.map(|e| e.map(|c| c.into_owned()))))
    }

    #[test]
    fn replies_parse_like_serde() {
        let cases = [
            r#"{"id":1,"result":{"value":"xxxx"},"timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"id":18446744073709551615,"result":null}"#,
            r#"{"id":18446744073709551616,"result":null}"#,
            r#"{"id":0,"result":[1,2.5,-3e+7,true,false,null,{"a":[]},{}]}"#,
            r#"{"id":7,"error":{"code":"not_found","message":"no such key"},"timestamp":"t"}"#,
            r#"{"id":7,"error":{"message":"no code"}}"#,
            r#"{"id":7,"error":{"code":null}}"#,
            r#"{"id":7,"error":null,"result":1}"#,
            r#"{"id":7,"error":"boom"}"#,
            r#"{"id":7,"error":{"code":5}}"#,
            r#"{"id":7,"error":{"code":"a","code":"b"}}"#,
            r#"{"error":{"code":"rate_limited"}}"#,
            r#"{"type":"event","channel":"c","data":{"p":1}}"#,
            r#"{"type":null,"id":null}"#,
            r#"{"id":null}"#,
            r#"{}"#,
            r#" { "id" : 3 , "result" : "x" } "#,
            r#"{"id":3,"result":"a\"b\u00e9"}"#,
            r#"{"i\u0064":3}"#,
            r#"{"id":"3"}"#,
            r#"{"id":3.0}"#,
            r#"{"id":-3}"#,
            r#"{"id":03}"#,
            r#"{"id":1e2}"#,
            r#"{"id":3,"id":4}"#,
            r#"{"id":3,"type":"x","type":"y"}"#,
            r#"{"id":3,}"#,
            r#"{"id":3} x"#,
            r#"{"id":3,"result":[1,]}"#,
            r#"{"id":3,"result":01}"#,
            r#"{"id":3,"result":1.}"#,
            r#"{"id":3,"result":tru}"#,
            r#"{"id":3,"result":"tab	in string"}"#,
            r#"{"id":3"#,
            r#"[3,"event",null]"#,
            r#"[]"#,
            r#"3"#,
            r#""#,
            r#"{"id":3,"result":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        ];
        for c in cases {
            let want = norm(serde_json::from_str::<Reply>(c).ok().map(ReplyInfo::from));
            assert_eq!(norm(parse_reply(c)), want, "{c}");
        }
        // Every position of a quote, escape, control character or multi-byte
        // character relative to the 8-byte steps of the string scan.
        for n in 0..20 {
            let a = "a".repeat(n);
            for mid in ["\\\"", "\\n", "\u{1}", "\t", "é", "😀", "\u{7f}", "x\"y", ""] {
                for c in [
                    format!(r#"{{"id":1,"result":{{"value":"{a}{mid}{a}"}},"timestamp":"{a}"}}"#),
                    format!(r#"{{"id":1,"error":{{"code":"{a}{mid}","message":"{mid}{a}"}}}}"#),
                    format!(r#"{{"type":"{a}{mid}"}}"#),
                ] {
                    let want = norm(serde_json::from_str::<Reply>(&c).ok().map(ReplyInfo::from));
                    assert_eq!(norm(parse_reply(&c)), want, "{c:?}");
                }
            }
        }
        // The common shapes take the fast path.
        let r = scan_reply(r#"{"id":42,"result":{"value":"x"},"timestamp":"t"}"#).ok().unwrap();
        assert!(r.id == Some(42) && r.kind.is_none() && r.error.is_none());
        let r = scan_reply(r#"{"id":7,"error":{"code":"not_found","message":"m"}}"#).ok().unwrap();
        assert_eq!(r.error, Some(Some(Cow::Borrowed("not_found"))));
    }
}
