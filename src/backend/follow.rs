//! The gateway's two long-lived reading connections: the change-stream follower
//! (`XREAD BLOCK` on `__dbx:changes`, key-space events for local watchers in rev order)
//! and the subscriber (SUBSCRIBE / PSUBSCRIBE mirroring the local subscriptions).

use super::{Gateway, Local, Tag, CHANNEL_PREFIX, FOLLOW_BLOCK_MS, FOLLOW_COUNT, STREAM};
use crate::pubsub::Hub;
use redis_protocol::resp2::types::OwnedFrame;

fn text(f: &OwnedFrame) -> Option<&str> {
    super::frame_text(f)
}

/// A stream entry's event name as the static name the hub wants (the embedded
/// commands' table names, or the expiry events).
fn event_name(e: &str) -> &'static str {
    match e {
        "expired" => "expired",
        "evicted" => "evicted",
        // dbx_init started a new epoch (a failover to a primary that was behind).
        "epoch" => "epoch",
        _ => crate::cmd::lookup(e).map_or("changed", |c| c.name),
    }
}

/// One change read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChange<'a> {
    pub rev: u64,
    pub key: &'a str,
    /// The method's name (`string.set` …), `expired`, `evicted` or `epoch`.
    pub event: &'a str,
    /// The epoch this change starts (`server.flush`, `epoch`).
    pub epoch: Option<&'a str>,
    /// When it happened (unix ms, the writing gateway's clock).
    pub at: u64,
}

/// A stream entry read (docs/BACKEND.md section 3).
#[derive(Debug, Default)]
pub struct StreamEntry<'a> {
    pub changes: Vec<StreamChange<'a>>,
    /// The id's sequence number: 2, 3 … for the later parts of one operation whose
    /// changes did not fit one entry.
    pub seq: u64,
    /// The entry continues an operation begun in the entry before it.
    pub continues: bool,
    /// The last values of the fields t, k and e, as `dbx_init` compares them.
    pub last: [&'a str; 3],
}

/// The changes of the entry `id` from its fields in order. Layout (library version 4):
/// `t` (unix ms) first; then per change `e` (its event, when it differs from the
/// previous change's), `ep` (the epoch it starts, if any), and `k` or `m` with the key,
/// which ends the change: `k` is a change at the rev after the previous change's, `m`
/// one at the same rev (the other keys of one operation). No rev is written: the id's is
/// the last change's, and the others follow from it. An entry of library versions 1–3
/// (`k`, `e`, `t`: one change, rev from the id) is read too, so a stream written before
/// an upgrade is followed to its end.
pub fn decode_entry<'a>(id: &str, fields: impl Iterator<Item = (&'a str, &'a str)>) -> StreamEntry<'a> {
    let mut id_parts = id.split('-').map(|x| x.parse::<u64>().unwrap_or(0));
    let (id_rev, seq) = (id_parts.next().unwrap_or(0), id_parts.next().unwrap_or(0));
    let mut out = StreamEntry { seq, continues: seq > 1, ..Default::default() };
    let (mut event, mut epoch, mut at) = ("", None, 0u64);
    let mut legacy_key = None;
    // per change: does the next change take a new rev (its field is `k`)?
    let mut steps: Vec<bool> = Vec::new();
    for (i, (name, value)) in fields.enumerate() {
        match name {
            "t" => {
                at = value.parse().unwrap_or(0);
                out.last[0] = value;
            }
            "e" => {
                event = value;
                out.last[2] = value;
            }
            "ep" => epoch = Some(value),
            "k" if i == 0 || legacy_key.is_some() => legacy_key = Some(value),
            "k" | "m" => {
                steps.push(name == "k");
                out.changes.push(StreamChange { rev: 0, key: value, event, epoch: epoch.take(), at });
                out.last[1] = value;
            }
            _ => {}
        }
    }
    if let Some(key) = legacy_key {
        out.last[1] = key;
        out.changes.push(StreamChange { rev: id_rev, key, event, epoch, at });
        steps.push(true);
    }
    // Revs from the last (the id's) back: a change before a `k` is one rev earlier.
    let mut rev = id_rev;
    for (c, step) in out.changes.iter_mut().zip(&steps).rev() {
        c.rev = rev;
        // `at` is known only once `t` is read (first in version 4, last in the old layout)
        c.at = at;
        if *step {
            rev = rev.saturating_sub(1);
        }
    }
    out
}

impl Gateway {
    /// Ask for the entries after the last one delivered (blocks in Redis, not here).
    pub(super) fn read_stream(&mut self, now: u64) {
        let count = FOLLOW_COUNT.to_string();
        let block = FOLLOW_BLOCK_MS.to_string();
        let from = self.follow_from.clone();
        self.follow.send(
            &[
                b"XREAD",
                b"COUNT",
                count.as_bytes(),
                b"BLOCK",
                block.as_bytes(),
                b"STREAMS",
                STREAM.as_bytes(),
                from.as_bytes(),
            ],
            Tag::Follow,
            now,
        );
    }

    pub(super) fn on_follow(&mut self, l: &mut Local, f: Option<OwnedFrame>) {
        match f {
            None => return,
            Some(OwnedFrame::Error(e)) => {
                log::warn!("XREAD on {STREAM} failed: {e}");
                self.fail_follow(l.mono_ms, e);
                return;
            }
            Some(OwnedFrame::Array(streams)) => {
                for s in streams {
                    let OwnedFrame::Array(parts) = s else { continue };
                    let Some(OwnedFrame::Array(entries)) = parts.into_iter().nth(1) else { continue };
                    let n = entries.len();
                    for (i, e) in entries.into_iter().enumerate() {
                        self.on_entry(l, e, i + 1 == n);
                    }
                }
            }
            // Null: BLOCK ran out with nothing new.
            Some(_) => {}
        }
        self.read_stream(l.mono_ms);
    }

    /// One stream entry; `last`: the last of what this read brought (its fields are kept
    /// for `dbx_init`, see `follow_last`).
    fn on_entry(&mut self, l: &mut Local, e: OwnedFrame, last: bool) {
        let OwnedFrame::Array(mut parts) = e else { return };
        if parts.len() != 2 {
            return;
        }
        let (Some(fields), Some(id)) = (parts.pop(), parts.pop()) else { return };
        let Some(id) = text(&id).map(str::to_string) else { return };
        let OwnedFrame::Array(kv) = &fields else { return };
        let pairs = kv.chunks(2).filter_map(|p| Some((p.first().and_then(text)?, p.get(1).and_then(text)?)));
        let entry = decode_entry(&id, pairs);
        if last {
            self.follow_last = Some(entry.last.map(str::to_string));
        }
        let (Some(first), Some(newest)) = (entry.changes.first(), entry.changes.last()) else {
            self.follow_from = id;
            return;
        };
        let (first_rev, last_rev) = (first.rev, newest.rev);
        if self.delivered == 0 && first_rev > 1 && !self.follow_started {
            // The stream's oldest entry: history before it is not available here (nor
            // the first changes of its own operation when it continues an earlier entry).
            l.hub.reset_history(if entry.continues { first_rev } else { first_rev - 1 });
        }
        let restart = matches!(first.event, "epoch" | "server.flush");
        if self.delivered > 0 && first_rev > self.delivered + 1 && !restart {
            // Every rev has a change: a jump means entries were trimmed while this
            // gateway was not reading (a long outage of its stream connection). Its
            // watchers missed changes: tell them as a flush would (history before this
            // is gone; a resume from before it gets a gap), never a silent hole.
            log::warn!(
                "change stream: revs {}..{} were trimmed before this gateway read them: watchers resync",
                self.delivered + 1,
                first_rev - 1
            );
            l.hub.changed(None, "epoch", first_rev - 1, &l.facts.epoch, first.at);
        }
        self.follow_started = true;
        self.follow_from = id;
        if (last_rev, entry.seq) <= (self.delivered, self.delivered_n) {
            return;
        }
        self.delivered = last_rev;
        self.delivered_n = entry.seq;
        self.latest_rev = self.latest_rev.max(last_rev);
        for c in &entry.changes {
            let event = event_name(c.event);
            if event == "server.flush" || event == "epoch" {
                // History before this change is gone: watchers get the new epoch (and a
                // resume from before it a gap), as with an embedded flush.
                if let Some(ep) = c.epoch {
                    if ep != l.facts.epoch {
                        log::info!("backend epoch is now {ep} (was {}) at rev {}", l.facts.epoch, c.rev);
                    }
                    l.facts.epoch = ep.to_string();
                }
                l.hub.changed(None, event, c.rev, &l.facts.epoch, c.at);
            } else {
                l.hub.changed(Some(crate::store::Key::from(c.key)), event, c.rev, &l.facts.epoch, c.at);
            }
        }
    }

    // ---- pub/sub ----

    pub(super) fn sub_event(&mut self, l: &mut Local, readable: bool, writable: bool) {
        let now = l.mono_ms;
        let mut res = Ok(());
        if writable {
            res = self.sub.on_writable();
        }
        let mut none = Vec::new();
        if res.is_ok() && readable {
            res = self.sub.on_readable(&mut none);
        }
        for f in std::mem::take(&mut self.sub.push) {
            let OwnedFrame::Array(parts) = f else { continue };
            let words: Vec<&str> = parts.iter().map(|p| text(p).unwrap_or("")).collect();
            match words.as_slice() {
                ["message", chan, data] => {
                    if let Some(c) = chan.strip_prefix(CHANNEL_PREFIX) {
                        l.hub.publish_to(c, None, data);
                    }
                }
                ["pmessage", pat, chan, data] => {
                    if let (Some(p), Some(c)) = (pat.strip_prefix(CHANNEL_PREFIX), chan.strip_prefix(CHANNEL_PREFIX)) {
                        l.hub.publish_to(c, Some(p), data);
                    }
                }
                ["subscribe" | "psubscribe", name, _] => {
                    if let Some(n) = name.strip_prefix(CHANNEL_PREFIX) {
                        self.confirmed(Some(n));
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = res {
            // Answer the waiting subscribes: they hold locally and are mirrored again on
            // reconnect.
            self.confirmed(None);
            log::warn!("backend subscriber connection down: {e}");
            let _ = self.sub.fail(&self.registry, now, e.to_string());
            self.mirrored_channels.clear();
            self.mirrored_patterns.clear();
        }
    }

    /// Redis confirmed the subscription `name` (None: stop waiting for any).
    pub(super) fn confirmed(&mut self, name: Option<&str>) {
        let mut i = 0;
        while let Some((names, _, _)) = self.confirming.get_mut(i) {
            match name {
                Some(n) => names.retain(|x| &**x != n),
                None => names.clear(),
            }
            if names.is_empty() {
                let (_, w, body) = self.confirming.swap_remove(i);
                self.reply_to(&w, body);
            } else {
                i += 1;
            }
        }
    }

    /// Subscribe in Redis to what the local connections subscribe to, and no more.
    /// Returns the names newly subscribed (their confirmations will arrive on `sub`).
    pub(super) fn mirror_subscriptions(&mut self, hub: &Hub) -> Vec<Box<str>> {
        let mut added = Vec::new();
        if !self.sub.is_open() {
            return added;
        }
        let (channels, patterns) = hub.all_subscriptions();
        let mut args: Vec<Vec<u8>> = Vec::new();
        let mut sync =
            |cmd: &[u8], have: &mut hashbrown::HashSet<Box<str>>, want: &[Box<str>], sub: &mut super::RespConn<()>| {
                args.clear();
                args.push(cmd.to_vec());
                for w in want {
                    if have.insert(w.clone()) {
                        args.push(format!("{CHANNEL_PREFIX}{w}").into_bytes());
                        added.push(w.clone());
                    }
                }
                if args.len() > 1 {
                    let a: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    sub.send_untracked(&a);
                }
            };
        sync(b"SUBSCRIBE", &mut self.mirrored_channels, &channels, &mut self.sub);
        sync(b"PSUBSCRIBE", &mut self.mirrored_patterns, &patterns, &mut self.sub);
        for (cmd, have, want) in [
            (&b"UNSUBSCRIBE"[..], &mut self.mirrored_channels, &channels),
            (&b"PUNSUBSCRIBE"[..], &mut self.mirrored_patterns, &patterns),
        ] {
            let gone: Vec<Box<str>> = have.iter().filter(|h| !want.contains(h)).cloned().collect();
            if gone.is_empty() {
                continue;
            }
            let mut a: Vec<Vec<u8>> = vec![cmd.to_vec()];
            for g in gone {
                a.push(format!("{CHANNEL_PREFIX}{g}").into_bytes());
                have.remove(&g);
            }
            let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            self.sub.send_untracked(&refs);
        }
        let _ = self.sub.flush();
        added
    }

    /// A client connection is gone: its replies must not reach the slot's next owner,
    /// and Redis need not send what nobody here subscribes to any more.
    pub fn disconnect(&mut self, hub: &Hub, t: usize) {
        if self.generations.len() <= t {
            self.generations.resize(t + 1, 0);
        }
        if let Some(g) = self.generations.get_mut(t) {
            *g = g.wrapping_add(1);
        }
        self.flows.remove(&t);
        self.confirming.retain(|c| c.1.conn != t);
        self.mirror_subscriptions(hub);
    }
}
