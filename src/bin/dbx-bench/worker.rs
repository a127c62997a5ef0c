//! One worker thread: its mio loop, its connections and their requests in flight.
//!
//! A [`Worker`] runs one [`Phase`] at a time (the preload, or warm-up + measurement +
//! drain): it keeps every active connection's pipeline full (closed loop) or sends on
//! schedule (open loop), reads and times the replies, matches them in order to the
//! [`Pending`] requests, and counts the events its fan-out subscribers receive. The
//! results go into a [`Stats`].

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::frame::{Parse, Ws, MAX_MESSAGE, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};
use crate::reply::{parse_reply, Reply};
use crate::report::Stats;
use crate::request::{Gen, Kind};

#[derive(Clone, Copy)]
pub(crate) struct Pending {
    id: u64,
    /// Send time (closed loop) or intended send time (open loop), ns since `base`.
    t0: u64,
    kind: Kind,
}

pub(crate) struct Conn {
    pub(crate) ws: Ws,
    pub(crate) idle: bool,
    /// Fan-out subscriber (also `idle`: it sends no load).
    pub(crate) sub: bool,
    /// Global index of an active connection (publisher id in published data).
    pub(crate) gid: usize,
    /// Subscriber: last sequence number seen per publisher.
    pub(crate) last_seq: Vec<u64>,
    pub(crate) alive: bool,
    pub(crate) inflight: VecDeque<Pending>,
    /// Open loop: intended send times of requests waiting for a free slot.
    pub(crate) backlog: VecDeque<u64>,
    pub(crate) next_id: u64,
}

/// One phase of load on one worker.
pub(crate) struct Phase {
    /// Preload: fixed list of (kind, key) operations to issue once.
    pub(crate) preload: Option<VecDeque<(Kind, u64)>>,
    /// Stop sending at this time (ns since base).
    pub(crate) send_until: u64,
    /// Record replies received in [rec_from, rec_until).
    pub(crate) rec_from: u64,
    pub(crate) rec_until: u64,
    /// Hard end (send_until + drain).
    pub(crate) hard_end: u64,
    /// Open loop: ns between scheduled requests on this worker.
    pub(crate) interval_ns: Option<f64>,
    pub(crate) start: u64,
    pub(crate) pipeline: usize,
}

pub(crate) struct Worker {
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
pub(crate) fn ns_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

impl Worker {
    pub(crate) fn new(conns: Vec<Conn>, gen: Gen, base: Instant, stop: Arc<AtomicBool>) -> io::Result<Worker> {
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
    pub(crate) fn run(&mut self, ph: &mut Phase) -> Stats {
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
            if ph.interval_ns.is_some() {
                touched = self.schedule_due(ph, now, &mut next_sched, &mut rr, &active, &mut st);
            }
            let timeout = poll_timeout(ph, ns_since(self.base), next_sched);
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
        self.finish(ph, next_sched, &mut st);
        st
    }

    /// Open loop: send (or queue behind busy slots) every request whose intended
    /// send time has come, round-robin over live active connections. True if any was.
    fn schedule_due(
        &mut self,
        ph: &Phase,
        now: u64,
        next_sched: &mut f64,
        rr: &mut usize,
        active: &[usize],
        st: &mut Stats,
    ) -> bool {
        let Some(iv) = ph.interval_ns else { return false };
        let mut touched = false;
        while *next_sched <= now as f64 && *next_sched < ph.send_until as f64 {
            let t = *next_sched as u64;
            *next_sched += iv;
            // Round-robin over live active connections.
            let mut tries = 0;
            while tries < active.len() && !self.conns[active[*rr % active.len()]].alive {
                *rr += 1;
                tries += 1;
            }
            let ci = active[*rr % active.len()];
            *rr += 1;
            if self.has_slot(ci, ph) && self.conns[ci].backlog.is_empty() {
                let (k, key) = self.gen.pick();
                if now > t + 1_000_000 {
                    st.late += 1;
                }
                self.send(ci, k, key, t, st);
            } else {
                self.conns[ci].backlog.push_back(t);
            }
            touched = true;
        }
        if touched {
            for &ci in active {
                self.flush(ci, st);
            }
        }
        touched
    }

    /// What a finished phase leaves: unanswered and unsent requests counted, queues
    /// cleared, the per-method histograms merged.
    fn finish(&mut self, ph: &Phase, next_sched: f64, st: &mut Stats) {
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
    }

    pub(crate) fn close_all(&mut self) {
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

/// How long the phase loop may sleep in `epoll_wait`: until the next scheduled send,
/// the end of sending or of recording, at most 100 ms.
fn poll_timeout(ph: &Phase, now: u64, next_sched: f64) -> Duration {
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
    if wait < 1_500_000 {
        Duration::ZERO
    } else {
        Duration::from_millis((wait - 1_000_000) / 1_000_000)
    }
}
