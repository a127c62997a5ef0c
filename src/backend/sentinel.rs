//! `redis+sentinel://`: the primary's address comes from the sentinels
//! (`SENTINEL get-master-addr-by-name`), asked at start, after any data connection
//! fails, and every second while serving. A different answer (a failover) closes every
//! backend connection: requests in flight get `unavailable`, and everything reconnects
//! to the new primary, where `dbx_init` checks that its history is not behind what was
//! delivered (or starts a new epoch: watchers get it and resync).

use super::{Gateway, Local, Tag};
use redis_protocol::resp2::types::OwnedFrame;
use std::net::{SocketAddr, ToSocketAddrs};

/// How often a serving gateway asks the sentinels where the primary is.
const ASK_EVERY_MS: u64 = 1000;

impl Gateway {
    /// Connect to a sentinel if needed and ask for the primary when due.
    pub(super) fn ask_sentinel(&mut self, now: u64) {
        let Some(master) = self.target.sentinel_master.clone() else { return };
        if now < self.next_sentinel_ask {
            return;
        }
        if !self.sentinel.is_open() {
            if !self.sentinel.due(now) {
                return;
            }
            let n = self.target.addrs.len().max(1);
            let Some((h, p)) = self.target.addrs.get(self.sentinel_at % n).cloned() else { return };
            self.sentinel_at = self.sentinel_at.wrapping_add(1);
            let Some(addr) = (h.as_str(), p).to_socket_addrs().ok().and_then(|mut a| a.next()) else { return };
            if let Err(e) = self.sentinel.connect(&self.registry, addr, now) {
                self.sentinel.last_error = Some(format!("sentinel {addr}: {e}"));
                return;
            }
        }
        if self.sentinel.oldest_sent().is_some() {
            return; // an answer is on its way
        }
        self.sentinel.send(&[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()], Tag::Master, now);
        let _ = self.sentinel.flush();
        self.next_sentinel_ask = now + ASK_EVERY_MS;
    }

    pub(super) fn on_master(&mut self, l: &mut Local, f: Option<OwnedFrame>) {
        let addr = match &f {
            Some(OwnedFrame::Array(a)) => {
                let host = a.first().and_then(super::frame_text);
                let port = a.get(1).and_then(super::frame_text).and_then(|p| p.parse::<u16>().ok());
                match (host, port) {
                    (Some(h), Some(p)) => (h, p).to_socket_addrs().ok().and_then(|mut a| a.next()),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(addr) = addr else {
            log::warn!("the sentinel knows no primary for this master name ({f:?})");
            self.fail_sentinel(l.mono_ms, "no primary known".into());
            return;
        };
        if self.addr == Some(addr) {
            return;
        }
        match self.addr {
            None => log::info!("sentinel: the primary is {addr}"),
            Some(old) => log::warn!("sentinel: the primary moved from {old} to {addr} (failover)"),
        }
        let moved = self.addr.is_some();
        self.addr = Some(addr);
        if moved {
            self.drop_all(l, format!("failover to {addr}"));
        }
    }

    /// Close every connection to the old primary (requests in flight: `unavailable`);
    /// they reopen at once to `self.addr`.
    pub(super) fn drop_all(&mut self, l: &mut Local, why: String) {
        let addr = self.addr;
        for i in 0..self.data.len() {
            self.fail_data_local(l, i, why.clone());
        }
        // fail_data_local forgets the address in sentinel mode: keep the new one.
        self.addr = addr;
        let now = l.mono_ms;
        let _ = self.follow.fail(&self.registry, now, why.clone());
        let _ = self.sub.fail(&self.registry, now, why);
        self.confirmed(None);
        self.mirrored_channels.clear();
        self.mirrored_patterns.clear();
        for c in self.data.iter_mut().chain([&mut self.follow]) {
            c.retry_now();
        }
        self.sub.retry_now();
    }

    pub(super) fn fail_sentinel(&mut self, now: u64, why: String) {
        log::warn!("sentinel connection: {why}");
        let _ = self.sentinel.fail(&self.registry, now, why);
        self.next_sentinel_ask = 0;
    }

    /// The address the gateway talks to (for logs and `/health`).
    pub(super) fn primary(&self) -> Option<SocketAddr> {
        self.addr
    }
}
