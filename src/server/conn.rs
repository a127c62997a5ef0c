//! One connection's state: HTTP head → WebSocket → closing, and its byte pipes.
//!
//! `Wire` sits between tungstenite and the socket. Reads fill our inbound buffer
//! (`In`): plain text frames are taken from it by the server, everything else is
//! handed to tungstenite a whole frame at a time. Writes land in our own outbound
//! buffer and reach the socket only when the reactor flushes at the end of a loop
//! turn. That gives one write syscall per connection per turn, an exact count of queued
//! outbound bytes (for backpressure), and lets replies and fan-out events be framed by
//! us and appended without a `Message` per reply.
//!
//! The byte stream under it is plain TCP or TLS (`tls`: a rustls connection driven
//! sans-IO, see tls.rs); everything above `Wire` sees plaintext either way. `sent`
//! then counts plaintext handed to rustls, and `pending` adds what rustls still holds
//! encrypted, so backpressure and the slow-consumer cut see every buffered byte.

use super::frame;
use super::ratelimit::TokenBucket;
use super::tls::TlsConn;
use super::wheel::TimerId;
use crate::auth::Identity;
use crate::engine::ReplyOrder;
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use tungstenite::WebSocket;

/// Outbound buffers larger than this are released once drained, so an idle connection
/// does not keep the memory of its largest reply.
const KEEP_OUT_CAPACITY: usize = 16 * 1024;

pub struct Wire {
    pub sock: TcpStream,
    out: Vec<u8>,
    sent: usize,
    /// Offset in `out` where WebSocket frames begin (after a queued `101` answer).
    frames_at: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The last read came back short, so the socket's receive queue was empty then;
    /// reads answer WouldBlock without a syscall until the next readiness event (see
    /// `Read` below).
    drained: bool,
    /// The peer's FIN (or an error) was already reported: its EOF raises no new event,
    /// so reads always go to the socket.
    peer_done: bool,
    /// TLS on this connection (boxed: rustls's state is large, and most plaintext
    /// deployments never pay for it).
    pub tls: Option<Box<TlsConn>>,
    /// The WebSocket read side (see `In`); unused in the HTTP phase.
    pub inb: In,
}

/// Inbound WebSocket bytes, read from the socket by us rather than by tungstenite.
///
/// Almost every frame a client sends is a complete, masked, final text frame that fits
/// one read. Those are unmasked, checked for UTF-8 and handed to the engine straight
/// from this buffer (`Wire::next_text`): no `Bytes` per message, no zero-filled read
/// buffer per read, no second copy. Every other frame — control frames, fragments,
/// binary, reserved bits, unmasked, over the size limit, larger than this buffer, bad
/// UTF-8 — is handed to tungstenite, which reads it through `Read for Wire` one whole
/// frame at a time (`owed`), so its own buffer is empty again after each message and
/// all protocol checks, errors and close codes stay tungstenite's.
pub struct In {
    /// Fixed size once allocated (at the upgrade); `buf[pos..end]` is unread.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Bytes of frames handed to tungstenite that it has not read yet. While non-zero,
    /// only tungstenite reads.
    owed: u64,
    /// tungstenite is inside a fragmented message (a non-final data frame was handed to
    /// it and not yet its final continuation): its frames must all go to tungstenite.
    frag: bool,
    /// The socket reported EOF (or the stream ended) while we read ahead.
    eof: bool,
    /// The frame at `pos` is not valid UTF-8 (`Wire::unread_text`): tungstenite reads it
    /// and fails the connection with its close code.
    refused: bool,
}

/// Size of the per-connection inbound buffer: a whole batch of small pipelined
/// requests fits one read; larger frames go through tungstenite.
pub const IN_BUF: usize = 4096;

/// What `Wire::next_text` found at the head of the inbound buffer.
pub enum Next {
    /// A plain text frame starting at `frame`: its payload, unmasked, is
    /// `buf[start..end]` of the buffer `Wire::take_in` returns. The frame is consumed.
    /// The caller checks its UTF-8 (it needs a `&str` anyway: one check, not two) and
    /// hands it back with `unread_text` when that fails.
    Text { frame: usize, start: usize, end: usize },
    /// The frame at the head is not complete yet and no more bytes are readable now.
    Blocked,
    /// Anything else: let tungstenite read the next frame (or report EOF / an error).
    Tungstenite,
}

impl Wire {
    pub fn new(sock: TcpStream) -> Wire {
        Wire {
            sock,
            tls: None,
            out: Vec::new(),
            sent: 0,
            frames_at: 0,
            bytes_in: 0,
            bytes_out: 0,
            drained: false,
            peer_done: false,
            inb: In { buf: Vec::new(), pos: 0, end: 0, owed: 0, frag: false, eof: false, refused: false },
        }
    }

    /// The WebSocket phase starts: `rest` (bytes after the request head) is the start
    /// of the first frame.
    pub fn start_frames(&mut self, rest: &[u8]) {
        let mut buf = vec![0u8; IN_BUF.max(rest.len())];
        let n = rest.len();
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(rest);
        }
        self.inb = In { buf, pos: 0, end: n, owed: 0, frag: false, eof: false, refused: false };
    }

    /// Our fast path may read the next frame: tungstenite holds no part of a frame or
    /// of a fragmented message.
    pub fn fast_ok(&self) -> bool {
        self.inb.owed == 0 && !self.inb.frag && !self.inb.refused && !self.inb.buf.is_empty()
    }

    /// The next plain text frame (see `In`), reading the socket when the buffer holds
    /// no complete frame. `max`: the message size limit. Errors are the socket's
    /// (WouldBlock is `Blocked`).
    pub fn next_text(&mut self, max: u64) -> io::Result<Next> {
        loop {
            let In { buf, pos, end, eof, .. } = &mut self.inb;
            let cap = buf.len() as u64;
            let avail = buf.get_mut(*pos..*end).unwrap_or_default();
            if let Some(h) = frame::read_header(avail) {
                if !(h.fin && h.rsv == 0 && h.op == 0x1 && h.masked) || h.len > max {
                    return Ok(Next::Tungstenite);
                }
                // h.len <= max fits usize here only if it fits the buffer: check in u64.
                let total = h.size as u64 + h.len;
                if total > cap {
                    return Ok(Next::Tungstenite);
                }
                let total = total as usize;
                if total <= avail.len() {
                    let (head, rest) = avail.split_at_mut(h.size);
                    let payload = rest.get_mut(..total - h.size).unwrap_or_default();
                    let mut key = [0u8; 4];
                    key.copy_from_slice(head.get(h.size - 4..).unwrap_or(&[0; 4]));
                    apply_mask(payload, key);
                    let frame = *pos;
                    let start = frame + h.size;
                    *pos += total;
                    return Ok(Next::Text { frame, start, end: start + (total - h.size) });
                }
            }
            if *eof {
                return Ok(Next::Tungstenite);
            }
            match self.fill() {
                Ok(0) => self.inb.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read the socket into the inbound buffer after its unread bytes (moved to the
    /// front first: usually there are none, a batch ends on a frame boundary).
    fn fill(&mut self) -> io::Result<usize> {
        let In { buf, pos, end, .. } = &mut self.inb;
        if *pos > 0 {
            buf.copy_within(*pos..*end, 0);
            *end -= *pos;
            *pos = 0;
        }
        let Wire { sock, tls, drained, peer_done, bytes_in, inb, .. } = self;
        let mut raw = SockRead { sock, drained, peer_done: *peer_done, bytes_in };
        let dst = inb.buf.get_mut(inb.end..).unwrap_or_default();
        if dst.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = match tls.as_deref_mut() {
            None => raw.read(dst)?,
            Some(tls) => tls.read(&mut raw, dst)?,
        };
        inb.end += n;
        Ok(n)
    }

    /// Lend the inbound buffer (while a request borrows its text); `put_in` returns it.
    pub fn take_in(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inb.buf)
    }

    /// The text frame `next_text` returned at `frame` is not valid UTF-8: mask it again
    /// and leave it for tungstenite, which fails the connection (1007).
    pub fn unread_text(&mut self, frame: usize) {
        let In { buf, pos, refused, .. } = &mut self.inb;
        let Some(h) = frame::read_header(buf.get(frame..).unwrap_or_default()) else {
            return;
        };
        let mut key = [0u8; 4];
        key.copy_from_slice(buf.get(frame + h.size - 4..frame + h.size).unwrap_or(&[0; 4]));
        let len = usize::try_from(h.len).unwrap_or(0);
        apply_mask(buf.get_mut(frame + h.size..frame + h.size + len).unwrap_or_default(), key);
        *pos = frame;
        *refused = true;
    }

    pub fn put_in(&mut self, buf: Vec<u8>) {
        self.inb.buf = buf;
    }

    /// Bytes queued for the socket (with TLS: also those rustls holds encrypted).
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent + self.tls.as_ref().map_or(0, |t| t.inflight())
    }

    /// Half-close after an HTTP answer (with TLS, a close_notify goes first).
    pub fn shutdown_write(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.close_notify();
            let _ = self.send();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    /// Last words before the socket is closed: close_notify on TLS, then whatever is
    /// queued (never blocks).
    pub fn finish(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            if let Some(answer) = tls.plaintext_answer() {
                // One non-blocking write: a short answer fits the empty send buffer.
                let _ = self.sock.write(&answer);
                return;
            }
            tls.close_notify();
        }
        let _ = self.send();
    }

    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Everything queued so far is HTTP; WebSocket frames follow.
    pub fn frames_start_here(&mut self) {
        self.frames_at = self.out.len();
    }

    /// Drop every queued frame the socket has not started to take (a frame already
    /// partly sent is kept whole, so the stream stays well-formed). Returns the bytes
    /// dropped. Used to cut a slow consumer: its close frame then comes right after
    /// what it has already been sent, and the memory is released at once.
    pub fn drop_unsent_frames(&mut self) -> usize {
        let mut pos = self.frames_at;
        while pos < self.sent {
            match frame_len(self.out.get(pos..).unwrap_or_default()) {
                Some(n) => pos += n,
                None => return 0, // not a frame boundary we understand: keep everything
            }
        }
        if pos >= self.out.len() {
            return 0;
        }
        let dropped = self.out.len() - pos;
        self.out.truncate(pos);
        if self.out.capacity() > KEEP_OUT_CAPACITY.max(2 * self.out.len()) {
            self.out.shrink_to(KEEP_OUT_CAPACITY.max(self.out.len()));
        }
        dropped
    }

    /// Append one unmasked text frame (server → client) holding `payload`.
    pub fn queue_text_frame(&mut self, payload: &[u8]) {
        self.out.reserve(payload.len() + 10);
        frame::write_header(&mut self.out, 0x1, payload.len(), false);
        self.out.extend_from_slice(payload);
    }

    /// Write queued bytes until done or the socket would block. Ok(true) = all sent.
    pub fn send(&mut self) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_deref_mut() {
            let mut sock = SockWrite { sock: &mut self.sock, bytes_out: &mut self.bytes_out };
            let (taken, done) = tls.send(self.out.get(self.sent..).unwrap_or_default(), &mut sock)?;
            self.sent += taken;
            if !done || self.sent < self.out.len() {
                return Ok(false);
            }
            self.sent = self.out.len();
        }
        while self.sent < self.out.len() {
            let chunk = self.out.get(self.sent..).unwrap_or_default();
            match self.sock.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    self.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.sent = 0;
        self.frames_at = 0;
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = Vec::new();
        }
        Ok(true)
    }
}

/// Total length (header + payload) of the WebSocket frame at the start of `b`, if its
/// header is complete.
fn frame_len(b: &[u8]) -> Option<usize> {
    let h = frame::read_header(b)?;
    h.size.checked_add(usize::try_from(h.len).ok()?)
}

impl Wire {
    /// A readiness event arrived: the socket may hold new bytes (`closed`: the event
    /// also reported the peer's FIN or an error).
    pub fn readable(&mut self, closed: bool) {
        self.drained = false;
        self.peer_done |= closed;
    }
}

/// A TCP read that fills less than the buffer has emptied the receive queue, and with
/// edge-triggered readiness any byte (or FIN) that arrives after it raises a new event;
/// a FIN that arrived before it was reported with the event, which turns this off. So the
/// read that would only return WouldBlock is skipped: one syscall fewer per batch of
/// requests — per request when clients send one at a time.
impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inb.buf.is_empty() {
            return self.read_plain(buf);
        }
        // WebSocket phase, tungstenite reading: hand it whole frames only (see `In`).
        if self.inb.owed == 0 {
            loop {
                let avail = self.inb.buf.get(self.inb.pos..self.inb.end).unwrap_or_default();
                if let Some(h) = frame::read_header(avail) {
                    self.inb.owed = (h.size as u64).saturating_add(h.len);
                    self.inb.refused = false;
                    match h.op {
                        0x1 | 0x2 if !h.fin => self.inb.frag = true,
                        0x0 if h.fin => self.inb.frag = false,
                        _ => {}
                    }
                    break;
                }
                if self.inb.eof {
                    // A truncated header, then EOF: tungstenite reports the reset.
                    self.inb.owed = avail.len() as u64;
                    if avail.is_empty() {
                        return Ok(0);
                    }
                    break;
                }
                if self.fill()? == 0 {
                    self.inb.eof = true;
                }
            }
        }
        // Served from our buffer (refilled with whole socket reads), so a large frame
        // costs tungstenite's small reads no extra system calls.
        if self.inb.pos == self.inb.end && self.fill()? == 0 {
            self.inb.eof = true;
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.inb.owed).unwrap_or(usize::MAX));
        let In { buf: b, pos, end, owed, .. } = &mut self.inb;
        let n = want.min(*end - *pos);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), b.get(*pos..*pos + n)) {
            dst.copy_from_slice(src);
        }
        *pos += n;
        *owed -= n as u64;
        Ok(n)
    }
}

/// XOR `data` with the 4-byte masking `key` (RFC 6455 §5.3), eight bytes at a time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let k8 = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ k8).to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

impl Wire {
    /// Read plaintext from the socket (through TLS when on).
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Wire { sock, tls, drained, peer_done, bytes_in, .. } = self;
        let mut raw = SockRead { sock, drained, peer_done: *peer_done, bytes_in };
        match tls.as_deref_mut() {
            None => raw.read(buf),
            Some(tls) => tls.read(&mut raw, buf),
        }
    }
}

/// The socket's read side with the skipped-WouldBlock rule above (with TLS, rustls
/// reads ciphertext through it).
struct SockRead<'a> {
    sock: &'a mut TcpStream,
    drained: &'a mut bool,
    peer_done: bool,
    bytes_in: &'a mut u64,
}

impl Read for SockRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.drained && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.sock.read(buf)?;
        *self.bytes_in += n as u64;
        *self.drained = !self.peer_done && n > 0 && n < buf.len();
        Ok(n)
    }
}

/// The socket's write side for rustls's `write_tls` (vectored: one syscall for all
/// the records of a turn).
struct SockWrite<'a> {
    sock: &'a mut TcpStream,
    bytes_out: &'a mut u64,
}

impl Write for SockWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.sock.write(buf)?;
        *self.bytes_out += n as u64;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.sock.write_vectored(bufs)?;
        *self.bytes_out += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// tungstenite's writes (pongs, close frames, echo replies) are queued, never blocked.
impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub enum Phase {
    /// Reading the HTTP request head.
    Http { wire: Wire, head: Vec<u8> },
    /// A refusal or an HTTP answer is queued — or the final close frame of a WebSocket
    /// whose inbound frames can no longer be parsed; after it is sent the socket is shut
    /// down for writing and drained until the peer closes (so our answer is not lost to
    /// an RST).
    Answered { wire: Wire },
    /// An open WebSocket.
    Ws(Box<WebSocket<Wire>>),
    /// Transitional (only while moving between phases).
    Gone,
}

/// Why a connection ended (logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    PeerReset,
    HttpDone,
    HandshakeTimeout,
    IdleTimeout,
    SlowConsumer,
    MessageTooBig,
    InvalidUtf8,
    ProtocolError,
    TokenExpired,
    Shutdown,
    IoError,
    /// A TLS handshake failed or a record could not be decrypted.
    TlsError,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerReset => "peer_reset",
            CloseReason::HttpDone => "http_done",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::TlsError => "tls_error",
        }
    }
}

pub struct Conn {
    pub phase: Phase,
    pub peer: SocketAddr,
    /// Unique for the life of the process (the slab slot is reused).
    pub serial: u64,
    pub client_id: Option<String>,
    /// The credential's role, scope and expiry.
    pub identity: Rc<Identity>,
    /// Echo endpoint (conformance testing): messages are echoed, not executed.
    pub echo: bool,
    /// Counted against `DBX_WS_MAX_CONNECTIONS`.
    pub counted: bool,
    /// Accepted on the DBX_ADMIN_PORT listener: `/health` and `/metrics` only.
    pub admin: bool,
    /// Reactor monotonic ms (not wall-clock) of the last frame received.
    pub last_seen_ms: u64,
    /// Refilled on the reactor's monotonic clock (the same as `last_seen_ms`).
    pub bucket: TokenBucket,
    /// Heartbeat, liveness/handshake deadline and credential expiry timers.
    pub timers: Timers,
    /// In the reactor's dirty list (output to flush this turn).
    pub dirty: bool,
    /// Input may remain unprocessed (budget spent or reading paused by backpressure).
    pub more_input: bool,
    /// Reading stopped until the outbound queue drains below the mark.
    pub paused: bool,
    /// Set once: the connection is going away; freed at the end of the turn.
    pub dead: Option<CloseReason>,
    /// We sent a close frame; waiting for the peer's (bounded by a timer).
    pub closing: Option<CloseReason>,
    /// Replies leave in request order (see `engine::ReplyOrder`).
    pub order: ReplyOrder,
}

#[derive(Default)]
pub struct Timers {
    pub heartbeat: Option<TimerId>,
    pub deadline: Option<TimerId>,
    pub expiry: Option<TimerId>,
}

impl Conn {
    /// `mono_ms`: the reactor's monotonic clock (ms since start).
    pub fn new(sock: TcpStream, peer: SocketAddr, serial: u64, mono_ms: u64, rate: u32) -> Conn {
        Conn {
            phase: Phase::Http { wire: Wire::new(sock), head: Vec::new() },
            peer,
            serial,
            client_id: None,
            identity: Rc::new(Identity::anonymous()),
            echo: false,
            counted: false,
            admin: false,
            last_seen_ms: mono_ms,
            bucket: TokenBucket::new(rate, mono_ms),
            timers: Timers::default(),
            dirty: false,
            more_input: false,
            paused: false,
            dead: None,
            closing: None,
            order: ReplyOrder::default(),
        }
    }

    pub fn wire(&mut self) -> Option<&mut Wire> {
        match &mut self.phase {
            Phase::Http { wire, .. } | Phase::Answered { wire } => Some(wire),
            Phase::Ws(ws) => Some(ws.get_mut()),
            Phase::Gone => None,
        }
    }

    pub fn wire_ref(&self) -> Option<&Wire> {
        match &self.phase {
            Phase::Http { wire, .. } | Phase::Answered { wire } => Some(wire),
            Phase::Ws(ws) => Some(ws.get_ref()),
            Phase::Gone => None,
        }
    }

    /// See `Wire::readable`.
    pub fn readable(&mut self, closed: bool) {
        match &mut self.phase {
            Phase::Http { wire, .. } | Phase::Answered { wire } => wire.readable(closed),
            Phase::Ws(ws) => ws.get_mut().readable(closed),
            Phase::Gone => {}
        }
    }

    pub fn is_ws(&self) -> bool {
        matches!(self.phase, Phase::Ws(_))
    }

    pub fn pending_out(&self) -> usize {
        self.wire_ref().map_or(0, Wire::pending)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn wire() -> (Wire, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (Wire::new(TcpStream::from_std(s)), peer)
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(frame_len(&[0x81, 5]), Some(7));
        assert_eq!(frame_len(&[0x81, 126, 1, 0]), Some(4 + 256));
        assert_eq!(frame_len(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]), Some(10 + 65536));
        assert_eq!(frame_len(&[0x88, 0x82]), Some(2 + 4 + 2)); // masked
        assert_eq!(frame_len(&[0x81]), None);
        assert_eq!(frame_len(&[0x81, 126, 1]), None);
    }

    #[test]
    fn drop_unsent_keeps_http_and_partly_sent_frame() {
        let (mut w, _peer) = wire();
        w.queue(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        w.frames_start_here();
        let http = w.out.len();
        w.queue_text_frame(&[b'a'; 300]); // 4 + 300
        w.queue_text_frame(b"bb");
        w.queue_text_frame(b"cc");
        // Nothing sent yet: every frame goes, the HTTP answer stays.
        let (mut w2, _peer2) = wire();
        w2.queue(b"HTTP/1.1 101\r\n\r\n");
        w2.frames_start_here();
        w2.queue_text_frame(b"zz");
        assert_eq!(w2.drop_unsent_frames(), 4);
        assert_eq!(w2.pending(), b"HTTP/1.1 101\r\n\r\n".len());
        // Partly into the first frame: it is kept whole, the rest dropped.
        w.sent = http + 10;
        assert_eq!(w.drop_unsent_frames(), 8);
        assert_eq!(w.out.len(), http + 304);
        // Exactly at a boundary: nothing after it is kept.
        w.sent = http + 304;
        assert_eq!(w.drop_unsent_frames(), 0);
        w.queue_text_frame(b"dd");
        assert_eq!(w.drop_unsent_frames(), 4);
        assert_eq!(w.pending(), 0);
    }
}
