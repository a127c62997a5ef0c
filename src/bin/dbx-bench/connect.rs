//! Opening the benchmark's connections: active (they send the load), idle (they only
//! exist) and fan-out subscribers (they subscribe to the channel and count events).
//! Handshakes go out in batches so the server accepts many per loop turn; the whole
//! phase is bounded by `--connect-timeout`.

use std::collections::VecDeque;
use std::time::Instant;

use crate::cli::Opts;
use crate::frame::{Ws, OP_TEXT};
use crate::handshake::{finish_handshake, start_handshake, Target};
use crate::request::Rng;
use crate::worker::Conn;

/// Handshakes started before the first is finished.
const BATCH: usize = 64;

pub(crate) struct Opened {
    pub(crate) active: Vec<Conn>,
    pub(crate) idle: Vec<Conn>,
    pub(crate) subs: Vec<Conn>,
}

fn conn(ws: Ws, idle: bool, sub: bool, gid: usize, pipeline: usize) -> Conn {
    Conn {
        ws,
        idle: idle || sub,
        sub,
        gid,
        last_seq: Vec::new(),
        alive: true,
        inflight: VecDeque::with_capacity(pipeline.max(16)),
        backlog: VecDeque::new(),
        next_id: 1,
    }
}

/// Open every connection `o` asks for; subscribers send their subscribe request
/// to `channel_json` (a JSON string) right away — the workers count the
/// confirmations (the warm-up gives them time to arrive).
pub(crate) fn open_all(o: &Opts, target: &Target, channel_json: &str, rng: &mut Rng) -> Result<Opened, String> {
    let deadline = Instant::now() + o.connect_timeout;
    let token = o.token.as_deref();
    let open_batch = |n: usize, read_buf: usize, rng: &mut Rng| -> Result<Vec<Ws>, String> {
        let mut started = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, key) = start_handshake(target, token, deadline, rng)?;
            started.push((s, key, rng.next()));
        }
        started.into_iter().map(|(s, key, seed)| finish_handshake(s, &key, deadline, read_buf, seed)).collect()
    };
    let mut out = Opened {
        active: Vec::with_capacity(o.connections),
        idle: Vec::with_capacity(o.idle),
        subs: Vec::with_capacity(o.subscribers),
    };
    while out.active.len() < o.connections {
        let n = BATCH.min(o.connections - out.active.len());
        // The read buffer is allocated once (no zero-fill per read, unlike tungstenite's),
        // so it can hold many pipelined replies.
        let batch = open_batch(n, 32 * 1024, rng)
            .map_err(|e| format!("opening active connections ({} open): {e}", out.active.len()))?;
        let first = out.active.len();
        out.active.extend(batch.into_iter().enumerate().map(|(i, ws)| conn(ws, false, false, first + i, o.pipeline)));
    }
    while out.idle.len() < o.idle {
        let n = BATCH.min(o.idle - out.idle.len());
        let batch = open_batch(n, 4096, rng)
            .map_err(|e| format!("opened only {} of {} idle connections: {e}", out.idle.len(), o.idle))?;
        out.idle.extend(batch.into_iter().map(|ws| conn(ws, true, false, 0, o.pipeline)));
    }
    while out.subs.len() < o.subscribers {
        let n = BATCH.min(o.subscribers - out.subs.len());
        let batch = open_batch(n, 16 * 1024, rng)
            .map_err(|e| format!("opened only {} of {} subscribers: {e}", out.subs.len(), o.subscribers))?;
        for mut ws in batch {
            let req = format!(r#"{{"id":0,"method":"pubsub.subscribe","params":{{"channels":[{channel_json}]}}}}"#);
            ws.push_frame(OP_TEXT, req.as_bytes());
            ws.flush().map_err(|e| format!("subscribe: {e}"))?;
            out.subs.push(conn(ws, true, true, 0, o.pipeline));
        }
    }
    Ok(out)
}

impl Opened {
    /// Deal the connections out over `threads` workers: active ones round-robin,
    /// then idle ones and subscribers.
    pub(crate) fn distribute(self, threads: usize) -> Vec<Vec<Conn>> {
        let mut per: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, c) in self.active.into_iter().enumerate() {
            if let Some(w) = per.get_mut(i % threads) {
                w.push(c);
            }
        }
        for (i, c) in self.idle.into_iter().chain(self.subs).enumerate() {
            if let Some(w) = per.get_mut(i % threads) {
                w.push(c);
            }
        }
        per
    }
}
