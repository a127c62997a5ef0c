//! `dbx_backend_request_duration_seconds{kind}`: time from a command written to Redis
//! (at the end of the loop turn that queued it) to its reply decoded, by what the command is, so
//! that an operator can tell a slow library call from a slow network or a busy Redis.
//! The follower's `XREAD BLOCK` and connection setup are left out (they wait on purpose,
//! or once per connection).

use super::{Kind, Tag};
use crate::server::metrics::{Histogram, BACKEND_BUCKETS_US};

/// The kinds, in the order they are exported.
const KINDS: [&str; 7] = ["run", "batch", "native_read", "watch_read", "expire_due", "publish", "info"];

pub struct Latency {
    by_kind: Vec<Histogram>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { by_kind: KINDS.iter().map(|_| Histogram::new(&BACKEND_BUCKETS_US)).collect() }
    }
}

impl Latency {
    /// A reply for `tag` arrived `us` after its command was queued.
    pub(super) fn record(&mut self, tag: &Tag, us: u64) {
        let kind = match tag {
            // Grouped single methods: one `dbx_run` (or its allow-oom twin).
            Tag::Group(_) => 0,
            Tag::Req(w) => match w.kind {
                Kind::Single(_) => 0,
                Kind::Batch(_) => 1,
                Kind::Get { .. } | Kind::MGet { .. } => 2,
                Kind::Watch(_) => 3,
                Kind::Publish => 5,
                Kind::Info => 6,
            },
            // The EXEC of the native reads' MULTI (its queued parts answer at once).
            Tag::Fast(_) => 2,
            Tag::Expire => 4,
            _ => return,
        };
        if let Some(h) = self.by_kind.get_mut(kind) {
            h.record(us);
        }
    }

    pub fn write(&self, out: &mut String) {
        let name = "dbx_backend_request_duration_seconds";
        out.push_str(
            "# HELP dbx_backend_request_duration_seconds Time from a command written to the backend to its reply, \
             by kind (run: one dbx_run of a loop turn's single methods; batch: dbx_exec; native_read: GET/MGET/HGET transactions; watch_read; \
             expire_due; publish; info)\n# TYPE dbx_backend_request_duration_seconds histogram\n",
        );
        for (k, h) in KINDS.iter().zip(&self.by_kind) {
            h.write_series(out, name, &format!("kind=\"{k}\""));
        }
    }
}
