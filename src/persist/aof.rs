//! The append-only log's record encoding: how a request's operations are written so
//! that replaying them rebuilds the same store (docs/PERSISTENCE.md). The engine
//! records each operation here as it runs; `Persist::append_ops` frames the batch.

use crate::proto::{write_str, Params};

/// One request's operations in replayable form: `{"method":…,"params":…}` objects
/// separated by commas (the frame adds the brackets). Reused from request to request.
#[derive(Debug, Default)]
pub struct OpLog {
    buf: Vec<u8>,
    count: usize,
}

impl OpLog {
    fn sep(&mut self) {
        if self.count > 0 {
            self.buf.push(b',');
        }
        self.count += 1;
    }

    /// A key evicted by `allkeys-lru`: eviction samples at random, so it is logged as
    /// its effect, a `key.del`.
    pub fn evicted(&mut self, key: &str) {
        self.sep();
        self.buf.extend_from_slice(b"{\"method\":\"key.del\",\"params\":{\"key\":");
        write_str(&mut self.buf, key);
        self.buf.extend_from_slice(b"}}");
    }

    /// An operation as it was called.
    pub fn op(&mut self, method: &str, params: &Params) {
        self.sep();
        self.buf.extend_from_slice(b"{\"method\":");
        write_str(&mut self.buf, method);
        self.buf.extend_from_slice(b",\"params\":");
        params.write_json(&mut self.buf);
        self.buf.push(b'}');
    }

    /// An operation given as a method and its params object (already JSON): the
    /// replayable form of a command whose effect is not a function of its params.
    pub fn op_json(&mut self, method: &str, params: &[u8]) {
        self.sep();
        self.buf.extend_from_slice(b"{\"method\":");
        write_str(&mut self.buf, method);
        self.buf.extend_from_slice(b",\"params\":");
        self.buf.extend_from_slice(params);
        self.buf.push(b'}');
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}
