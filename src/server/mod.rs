//! The reactor: one thread, one mio `Poll`, the listener, a `Slab<Conn>`, one timing
//! wheel. The only module that touches sockets and the mio registry; it knows no
//! command, store or JSON — a text frame goes to the `engine` and its reply comes back
//! as bytes, in request order.
//!
//! - this file: the loop, accept, read dispatch, flush, timers, shutdown;
//! - `http`: a connection's HTTP phase and the `/health`, `/metrics` answers;
//! - `ws`: a connection's WebSocket phase (upgrade, frames, closing);
//! - `conn`, `handshake`, `wheel`, `ratelimit`, `metrics`: as their names say;
//! - `sys`: open-files limit, seed, wall clock, sd_notify, cycle counter.
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
pub mod frame;
pub mod handshake;
mod http;
pub mod metrics;
pub mod ratelimit;
mod refusals;
mod reload;
pub mod sys;
pub mod tls;
mod tls_hooks;
pub mod wheel;
mod ws;

use crate::auth::Authenticator;
use crate::backend::Gateway;
use crate::config::Config;
use crate::engine::{Engine, Reply, Session};
use crate::proto::{envelope, Code};
use conn::{CloseReason, Conn, Phase, Wire};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;
use wheel::Wheel;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// The DBX_ADMIN_PORT listener (`/health`, `/metrics`), on the same Poll.
const ADMIN_LISTENER: Token = Token(usize::MAX - 4);
/// Messages handled per connection per readable event before others get their turn.
const READ_BUDGET: usize = 256;
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
    auth: Rc<Authenticator>,
    /// The request pipeline: store, hub, persistence (see `engine`).
    engine: Engine,
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// DBX_ADMIN_PORT: plain HTTP, `/health` and `/metrics` only (http.rs).
    admin_listener: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
    conns: Slab<Conn>,
    wheel: Wheel<Timer>,
    metrics: metrics::Metrics,
    started: Instant,
    next_serial: u64,
    ws_count: usize,
    /// Reused reply buffer.
    buf: Vec<u8>,
    dirty: Vec<usize>,
    more_input: Vec<usize>,
    dead: Vec<usize>,
    /// Current turn's unix ms.
    unix_ms: u64,
    /// Time-stamp counter for per-request latency.
    cycles: sys::Cycles,
    /// This turn's monotonic ms (activity stamps and token buckets need no finer clock).
    mono: u64,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    shutting_down: Option<u64>,
    rng: u64,
    accept_paused: bool,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    // ---- TLS (issue 15): tls.rs, tls_hooks.rs; SIGHUP: reload.rs ----
    tls: Option<tls::TlsSetup>,
    tls_stats: tls_hooks::TlsStats,
    /// Refusal lines per second are bounded (refusals.rs).
    refusal_log: refusals::RefusalLog,
}

impl Server {
    /// Bind the configured address.
    pub fn bind(cfg: Config, auth: Authenticator) -> io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(sys::bind_addr(&cfg.host, cfg.port)?)?;
        let admin = http::bind_admin(&cfg)?;
        let mut srv = Server::with_auth(cfg, std_listener, auth)?;
        if let Some(a) = admin {
            srv.add_admin_listener(a)?;
        }
        Ok(srv)
    }

    /// Serve on an already-bound listener (tests bind 127.0.0.1:0).
    pub fn with_listener(cfg: Config, listener: std::net::TcpListener) -> io::Result<Server> {
        let auth = Authenticator::from_config(&cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Server::with_auth(cfg, listener, auth)
    }

    /// Serve with an `Authenticator` already built from `cfg` (`dbx::run` builds it
    /// first, for the protected-mode check).
    pub fn with_auth(cfg: Config, listener: std::net::TcpListener, auth: Authenticator) -> io::Result<Server> {
        let tls = tls::TlsSetup::from_config(&cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let rng = sys::seed();
        let now = sys::unix_ms_now();
        let auth = Rc::new(auth);
        // Persistence: the engine loads the data directory before serving (issue 7).
        let mut engine =
            Engine::open(&cfg, auth.clone(), rng, now).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let crate::config::Backend::Redis(t) = &cfg.backend {
            // Gateway mode: the backend's sockets live on this Poll too.
            let gw = Gateway::new(&cfg, t.clone(), poll.registry().try_clone()?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            engine.attach_gateway(gw);
        }
        Ok(Server {
            engine,
            poll,
            listener: Some(listener),
            local_addr,
            admin_listener: None,
            admin_addr: None,
            conns: Slab::with_capacity(1024),
            wheel: Wheel::new(10, 1024, 0),
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
            cycles: sys::Cycles::calibrate(Duration::from_millis(10)),
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            shutting_down: None,
            rng,
            accept_paused: false,
            signals: None,
            tls,
            tls_stats: tls_hooks::TlsStats::default(),
            refusal_log: refusals::RefusalLog::default(),
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
        sys::notify("READY=1");
        if let Some(every) = sys::watchdog_interval_ms() {
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
                    Token(t) if Gateway::is_token(t) => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.engine.backend_event(t, readable, ev.is_writable());
                        self.deliver();
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
                    self.engine.close();
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
        if let Some(d) = self.engine.wakeup_ms(sys::unix_ms_now()) {
            ms = Some(ms.map_or(d, |m| m.min(d)));
        }
        if let Some(deadline) = self.shutting_down {
            let d = deadline.saturating_sub(now);
            ms = Some(ms.map_or(d, |m| m.min(d)));
        }
        ms.map(Duration::from_millis)
    }

    fn tick_clock(&mut self) {
        self.mono = self.mono_ms();
        self.unix_ms = sys::unix_ms_now();
        self.engine.tick(self.unix_ms, self.mono);
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
        // The admin port is plain HTTP even when the client port serves TLS.
        if !tls_hooks::attach(if admin { None } else { self.tls.as_ref() }, &mut c) {
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

    /// One request through the engine; its reply goes out in request order, then the
    /// events it caused (also to the caller itself). `started`: the stamp its handling
    /// time is counted from. Returns the stamp taken at the end, which the next frame of
    /// the same batch starts from (`read_ws`): one clock read per request instead of two
    /// (`rdtsc` costs ~10 ns, ~1% of a request at 16 in flight).
    fn on_text(&mut self, t: usize, text: &str, started: u64) -> u64 {
        let Some(c) = self.conns.get_mut(t) else { return started };
        let seq = c.order.issue();
        let mut session = Session { conn: t, seq, identity: &mut c.identity, bucket: &mut c.bucket };
        let outcome = self.engine.handle(&mut session, text, &mut self.buf);
        if outcome.identity_changed {
            self.arm_expiry(t);
        }
        self.metrics.ops_total += outcome.ops;
        if let Some(code) = outcome.error {
            self.metrics.count_error(code);
            if code == Code::RateLimited {
                self.metrics.rate_limited += 1;
                self.log_rate_limited(t);
            }
        }
        match outcome.reply {
            Reply::Now => self.reply_in_order(t, seq, true),
            Reply::None => self.reply_in_order(t, seq, false),
            Reply::Later => {}
        }
        self.deliver();
        let ended = self.cycles.stamp();
        if let Some(name) = outcome.method {
            self.metrics.count_request(name, self.cycles.micros(started, ended));
        }
        ended
    }

    /// Send the reply in `self.buf` (`has_reply`) for request `seq` of `t` once every
    /// earlier reply of `t` went out (at once with the embedded engine).
    fn reply_in_order(&mut self, t: usize, seq: u64, has_reply: bool) {
        let reply = has_reply.then_some(self.buf.as_slice());
        ws::complete_in_order(&mut self.conns, &mut self.dirty, t, seq, reply);
    }

    /// Queue the engine's deliveries to their connections, and replies that
    /// completed after a round trip (none with the embedded engine).
    fn deliver(&mut self) {
        // Replies first: an event a request caused goes out after its reply.
        for (t, seq, reply) in self.engine.completed() {
            ws::complete_in_order(&mut self.conns, &mut self.dirty, t, seq, Some(&reply));
        }
        for (t, payload) in self.engine.events() {
            ws::push_frame(&mut self.conns, &mut self.dirty, t, &payload);
        }
    }

    // ---- timers ----

    fn on_timer(&mut self, timer: Timer) {
        let now = self.mono_ms();
        match timer {
            Timer::Watchdog(every) => {
                // The loop is turning: pet systemd's watchdog.
                sys::notify("WATCHDOG=1");
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
                envelope::heartbeat(&mut self.buf, self.engine.stamp());
                ws::push_frame(&mut self.conns, &mut self.dirty, t, &self.buf);
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
        // Active expiry (its events go out like any others), then the append-only log
        // before any reply (Redis's beforeSleep order).
        self.engine.active_expire();
        self.deliver();
        self.engine.flush_log();
        self.flush_dirty();
        self.free_dead();
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
                        self.log_slow_consumer(t, queued, dropped);
                        // No more events for it while it closes.
                        self.engine.disconnect(t);
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
            self.engine.disconnect(t);
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
                self.engine.set_connections(self.ws_count);
                log::debug!(
                    peer:% = c.peer,
                    client_id = c.client_id.as_deref().unwrap_or("-"),
                    key = c.identity.label.as_str(),
                    reason = c.dead.map_or("unknown", CloseReason::as_str);
                    "close #{}",
                    c.serial
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
        sys::notify("STOPPING=1");
        log::info!("shutting down: closing {} connections", self.conns.len());
        self.shutting_down = Some(self.mono_ms() + SHUTDOWN_GRACE_MS);
        for mut l in [self.listener.take(), self.admin_listener.take()].into_iter().flatten() {
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
}
