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
        // `<rev>-<n>`: the changes of one operation share its rev (n = 1, 2, …).
        let mut id_parts = id.split('-').map(|x| x.parse::<u64>().unwrap_or(0));
        let (rev, n) = (id_parts.next().unwrap_or(0), id_parts.next().unwrap_or(0));
        let (mut key, mut event, mut at, mut epoch) = (None, "", 0u64, None);
        let mut seen: [&str; 3] = ["", "", ""];
        if let OwnedFrame::Array(kv) = &fields {
            for pair in kv.chunks(2) {
                let (Some(k), Some(v)) = (pair.first().and_then(text), pair.get(1).and_then(text)) else { continue };
                match k {
                    "k" => {
                        key = Some(v.to_string());
                        seen[1] = v;
                    }
                    "e" => {
                        event = event_name(v);
                        seen[2] = v;
                    }
                    "t" => {
                        at = v.parse().unwrap_or(0);
                        seen[0] = v;
                    }
                    "ep" => epoch = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        if last {
            self.follow_last = Some(seen.map(str::to_string));
        }
        if self.delivered == 0 && rev > 1 && !self.follow_started {
            // The stream's oldest entry: history before it is not available here (nor
            // the first entries of its own operation when trimming cut into it).
            l.hub.reset_history(if n > 1 { rev } else { rev - 1 });
        }
        let restart = event == "epoch" || event == "server.flush";
        if self.delivered > 0 && rev > self.delivered + 1 && !restart {
            // Every rev has an entry: a jump means entries were trimmed while this
            // gateway was not reading (a long outage of its stream connection). Its
            // watchers missed changes: tell them as a flush would (history before this
            // is gone; a resume from before it gets a gap), never a silent hole.
            log::warn!(
                "change stream: revs {}..{} were trimmed before this gateway read them: watchers resync",
                self.delivered + 1,
                rev - 1
            );
            l.hub.changed(None, "epoch", rev - 1, &l.facts.epoch, at);
        }
        self.follow_started = true;
        self.follow_from = id;
        if (rev, n) <= (self.delivered, self.delivered_n) {
            return;
        }
        self.delivered = rev;
        self.delivered_n = n;
        self.latest_rev = self.latest_rev.max(rev);
        if event == "server.flush" || event == "epoch" {
            // History before this entry is gone: watchers get the new epoch (and a
            // resume from before it a gap), as with an embedded flush.
            if let Some(ep) = epoch {
                if ep != l.facts.epoch {
                    log::info!("backend epoch is now {ep} (was {}) at rev {rev}", l.facts.epoch);
                }
                l.facts.epoch = ep;
            }
            l.hub.changed(None, event, rev, &l.facts.epoch, at);
        } else {
            l.hub.changed(key.map(|k| crate::store::Key::from(k.as_str())), event, rev, &l.facts.epoch, at);
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
