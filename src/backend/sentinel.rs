//! `redis+sentinel://`: the primary's address comes from the sentinels
//! (`SENTINEL get-master-addr-by-name`), asked at start, after any data connection
//! fails, and every second while serving. A different answer (a failover) closes every
//! backend connection: requests in flight get `unavailable`, and everything reconnects
//! to the new primary, where `dbx_init` checks that its history is not behind what was
//! delivered (or starts a new epoch: watchers get it and resync).
//!
//! Several sentinels (`redis+sentinel://h1:p1,h2:p2,h3:p3/name`): the gateway talks to
//! one at a time and moves to the next one in the list when it is down (connect
//! refused, connection lost), does not answer within DBX_BACKEND_TIMEOUT, refuses the
//! password, or knows no primary for the name. With DBX_BACKEND_SENTINEL_PASSWORD each
//! sentinel connection starts with `AUTH <password>` (the sentinels' `requirepass`);
//! the URL's credentials are the data nodes'.

use super::{Gateway, Local, Tag};
use redis_protocol::resp2::types::OwnedFrame;
use std::net::SocketAddr;

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
            // A name is looked up off the loop (resolve.rs): the next sentinel is tried
            // meanwhile, and this one again on its turn.
            self.sentinel_at = self.sentinel_at.wrapping_add(1);
            let Some(addr) = self.resolver.lookup(&h, p) else { return };
            if let Err(e) = self.sentinel.connect(&self.registry, addr, now) {
                self.resolver.failed(&h, p);
                self.note_sentinel_error(format!("sentinel {addr}: {e}"));
                return;
            }
            if let Some(pw) = &self.sentinel_password {
                self.sentinel.send(&[b"AUTH", pw.as_bytes()], Tag::Setup, now);
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
        let master = self.target.sentinel_master.clone().unwrap_or_default();
        let (host, port) = match &f {
            Some(OwnedFrame::Array(a)) => {
                let host = a.first().and_then(super::frame_text).map(str::to_string);
                let port = a.get(1).and_then(super::frame_text).and_then(|p| p.parse::<u16>().ok());
                match (host, port) {
                    (Some(h), Some(p)) => (h, p),
                    _ => return self.sentinel_refused(l.mono_ms, "an unreadable answer".into()),
                }
            }
            Some(OwnedFrame::Error(e)) => {
                let hint = if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") {
                    " (DBX_BACKEND_SENTINEL_PASSWORD is the sentinels' password)"
                } else {
                    ""
                };
                return self.sentinel_refused(l.mono_ms, format!("{e}{hint}"));
            }
            _ => return self.sentinel_refused(l.mono_ms, format!("no primary known for master name '{master}'")),
        };
        let Some(addr) = self.resolver.lookup(&host, port) else {
            // A host name (sentinel `announce-hostnames`): looked up off the loop; ask
            // again shortly, by when the answer is in.
            self.next_sentinel_ask = l.mono_ms + 50;
            return;
        };
        self.sentinel_misses = 0;
        self.sentinel_logged.clear();
        if self.sentinel_error.take().is_some() {
            log::info!("sentinel: answered again");
        }
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
        self.note_sentinel_error(why.clone());
        let _ = self.sentinel.fail(&self.registry, now, why);
        self.next_sentinel_ask = 0;
    }

    /// The sentinel answered, but not with a primary: try the next one at once; once
    /// every one listed answered so, wait a second before the next round (an answering
    /// sentinel resets the reconnect backoff: a wrong password would otherwise be tried
    /// 20 times a second).
    pub(super) fn sentinel_refused(&mut self, now: u64, why: String) {
        let which = self.sentinel.peer.map_or_else(String::new, |a| format!(" {a}"));
        self.fail_sentinel(now, format!("sentinel{which}: {why}"));
        self.sentinel_misses += 1;
        if self.sentinel_misses.is_multiple_of(self.target.addrs.len().max(1)) {
            self.next_sentinel_ask = now + ASK_EVERY_MS;
        }
    }

    /// Logged once per distinct reason until a sentinel answers (sentinels retried in
    /// turn every second, down or refusing the password, would otherwise fill the log),
    /// shown on `/health` until one answers.
    pub(super) fn note_sentinel_error(&mut self, why: String) {
        if !self.sentinel_logged.contains(&why) {
            log::warn!("{why}");
            // Bounded: the reasons name one of the listed sentinels and a few kinds.
            if self.sentinel_logged.len() < 64 {
                self.sentinel_logged.push(why.clone());
            }
        }
        self.sentinel_error = Some(why);
    }

    /// Timers: a sentinel that does not answer within DBX_BACKEND_TIMEOUT (stopped,
    /// or a black hole while connecting) is left for the next one.
    pub(super) fn sentinel_timeouts(&mut self, now: u64) {
        if self.sentinel.oldest_sent().is_some_and(|t| now.saturating_sub(t) > self.timeout_ms) {
            let which = self.sentinel.peer.map_or_else(String::new, |a| format!(" {a}"));
            self.fail_sentinel(now, format!("sentinel{which}: no answer within DBX_BACKEND_TIMEOUT"));
        }
    }

    /// `/health`: why the sentinels gave no primary, while they do not.
    pub(super) fn sentinel_error(&self) -> Option<&str> {
        self.sentinel_error.as_deref()
    }

    /// The address the gateway talks to (for logs and `/health`).
    pub(super) fn primary(&self) -> Option<SocketAddr> {
        self.addr
    }
}
