//! The WebSocket phase of a connection: the upgrade (credential, hello, timers),
//! reading frames, the closing handshake and failing a connection. Requests go to
//! `Server::on_text` (and from there to the engine).

use super::conn::{CloseReason, Conn, Next, Phase};
use super::handshake::{self, Refusal};
use super::{Server, Timer, CLOSE_GRACE_MS, READ_BUDGET};
use crate::auth::{AuthError, Identity};
use crate::proto::{self, envelope, Code};
use slab::Slab;
use std::io;
use std::rc::Rc;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

impl Server {
    pub(super) fn ws_config(&self, echo: bool) -> WebSocketConfig {
        let max =
            if echo { (self.cfg.max_message_size as usize).max(64 << 20) } else { self.cfg.max_message_size as usize };
        let mut c = WebSocketConfig::default();
        // Small per-connection buffers: 10,000 idle connections must stay cheap. tungstenite
        // reads only the frames our fast path hands it (see `conn::In`), and from our
        // buffer, not the socket: its own needs no more than a header's worth to start
        // (it grows to a frame's length when one comes), and a large frame costs it
        // only more memcpy calls, no more system calls.
        c.read_buffer_size = 256;
        // Our Wire queues every write, so tungstenite never needs to hold frames back.
        c.write_buffer_size = 0;
        c.max_write_buffer_size = usize::MAX;
        c.max_message_size = Some(max);
        c.max_frame_size = Some(max);
        c
    }

    pub(super) fn upgrade(&mut self, t: usize, up: handshake::Upgrade, head_len: usize, echo: bool) {
        if !echo && self.ws_count >= self.cfg.ws_max_connections {
            self.metrics.count_refused("overloaded");
            if let Some(suppressed) = self.refusal_log.admit(self.mono) {
                log::info!(
                    peer:% = self.conns.get(t).map_or_else(|| "?".into(), |c| c.peer.to_string()),
                    suppressed;
                    "refused #{}: connection limit of {} reached",
                    self.conns.get(t).map_or(0, |c| c.serial),
                    self.cfg.ws_max_connections
                );
            }
            let r =
                Refusal::new(503, "overloaded", format!("Connection limit of {} reached", self.cfg.ws_max_connections));
            return self.answer(t, handshake::refusal_response(&r));
        }
        let (credential, protocol) =
            handshake::extract_credential(up.api_key.as_deref(), up.authorization.as_deref(), up.protocols.as_deref());
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
                    if let Some(suppressed) = self.refusal_log.admit(self.mono) {
                        // The credential is unknown, so it has no label: it is never logged.
                        log::info!(
                            peer:% = self.conns.get(t).map_or_else(|| "?".into(), |c| c.peer.to_string()),
                            target:% = handshake::redact_query(&up.target),
                            suppressed;
                            "refused #{}: {message}",
                            self.conns.get(t).map_or(0, |c| c.serial)
                        );
                    }
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
        wire.start_frames(head.get(head_len..).unwrap_or_default());
        let ws = WebSocket::from_raw_socket(wire, Role::Server, Some(config));
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
            if let Some(c) = self.conns.get(t) {
                // API keys only: their labels are a fixed set (JWT subjects are not).
                if c.identity.is_api_key {
                    self.metrics.count_opened_by_key(&c.identity.label);
                }
            }
            self.ws_count += 1;
            self.engine.set_connections(self.ws_count);
            self.send_hello(t);
        }
        if let Some(c) = self.conns.get(t) {
            log::debug!(
                peer:% = c.peer,
                client_id = c.client_id.as_deref().unwrap_or("-"),
                role = c.identity.role.as_str(),
                key = c.identity.label.as_str(),
                path = up.target.split('?').next().unwrap_or("");
                "open #{serial}"
            );
        }
        self.mark_dirty(t);
        // The first frame may already be buffered: no new edge will announce it.
        self.read_ws(t);
    }

    /// (Re)arm the timer that closes the connection with 4001 when its JWT expires.
    pub(super) fn arm_expiry(&mut self, t: usize) {
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

    pub(super) fn send_hello(&mut self, t: usize) {
        let Some(c) = self.conns.get(t) else { return };
        let hello = envelope::Hello {
            serial: c.serial,
            heartbeat_interval: self.cfg.ws_heartbeat_interval,
            rate_limit: self.cfg.ws_rate_limit as u64,
            max_message_size: self.cfg.max_message_size,
            epoch: self.engine.epoch(),
            rev: self.engine.rev(),
            stamp: self.engine.stamp(),
        };
        envelope::hello(&mut self.buf, &hello);
        push_frame(&mut self.conns, &mut self.dirty, t, &self.buf);
    }

    /// Queue one text frame to a connection (replies, events, heartbeats).
    pub fn push_frame(&mut self, t: usize, payload: &[u8]) {
        push_frame(&mut self.conns, &mut self.dirty, t, payload);
    }

    pub(super) fn read_ws(&mut self, t: usize) {
        let max_out = self.cfg.ws_max_outbound as usize;
        let mut handled = 0;
        let bytes_in = self.conns.get(t).and_then(Conn::wire_ref).map_or(0, |w| w.bytes_in);
        // The end stamp of the last request handled here, and the connection's byte
        // count then: while no read came in between, the next request's handling time
        // is counted from that stamp (its frame's unmasking and UTF-8 check included).
        let mut last_end: Option<(u64, u64)> = None;
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
            // The fast path (see `conn::In`): plain text frames straight from our buffer,
            // while the connection is open and tungstenite holds no partial frame.
            if c.closing.is_none() && ws.can_write() && ws.get_ref().fast_ok() {
                let max = ws.get_config().max_message_size.unwrap_or(usize::MAX) as u64;
                let echo = c.echo;
                match ws.get_mut().next_text(max) {
                    Ok(Next::Text { frame, start, end }) => {
                        handled += 1;
                        c.last_seen_ms = self.mono;
                        let wire = ws.get_mut();
                        let buf = wire.take_in();
                        let text = buf.get(start..end).map(std::str::from_utf8);
                        let Some(Ok(text)) = text else {
                            wire.put_in(buf);
                            wire.unread_text(frame);
                            continue;
                        };
                        if echo {
                            wire.queue_text_frame(text.as_bytes());
                            wire.put_in(buf);
                            self.mark_dirty(t);
                            continue;
                        }
                        let read_so_far = wire.bytes_in;
                        let started = match last_end {
                            Some((stamp, read)) if read == read_so_far => stamp,
                            _ => self.cycles.stamp(),
                        };
                        last_end = Some((self.on_text(t, text, started), read_so_far));
                        if let Some(w) = self.conns.get_mut(t).and_then(Conn::wire) {
                            w.put_in(buf);
                        }
                        continue;
                    }
                    Ok(Next::Blocked) => break,
                    Ok(Next::Tungstenite) => {}
                    Err(_) => {
                        self.kill(t, CloseReason::IoError);
                        break;
                    }
                }
            }
            let Some(Phase::Ws(ws)) = self.conns.get_mut(t).map(|c| &mut c.phase) else { return };
            let msg = ws.read();
            match msg {
                Ok(msg) => {
                    handled += 1;
                    if let Some(c) = self.conns.get_mut(t) {
                        c.last_seen_ms = self.mono;
                    }
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

    pub(super) fn on_ws_error(&mut self, t: usize, e: tungstenite::Error) {
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
    pub(super) fn fail_ws(&mut self, t: usize, code: CloseCode, reason: &'static str, why: CloseReason) {
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
    pub(super) fn close_ws(&mut self, t: usize, code: CloseCode, reason: &'static str, why: CloseReason) {
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

    pub(super) fn on_message(&mut self, t: usize, msg: Message) {
        let (echo, closing) = self.conns.get(t).map_or((false, false), |c| (c.echo, c.closing.is_some()));
        match msg {
            // After we sent a close frame, data is no longer executed nor answered
            // (RFC 6455 §5.5.1); we only wait for the peer's close reply.
            Message::Text(_) | Message::Binary(_) if closing => {}
            Message::Text(text) if echo => self.echo(t, Message::Text(text)),
            Message::Binary(data) if echo => self.echo(t, Message::Binary(data)),
            Message::Text(text) => {
                let started = self.cycles.stamp();
                self.on_text(t, text.as_str(), started);
            }
            Message::Binary(_) => {
                let e = proto::Error::new(
                    Code::InvalidRequest,
                    "Binary frames are not supported; send JSON in text frames",
                );
                self.metrics.count_error(e.code);
                envelope::error(&mut self.buf, None, &e, self.engine.stamp());
                let seq = self.conns.get_mut(t).map_or(0, |c| c.order.issue());
                self.reply_in_order(t, seq, true);
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

    pub(super) fn echo(&mut self, t: usize, msg: Message) {
        if let Some(Phase::Ws(ws)) = self.conns.get_mut(t).map(|c| &mut c.phase) {
            let _ = ws.write(msg);
            self.mark_dirty(t);
        }
    }
}

/// Queue one text frame to connection `t` (replies, events, heartbeats), unless it is
/// closing or gone.
pub(super) fn push_frame(conns: &mut Slab<Conn>, dirty: &mut Vec<usize>, t: usize, payload: &[u8]) {
    let Some(c) = conns.get_mut(t) else {
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
    if !c.dirty {
        c.dirty = true;
        dirty.push(t);
    }
}

/// The reply of request `seq` of `t` is complete: queue it, and any later ones that
/// were waiting for it, in request order (see `engine::ReplyOrder`).
pub(super) fn complete_in_order(
    conns: &mut Slab<Conn>,
    dirty: &mut Vec<usize>,
    t: usize,
    seq: u64,
    reply: Option<&[u8]>,
) {
    let Some(c) = conns.get_mut(t) else { return };
    if c.order.take_turn(seq) {
        if let Some(r) = reply {
            push_frame(conns, dirty, t, r);
        }
        return;
    }
    let mut order = std::mem::take(&mut c.order);
    order.complete(seq, reply, |r| push_frame(conns, dirty, t, r));
    if let Some(c) = conns.get_mut(t) {
        c.order = order;
    }
}
