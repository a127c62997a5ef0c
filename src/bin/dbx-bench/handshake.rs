//! Opening connections: `--url` to a [`Target`] (ws:// or wss://; loopback only unless
//! `--allow-remote`; `--api-key` as the `api_key` query parameter), and the client's
//! blocking WebSocket handshake in two halves, so the connect phase can send a
//! whole batch of upgrade requests before it reads any response. A finished
//! handshake hands the socket to mio as a non-blocking [`Ws`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mio::net::TcpStream;
use sha1::{Digest, Sha1};

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use crate::cli::Opts;
use crate::frame::Ws;
use crate::request::Rng;

pub(crate) struct Target {
    host: String,
    port: u16,
    path_and_query: String,
    addrs: Vec<SocketAddr>,
    /// wss://: the client configuration (`--ca` / `--insecure`, dbx::tls_client).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// A connection during the blocking handshake: plain TCP or TLS over it.
pub(crate) struct Stream {
    sock: StdTcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.sock.read(buf),
            Some(t) => rustls::Stream::new(t, &mut self.sock).read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.sock.write(buf),
            Some(t) => rustls::Stream::new(t, &mut self.sock).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => self.sock.flush(),
            Some(t) => rustls::Stream::new(t, &mut self.sock).flush(),
        }
    }
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

pub(crate) fn parse_target(o: &Opts) -> Result<Target, String> {
    let (rest, secure) = if let Some(r) = o.url.strip_prefix("ws://") {
        (r, false)
    } else if let Some(r) = o.url.strip_prefix("wss://") {
        (r, true)
    } else {
        return Err(format!("--url must start with ws:// or wss:// (got {:?})", o.url));
    };
    let default_port = if secure { 443 } else { 80 };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let mut path = if path.starts_with('?') { format!("/{path}") } else { path };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or_else(|| format!("bad IPv6 host in {:?}", o.url))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in {:?}", o.url))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("bad port in {:?}", o.url))?),
            None => (authority.to_string(), default_port),
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
    let tls = if secure {
        let trust = match (&o.ca, o.insecure) {
            (Some(ca), _) => dbx::tls_client::Trust::CaFile(ca.into()),
            (None, true) => dbx::tls_client::Trust::Insecure,
            (None, false) => {
                return Err("wss:// needs --ca FILE (the CA that signed the server's certificate) or --insecure".into())
            }
        };
        let mut config = dbx::tls_client::client_config(&trust)?;
        if o.no_resume {
            if let Some(c) = Arc::get_mut(&mut config) {
                c.resumption = rustls::client::Resumption::disabled();
            }
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("bad TLS server name {host:?}: {e}"))?;
        Some((config, name))
    } else {
        if o.ca.is_some() || o.insecure {
            return Err("--ca and --insecure apply to wss:// URLs only".into());
        }
        None
    };
    Ok(Target { host, port, path_and_query: path, addrs, tls })
}

/// First half of the blocking handshake: connect and send the upgrade request.
/// Returns the socket and its `Sec-WebSocket-Key`.
pub(crate) fn start_handshake(
    t: &Target,
    token: Option<&str>,
    deadline: Instant,
    rng: &mut Rng,
) -> Result<(Stream, String), String> {
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
    let sock = sock.ok_or(last_err)?;
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(per)).map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(per)).map_err(|e| e.to_string())?;
    let mut s = Stream { sock, tls: None };
    if let Some((config, name)) = &t.tls {
        let mut c = ClientConnection::new(config.clone(), name.clone()).map_err(|e| format!("TLS: {e}"))?;
        while c.is_handshaking() {
            c.complete_io(&mut s.sock).map_err(|e| format!("TLS handshake: {e}"))?;
        }
        s.tls = Some(Box::new(c));
    }

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
pub(crate) fn finish_handshake(
    mut s: Stream,
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
    let Stream { sock, tls } = s;
    sock.set_read_timeout(None).map_err(|e| e.to_string())?;
    sock.set_write_timeout(None).map_err(|e| e.to_string())?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Ws::new(TcpStream::from_std(sock), tls, leftover, read_buf, mask_seed))
}
