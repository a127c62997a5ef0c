//! A connection's replies in request order. Every request takes the next sequence
//! number when it arrives; its reply goes out only after the replies of every earlier
//! request, even when it completes first (an engine that answers after a backend round
//! trip). A request without a reply (a client heartbeat) gives its number up.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct ReplyOrder {
    /// The number the next request takes.
    next: u64,
    /// The number whose reply goes out next.
    due: u64,
    /// Replies completed ahead of their turn.
    parked: BTreeMap<u64, Option<Vec<u8>>>,
}

impl ReplyOrder {
    /// The sequence number of a new request.
    pub fn issue(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// Whether request `seq`'s reply may go out now without any parked one (it is
    /// due and nothing waits): then it counts as sent, and the caller sends it. The
    /// embedded engine's every reply, checked without moving the order out of its
    /// connection (`complete` takes a closure that needs the connection again).
    #[inline]
    pub fn take_turn(&mut self, seq: u64) -> bool {
        if seq == self.due && self.parked.is_empty() {
            self.due += 1;
            true
        } else {
            false
        }
    }

    /// The reply of request `seq` is complete (`None`: it has none). `send` gets every
    /// reply that may go out now, in order — at once, when nothing earlier is pending
    /// (always, with the embedded engine).
    pub fn complete(&mut self, seq: u64, reply: Option<&[u8]>, mut send: impl FnMut(&[u8])) {
        if seq == self.due && self.parked.is_empty() {
            self.due += 1;
            if let Some(r) = reply {
                send(r);
            }
            return;
        }
        self.parked.insert(seq, reply.map(<[u8]>::to_vec));
        while let Some(r) = self.parked.remove(&self.due) {
            self.due += 1;
            if let Some(r) = r {
                send(&r);
            }
        }
    }

    /// Replies waiting for an earlier one.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }
}

#[cfg(test)]
mod tests;
