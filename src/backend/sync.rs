//! The one blocking exchange with Redis, before the loop starts: settings that make
//! the gateway refuse to start (a refused AUTH, an evicting `maxmemory-policy`) are
//! start-up errors naming the setting (exit 2). Redis being down is not: the gateway
//! starts, answers `unavailable` and `/health` 503, and connects when Redis is back.

use super::setup_commands;
use crate::config::{Config, RedisTarget};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(2);

fn send(s: &mut TcpStream, args: &[&[u8]]) -> std::io::Result<()> {
    let frames: Vec<BorrowedFrame> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let f = BorrowedFrame::Array(&frames);
    let mut buf = vec![0; f.encode_len(false)];
    let n = encode_borrowed(&mut buf, &f, false).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    s.write_all(buf.get(..n).unwrap_or_default())
}

fn recv(s: &mut TcpStream, inb: &mut Vec<u8>) -> std::io::Result<OwnedFrame> {
    loop {
        if let Ok(Some((f, used))) = decode(inb) {
            inb.drain(..used);
            return Ok(f);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Redis closed the connection"));
        }
        inb.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The primary's address from one sentinel, if it answers.
fn ask_sentinel(at: std::net::SocketAddr, master: &str) -> Option<std::net::SocketAddr> {
    let mut s = TcpStream::connect_timeout(&at, START_TIMEOUT).ok()?;
    s.set_read_timeout(Some(START_TIMEOUT)).ok()?;
    send(&mut s, &[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()]).ok()?;
    let OwnedFrame::Array(a) = recv(&mut s, &mut Vec::new()).ok()? else { return None };
    let host = a.first().and_then(super::frame_text)?;
    let port = a.get(1).and_then(super::frame_text)?.parse::<u16>().ok()?;
    (host, port).to_socket_addrs().ok()?.next()
}

/// Check what would make the gateway useless or unsafe; Ok when Redis is unreachable
/// (logged: the gateway starts degraded).
pub fn startup_check(cfg: &Config, t: &RedisTarget) -> Result<(), String> {
    if t.tls {
        // The TLS settings are checked now (a bad CA file is a start-up error); the
        // policy is checked at each connect, in the loop (an evicting one refuses).
        super::tls_to(cfg, t)?;
        return Ok(());
    }
    let mut addrs = Vec::new();
    for (h, p) in &t.addrs {
        match (h.as_str(), *p).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => addrs.push(a),
            _ => return Err(format!("DBX_BACKEND: cannot resolve host '{h}'")),
        }
    }
    let addr = match &t.sentinel_master {
        None => addrs.first().copied(),
        Some(m) => addrs.iter().find_map(|a| ask_sentinel(*a, m)),
    };
    let Some(addr) = addr else {
        log::warn!("no sentinel of {} answered at start: serving `unavailable` until one does", t.describe());
        return Ok(());
    };
    let mut s = match TcpStream::connect_timeout(&addr, START_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("backend {} unreachable at start ({e}): serving `unavailable` until it answers", t.describe());
            return Ok(());
        }
    };
    let _ = s.set_read_timeout(Some(START_TIMEOUT));
    let _ = s.set_write_timeout(Some(START_TIMEOUT));
    let mut inb = Vec::new();
    let io = |e: std::io::Error| {
        log::warn!("backend {} did not answer at start ({e}); going on", t.describe());
    };
    for c in setup_commands(t) {
        let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
        if let Err(e) = send(&mut s, &args) {
            io(e);
            return Ok(());
        }
        match recv(&mut s, &mut inb) {
            Ok(OwnedFrame::Error(e)) => {
                let what = String::from_utf8_lossy(c.first().map_or(&b""[..], Vec::as_slice)).into_owned();
                return Err(format!("DBX_BACKEND: Redis refused {what}: {e}"));
            }
            Ok(_) => {}
            Err(e) => {
                io(e);
                return Ok(());
            }
        }
    }
    if let Err(e) = send(&mut s, &[b"CONFIG", b"GET", b"maxmemory-policy"]) {
        io(e);
        return Ok(());
    }
    match recv(&mut s, &mut inb) {
        Ok(OwnedFrame::Array(a)) => {
            let policy = a.get(1).and_then(super::frame_text).unwrap_or("").to_string();
            if super::evicts(&policy) && !cfg.backend_allow_eviction {
                return Err(format!(
                    "DBX_BACKEND: Redis maxmemory-policy is {policy}, which evicts keys without any watcher \
                     hearing of it; set maxmemory-policy noeviction in Redis or DBX_BACKEND_ALLOW_EVICTION=true"
                ));
            }
        }
        Ok(OwnedFrame::Error(e)) => log::warn!("could not read Redis maxmemory-policy ({e}); going on"),
        Ok(_) => {}
        Err(e) => io(e),
    }
    Ok(())
}
