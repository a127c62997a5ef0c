//! Real time: pub/sub channels and patterns, key watches, and the bounded history of
//! key-space changes that lets a watcher resume without missing anything.
//!
//! The hub knows connections only as tokens. It never writes to sockets: it queues
//! deliveries `(token, payload)` that the reactor frames and sends after the reply of
//! the request that caused them ("reply first, then event"). A payload is serialized
//! once and shared (`Rc<[u8]>`) by every recipient.

use crate::auth::Identity;
use crate::glob::glob_match;
use crate::proto::{envelope, rfc3339_ms};
use crate::store::Key;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// One key-space change kept for resume.
#[derive(Clone, Debug)]
pub struct Logged {
    pub rev: u64,
    /// None: every key (`server.flush`). Short keys inline (see `cmd::Change`).
    pub key: Option<Key>,
    pub event: &'static str,
    /// When it happened (unix ms): replays carry the original timestamp. The message
    /// itself is serialized only when someone receives it, so an unwatched write costs
    /// no formatting.
    pub at_ms: u64,
}

#[derive(Default)]
struct Subs {
    channels: Vec<Box<str>>,
    patterns: Vec<Box<str>>,
    watch_keys: Vec<Box<str>>,
    watch_patterns: Vec<Box<str>>,
    /// The watcher's credential: pattern watches see only keys inside its scope.
    scope: Option<Rc<Identity>>,
}

impl Subs {
    fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.patterns.is_empty()
            && self.watch_keys.is_empty()
            && self.watch_patterns.is_empty()
    }
    fn watches(&self) -> bool {
        !self.watch_keys.is_empty() || !self.watch_patterns.is_empty()
    }
    fn in_scope(&self, key: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.key_allowed(key))
    }
}

pub struct Hub {
    channels: HashMap<Box<str>, Vec<usize>>,
    patterns: HashMap<Box<str>, Vec<usize>>,
    watch_keys: HashMap<Box<str>, Vec<usize>>,
    watch_patterns: HashMap<Box<str>, Vec<usize>>,
    conns: HashMap<usize, Subs>,
    history: VecDeque<Logged>,
    capacity: usize,
    /// Every change with a rev above this one is in `history`.
    history_floor: u64,
    /// Deliveries waiting for the reactor.
    pub out: Vec<(usize, Rc<[u8]>)>,
    /// The current loop turn's RFC 3339 timestamp (set by the reactor).
    pub stamp: String,
    pub deliveries_total: u64,
}

fn add(map: &mut HashMap<Box<str>, Vec<usize>>, name: &str, t: usize) {
    let v = map.entry(name.into()).or_default();
    if !v.contains(&t) {
        v.push(t);
    }
}

fn del(map: &mut HashMap<Box<str>, Vec<usize>>, name: &str, t: usize) {
    if let Some(v) = map.get_mut(name) {
        v.retain(|&x| x != t);
        if v.is_empty() {
            map.remove(name);
        }
    }
}

impl Hub {
    /// `capacity`: changes kept for resume (`DBX_WATCH_BACKLOG`); `rev`: the store's
    /// revision at start (history begins after it).
    pub fn new(capacity: usize, rev: u64) -> Hub {
        Hub {
            channels: HashMap::new(),
            patterns: HashMap::new(),
            watch_keys: HashMap::new(),
            watch_patterns: HashMap::new(),
            conns: HashMap::new(),
            history: VecDeque::new(),
            capacity,
            history_floor: rev,
            out: Vec::new(),
            stamp: String::new(),
            deliveries_total: 0,
        }
    }

    // ---- pub/sub ----

    /// Subscribe `t`; returns the names now subscribed (channels, then patterns).
    pub fn subscribe(&mut self, t: usize, channels: &[&str], patterns: &[&str]) -> Vec<Box<str>> {
        let subs = self.conns.entry(t).or_default();
        let mut done = Vec::new();
        for &c in channels {
            if !subs.channels.iter().any(|x| &**x == c) {
                subs.channels.push(c.into());
            }
            add(&mut self.channels, c, t);
            done.push(c.into());
        }
        for &p in patterns {
            if !subs.patterns.iter().any(|x| &**x == p) {
                subs.patterns.push(p.into());
            }
            add(&mut self.patterns, p, t);
            done.push(p.into());
        }
        done
    }

    /// Unsubscribe; with neither list, from everything. Returns what was removed.
    pub fn unsubscribe(&mut self, t: usize, channels: Option<&[&str]>, patterns: Option<&[&str]>) -> Vec<Box<str>> {
        let Some(subs) = self.conns.get_mut(&t) else { return Vec::new() };
        let all = channels.is_none() && patterns.is_none();
        let mut removed = Vec::new();
        let take = |list: &mut Vec<Box<str>>, names: Option<&[&str]>, removed: &mut Vec<Box<str>>| {
            let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|x| match names {
                None => all,
                Some(n) => n.contains(&&**x),
            });
            *list = keep;
            removed.extend(gone);
        };
        let before = removed.len();
        take(&mut subs.channels, channels, &mut removed);
        let split = removed.len();
        take(&mut subs.patterns, patterns, &mut removed);
        for c in removed.get(before..split).unwrap_or_default() {
            del(&mut self.channels, c, t);
        }
        for p in removed.get(split..).unwrap_or_default() {
            del(&mut self.patterns, p, t);
        }
        self.drop_if_empty(t);
        removed
    }

    /// Publish raw JSON `data` to `channel`; returns the number of deliveries.
    pub fn publish(&mut self, channel: &str, data: &str) -> usize {
        let mut n = 0;
        if let Some(subs) = self.channels.get(channel) {
            let payload = envelope::event(channel, None, data, &self.stamp);
            for &t in subs {
                self.out.push((t, payload.clone()));
                n += 1;
            }
        }
        for (pat, subs) in &self.patterns {
            if glob_match(pat, channel) {
                let payload = envelope::event(channel, Some(pat), data, &self.stamp);
                for &t in subs {
                    self.out.push((t, payload.clone()));
                    n += 1;
                }
            }
        }
        self.deliveries_total += n as u64;
        n
    }

    /// Gateway mode: deliver a message Redis relayed for one local subscription —
    /// the channel's subscribers (`pattern` None) or one pattern's — so that a channel
    /// matched by both here gets each copy once, as Redis sends one per subscription.
    pub fn publish_to(&mut self, channel: &str, pattern: Option<&str>, data: &str) -> usize {
        let subs = match pattern {
            None => self.channels.get(channel),
            Some(p) => self.patterns.get(p),
        };
        let Some(subs) = subs else { return 0 };
        let payload = envelope::event(channel, pattern, data, &self.stamp);
        for &t in subs {
            self.out.push((t, payload.clone()));
        }
        self.deliveries_total += subs.len() as u64;
        subs.len()
    }

    /// Whether any connection here is subscribed to `channel` / `pattern`.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    pub fn has_pattern(&self, pattern: &str) -> bool {
        self.patterns.contains_key(pattern)
    }

    /// The channels and patterns `t` is subscribed to.
    pub fn subscriptions_of(&self, t: usize) -> (Vec<Box<str>>, Vec<Box<str>>) {
        self.conns.get(&t).map(|s| (s.channels.clone(), s.patterns.clone())).unwrap_or_default()
    }

    /// Every subscribed channel and pattern (to subscribe again after a reconnect).
    pub fn all_subscriptions(&self) -> (Vec<Box<str>>, Vec<Box<str>>) {
        (self.channels.keys().cloned().collect(), self.patterns.keys().cloned().collect())
    }

    // ---- watches ----

    pub fn watch(&mut self, t: usize, keys: &[&str], patterns: &[&str], scope: Rc<Identity>) {
        let subs = self.conns.entry(t).or_default();
        subs.scope = Some(scope);
        for &k in keys {
            if !subs.watch_keys.iter().any(|x| &**x == k) {
                subs.watch_keys.push(k.into());
            }
            add(&mut self.watch_keys, k, t);
        }
        for &p in patterns {
            if !subs.watch_patterns.iter().any(|x| &**x == p) {
                subs.watch_patterns.push(p.into());
            }
            add(&mut self.watch_patterns, p, t);
        }
    }

    /// The connection's credential changed (`auth.refresh` may narrow the key scope):
    /// its watches follow the new scope from now on.
    pub fn set_scope(&mut self, t: usize, scope: Rc<Identity>) {
        if let Some(subs) = self.conns.get_mut(&t) {
            if subs.scope.is_some() {
                subs.scope = Some(scope);
            }
        }
    }

    /// Stop watching; with neither list, everything. Returns what was removed.
    pub fn unwatch(&mut self, t: usize, keys: Option<&[&str]>, patterns: Option<&[&str]>) -> Vec<Box<str>> {
        let Some(subs) = self.conns.get_mut(&t) else { return Vec::new() };
        let all = keys.is_none() && patterns.is_none();
        let pick = |x: &str, names: Option<&[&str]>| match names {
            None => all,
            Some(n) => n.contains(&x),
        };
        let mut removed = Vec::new();
        let (gone_k, keep_k): (Vec<_>, Vec<_>) =
            std::mem::take(&mut subs.watch_keys).into_iter().partition(|x| pick(x, keys));
        subs.watch_keys = keep_k;
        let (gone_p, keep_p): (Vec<_>, Vec<_>) =
            std::mem::take(&mut subs.watch_patterns).into_iter().partition(|x| pick(x, patterns));
        subs.watch_patterns = keep_p;
        for k in gone_k {
            del(&mut self.watch_keys, &k, t);
            removed.push(k);
        }
        for p in gone_p {
            del(&mut self.watch_patterns, &p, t);
            removed.push(p);
        }
        self.drop_if_empty(t);
        removed
    }

    fn drop_if_empty(&mut self, t: usize) {
        if self.conns.get(&t).is_some_and(Subs::is_empty) {
            self.conns.remove(&t);
        }
    }

    /// Forget a closed connection.
    pub fn remove_conn(&mut self, t: usize) {
        let Some(subs) = self.conns.remove(&t) else { return };
        for c in &subs.channels {
            del(&mut self.channels, c, t);
        }
        for p in &subs.patterns {
            del(&mut self.patterns, p, t);
        }
        for k in &subs.watch_keys {
            del(&mut self.watch_keys, k, t);
        }
        for p in &subs.watch_patterns {
            del(&mut self.watch_patterns, p, t);
        }
    }

    pub fn subscriptions(&self) -> usize {
        self.conns.values().map(|s| s.channels.len() + s.patterns.len()).sum()
    }

    pub fn watchers(&self) -> usize {
        self.conns.values().filter(|s| s.watches()).count()
    }

    // ---- key-space changes ----

    /// Record one change (in rev order) and deliver it to the connections watching it.
    /// `epoch` is included in `server.flush` events: the history before it is gone.
    ///
    /// Inlined for the usual write, a key's change while nobody watches any key: only
    /// the history to keep (and the key's text is not even looked at).
    #[inline]
    pub fn changed(&mut self, key: Option<Key>, event: &'static str, rev: u64, epoch: &str, at_ms: u64) {
        if key.is_some() && self.watch_keys.is_empty() && self.watch_patterns.is_empty() {
            self.remember(Logged { rev, key, event, at_ms });
            return;
        }
        self.changed_watched(key, event, rev, epoch, at_ms);
    }

    /// Keep one change in the history (bounded by `capacity`).
    #[inline]
    fn remember(&mut self, l: Logged) {
        if self.capacity == 0 {
            self.history_floor = l.rev;
            return;
        }
        if self.history.len() >= self.capacity {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.rev;
            }
        }
        self.history.push_back(l);
    }

    /// `changed` when someone may receive it, or for every key.
    fn changed_watched(&mut self, key: Option<Key>, event: &'static str, rev: u64, epoch: &str, at_ms: u64) {
        match &key {
            Some(k) => {
                let k = k.as_str();
                // Exact watches were checked against the scope by `key.watch`, but the
                // scope may have narrowed since (`auth.refresh`): check both kinds.
                let mut to: Vec<usize> = self.watch_keys.get(k).cloned().unwrap_or_default();
                to.retain(|t| self.conns.get(t).is_some_and(|s| s.in_scope(k)));
                for (pat, ts) in &self.watch_patterns {
                    if glob_match(pat, k) {
                        for &t in ts {
                            if !to.contains(&t) && self.conns.get(&t).is_some_and(|s| s.in_scope(k)) {
                                to.push(t);
                            }
                        }
                    }
                }
                if !to.is_empty() {
                    let payload = envelope::keyspace(Some(k), event, rev, &self.stamp, None);
                    for t in to {
                        self.out.push((t, payload.clone()));
                    }
                }
            }
            None => {
                // A flush changes every key: one event per watching connection, and the
                // history before it is gone (a new epoch).
                let payload = envelope::keyspace(None, event, rev, &self.stamp, Some(epoch));
                for (&t, s) in &self.conns {
                    if s.watches() {
                        self.out.push((t, payload.clone()));
                    }
                }
                self.history.clear();
                self.history_floor = rev;
                return;
            }
        }
        self.remember(Logged { rev, key, event, at_ms });
    }

    /// The changes after `since` that match `keys`/`patterns` (and the scope), or None
    /// when part of that history is gone.
    pub fn replay(&self, since: u64, keys: &[&str], patterns: &[&str], scope: &Identity) -> Option<Vec<Rc<[u8]>>> {
        if since < self.history_floor {
            return None;
        }
        let start = self.history.partition_point(|l| l.rev <= since);
        Some(
            self.history
                .range(start..)
                .filter(|l| {
                    l.key.as_deref().is_some_and(|k| {
                        scope.key_allowed(k) && (keys.contains(&k) || patterns.iter().any(|p| glob_match(p, k)))
                    })
                })
                .map(|l| envelope::keyspace(l.key.as_deref(), l.event, l.rev, &rfc3339_ms(l.at_ms), None))
                .collect(),
        )
    }

    /// History is gone (flush or a new epoch): resumes before `rev` get a gap.
    pub fn reset_history(&mut self, rev: u64) {
        self.history.clear();
        self.history_floor = rev;
    }
}

#[cfg(test)]
mod tests;
