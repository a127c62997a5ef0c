//! The reactor: one thread, one mio `Poll`, the listener, a `Slab<Conn>`, one timing
//! wheel. The only module that touches the mio registry.
//!
//! A loop turn (Redis's `ae` loop):
//! 1. poll, with the timeout taken from the nearest timer or key expiry (0 when input
//!    is left over from a previous turn);
//! 2. accept, read and execute; replies are queued in each connection's `Wire`;
//! 3. fire due timers (heartbeats, liveness, handshake and credential deadlines);
//! 4. `before_sleep`: active expiry, then one flush per dirty connection, then free the
//!    connections that died this turn (so a reused slab slot never sees a stale event).
//!
//! Sockets are registered once, edge-triggered, for both read and write; bytes left
//! unread (budget spent, backpressure) put the connection on the `more_input` list
//! because no new edge will come for them.

pub mod conn;
pub mod cycles;
pub mod handshake;
pub mod metrics;
pub mod notify;
pub mod ratelimit;
mod reload;
pub mod tls;
mod tls_hooks;
pub mod wheel;

use crate::auth::{self, AuthConfig, AuthError, Authenticator, Identity};
use crate::cmd::{self, Ctx, ServerFacts};
use crate::config::Config;
use crate::persist::Persist;
use crate::proto::{self, Code, Incoming, Json};
use crate::pubsub::Hub;
use crate::store::{Gone, Store};
use conn::{CloseReason, Conn, Phase, Wire};
use handshake::{Parse, Paths, Refusal, Route};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};
use wheel::Wheel;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// The DBX_ADMIN_PORT listener (`/health`, `/metrics`), on the same Poll.
const ADMIN_LISTENER: Token = Token(usize::MAX - 4);
/// Messages handled per connection per readable event before others get their turn.
const READ_BUDGET: usize = 256;
/// Keys removed per loop turn by active expiry; the rest wait for the next turn.
const EXPIRE_BUDGET: usize = 1000;
/// How long a closing handshake or a drained HTTP answer may take.
const CLOSE_GRACE_MS: u64 = 2000;
/// How long to stop accepting after EMFILE/ENFILE.
const ACCEPT_BACKOFF_MS: u64 = 100;
/// Graceful shutdown waits at most this long for close handshakes.
const SHUTDOWN_GRACE_MS: u64 = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Heartbeat(usize, u64),
    Deadline(usize, u64),
    Expiry(usize, u64),
    ResumeAccept,
    Watchdog(u64),
    CertCheck,
}

/// A handle to stop a running server from another thread (tests, signal handlers).
#[derive(Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

pub struct Server {
    cfg: Config,
    auth: Authenticator,
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// DBX_ADMIN_PORT: plain HTTP, `/health` and `/metrics` only (issue 17).
    admin_listener: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
    conns: Slab<Conn>,
    wheel: Wheel<Timer>,
    store: Store,
    hub: Hub,
    facts: ServerFacts,
    metrics: metrics::Metrics,
    started: Instant,
    next_serial: u64,
    ws_count: usize,
    /// Reused reply buffer.
    buf: Vec<u8>,
    dirty: Vec<usize>,
    more_input: Vec<usize>,
    dead: Vec<usize>,
    /// Current turn's unix ms and its RFC 3339 text, formatted once per turn.
    unix_ms: u64,
    /// Time-stamp counter for per-request latency.
    cycles: cycles::Cycles,
    /// This turn's monotonic ms (activity stamps and token buckets need no finer clock).
    mono: u64,
    stamp: String,
    stamp_ms: u64,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    shutting_down: Option<u64>,
    rng: u64,
    accept_paused: bool,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    // ---- persistence (issue 7) ----
    persist: Persist,
    log_buf: Vec<u8>,
    /// `Ctx::changes`, reused from request to request.
    changes_buf: Vec<cmd::Change>,
    // ---- TLS (issue 15): tls.rs, tls_hooks.rs; SIGHUP: reload.rs ----
    tls: Option<tls::TlsSetup>,
    tls_stats: tls_hooks::TlsStats,
}

/// `host:port` as an address: a literal, else the first name resolution.
fn bind_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    format!("{host}:{port}").parse().or_else(|_| {
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))
    })
}

fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A random-enough 64-bit seed without a crate: /dev/urandom, else time and pid.
pub fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_le_bytes(b) | 1;
    }
    (unix_ms_now() ^ ((std::process::id() as u64) << 32)) | 1
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (one descriptor per connection) and
/// return the limit in force. Never fails: on error the current soft limit stays.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let mut want = lim.rlim_max;
        if want == libc::RLIM_INFINITY {
            // Linux refuses "infinity" for NOFILE; its ceiling is fs.nr_open.
            want = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1 << 20);
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = want;
        }
    }
    lim.rlim_cur
}

impl Server {
    /// Bind the configured address.
    pub fn bind(cfg: Config) -> io::Result<Server> {
        let addr = bind_addr(&cfg.host, cfg.port)?;
        let std_listener = std::net::TcpListener::bind(addr)?;
        let admin = match cfg.admin_port {
            // InvalidInput: the caller prints the message as it is, and it must name
            // DBX_ADMIN_PORT rather than the client port.
            Some(port) => {
                Some(bind_addr(&cfg.admin_host, port).and_then(std::net::TcpListener::bind).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("DBX_ADMIN_PORT: cannot listen on {}:{port}: {e}", cfg.admin_host),
                    )
                })?)
            }
            None => None,
        };
        Server::with_listeners(cfg, std_listener, admin)
    }

    /// Serve on an already-bound listener (tests bind 127.0.0.1:0).
    pub fn with_listener(cfg: Config, listener: std::net::TcpListener) -> io::Result<Server> {
        Server::with_listeners(cfg, listener, None)
    }

    /// Serve on already-bound client and (optional) admin listeners.
    pub fn with_listeners(
        cfg: Config,
        listener: std::net::TcpListener,
        admin: Option<std::net::TcpListener>,
    ) -> io::Result<Server> {
        let auth = Authenticator::new(&AuthConfig {
            api_keys: cfg.api_keys.clone(),
            jwt_secret: cfg.jwt_secret.clone(),
            jwt_public_key_path: cfg.jwt_public_key.clone(),
            jwt_issuer: cfg.jwt_issuer.clone(),
            jwt_audience: cfg.jwt_audience.clone(),
            jwt_leeway: cfg.jwt_leeway,
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tls::TlsSetup::from_config(&cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let (admin_listener, admin_addr) = match admin {
            Some(a) => {
                a.set_nonblocking(true)?;
                let addr = a.local_addr()?;
                let mut a = TcpListener::from_std(a);
                poll.registry().register(&mut a, ADMIN_LISTENER, Interest::READABLE)?;
                (Some(a), Some(addr))
            }
            None => (None, None),
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let rng = seed();
        let now = unix_ms_now();
        // Persistence: load the data directory before serving (issue 7).
        let (persist, store, epoch) = if cfg.persist {
            let o = Persist::open(&cfg, &format!("{:016x}", rng), now)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            (o.persist, o.store, o.epoch)
        } else {
            (Persist::off(), Store::new(), format!("{:016x}", rng))
        };
        let facts = ServerFacts {
            version: env!("CARGO_PKG_VERSION"),
            epoch,
            max_batch: cfg.max_batch,
            maxmemory: cfg.maxmemory,
            maxmemory_policy: cfg.maxmemory_policy,
            persist_enabled: cfg.persist,
            ..ServerFacts::default()
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            admin_listener,
            admin_addr,
            conns: Slab::with_capacity(1024),
            wheel: Wheel::new(10, 1024, 0),
            hub: Hub::new(cfg.watch_backlog, store.rev()),
            store,
            facts,
            metrics: metrics::Metrics::default(),
            started: Instant::now(),
            next_serial: 1,
            ws_count: 0,
            buf: Vec::with_capacity(64 * 1024),
            dirty: Vec::new(),
            more_input: Vec::new(),
            dead: Vec::new(),
            unix_ms: now,
            mono: 0,
            cycles: cycles::Cycles::calibrate(Duration::from_millis(10)),
            stamp: proto::rfc3339_ms(now),
            stamp_ms: now,
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            shutting_down: None,
            rng,
            accept_paused: false,
            signals: None,
            persist,
            log_buf: Vec::new(),
            changes_buf: Vec::new(),
            tls,
            tls_stats: tls_hooks::TlsStats::default(),
            auth,
            cfg,
        })
    }

    /// SIGTERM / SIGINT start a graceful shutdown, SIGHUP reloads (reload.rs); they
    /// arrive through the same Poll.
    pub fn install_signals(&mut self) -> io::Result<()> {
        let mut signals = signal_hook_mio::v1_0::Signals::new(reload::HANDLED)?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port serves TLS (wss://, https://).
    /// The DBX_ADMIN_PORT listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown { flag: self.shutdown_flag.clone(), waker: self.waker.clone() }
    }

    /// Monotonic ms since start: the wheel's clock (immune to wall-clock jumps).
    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Run until shut down. Returns after every connection is closed (or the grace
    /// period ran out).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut fired = Vec::new();
        // Listening and loaded: tell systemd (Type=notify) we are ready.
        notify::notify("READY=1");
        if let Some(every) = notify::watchdog_interval_ms() {
            let at = self.mono_ms() + every;
            self.wheel.insert(at, Timer::Watchdog(every));
        }
        if self.tls.is_some() {
            self.tls_check_expiry();
            let at = self.mono_ms() + tls_hooks::CERT_CHECK_MS;
            self.wheel.insert(at, Timer::CertCheck);
        }
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.tick_clock();
            let turn = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(false),
                    ADMIN_LISTENER => self.accept_all(true),
                    WAKER => {}
                    SIGNALS => {
                        let pending: Vec<i32> =
                            self.signals.as_mut().map(|s| s.pending().collect()).unwrap_or_default();
                        for s in pending {
                            self.on_signal(s);
                        }
                    }
                    Token(t) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            if let Some(c) = self.conns.get_mut(t) {
                                c.readable(ev.is_read_closed() || ev.is_error());
                            }
                            self.on_readable(t);
                        }
                        if ev.is_writable() {
                            self.mark_dirty(t);
                        }
                    }
                }
            }
            // Input left over from earlier turns (no new edge will come for it).
            let again = std::mem::take(&mut self.more_input);
            for t in again {
                if let Some(c) = self.conns.get_mut(t) {
                    c.more_input = false;
                    if !c.paused {
                        self.on_readable(t);
                    } else {
                        c.more_input = true;
                        self.more_input.push(t);
                    }
                }
            }
            let now = self.mono_ms();
            self.wheel.poll(now, &mut fired);
            for timer in fired.drain(..) {
                self.on_timer(timer);
            }
            if self.shutdown_flag.load(Ordering::SeqCst) && self.shutting_down.is_none() {
                self.begin_shutdown();
            }
            self.before_sleep();
            self.metrics.loop_turns.record(turn.elapsed().as_micros() as u64);
            if let Some(deadline) = self.shutting_down {
                if self.conns.is_empty() || self.mono_ms() >= deadline {
                    self.persist.close();
                    log::info!("shutdown complete ({} connections left)", self.conns.len());
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.more_input.iter().all(|&t| self.conns.get(t).is_none_or(|c| c.paused)) {
            return Some(Duration::ZERO);
        }
        let now = self.mono_ms();
        let mut ms = self.wheel.next_deadline_ms(now);
        if let Some(at) = self.store.next_expiry() {
            let wall = unix_ms_now();
            let d = at.saturating_sub(wall);
            ms = Some(ms.map_or(d, |m| m.min(d)));
        }
        if let Some(deadline) = self.shutting_down {
            let d = deadline.saturating_sub(now);
            ms = Some(ms.map_or(d, |m| m.min(d)));
        }
        if let Some(d) = self.persist.wakeup_ms() {
            ms = Some(ms.map_or(d, |m| m.min(d)));
        }
        ms.map(Duration::from_millis)
    }

    fn tick_clock(&mut self) {
        self.mono = self.mono_ms();
        self.unix_ms = unix_ms_now();
        if self.unix_ms != self.stamp_ms {
            self.stamp_ms = self.unix_ms;
            self.stamp = proto::rfc3339_ms(self.unix_ms);
            self.hub.stamp.clone_from(&self.stamp);
        }
    }

    fn mark_dirty(&mut self, t: usize) {
        if let Some(c) = self.conns.get_mut(t) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
        }
    }

    fn kill(&mut self, t: usize, why: CloseReason) {
        if let Some(c) = self.conns.get_mut(t) {
            if c.dead.is_none() {
                c.dead = Some(why);
                self.dead.push(t);
            }
        }
    }

    // ---- accepting ----

    /// Accept what is pending on the client listener, or (`admin`) the admin one.
    fn accept_all(&mut self, admin: bool) {
        if self.accept_paused || self.shutting_down.is_some() {
            return;
        }
        loop {
            let listener = if admin { self.admin_listener.as_ref() } else { self.listener.as_ref() };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.add_conn(sock, peer, admin),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The peer gave up while in the backlog: not a reason to stop accepting.
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE/ENFILE (or ENOBUFS): the pending connection stays in the
                    // backlog and the listener would report readable forever. Back off
                    // instead of spinning; the timer resumes accepting.
                    log::warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF_MS} ms");
                    self.accept_paused = true;
                    let at = self.mono_ms() + ACCEPT_BACKOFF_MS;
                    self.wheel.insert(at, Timer::ResumeAccept);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream, peer: SocketAddr, admin: bool) {
        let _ = sock.set_nodelay(true);
        let now = self.mono_ms();
        let entry = self.conns.vacant_entry();
        let t = entry.key();
        if self.poll.registry().register(&mut sock, Token(t), Interest::READABLE | Interest::WRITABLE).is_err() {
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        // Monotonic ms, the clock `on_text` refills the bucket with (and liveness uses).
        let mut c = Conn::new(sock, peer, serial, now, self.cfg.ws_rate_limit);
        c.admin = admin;
        // The admin port is plain HTTP even when the client port serves TLS (a local
        // scraper needs no certificate).
        let tls = if admin { None } else { self.tls.as_ref() };
        if !tls_hooks::attach(tls, &mut c) {
            if let Some(w) = c.wire() {
                let _ = self.poll.registry().deregister(&mut w.sock);
            }
            return;
        }
        // The whole HTTP request must arrive within DBX_WS_TIMEOUT (slowloris).
        c.timers.deadline = Some(self.wheel.insert(now + self.cfg.timeout_ms(), Timer::Deadline(t, serial)));
        entry.insert(c);
        self.metrics.accepted += 1;
        log::debug!("accepted {peer} as #{serial}");
    }

    // ---- reading ----

    fn on_readable(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.dead.is_some() {
            return;
        }
        match &c.phase {
            Phase::Http { .. } => self.read_http(t),
            Phase::Answered { .. } => self.drain_answered(t),
            Phase::Ws(_) => self.read_ws(t),
            Phase::Gone => {}
        }
        self.tls_after_read(t);
    }

    fn read_http(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let admin_conn = c.admin;
        // The admin port serves `/health` and `/metrics` only; with an admin port,
        // the client port no longer serves `/metrics`.
        let paths_ws = if self.cfg.ws_enabled && !admin_conn { Some(self.cfg.ws_path.clone()) } else { None };
        let echo = if admin_conn { None } else { self.cfg.echo_path.clone() };
        let metrics_here = admin_conn || self.admin_addr.is_none();
        let Phase::Http { wire, head } = &mut c.phase else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let parsed = loop {
            match wire.read(&mut chunk) {
                Ok(0) => {
                    self.kill(t, CloseReason::PeerClosed);
                    return;
                }
                Ok(n) => {
                    head.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let paths = Paths { ws: paths_ws.as_deref(), echo: echo.as_deref(), metrics: metrics_here };
                    match handshake::parse(head, &paths) {
                        Parse::Partial => continue,
                        Parse::Done(route, len) => break (route, len),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.kill(t, CloseReason::PeerReset);
                    return;
                }
            }
        };
        let (route, len) = parsed;
        match route {
            Route::Upgrade(up) => self.upgrade(t, up, len, false),
            Route::Echo(up) => self.upgrade(t, up, len, true),
            Route::Health { head } => {
                let (status, body) = self.health_json();
                let full = handshake::response(status, "application/json", &body, "");
                self.answer(t, if head { handshake::without_body(full, body.len()) } else { full });
            }
            Route::Metrics(m) => {
                if !admin_conn {
                    if let Err(r) = self.metrics_allowed(&m) {
                        self.metrics.count_refused(r.code);
                        let body_len = handshake::refusal_body_len(&r);
                        let full = handshake::refusal_response(&r);
                        return self.answer(t, if m.head { handshake::without_body(full, body_len) } else { full });
                    }
                }
                let body = self.metrics_text();
                let full = handshake::response(200, "text/plain; version=0.0.4", body.as_bytes(), "");
                self.answer(t, if m.head { handshake::without_body(full, body.len()) } else { full });
            }
            Route::Refuse(r) => {
                self.metrics.count_refused(r.code);
                log::debug!("refused #{t}: {} {}", r.status, r.code);
                self.answer(t, handshake::refusal_response(&r));
            }
        }
    }

    /// Queue a complete HTTP answer; the connection ends once it is sent.
    fn answer(&mut self, t: usize, bytes: Vec<u8>) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let phase = std::mem::replace(&mut c.phase, Phase::Gone);
        let (Phase::Http { mut wire, .. } | Phase::Answered { mut wire }) = phase else {
            c.phase = phase;
            return;
        };
        wire.queue(&bytes);
        c.phase = Phase::Answered { wire };
        self.mark_dirty(t);
    }

    /// After an answer was sent and the write side shut: read and discard until EOF.
    fn drain_answered(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        // An HTTP answer, or a WebSocket failed by us (`fail_ws`): keep its reason.
        let why = c.closing.unwrap_or(CloseReason::HttpDone);
        let Phase::Answered { wire } = &mut c.phase else {
            return;
        };
        let mut sink = [0u8; 4096];
        loop {
            match wire.sock.read(&mut sink) {
                Ok(0) => return self.kill(t, why),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(t, why),
            }
        }
    }

    fn ws_config(&self, echo: bool) -> WebSocketConfig {
        let max =
            if echo { (self.cfg.max_message_size as usize).max(64 << 20) } else { self.cfg.max_message_size as usize };
        let mut c = WebSocketConfig::default();
        // Small per-connection buffers: 10,000 idle connections must stay cheap.
        c.read_buffer_size = 4096;
        // Our Wire queues every write, so tungstenite never needs to hold frames back.
        c.write_buffer_size = 0;
        c.max_write_buffer_size = usize::MAX;
        c.max_message_size = Some(max);
        c.max_frame_size = Some(max);
        c
    }

    fn upgrade(&mut self, t: usize, up: handshake::Upgrade, head_len: usize, echo: bool) {
        if !echo && self.ws_count >= self.cfg.ws_max_connections {
            self.metrics.count_refused("overloaded");
            let r =
                Refusal::new(503, "overloaded", format!("Connection limit of {} reached", self.cfg.ws_max_connections));
            return self.answer(t, handshake::refusal_response(&r));
        }
        let (credential, protocol) =
            auth::extract_credential(up.api_key.as_deref(), up.authorization.as_deref(), up.protocols.as_deref());
        let identity = if echo {
            Identity::anonymous()
        } else {
            match self.auth.authenticate(credential, self.unix_ms / 1000) {
                Ok(id) => id,
                Err(e) => {
                    self.metrics.count_refused("unauthorized");
                    let message = match e {
                        AuthError::Missing => "Missing credential: pass api_key, an Authorization bearer token or a bearer.<token> subprotocol".to_string(),
                        AuthError::Invalid(m) => format!("Invalid credential: {m}"),
                    };
                    log::info!(
                        "refused {} target={}: unauthorized",
                        self.conns.get(t).map_or_else(|| "?".into(), |c| c.peer.to_string()),
                        auth::redact_query(&up.target)
                    );
                    let r = Refusal::new(401, "unauthorized", message);
                    return self.answer(t, handshake::refusal_response(&r));
                }
            }
        };
        let config = self.ws_config(echo);
        let now = self.mono_ms();
        let hb = self.cfg.heartbeat_ms();
        let first_beat = now + 1 + self.rand() % hb.max(1);
        let live_ms = hb + self.cfg.timeout_ms();
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let phase = std::mem::replace(&mut c.phase, Phase::Gone);
        let Phase::Http { mut wire, head } = phase else {
            c.phase = phase;
            return;
        };
        wire.queue(&handshake::switching_protocols(&up.accept, protocol));
        wire.frames_start_here();
        // Bytes after the request head are the start of the first frame.
        let rest = head.get(head_len..).unwrap_or_default().to_vec();
        let ws = WebSocket::from_partially_read(wire, rest, Role::Server, Some(config));
        c.phase = Phase::Ws(Box::new(ws));
        c.echo = echo;
        c.client_id = up.client_id;
        c.identity = Rc::new(identity);
        c.counted = !echo;
        c.last_seen_ms = now;
        let serial = c.serial;
        if let Some(id) = c.timers.deadline.take() {
            self.wheel.cancel(id);
        }
        // The echo endpoint is a pure echo (conformance suites compare every frame it
        // sends): no heartbeat text frames or pings; the liveness deadline still holds.
        let hb_id = (!echo).then(|| self.wheel.insert(first_beat, Timer::Heartbeat(t, serial)));
        let dl_id = self.wheel.insert(now + live_ms, Timer::Deadline(t, serial));
        if let Some(c) = self.conns.get_mut(t) {
            c.timers.heartbeat = hb_id;
            c.timers.deadline = Some(dl_id);
        }
        self.arm_expiry(t);
        if !echo {
            self.ws_count += 1;
            self.send_hello(t);
        }
        log::info!(
            "open #{serial} peer={} client_id={} role={} path={}",
            self.conns.get(t).map_or_else(|| "?".into(), |c| c.peer.to_string()),
            self.conns.get(t).and_then(|c| c.client_id.clone()).unwrap_or_else(|| "-".into()),
            self.conns.get(t).map_or("-", |c| c.identity.role.as_str()),
            up.target.split('?').next().unwrap_or("")
        );
        self.mark_dirty(t);
        // The first frame may already be buffered: no new edge will announce it.
        self.read_ws(t);
    }

    /// (Re)arm the timer that closes the connection with 4001 when its JWT expires.
    fn arm_expiry(&mut self, t: usize) {
        let now = self.mono_ms();
        let leeway = self.auth.leeway();
        let unix = self.unix_ms;
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if let Some(id) = c.timers.expiry.take() {
            self.wheel.cancel(id);
        }
        let Some(exp) = c.identity.expires_at else {
            return;
        };
        let at_unix_ms = exp.saturating_add(leeway).saturating_mul(1000);
        let at = now + at_unix_ms.saturating_sub(unix);
        let serial = c.serial;
        let id = self.wheel.insert(at, Timer::Expiry(t, serial));
        if let Some(c) = self.conns.get_mut(t) {
            c.timers.expiry = Some(id);
        }
    }

    fn send_hello(&mut self, t: usize) {
        let Some(c) = self.conns.get(t) else { return };
        let serial = c.serial;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.push(b'{');
        Json::fields(&mut buf, true)
            .str("type", "hello")
            .str("version", "1.0")
            .str("connection_id", &format!("c{serial}"))
            .f64("heartbeat_interval", self.cfg.ws_heartbeat_interval)
            .u64("rate_limit", self.cfg.ws_rate_limit as u64)
            .u64("max_message_size", self.cfg.max_message_size)
            .str("epoch", &self.facts.epoch)
            .u64("rev", self.store.rev())
            .str("timestamp", &self.stamp);
        buf.push(b'}');
        self.push_frame(t, &buf);
        self.buf = buf;
    }

    /// Queue one text frame to a connection (replies, events, heartbeats).
    pub fn push_frame(&mut self, t: usize, payload: &[u8]) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.closing.is_some() || c.dead.is_some() {
            return;
        }
        let Phase::Ws(ws) = &mut c.phase else { return };
        if !ws.can_write() {
            return;
        }
        ws.get_mut().queue_text_frame(payload);
        self.mark_dirty(t);
    }

    fn read_ws(&mut self, t: usize) {
        let max_out = self.cfg.ws_max_outbound as usize;
        let mut handled = 0;
        let bytes_in = self.conns.get(t).and_then(Conn::wire_ref).map_or(0, |w| w.bytes_in);
        loop {
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            if c.dead.is_some() {
                return;
            }
            // Backpressure: stop reading while the peer is not taking our output.
            if !c.echo && c.pending_out() > max_out {
                c.paused = true;
                if !c.more_input {
                    c.more_input = true;
                    self.more_input.push(t);
                }
                break;
            }
            if handled >= READ_BUDGET {
                if !c.more_input {
                    c.more_input = true;
                    self.more_input.push(t);
                }
                break;
            }
            let Phase::Ws(ws) = &mut c.phase else { return };
            let msg = ws.read();
            match msg {
                Ok(msg) => {
                    handled += 1;
                    c.last_seen_ms = self.mono;
                    self.on_message(t, msg);
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.on_ws_error(t, e);
                    break;
                }
            }
        }
        // Pongs and close replies that tungstenite queued during reads.
        if let Some(c) = self.conns.get_mut(t) {
            // Part of a frame is activity too: a large message arriving slowly must
            // not be cut off by the liveness check before its last byte.
            if c.wire_ref().is_some_and(|w| w.bytes_in != bytes_in) {
                c.last_seen_ms = self.mono;
            }
            if let Phase::Ws(ws) = &mut c.phase {
                if ws.get_ref().pending() == 0 {
                    let _ = ws.flush();
                }
                match ws.flush() {
                    Ok(()) => {}
                    Err(tungstenite::Error::ConnectionClosed) => {
                        let why = c.closing.unwrap_or(CloseReason::PeerClosed);
                        self.mark_dirty(t);
                        self.kill(t, why);
                        return;
                    }
                    Err(_) => {}
                }
                if ws.get_ref().pending() > 0 {
                    self.mark_dirty(t);
                }
            }
        }
    }

    fn on_ws_error(&mut self, t: usize, e: tungstenite::Error) {
        use tungstenite::error::ProtocolError;
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                let why = self.conns.get(t).and_then(|c| c.closing).unwrap_or(CloseReason::PeerClosed);
                self.mark_dirty(t);
                self.kill(t, why);
            }
            tungstenite::Error::Capacity(_) => {
                self.fail_ws(t, CloseCode::Size, "message too big", CloseReason::MessageTooBig)
            }
            tungstenite::Error::Utf8(_) => {
                self.fail_ws(t, CloseCode::Invalid, "invalid UTF-8", CloseReason::InvalidUtf8)
            }
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                self.kill(t, CloseReason::PeerReset)
            }
            tungstenite::Error::Protocol(p) => {
                log::debug!("protocol error on #{t}: {p}");
                self.fail_ws(t, CloseCode::Protocol, "protocol error", CloseReason::ProtocolError)
            }
            tungstenite::Error::Io(_) => self.kill(t, CloseReason::IoError),
            other => {
                log::debug!("websocket error on #{t}: {other}");
                self.fail_ws(t, CloseCode::Protocol, "protocol error", CloseReason::ProtocolError)
            }
        }
    }

    /// _Fail the WebSocket Connection_ (RFC 6455 §7.1.7): send a close frame with
    /// `code`, then close the connection without waiting for the peer's close reply —
    /// a lingering close: stop parsing frames, send what is queued, shut the write side
    /// and discard input until the peer's EOF (bounded by the `CLOSE_GRACE_MS` timer
    /// that `close_ws` arms), so our close frame is not lost to an RST.
    ///
    /// Waiting for the reply, as a graceful close does, cannot work here: after a bad
    /// frame header (reserved opcode: tungstenite keeps the header in its buffer and
    /// fails on it again; a length over the limit: the frame stays half-read) the
    /// reply can never be parsed, and when the bad frame was the peer's own close frame
    /// (1-byte payload, reason not UTF-8, over 125 bytes) no reply will come.
    fn fail_ws(&mut self, t: usize, code: CloseCode, reason: &'static str, why: CloseReason) {
        self.close_ws(t, code, reason, why);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.dead.is_some() {
            return;
        }
        let phase = std::mem::replace(&mut c.phase, Phase::Gone);
        c.phase = match phase {
            Phase::Ws(ws) => Phase::Answered { wire: ws.into_inner() },
            other => other,
        };
        self.mark_dirty(t);
    }

    /// Start the closing handshake; the peer gets `CLOSE_GRACE_MS` to answer.
    fn close_ws(&mut self, t: usize, code: CloseCode, reason: &'static str, why: CloseReason) {
        let now = self.mono_ms();
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.closing.is_some() || c.dead.is_some() {
            return;
        }
        let Phase::Ws(ws) = &mut c.phase else {
            return self.kill(t, why);
        };
        c.closing = Some(why);
        let _ = ws.close(Some(CloseFrame { code, reason: reason.into() }));
        let serial = c.serial;
        if let Some(id) = c.timers.deadline.take() {
            self.wheel.cancel(id);
        }
        let id = self.wheel.insert(now + CLOSE_GRACE_MS, Timer::Deadline(t, serial));
        if let Some(c) = self.conns.get_mut(t) {
            c.timers.deadline = Some(id);
        }
        self.mark_dirty(t);
    }

    fn on_message(&mut self, t: usize, msg: Message) {
        let (echo, closing) = self.conns.get(t).map_or((false, false), |c| (c.echo, c.closing.is_some()));
        match msg {
            // After we sent a close frame, data is no longer executed nor answered
            // (RFC 6455 §5.5.1); we only wait for the peer's close reply.
            Message::Text(_) | Message::Binary(_) if closing => {}
            Message::Text(text) if echo => self.echo(t, Message::Text(text)),
            Message::Binary(data) if echo => self.echo(t, Message::Binary(data)),
            Message::Text(text) => self.on_text(t, text.as_str()),
            Message::Binary(_) => {
                let e = proto::Error::new(
                    Code::InvalidRequest,
                    "Binary frames are not supported; send JSON in text frames",
                );
                self.reply_error(t, None, &e);
            }
            // tungstenite answers pings and close frames itself (flushed after reads).
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => {
                if let Some(c) = self.conns.get_mut(t) {
                    c.closing.get_or_insert(CloseReason::PeerClosed);
                }
            }
        }
    }

    fn echo(&mut self, t: usize, msg: Message) {
        if let Some(Phase::Ws(ws)) = self.conns.get_mut(t).map(|c| &mut c.phase) {
            let _ = ws.write(msg);
            self.mark_dirty(t);
        }
    }

    fn on_text(&mut self, t: usize, text: &str) {
        let started = self.cycles.stamp();
        let req = match proto::parse_incoming(text) {
            Incoming::Heartbeat => return,
            Incoming::Invalid { id, message } => {
                let e = proto::Error::new(Code::InvalidRequest, message);
                return self.reply_error(t, id.map(|r| r.get()), &e);
            }
            Incoming::Request(r) => r,
        };
        let id = req.id.map(|r| r.get());
        let cost = cmd::cost(&req.method, &req.params, self.cfg.max_batch);
        let now_mono = self.mono;
        if let Some(c) = self.conns.get_mut(t) {
            if let Err(wait) = c.bucket.try_take(cost, now_mono) {
                self.metrics.rate_limited += 1;
                let mut e = proto::Error::new(
                    Code::RateLimited,
                    format!("Rate limit of {} requests per minute exceeded", self.cfg.ws_rate_limit),
                );
                e.retry_after_ms = Some(wait);
                return self.reply_error(t, id, &e);
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.facts.uptime_s = self.mono / 1000;
        self.facts.connections = self.ws_count;
        self.facts.ops_total = self.metrics.ops_total;
        // A write is refused before it runs when its log record might not fit on disk.
        self.facts.writes_refused = self.persist.refusing_for(text.len());
        self.facts.snapshot_running = self.persist.snapshot_running();
        let identity = self.conns.get(t).map_or_else(|| Rc::new(Identity::anonymous()), |c| c.identity.clone());
        let mut ctx = Ctx::with_identity(&mut self.store, self.unix_ms, &self.facts, identity);
        ctx.auth = Some(&self.auth);
        ctx.hub = Some(&mut self.hub);
        ctx.conn = t;
        ctx.track_changes = true;
        ctx.log_ops = self.persist.is_on();
        ctx.log = std::mem::take(&mut self.log_buf);
        ctx.changes = std::mem::take(&mut self.changes_buf);
        let err = cmd::respond(&mut ctx, id, &req.method, &req.params, &self.stamp, &mut buf);
        let ops = ctx.ops;
        let ran = ctx.last_method();
        let flushed = ctx.flushed;
        let save = ctx.save_requested;
        let (mut log, logged) = (std::mem::take(&mut ctx.log), ctx.log_count);
        let new_identity = ctx.identity_changed.then(|| ctx.identity.clone());
        let changes = std::mem::take(&mut ctx.changes);
        drop(ctx);
        if let Some(id) = new_identity {
            // Watches follow a narrowed key scope.
            self.hub.set_scope(t, id.clone());
            if let Some(c) = self.conns.get_mut(t) {
                c.identity = id;
            }
            self.arm_expiry(t);
        }
        self.metrics.ops_total += ops;
        if let Some(e) = err {
            self.metrics.count_error(e.code);
            if e.code == Code::Internal {
                log::error!("internal error for request id {}: {}", id.unwrap_or("null"), e.message);
            }
        }
        self.push_frame(t, &buf);
        self.buf = buf;
        if logged > 0 {
            // Into the log before the reply leaves (before_sleep flushes it first).
            self.persist.append_ops(self.store.rev(), self.unix_ms, &log);
        }
        log.clear();
        self.log_buf = log;
        if flushed {
            // History is gone: a new epoch (PROTOCOL.md §5).
            self.facts.epoch = format!("{:016x}", self.rand());
            self.persist.append_epoch(&self.facts.epoch);
        }
        if save {
            self.persist.start_snapshot(&self.store, &self.facts.epoch, self.unix_ms);
        }
        // Reply first, then the events it caused (also to the caller itself).
        self.publish_changes(changes);
        let name = match ran {
            _ if req.method == "batch" => "batch",
            "" => "unknown",
            ran => ran,
        };
        let us = self.cycles.micros(started, self.cycles.stamp());
        self.metrics.count_request(name, us);
    }

    /// Hand key-space changes to the hub in rev order — keys that expired or were
    /// evicted meanwhile included — and send what it queued.
    fn publish_changes(&mut self, mut changes: Vec<cmd::Change>) {
        let gone = self.store.take_gone();
        if gone.is_empty() {
            // The common case: the request's own changes, already in rev order.
            for c in changes.drain(..) {
                self.hub.changed(c.key, c.event, c.rev, &self.facts.epoch, self.unix_ms);
            }
        } else {
            let mut all: Vec<(u64, Option<Box<str>>, &'static str)> = gone
                .into_iter()
                .map(|(k, why, rev)| (rev, Some(k), if why == Gone::Expired { "expired" } else { "evicted" }))
                .chain(changes.drain(..).map(|c| (c.rev, c.key, c.event)))
                .collect();
            all.sort_by_key(|c| c.0);
            for (rev, key, event) in all {
                self.hub.changed(key, event, rev, &self.facts.epoch, self.unix_ms);
            }
        }
        // Kept for the next request (see `Ctx::changes`).
        if changes.capacity() > self.changes_buf.capacity() {
            self.changes_buf = changes;
        }
        self.deliver();
    }

    /// Queue the hub's deliveries to their connections.
    fn deliver(&mut self) {
        let out = std::mem::take(&mut self.hub.out);
        for (t, payload) in &out {
            self.push_frame(*t, payload);
        }
        let mut out = out;
        out.clear();
        self.hub.out = out;
    }

    fn reply_error(&mut self, t: usize, id: Option<&str>, e: &proto::Error) {
        self.metrics.count_error(e.code);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(b"{\"id\":");
        buf.extend_from_slice(id.unwrap_or("null").as_bytes());
        buf.extend_from_slice(b",\"error\":");
        proto::write_error(&mut buf, e);
        buf.extend_from_slice(b",\"timestamp\":\"");
        buf.extend_from_slice(self.stamp.as_bytes());
        buf.extend_from_slice(b"\"}");
        self.push_frame(t, &buf);
        self.buf = buf;
    }

    // ---- timers ----

    fn on_timer(&mut self, timer: Timer) {
        let now = self.mono_ms();
        match timer {
            Timer::Watchdog(every) => {
                // The loop is turning: pet systemd's watchdog.
                notify::notify("WATCHDOG=1");
                self.wheel.insert(now + every, Timer::Watchdog(every));
            }
            Timer::CertCheck => {
                self.tls_check_expiry();
                self.wheel.insert(now + tls_hooks::CERT_CHECK_MS, Timer::CertCheck);
            }
            Timer::ResumeAccept => {
                self.accept_paused = false;
                self.accept_all(false);
                self.accept_all(true);
            }
            Timer::Heartbeat(t, serial) => {
                let Some(c) = self.conns.get_mut(t) else {
                    return;
                };
                if c.serial != serial {
                    return;
                }
                c.timers.heartbeat = None;
                if c.closing.is_some() || c.dead.is_some() {
                    return;
                }
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                buf.extend_from_slice(b"{\"type\":\"heartbeat\",\"timestamp\":\"");
                buf.extend_from_slice(self.stamp.as_bytes());
                buf.extend_from_slice(b"\"}");
                self.push_frame(t, &buf);
                self.buf = buf;
                if let Some(Phase::Ws(ws)) = self.conns.get_mut(t).map(|c| &mut c.phase) {
                    let _ = ws.write(Message::Ping(Default::default()));
                }
                let id = self.wheel.insert(now + self.cfg.heartbeat_ms(), Timer::Heartbeat(t, serial));
                if let Some(c) = self.conns.get_mut(t) {
                    c.timers.heartbeat = Some(id);
                }
            }
            Timer::Deadline(t, serial) => {
                let Some(c) = self.conns.get_mut(t) else {
                    return;
                };
                if c.serial != serial {
                    return;
                }
                c.timers.deadline = None;
                match (&c.phase, c.closing) {
                    (Phase::Http { .. }, _) => self.kill(t, CloseReason::HandshakeTimeout),
                    (Phase::Answered { .. }, why) => self.kill(t, why.unwrap_or(CloseReason::HttpDone)),
                    (Phase::Ws(_), Some(why)) => self.kill(t, why),
                    (Phase::Ws(_), None) => {
                        // Liveness: nothing arrived for interval + timeout → 1001.
                        let limit = self.cfg.heartbeat_ms() + self.cfg.timeout_ms();
                        let idle = now.saturating_sub(c.last_seen_ms);
                        if idle >= limit {
                            self.close_ws(t, CloseCode::Away, "idle timeout", CloseReason::IdleTimeout);
                        } else {
                            let at = c.last_seen_ms + limit;
                            let id = self.wheel.insert(at, Timer::Deadline(t, serial));
                            if let Some(c) = self.conns.get_mut(t) {
                                c.timers.deadline = Some(id);
                            }
                        }
                    }
                    (Phase::Gone, _) => self.kill(t, CloseReason::IoError),
                }
            }
            Timer::Expiry(t, serial) => {
                let Some(c) = self.conns.get(t) else { return };
                if c.serial == serial {
                    self.close_ws(t, CloseCode::Library(4001), "token expired", CloseReason::TokenExpired);
                }
            }
        }
    }

    // ---- end of turn ----

    fn before_sleep(&mut self) {
        // Active expiry with a per-turn budget; anything left is picked up next turn
        // (the poll timeout is then 0 because the next expiry is already due).
        self.store.expire_cycle(self.unix_ms, EXPIRE_BUDGET);
        if self.store.has_gone() {
            self.publish_changes(Vec::new());
        }
        self.persist_flush();
        self.flush_dirty();
        self.free_dead();
    }

    /// The append-only log before any reply (Redis's beforeSleep order): write the
    /// turn's records, fsync under `always` (a failure there stops the process: see
    /// `persist`).
    fn persist_flush(&mut self) {
        if !self.persist.is_on() {
            return;
        }
        self.persist.note_rev(self.store.rev(), self.unix_ms);
        self.persist.flush();
        self.persist.poll_child();
        self.persist.maybe_rewrite(&self.store, &self.facts.epoch, self.unix_ms);
    }

    fn flush_dirty(&mut self) {
        let max_out = self.cfg.ws_max_outbound as usize;
        let dirty = std::mem::take(&mut self.dirty);
        for t in dirty {
            let Some(c) = self.conns.get_mut(t) else {
                continue;
            };
            c.dirty = false;
            if let Phase::Ws(ws) = &mut c.phase {
                let _ = ws.flush();
            }
            let Some(wire) = c.wire() else { continue };
            match wire.send() {
                Ok(true) => {
                    if let Phase::Answered { wire } = &mut c.phase {
                        // Answer sent: half-close and wait (bounded) for the peer's EOF.
                        wire.shutdown_write();
                        if c.dead.is_none() {
                            self.drain_answered(t);
                        }
                    } else if c.paused {
                        c.paused = false;
                        if !c.more_input {
                            c.more_input = true;
                            self.more_input.push(t);
                        }
                    }
                }
                Ok(false) => {
                    // The writable edge will bring us back. A consumer that falls more
                    // than twice the mark behind is cut off.
                    if !c.echo && c.is_ws() && c.pending_out() > 2 * max_out && c.dead.is_none() && c.closing.is_none()
                    {
                        let queued = c.pending_out();
                        // Drop what it has not started to take, so the 1008 close frame
                        // follows what the socket already holds and the memory goes now;
                        // the close grace period bounds how long we wait for it to read.
                        let dropped = c.wire().map_or(0, Wire::drop_unsent_frames);
                        log::warn!(
                            "closing #{} ({}) with 1008: {queued} bytes of output queued, more than twice \
                             DBX_WS_MAX_OUTBOUND ({max_out}); {dropped} unsent bytes dropped",
                            c.serial,
                            c.peer,
                        );
                        // No more events for it while it closes.
                        self.hub.remove_conn(t);
                        self.close_ws(t, CloseCode::Policy, "slow consumer", CloseReason::SlowConsumer);
                    }
                }
                Err(_) => self.kill(t, CloseReason::IoError),
            }
        }
    }

    fn free_dead(&mut self) {
        for t in std::mem::take(&mut self.dead) {
            if !self.conns.contains(t) {
                continue;
            }
            let mut c = self.conns.remove(t);
            self.hub.remove_conn(t);
            for id in
                [c.timers.heartbeat.take(), c.timers.deadline.take(), c.timers.expiry.take()].into_iter().flatten()
            {
                self.wheel.cancel(id);
            }
            self.tls_freed(&c);
            let why = c.dead.map_or("unknown", CloseReason::as_str);
            self.metrics.count_closed(why);
            if let Some(w) = c.wire_ref() {
                self.metrics.bytes_in_closed += w.bytes_in;
                self.metrics.bytes_out_closed += w.bytes_out;
            }
            if c.counted {
                self.ws_count -= 1;
                log::info!(
                    "close #{} peer={} client_id={} reason={}",
                    c.serial,
                    c.peer,
                    c.client_id.as_deref().unwrap_or("-"),
                    c.dead.map_or("unknown", CloseReason::as_str)
                );
            }
            if let Some(wire) = c.wire() {
                // Last chance for queued bytes (a close frame, TLS's close_notify); never
                // blocks.
                wire.finish();
                let _ = self.poll.registry().deregister(&mut wire.sock);
            }
        }
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self) {
        notify::notify("STOPPING=1");
        log::info!("shutting down: closing {} connections", self.conns.len());
        self.shutting_down = Some(self.mono_ms() + SHUTDOWN_GRACE_MS);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(mut l) = self.admin_listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for t in tokens {
            if self.conns.get(t).is_some_and(Conn::is_ws) {
                self.close_ws(t, CloseCode::Away, "server shutting down", CloseReason::Shutdown);
            } else {
                self.kill(t, CloseReason::Shutdown);
            }
        }
    }

    // ---- HTTP endpoints ----

    /// `/metrics` on the client port when credentials are configured: an admin
    /// credential, from the same places the upgrade reads it (401 without or with a
    /// bad one, 403 for read/write). Without credentials it stays open, as before.
    fn metrics_allowed(&self, m: &handshake::MetricsRequest) -> Result<(), Refusal> {
        if !self.auth.enabled() {
            return Ok(());
        }
        let (credential, _) = auth::extract_credential(m.api_key.as_deref(), m.authorization.as_deref(), None);
        match self.auth.authenticate(credential, self.unix_ms / 1000) {
            Ok(id) if id.role == auth::Role::Admin => Ok(()),
            Ok(id) => Err(Refusal::new(
                403,
                "forbidden",
                format!("/metrics needs an admin credential; this one is {}", id.role.as_str()),
            )),
            Err(AuthError::Missing) => Err(Refusal::new(
                401,
                "unauthorized",
                "Missing credential: pass an admin api_key or an Authorization bearer token",
            )),
            Err(AuthError::Invalid(m)) => Err(Refusal::new(401, "unauthorized", format!("Invalid credential: {m}"))),
        }
    }

    /// 200 `ok`, or 503 `degraded` while the log cannot be written (writes refused).
    fn health_json(&self) -> (u16, Vec<u8>) {
        let degraded = self.persist.refusing().is_some();
        let mut b = Vec::with_capacity(256);
        b.push(b'{');
        let mut j = Json::fields(&mut b, true);
        j.str("status", if degraded { "degraded" } else { "ok" })
            .str("version", env!("CARGO_PKG_VERSION"))
            .u64("uptime_s", self.started.elapsed().as_secs())
            .u64("connections", self.ws_count as u64)
            .u64("keys", self.store.len() as u64)
            .u64("used_memory", self.store.used_memory() as u64);
        self.persist.describe(&mut j);
        self.tls_describe(&mut j);
        b.push(b'}');
        (if degraded { 503 } else { 200 }, b)
    }

    fn metrics_text(&self) -> String {
        let (mut bytes_in, mut bytes_out) = (self.metrics.bytes_in_closed, self.metrics.bytes_out_closed);
        for (_, c) in self.conns.iter() {
            if let Some(w) = c.wire_ref() {
                bytes_in += w.bytes_in;
                bytes_out += w.bytes_out;
            }
        }
        let g = metrics::Gauges {
            connections: self.ws_count as u64,
            max_connections: self.cfg.ws_max_connections as u64,
            sockets: self.conns.len() as u64,
            bytes_in,
            bytes_out,
            keys: self.store.len() as u64,
            used_memory: self.store.used_memory() as u64,
            maxmemory: self.cfg.maxmemory,
            expired: self.store.expired_total,
            evicted: self.store.evicted_total,
            rev: self.store.rev(),
            subscriptions: self.hub.subscriptions() as u64,
            watchers: self.hub.watchers() as u64,
            deliveries: self.hub.deliveries_total,
            uptime_s: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
            extra: self.persist.metrics(self.unix_ms),
            data_dir: self.persist.is_on().then_some(self.cfg.data_dir.as_path()),
        };
        let mut m = self.metrics.render(&g);
        self.tls_metrics(&mut m);
        m
    }
}
