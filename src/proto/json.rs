//! The JSON writer: appends replies and events straight into a reused byte buffer.

use super::scan;

/// Appends JSON into a byte buffer. Keys are static identifiers written as they are;
/// string values are escaped by serde_json. Used for every reply and event so that
/// nothing builds a `Value` tree on the hot path.
pub struct Json<'b> {
    pub buf: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Json<'b> {
    /// Continue an object whose `{` is already written (and that may have fields).
    pub fn fields(buf: &'b mut Vec<u8>, first: bool) -> Json<'b> {
        Json { buf, first }
    }

    /// Inlined: keys are constants where replies are written, so the copy is of a
    /// known length.
    #[inline]
    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        write_str(self.buf, v);
        self
    }
    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        match v {
            Some(v) => write_str(self.buf, v),
            None => self.buf.extend_from_slice(b"null"),
        }
        self
    }
    pub fn i64(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k);
        write_i64(self.buf, v);
        self
    }
    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        write_u64(self.buf, v);
        self
    }
    pub fn opt_i64(&mut self, k: &str, v: Option<i64>) -> &mut Self {
        self.key(k);
        match v {
            Some(v) => write_i64(self.buf, v),
            None => self.buf.extend_from_slice(b"null"),
        }
        self
    }
    pub fn f64(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        write_f64(self.buf, v);
        self
    }
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(if v { b"true" } else { b"false" });
        self
    }
    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(b"null");
        self
    }
    /// Already-serialized JSON.
    pub fn raw(&mut self, k: &str, json: &[u8]) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(json);
        self
    }
    /// A nested object.
    pub fn obj(&mut self, k: &str, f: impl FnOnce(&mut Json)) -> &mut Self {
        self.key(k);
        self.buf.push(b'{');
        f(&mut Json { buf: self.buf, first: true });
        self.buf.push(b'}');
        self
    }
    /// A nested array; the closure writes elements through `Arr`.
    pub fn arr(&mut self, k: &str, f: impl FnOnce(&mut Arr)) -> &mut Self {
        self.key(k);
        self.buf.push(b'[');
        f(&mut Arr { buf: self.buf, first: true });
        self.buf.push(b']');
        self
    }
    /// An object field whose key is data (hash fields, watch values): escaped.
    pub fn dyn_key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        write_str(self.buf, k);
        self.buf.push(b':');
        self.buf
    }
}

/// Elements of a JSON array.
pub struct Arr<'b> {
    pub buf: &'b mut Vec<u8>,
    first: bool,
}

impl Arr<'_> {
    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }
    pub fn str(&mut self, v: &str) {
        self.sep();
        write_str(self.buf, v);
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        self.sep();
        match v {
            Some(v) => write_str(self.buf, v),
            None => self.buf.extend_from_slice(b"null"),
        }
    }
    pub fn raw(&mut self, json: &[u8]) {
        self.sep();
        self.buf.extend_from_slice(json);
    }
    pub fn obj(&mut self, f: impl FnOnce(&mut Json)) {
        self.sep();
        self.buf.push(b'{');
        f(&mut Json { buf: self.buf, first: true });
        self.buf.push(b'}');
    }
    /// Start an element written by hand (the caller appends valid JSON to `buf`).
    pub fn elem(&mut self) -> &mut Vec<u8> {
        self.sep();
        self.buf
    }
}

pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Fast path: nothing to escape (the common case for keys and short values).
    if scan::plain_run(s.as_bytes()) == s.len() {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // serde_json writes into a Vec infallibly.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

pub fn write_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

pub fn write_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// JSON has no infinities: ±inf scores are written as the strings "+inf" / "-inf",
/// the same spelling `zset.range_by_score` accepts as bounds.
pub fn write_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        // Whole numbers print without ".0" (30, not 30.0), as JavaScript would.
        write_i64(buf, v as i64);
    } else if v.is_finite() {
        let _ = serde_json::to_writer(&mut *buf, &v);
    } else if v > 0.0 {
        buf.extend_from_slice(b"\"+inf\"");
    } else {
        buf.extend_from_slice(b"\"-inf\"");
    }
}
