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
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
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

/// The primary's addresses from one sentinel: Ok(None) when it is unreachable, does
/// not answer or knows no primary (the next one is asked); Err when it refuses the
/// password (DBX_BACKEND_SENTINEL_PASSWORD is wrong or missing: a setting to fix, not
/// an outage to wait out).
fn ask_sentinel(at: SocketAddr, master: &str, password: Option<&str>) -> Result<Option<Vec<SocketAddr>>, String> {
    let Ok(mut s) = TcpStream::connect_timeout(&at, START_TIMEOUT) else { return Ok(None) };
    if s.set_read_timeout(Some(START_TIMEOUT)).is_err() {
        return Ok(None);
    }
    let mut inb = Vec::new();
    let refused = |e: &str| {
        Err(format!(
            "DBX_BACKEND_SENTINEL_PASSWORD: sentinel {at} refused: {e} (the sentinels' own password, \
             their requirepass; the DBX_BACKEND URL's credentials are for the primary and replicas)"
        ))
    };
    if let Some(pw) = password {
        if send(&mut s, &[b"AUTH", pw.as_bytes()]).is_err() {
            return Ok(None);
        }
        match recv(&mut s, &mut inb) {
            Ok(OwnedFrame::Error(e)) => return refused(&e),
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
    }
    if send(&mut s, &[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()]).is_err() {
        return Ok(None);
    }
    let a = match recv(&mut s, &mut inb) {
        Ok(OwnedFrame::Array(a)) => a,
        Ok(OwnedFrame::Error(e)) if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") => return refused(&e),
        Ok(OwnedFrame::Error(e)) => {
            log::warn!("sentinel {at} answered {e}");
            return Ok(None);
        }
        _ => return Ok(None),
    };
    let host = a.first().and_then(super::frame_text);
    let port = a.get(1).and_then(super::frame_text).and_then(|p| p.parse::<u16>().ok());
    let (Some(host), Some(port)) = (host, port) else { return Ok(None) };
    Ok((host, port).to_socket_addrs().ok().map(Iterator::collect))
}

/// Check what would make the gateway useless or unsafe; Ok when Redis is unreachable
/// (logged: the gateway starts degraded).
pub fn startup_check(cfg: &Config, t: &RedisTarget) -> Result<(), String> {
    if cfg.backend_sentinel_password.is_some() && t.sentinel_master.is_none() {
        // Most likely the password meant for the server, which goes in the URL.
        return Err(format!(
            "DBX_BACKEND_SENTINEL_PASSWORD is set but DBX_BACKEND ({}) is not redis+sentinel://; \
             the password of a Redis server goes in the URL: redis://[user:password@]host:port",
            t.describe()
        ));
    }
    if t.tls {
        // The TLS settings are checked now (a bad CA file is a start-up error); the
        // policy is checked at each connect, in the loop (an evicting one refuses).
        super::tls_to(cfg, t)?;
        return Ok(());
    }
    // Before the loop starts, so these lookups block nothing but the start (the loop
    // looks names up on a helper thread: resolve.rs). Every address of a name is tried
    // in turn (`localhost` may be ::1 first while Redis listens on 127.0.0.1 only).
    let mut hosts = Vec::new();
    for (h, p) in &t.addrs {
        match (h.as_str(), *p).to_socket_addrs().map(Iterator::collect::<Vec<_>>) {
            Ok(a) if !a.is_empty() => hosts.push(a),
            _ => return Err(format!("DBX_BACKEND: cannot resolve host '{h}'")),
        }
    }
    let addrs = match &t.sentinel_master {
        None => hosts.into_iter().next(),
        Some(m) => {
            let mut found = None;
            for a in hosts.iter().flatten() {
                if let Some(p) = ask_sentinel(*a, m, cfg.backend_sentinel_password.as_deref())? {
                    found = Some(p);
                    break;
                }
            }
            found
        }
    };
    let Some(addrs) = addrs else {
        log::warn!("no sentinel of {} answered at start: serving `unavailable` until one does", t.describe());
        return Ok(());
    };
    let mut s = match addrs.iter().find_map(|a| TcpStream::connect_timeout(a, START_TIMEOUT).ok()) {
        Some(s) => s,
        None => {
            log::warn!("backend {} unreachable at start: serving `unavailable` until it answers", t.describe());
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
