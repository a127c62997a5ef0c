//! One RESP connection to Redis, driven by the reactor's Poll: a non-blocking connect,
//! an outbound buffer, an inbound buffer decoded with `redis-protocol`, and the FIFO of
//! what each expected reply is for (Redis answers a connection's commands in order, so
//! the queue is the pipeline). No thread, no blocking call: `connect` returns at once,
//! readiness arrives as Poll events on the connection's token.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

/// `rediss://`: TLS to Redis, driven sans-IO (rustls) on the non-blocking socket.
#[derive(Clone)]
pub struct TlsTo {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// First reconnect delay; doubled after each failure up to `BACKOFF_MAX_MS`.
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No socket; a new attempt at `retry_at` (monotonic ms).
    Down { retry_at: u64 },
    /// `connect` started; the first writable event says whether it worked.
    Connecting,
    /// Connected: commands flow.
    Up,
}

/// A connection; `P` says what a pending reply is for.
pub struct RespConn<P> {
    pub token: Token,
    pub state: State,
    /// The address of the last connect (for messages).
    pub peer: Option<SocketAddr>,
    sock: Option<TcpStream>,
    out: Vec<u8>,
    out_pos: usize,
    /// Inbound bytes: `inb[..filled]` arrived and is not decoded yet. The rest is room
    /// to read into, zeroed once when the buffer grows rather than on every read.
    inb: Vec<u8>,
    filled: usize,
    /// What each expected reply is for, when it was queued (monotonic ms, for
    /// timeouts), how many replies of untagged commands (`send_skipped`) come before
    /// it, and when it was written (µs, `mono_us`, for the backend latency histograms;
    /// stamped by `flush`, 0 until then).
    pending: VecDeque<(P, u64, u32, u64)>,
    /// `pending[stamped..]` are not written yet: `flush` stamps them with one clock
    /// read for all (a clock read per command would cost the fast path several per
    /// request).
    stamped: usize,
    /// Untagged commands sent since the last tagged one.
    skip_next: u32,
    backoff_ms: u64,
    /// Why the last attempt failed (logged once per outage, not per retry).
    pub last_error: Option<String>,
    /// Frames that arrived with nothing pending: pub/sub messages (the subscriber
    /// connection sends its commands untracked, since one SUBSCRIBE of n channels is
    /// answered n times).
    pub push: Vec<OwnedFrame>,
    /// `rediss://`: the TLS settings, and the session of the current socket.
    pub tls_to: Option<TlsTo>,
    tls: Option<rustls::ClientConnection>,
}

impl<P> RespConn<P> {
    pub fn new(token: Token) -> RespConn<P> {
        RespConn {
            token,
            state: State::Down { retry_at: 0 },
            peer: None,
            sock: None,
            out: Vec::new(),
            out_pos: 0,
            inb: Vec::new(),
            filled: 0,
            pending: VecDeque::new(),
            stamped: 0,
            skip_next: 0,
            backoff_ms: BACKOFF_MIN_MS,
            last_error: None,
            push: Vec::new(),
            tls_to: None,
            tls: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Connected or connecting: commands may be queued (they go out once connected).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Up | State::Connecting)
    }

    /// When the oldest unanswered command was sent.
    pub fn oldest_sent(&self) -> Option<u64> {
        self.pending.front().map(|p| p.1)
    }

    /// Due for a new attempt at `now`.
    pub fn due(&self, now: u64) -> bool {
        matches!(self.state, State::Down { retry_at } if retry_at <= now)
    }

    /// Down: try again at the next tick, without the backoff (the address changed).
    pub fn retry_now(&mut self) {
        if let State::Down { .. } = self.state {
            self.state = State::Down { retry_at: 0 };
        }
    }

    /// Start a non-blocking connect. On an immediate failure the connection stays down
    /// (with backoff) and the error is returned.
    pub fn connect(&mut self, registry: &Registry, addr: SocketAddr, now: u64) -> io::Result<()> {
        self.reset_buffers();
        self.pending.clear();
        self.stamped = 0;
        self.skip_next = 0;
        self.peer = Some(addr);
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                if let Err(e) = registry.register(&mut s, self.token, Interest::READABLE | Interest::WRITABLE) {
                    self.state = State::Down { retry_at: now + self.backoff_ms };
                    return Err(e);
                }
                self.tls = match &self.tls_to {
                    None => None,
                    Some(t) => match rustls::ClientConnection::new(t.config.clone(), t.name.clone()) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            let _ = registry.deregister(&mut s);
                            self.state = State::Down { retry_at: now + self.backoff_ms };
                            return Err(io::Error::other(format!("TLS: {e}")));
                        }
                    },
                };
                self.sock = Some(s);
                self.state = State::Connecting;
                Ok(())
            }
            Err(e) => {
                self.state = State::Down { retry_at: now + self.backoff_ms };
                self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
                Err(e)
            }
        }
    }

    fn reset_buffers(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        self.filled = 0;
    }

    /// Queue one command (an array of bulk strings) and what its reply is for. Only
    /// on an open connection (a down one would keep the tag across the reconnect and
    /// pair it with another command's reply): otherwise the tag comes back.
    pub fn try_send(&mut self, args: &[&[u8]], tag: P, now: u64) -> Result<(), P> {
        if !self.is_open() {
            return Err(tag);
        }
        self.encode(args);
        self.pending.push_back((tag, now, std::mem::take(&mut self.skip_next), 0));
        Ok(())
    }

    /// Queue a command whose reply is of no interest (`MULTI` and the commands queued
    /// in it, answered `+OK` / `+QUEUED`: a refused one makes `EXEC` fail, and `EXEC`'s
    /// reply is tagged). Its reply is skipped without being decoded into a frame.
    /// False if the connection is not open (nothing is queued then).
    pub fn send_skipped(&mut self, args: &[&[u8]]) -> bool {
        if !self.is_open() {
            return false;
        }
        self.encode(args);
        self.skip_next += 1;
        true
    }

    /// `try_send` for commands whose reply nobody else waits for (setup, timers).
    pub fn send(&mut self, args: &[&[u8]], tag: P, now: u64) {
        let _ = self.try_send(args, tag, now);
    }

    /// Queue a command whose answers arrive in `push` (subscriber connection).
    pub fn send_untracked(&mut self, args: &[&[u8]]) {
        self.encode(args);
    }

    /// A command is an array of bulk strings (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n`
    /// each), written straight into the outbound buffer: the codec's encoder wants a
    /// zeroed buffer of the exact size and a frame array built first, which cost more
    /// than the bytes themselves on the gateway's write path.
    fn encode(&mut self, args: &[&[u8]]) {
        let out = &mut self.out;
        push_header(out, b'*', args.len());
        for a in args {
            push_header(out, b'$', a.len());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Write what is queued. Err: the connection broke (the caller calls `fail`).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.state != State::Up {
            return Ok(());
        }
        if self.stamped < self.pending.len() {
            let t = mono_us();
            for p in self.pending.iter_mut().skip(self.stamped) {
                p.3 = t;
            }
            self.stamped = self.pending.len();
        }
        let Some(sock) = self.sock.as_mut() else { return Ok(()) };
        if let Some(tls) = self.tls.as_mut() {
            // Plaintext into the session (it buffers what the handshake holds back),
            // then records onto the socket.
            while self.out_pos < self.out.len() {
                let n = tls.writer().write(self.out.get(self.out_pos..).unwrap_or_default())?;
                if n == 0 {
                    break;
                }
                self.out_pos += n;
            }
            while tls.wants_write() {
                match tls.write_tls(sock) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            while self.out_pos < self.out.len() {
                match sock.write(self.out.get(self.out_pos..).unwrap_or_default()) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 1 << 20 {
            // Keep the buffer from growing without end under a slow peer.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// A writable event while connecting: did the connect succeed?
    pub fn on_writable(&mut self) -> io::Result<()> {
        if self.state == State::Connecting {
            let Some(sock) = self.sock.as_ref() else { return Ok(()) };
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            match sock.peer_addr() {
                Ok(_) => {
                    self.state = State::Up;
                    self.backoff_ms = BACKOFF_MIN_MS;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.flush()
    }

    /// Read what arrived and decode every complete reply: `(tag, frame, µs since the
    /// command was written)` in order.
    /// Err: the connection broke or Redis sent something unreadable (`fail` it).
    pub fn on_readable(&mut self, done: &mut Vec<(P, OwnedFrame, u64)>) -> io::Result<()> {
        let Some(sock) = self.sock.as_mut() else { return Ok(()) };
        let mut eof = false;
        if let Some(tls) = self.tls.as_mut() {
            loop {
                match tls.read_tls(sock) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                let state = tls.process_new_packets().map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                let mut want = state.plaintext_bytes_to_read();
                while want > 0 {
                    room(&mut self.inb, self.filled, want);
                    let n = tls.reader().read(self.inb.get_mut(self.filled..).unwrap_or_default()).unwrap_or(0);
                    self.filled += n;
                    if n == 0 {
                        break;
                    }
                    want -= n.min(want);
                }
            }
            // The handshake (and key updates) may have records to send back.
            self.flush()?;
            return self.decode_and_finish(done, eof);
        }
        loop {
            room(&mut self.inb, self.filled, READ_CHUNK);
            match sock.read(self.inb.get_mut(self.filled..).unwrap_or_default()) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.decode_and_finish(done, eof)
    }

    fn decode_and_finish(&mut self, done: &mut Vec<(P, OwnedFrame, u64)>, eof: bool) -> io::Result<()> {
        let mut pos = 0;
        // One clock read for all the replies of this read.
        let now_us = mono_us();
        while pos < self.filled {
            let rest = self.inb.get(pos..self.filled).unwrap_or_default();
            let skip = match self.pending.front_mut() {
                Some(p) if p.2 > 0 => Some(&mut p.2),
                Some(_) => None,
                None if self.skip_next > 0 => Some(&mut self.skip_next),
                None => None,
            };
            if let Some(skip) = skip {
                // The common answers are matched as bytes; anything else (an error)
                // is decoded only to find where it ends.
                let used = if rest.starts_with(b"+QUEUED\r\n") {
                    9
                } else if rest.starts_with(b"+OK\r\n") {
                    5
                } else {
                    match decode(rest) {
                        Ok(Some((_, used))) => used,
                        Ok(None) => break,
                        Err(e) => {
                            self.filled = 0;
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("bad RESP from Redis: {e:?}"),
                            ));
                        }
                    }
                };
                *skip -= 1;
                pos += used;
                continue;
            }
            match decode(rest) {
                Ok(Some((frame, used))) => {
                    pos += used;
                    match self.pending.pop_front() {
                        Some((tag, _, _, sent)) => {
                            self.stamped = self.stamped.saturating_sub(1);
                            done.push((tag, frame, now_us.saturating_sub(sent)))
                        }
                        // Push messages (pub/sub) are handled by the caller's
                        // `on_push`: they have no pending entry.
                        None => self.push.push(frame),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.filled = 0;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP from Redis: {e:?}")));
                }
            }
        }
        // The undecoded tail (a reply still arriving) moves to the front.
        self.inb.copy_within(pos..self.filled, 0);
        self.filled -= pos;
        if eof {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection"));
        }
        Ok(())
    }

    /// The connection broke (or timed out): close it, retry after the backoff, and
    /// hand back every command still waiting for a reply (the caller fails them).
    pub fn fail(&mut self, registry: &Registry, now: u64, why: String) -> Vec<P> {
        if let Some(mut s) = self.sock.take() {
            let _ = registry.deregister(&mut s);
        }
        self.tls = None;
        self.reset_buffers();
        self.skip_next = 0;
        self.stamped = 0;
        self.push.clear();
        self.state = State::Down { retry_at: now + self.backoff_ms };
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
        self.last_error = Some(why);
        self.pending.drain(..).map(|p| p.0).collect()
    }
}

/// Microseconds on a monotonic clock (since its first use): when a command was written
/// and when its reply was decoded. The loop's ms clock is too coarse for a Redis that
/// answers in 100 µs.
pub fn mono_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

/// `<kind><n>\r\n`.
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

/// Make `buf[filled..]` at least `want` bytes long (zeroing only what is new).
fn room(buf: &mut Vec<u8>, filled: usize, want: usize) {
    if buf.len() < filled + want {
        buf.resize(filled + want, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::{RespConn, State};
    use mio::Token;
    use redis_protocol::resp2::encode::encode_borrowed;
    use redis_protocol::resp2::types::BorrowedFrame;
    use redis_protocol::resp2::types::OwnedFrame;

    /// The hand-written encoder writes what the codec's encoder writes.
    #[test]
    fn commands_encode_as_the_codec_does() {
        let big = vec![b'x'; 70_000];
        let cases: [&[&[u8]]; 4] = [
            &[b"PING"],
            &[b"FCALL", b"dbx_run", b"0", b"1700000000000", b"100000", b"S", b"k\r\n\0", b""],
            &[],
            &[b"SET", b"k", &big],
        ];
        for args in cases {
            let mut c: RespConn<()> = RespConn::new(Token(0));
            c.encode(args);
            let frames: Vec<BorrowedFrame> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
            let frame = BorrowedFrame::Array(&frames);
            let mut want = vec![0; frame.encode_len(false)];
            let n = encode_borrowed(&mut want, &frame, false).unwrap();
            want.truncate(n);
            assert_eq!(c.out, want);
        }
    }

    /// The replies of `send_skipped` commands are passed over (also an error reply, and
    /// also when they arrive in pieces); the tagged reply after them gets its tag.
    #[test]
    fn skipped_replies_are_passed_over_in_order() {
        let mut c: RespConn<u32> = RespConn::new(Token(0));
        c.state = State::Up;
        assert!(c.send_skipped(&[b"MULTI"]));
        assert!(c.send_skipped(&[b"GET", b"k"]));
        assert!(c.send_skipped(&[b"BAD"]));
        assert!(c.try_send(&[b"EXEC"], 7, 0).is_ok());
        assert!(c.try_send(&[b"PING"], 8, 0).is_ok());
        let wire: &[u8] = b"+OK\r\n+QUEUED\r\n-ERR unknown command\r\n*2\r\n$1\r\na\r\n:5\r\n+PONG\r\n";
        let mut done = Vec::new();
        for part in [&wire[..3], &wire[3..12], &wire[12..40], &wire[40..]] {
            c.inb.resize(c.filled + part.len(), 0);
            c.inb[c.filled..c.filled + part.len()].copy_from_slice(part);
            c.filled += part.len();
            c.decode_and_finish(&mut done, false).unwrap();
        }
        assert_eq!(done.len(), 2, "{done:?}");
        assert_eq!(done[0].0, 7);
        assert!(matches!(&done[0].1, OwnedFrame::Array(a) if a.len() == 2));
        assert_eq!((done[1].0, &done[1].1), (8, &OwnedFrame::SimpleString(b"PONG".to_vec())));
        assert_eq!(c.filled, 0);
        // Down: nothing is queued.
        c.state = State::Down { retry_at: 0 };
        assert!(!c.send_skipped(&[b"MULTI"]));
    }
}
