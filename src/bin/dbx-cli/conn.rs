//! One blocking WebSocket connection: connect (ws:// or wss://, credential as a Bearer
//! header), send a request, read until its reply, queue the unsolicited messages.

use dbx::tls_client::{self as tls, Trust};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tungstenite::{Message, WebSocket};

/// Reads wake up this often so that Ctrl-C and deadlines are noticed while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Unsolicited messages kept while waiting for a reply (the oldest are dropped).
const MAX_QUEUED: usize = 10_000;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub credential: Option<String>,
    pub trust: Trust,
    /// Connect timeout and how long a request may wait for its reply.
    pub timeout: Duration,
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A reply: the `result`, or the error object's code and message.
pub enum Reply {
    Ok(Value),
    Err { code: String, message: String },
}

pub struct Conn {
    ws: WebSocket<Stream>,
    next_id: u64,
    timeout: Duration,
    /// Events and other unsolicited messages read while waiting for a reply.
    pub queued: VecDeque<Value>,
    /// `host:port`, for the prompt.
    pub label: String,
}

fn refused(resp: &tungstenite::http::Response<Option<Vec<u8>>>) -> String {
    let status = resp.status();
    let body = resp.body().as_deref().unwrap_or_default();
    let why = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!("{}: {}", e.get("code")?.as_str()?, e.get("message")?.as_str()?))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    format!("handshake refused: HTTP {status}: {why}")
}

impl Conn {
    pub fn connect(t: &Target) -> Result<Conn, String> {
        let mut req = t.url.as_str().into_client_request().map_err(|e| format!("bad URL {:?}: {e}", t.url))?;
        let uri = req.uri().clone();
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("bad URL {:?}: the scheme must be ws:// or wss://", t.url)),
        };
        let host = uri.host().ok_or_else(|| format!("bad URL {:?}: no host", t.url))?.to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if let Some(c) = &t.credential {
            let v = HeaderValue::from_str(&format!("Bearer {c}"))
                .map_err(|_| "the credential contains characters a header cannot carry".to_string())?;
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let label = format!("{host}:{port}");
        let addrs: Vec<_> =
            (bare_host.as_str(), port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        let mut last = format!("cannot resolve {host}");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, t.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {a}: {e}"),
            }
        }
        let mut tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(t.timeout)).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(t.timeout)).map_err(|e| e.to_string())?;
        let stream = if tls {
            let cfg = tls::client_config(&t.trust)?;
            let name = ServerName::try_from(bare_host.clone()).map_err(|e| format!("TLS server name {host}: {e}"))?;
            let mut c = ClientConnection::new(cfg, name).map_err(|e| format!("TLS setup: {e}"))?;
            // Finish the TLS handshake here, so that a certificate problem is reported
            // as such and not as a failed WebSocket upgrade.
            while c.is_handshaking() {
                c.complete_io(&mut tcp).map_err(|e| format!("TLS handshake with {label}: {e}"))?;
            }
            Stream::Tls(Box::new(StreamOwned::new(c, tcp)))
        } else {
            Stream::Plain(tcp)
        };
        let ws = match tungstenite::client(req, stream) {
            Ok((ws, _)) => ws,
            Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => return Err(refused(&resp)),
            Err(HandshakeError::Failure(e)) => return Err(format!("WebSocket handshake with {label} failed: {e}")),
            Err(HandshakeError::Interrupted(_)) => {
                return Err(format!("WebSocket handshake with {label}: no answer within {:?}", t.timeout))
            }
        };
        let mut conn = Conn { ws, next_id: 1, timeout: t.timeout, queued: VecDeque::new(), label };
        conn.ws.get_ref().tcp().set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
        // The server greets every connection; its absence means this is not DBX.
        let deadline = Instant::now() + t.timeout;
        loop {
            match conn.read_json()? {
                Some(v) if v.get("type").and_then(Value::as_str) == Some("hello") => break,
                Some(v) => conn.queue(v),
                None if Instant::now() >= deadline => return Err("no hello from the server".into()),
                None => {}
            }
        }
        Ok(conn)
    }

    fn queue(&mut self, v: Value) {
        if self.queued.len() >= MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back(v);
    }

    /// The next JSON message, or None when nothing arrived within the poll interval
    /// (control frames are answered by tungstenite and reported as None too).
    pub fn read_json(&mut self) -> Result<Option<Value>, String> {
        match self.ws.read() {
            Ok(Message::Text(t)) => serde_json::from_str(t.as_str())
                .map(Some)
                .map_err(|e| format!("unreadable message from the server: {e}")),
            Ok(Message::Close(f)) => Err(match f {
                Some(f) => format!("the server closed the connection ({} {})", u16::from(f.code), f.reason),
                None => "the server closed the connection".into(),
            }),
            Ok(_) => Ok(None),
            // A read timeout, or Ctrl-C (a socket read with SO_RCVTIMEO is not
            // restarted after a signal handler, SA_RESTART or not: signal(7)).
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Err("the connection is closed".into())
            }
            Err(e) => Err(format!("connection lost: {e}")),
        }
    }

    /// Send one request; its id.
    pub fn send(&mut self, method: &str, params: &Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(text)).map_err(|e| format!("cannot send: {e}"))?;
        Ok(id)
    }

    /// Send a request and wait for its reply; `Err` is a transport failure.
    pub fn call(&mut self, method: &str, params: &Value) -> Result<Reply, String> {
        let id = self.send(method, params)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.read_json()? {
                Some(v) if v.get("id").and_then(Value::as_u64) == Some(id) => return Ok(reply(v)),
                Some(v) => self.queue(v),
                None if Instant::now() >= deadline => {
                    return Err(format!("no reply to {method} within {} s", self.timeout.as_secs_f64()))
                }
                None => {}
            }
        }
    }

    /// Handle what arrived while nobody was reading (heartbeats, pings, a close):
    /// Err when the server has closed the connection in the meantime.
    pub fn drain(&mut self) -> Result<(), String> {
        self.ws.get_ref().tcp().set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut res = Ok(());
        // Bounded: at most what a long idle spell can queue (a heartbeat and a ping
        // per interval), not a loop on a flood.
        for _ in 0..10_000 {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        if v.get("type").and_then(Value::as_str) != Some("heartbeat") {
                            self.queue(v);
                        }
                    }
                }
                Ok(Message::Close(f)) => {
                    res = Err(match f {
                        Some(f) => format!("the server closed the connection ({} {})", u16::from(f.code), f.reason),
                        None => "the server closed the connection".into(),
                    });
                    break;
                }
                // Pings are answered by tungstenite itself.
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    res = Err(format!("connection lost: {e}"));
                    break;
                }
            }
        }
        let _ = self.ws.get_ref().tcp().set_nonblocking(false);
        res
    }

    /// A polite close (best effort).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if self.read_json().is_err() {
                break;
            }
        }
    }
}

fn reply(v: Value) -> Reply {
    match v.get("error") {
        Some(e) => Reply::Err {
            code: e.get("code").and_then(Value::as_str).unwrap_or("error").to_string(),
            message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
        },
        None => Reply::Ok(v.get("result").cloned().unwrap_or(Value::Null)),
    }
}
