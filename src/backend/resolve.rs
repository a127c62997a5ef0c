//! Host names of the backend (Redis, the sentinels, and what a sentinel answers) are
//! looked up on a helper thread, never on the loop: `getaddrinfo` blocks for as long as
//! DNS takes (seconds when a resolver is down), and every client of this gateway would
//! wait with it. Literal addresses need no lookup and are answered at once.
//!
//! The loop asks (`lookup`, `refresh`) and collects the answers once per turn (`poll`,
//! from `Gateway::tick`). No mio `Waker`: a `Poll` has room for one, the server's, and
//! the gateway's tick runs at least every 10 ms anyway (`Engine::wakeup_ms`), so an
//! answer waits at most that long.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};

type Name = (String, u16);
type Answer = (Name, Result<Vec<SocketAddr>, String>);

#[derive(Default)]
pub struct Resolver {
    /// Started at the first name to look up (a gateway on literal addresses has none).
    ask: Option<Sender<Name>>,
    answers: Option<Receiver<Answer>>,
    /// Each name's addresses, and which one to use (the next one after a failure:
    /// `localhost` may resolve to ::1 first while Redis listens on 127.0.0.1 only).
    known: HashMap<Name, (Vec<SocketAddr>, usize)>,
    /// Names asked and not answered yet.
    asked: HashSet<Name>,
    /// The last failed lookup (for `/health` and the log).
    pub last_error: Option<String>,
}

impl Resolver {
    /// The address to use for `host:port` now, if known; otherwise the lookup starts
    /// (off the loop) and a later call has it.
    pub fn lookup(&mut self, host: &str, port: u16) -> Option<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        let name = (host.to_string(), port);
        if let Some((addrs, at)) = self.known.get(&name) {
            if let Some(a) = addrs.get(*at % addrs.len().max(1)) {
                return Some(*a);
            }
        }
        self.ask(name);
        None
    }

    /// Connecting to `host:port` failed: use its next address, and look the name up
    /// again (the answer replaces the old one when it comes; meanwhile the old serves).
    pub fn failed(&mut self, host: &str, port: u16) {
        if host.parse::<IpAddr>().is_ok() {
            return;
        }
        let name = (host.to_string(), port);
        if let Some((_, at)) = self.known.get_mut(&name) {
            *at = at.wrapping_add(1);
        }
        self.ask(name);
    }

    fn ask(&mut self, name: Name) {
        if self.asked.contains(&name) {
            return;
        }
        if self.ask.is_none() {
            let (ask_tx, ask_rx) = channel::<Name>();
            let (ans_tx, ans_rx) = channel::<Answer>();
            let spawned = std::thread::Builder::new().name("dbx-resolve".into()).spawn(move || {
                // Ends when the gateway (the sender) goes.
                for (host, port) in ask_rx {
                    let r = (host.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.collect::<Vec<_>>())
                        .map_err(|e| e.to_string())
                        .and_then(|v| if v.is_empty() { Err("no address".to_string()) } else { Ok(v) });
                    if ans_tx.send(((host, port), r)).is_err() {
                        break;
                    }
                }
            });
            match spawned {
                Ok(_) => {
                    self.ask = Some(ask_tx);
                    self.answers = Some(ans_rx);
                }
                Err(e) => {
                    self.last_error = Some(format!("cannot start the resolver thread: {e}"));
                    return;
                }
            }
        }
        if let Some(tx) = &self.ask {
            if tx.send(name.clone()).is_ok() {
                self.asked.insert(name);
            }
        }
    }

    /// Collect the answers that arrived. True when some name got addresses.
    pub fn poll(&mut self) -> bool {
        let Some(rx) = &self.answers else { return false };
        let mut got = false;
        while let Ok((name, r)) = rx.try_recv() {
            self.asked.remove(&name);
            match r {
                Ok(addrs) => {
                    // Keep the rotation: the address that failed stays skipped.
                    let at = self.known.get(&name).map_or(0, |k| k.1);
                    self.known.insert(name, (addrs, at));
                    self.last_error = None;
                    got = true;
                }
                Err(e) => {
                    let why = format!("cannot resolve host '{}': {e}", name.0);
                    if self.last_error.as_deref() != Some(why.as_str()) {
                        log::warn!("{why}");
                    }
                    self.last_error = Some(why);
                }
            }
        }
        got
    }
}
