//! On-disk formats (docs/PERSISTENCE.md has the same tables).
//!
//! Both file kinds are an 8-byte magic (whose last byte is the format version) followed
//! by frames:
//!
//! ```text
//! v2 frame = len:u32le  lcrc:u32le  crc:u32le  payload[len]
//!            lcrc = CRC-32 (IEEE) of len, crc = CRC-32 of len‖payload
//! v1 frame = len:u32le  crc:u32le  payload[len]      (read, never written)
//! payload  = kind:u8 fields…
//! ```
//!
//! Why the length has a checksum of its own: a torn tail (a write cut short by a crash)
//! is the only damage start-up may repair by cutting, and it shows as a frame that runs
//! past the end of the file. In v1 a bit flip in a length in the middle of the log
//! looked exactly like that, and start-up cut away every record after it. With `lcrc`
//! a frame whose length is damaged is recognised as damage wherever it is; only a frame
//! with an intact header whose payload is cut short is torn. Integers are
//! little-endian; strings are a length (u16 for short ones, u32 otherwise) and UTF-8.

use crate::store::Value;
use std::fs::File;
use std::io::{self, BufReader, Read};

/// The magics this version writes (format v2: frames with a checksummed length).
pub const AOF_MAGIC: &[u8; 8] = b"DBXAOF\x00\x02";
pub const SNAP_MAGIC: &[u8; 8] = b"DBXSNP\x00\x02";
/// Files written before the length checksum (v1 frames); still read.
pub const AOF_MAGIC_V1: &[u8; 8] = b"DBXAOF\x00\x01";
pub const SNAP_MAGIC_V1: &[u8; 8] = b"DBXSNP\x00\x01";
/// Bytes before a v2 frame's payload.
pub const FRAME_HEADER: usize = 12;
/// Largest accepted frame; anything bigger is a damaged length.
pub const MAX_FRAME: u32 = 1 << 30;

/// Header of every file: generation, the rev and epoch when it was started, and the
/// wall clock (unix ms) it was created at.
pub const K_HEADER: u8 = b'H';
/// Log: the requests of a loop turn that changed something (one or more; see
/// `aof::OpLog`), as a JSON array of `{"method","params"}`, with the rev after the last
/// of them and the clock they ran at (`rev:u64 now_ms:u64 json…`).
pub const K_OPS: u8 = b'O';
/// Log: the rev moved without a logged operation (active expiry): `rev:u64 now_ms:u64`,
/// the clock the expiry ran at (absent in logs of older versions: `rev:u64` only).
pub const K_REV: u8 = b'R';
/// Log: a new epoch (after `server.flush`): `epoch:str16`.
pub const K_EPOCH: u8 = b'P';
/// Snapshot: one key: `expires_at:u64 key:str32 value`.
pub const K_ENTRY: u8 = b'E';
/// Snapshot: the end, with the number of entries: `count:u64`.
pub const K_END: u8 = b'Z';

// ---- writing ----

/// Start a frame in `buf`; returns where it starts (pass it to `end_frame`).
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    at
}

/// Fill in the length and the two CRCs of the frame started at `at`.
///
/// One CRC pass serves both: `lcrc` is the state after the 4 length bytes, and `crc`
/// continues from there over the payload. The hasher is cloned from one made at the
/// first frame: `Hasher::new` runs the CPU feature detection each time, which cost as
/// much as the checksum of a short record (about 40 instructions per call, callgrind).
pub fn end_frame(buf: &mut [u8], at: usize) {
    static PROTO: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let len = (buf.len() - at - FRAME_HEADER) as u32;
    let len_bytes = len.to_le_bytes();
    let mut h = PROTO.get_or_init(crc32fast::Hasher::new).clone();
    h.update(&len_bytes);
    let lcrc = h.clone().finalize().to_le_bytes();
    h.update(buf.get(at + FRAME_HEADER..).unwrap_or_default());
    let crc = h.finalize().to_le_bytes();
    if let Some(head) = buf.get_mut(at..at + FRAME_HEADER) {
        let (l, rest) = head.split_at_mut(4);
        let (lc, c) = rest.split_at_mut(4);
        l.copy_from_slice(&len_bytes);
        lc.copy_from_slice(&lcrc);
        c.copy_from_slice(&crc);
    }
}

pub fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub fn put_str16(b: &mut Vec<u8>, s: &str) {
    let s = s.get(..s.len().min(u16::MAX as usize)).unwrap_or("");
    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

pub fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u32(b, s.len() as u32);
    b.extend_from_slice(s.as_bytes());
}

/// A file header frame.
pub fn header(buf: &mut Vec<u8>, gen: u64, rev: u64, created_ms: u64, epoch: &str) {
    let at = begin_frame(buf);
    buf.push(K_HEADER);
    put_u64(buf, gen);
    put_u64(buf, rev);
    put_u64(buf, created_ms);
    put_str16(buf, epoch);
    end_frame(buf, at);
}

/// One stored value. Every `Value` variant is encoded here and decoded in
/// `decode_value`: a new data type adds one arm to each (and a new tag).
pub fn encode_value(v: &Value, b: &mut Vec<u8>) {
    match v {
        Value::Str(s) => {
            b.push(0);
            put_str(b, s);
        }
        Value::Hash(h) => {
            b.push(1);
            put_u32(b, h.len() as u32);
            for (f, v) in h.iter() {
                put_str(b, f);
                put_str(b, v);
            }
        }
        Value::Set(s) => {
            b.push(2);
            put_u32(b, s.len() as u32);
            for m in s.iter() {
                put_str(b, m);
            }
        }
        Value::List(l) => {
            b.push(3);
            put_u32(b, l.len() as u32);
            for v in l.iter() {
                put_str(b, v);
            }
        }
        Value::ZSet(z) => {
            b.push(4);
            put_u32(b, z.len() as u32);
            for (m, score) in z.iter() {
                put_str(b, m);
                put_u64(b, score.to_bits());
            }
        }
    }
}

pub fn decode_value(c: &mut Cursor) -> Option<Value> {
    Some(match c.u8()? {
        0 => Value::Str(c.str()?.into()),
        1 => {
            let mut v = Value::new_hash();
            if let Value::Hash(h) = &mut v {
                for _ in 0..c.u32()? {
                    let f = c.str()?;
                    h.insert(f, c.str()?);
                }
            }
            v
        }
        2 => {
            let mut v = Value::new_set();
            if let Value::Set(s) = &mut v {
                for _ in 0..c.u32()? {
                    s.insert(c.str()?);
                }
            }
            v
        }
        3 => {
            let mut v = Value::new_list();
            if let Value::List(l) = &mut v {
                for _ in 0..c.u32()? {
                    l.push_back(c.str()?);
                }
            }
            v
        }
        4 => {
            let mut v = Value::new_zset();
            if let Value::ZSet(z) = &mut v {
                for _ in 0..c.u32()? {
                    let m = c.str()?;
                    let score = f64::from_bits(c.u64()?);
                    if score.is_nan() {
                        return None;
                    }
                    z.insert(m, score);
                }
            }
            v
        }
        _ => return None,
    })
}

// ---- reading ----

/// Reads fields out of one payload; `None` = the payload is shorter than its kind says.
pub struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.b.get(..n)?, self.b.get(n..)?);
        self.b = rest;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn str16(&mut self) -> Option<&'a str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }

    pub fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

/// A decoded file header.
#[derive(Clone, Debug)]
pub struct Header {
    pub gen: u64,
    pub rev: u64,
    pub created_ms: u64,
    pub epoch: String,
}

pub fn parse_header(payload: &[u8]) -> Option<Header> {
    let mut c = Cursor::new(payload);
    if c.u8()? != K_HEADER {
        return None;
    }
    Some(Header { gen: c.u64()?, rev: c.u64()?, created_ms: c.u64()?, epoch: c.str16()?.to_string() })
}

/// What the next frame of a file turned out to be.
#[derive(Debug, PartialEq)]
pub enum Next {
    Frame(Vec<u8>),
    Eof,
    /// An incomplete last frame (a write cut short by a crash): the file can be cut
    /// back to `offset`, the end of the last complete frame.
    Torn {
        offset: u64,
    },
    /// A damaged frame with more data after it: refusing is the only safe answer.
    Corrupt {
        offset: u64,
        why: &'static str,
    },
}

/// Streams the frames of one file, keeping the byte offset for error messages.
pub struct FrameReader {
    r: BufReader<File>,
    pub offset: u64,
    len: u64,
    /// Format version from the magic: 1 (no length checksum) or 2.
    version: u8,
}

impl FrameReader {
    /// Open `file` and check its magic: `magic` is the current one; the same magic
    /// with version 1 is accepted too. A file shorter than the magic is `Torn` at 0.
    pub fn open(file: File, magic: &[u8; 8]) -> io::Result<Result<FrameReader, Next>> {
        let len = file.metadata()?.len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        if len < 8 {
            return Ok(Err(Next::Torn { offset: 0 }));
        }
        let mut m = [0u8; 8];
        r.read_exact(&mut m)?;
        let version = match m.get(7) {
            Some(&v @ (1 | 2)) if m.get(..7) == magic.get(..7) => v,
            _ => return Ok(Err(Next::Corrupt { offset: 0, why: "not a DBX file of this kind (bad magic)" })),
        };
        Ok(Ok(FrameReader { r, offset: 8, len, version }))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= 8
    }

    /// The file's format version (1: written by an older DBX; appended to never).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// True if every byte from here to the end is zero (a zero-filled tail is what
    /// some file systems leave of an extended but unwritten block after a crash).
    fn rest_is_zero(&mut self, already: &[u8]) -> io::Result<bool> {
        if already.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.r.read(&mut chunk)?;
            if n == 0 {
                return Ok(true);
            }
            if chunk.get(..n).unwrap_or_default().iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }

    /// v1 only (no length checksum): a frame that claims to run past the end of the
    /// file is torn only if no complete, valid frame starts anywhere after its header.
    /// A valid frame further on means the length itself is damaged.
    fn valid_frame_follows(&mut self) -> io::Result<bool> {
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest)?;
        let mut i = 0usize;
        while let Some(head) = rest.get(i..i + 8).and_then(|h| <[u8; 8]>::try_from(h).ok()) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len > 0 && len as u64 <= MAX_FRAME as u64 {
                if let Some(payload) = rest.get(i + 8..i + 8 + len) {
                    let mut h = crc32fast::Hasher::new();
                    h.update(&[head[0], head[1], head[2], head[3]]);
                    h.update(payload);
                    if h.finalize() == crc {
                        return Ok(true);
                    }
                }
            }
            i += 1;
        }
        Ok(false)
    }

    pub fn next_frame(&mut self) -> io::Result<Next> {
        let at = self.offset;
        let remaining = self.len - at;
        let hlen = if self.version == 1 { 8 } else { FRAME_HEADER };
        if remaining == 0 {
            return Ok(Next::Eof);
        }
        if remaining < hlen as u64 {
            return Ok(Next::Torn { offset: at });
        }
        let mut head = [0u8; FRAME_HEADER];
        self.r.read_exact(head.get_mut(..hlen).unwrap_or_default())?;
        let len_bytes = [head[0], head[1], head[2], head[3]];
        let len = u32::from_le_bytes(len_bytes);
        let lcrc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let crc = if hlen == 8 { lcrc } else { u32::from_le_bytes([head[8], head[9], head[10], head[11]]) };
        if self.version >= 2 && crc32fast::hash(&len_bytes) != lcrc {
            // A header that is not what we wrote: zeros (an extended, never written
            // block) are a torn tail; anything else is damage, wherever it is.
            return Ok(if self.rest_is_zero(head.get(..hlen).unwrap_or_default())? {
                Next::Torn { offset: at }
            } else {
                Next::Corrupt { offset: at, why: "damaged frame header (length checksum mismatch)" }
            });
        }
        if len == 0 || len > MAX_FRAME {
            return Ok(if self.version == 1 && self.rest_is_zero(head.get(..hlen).unwrap_or_default())? {
                Next::Torn { offset: at }
            } else {
                Next::Corrupt { offset: at, why: "impossible frame length" }
            });
        }
        if hlen as u64 + len as u64 > remaining {
            // The frame runs past the end of the file: the last write was cut short
            // (v2: the header is intact, so the length is the one we wrote).
            if self.version == 1 && self.valid_frame_follows()? {
                return Ok(Next::Corrupt { offset: at, why: "damaged frame length (valid records follow it)" });
            }
            return Ok(Next::Torn { offset: at });
        }
        let mut payload = vec![0u8; len as usize];
        self.r.read_exact(&mut payload)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&len_bytes);
        h.update(&payload);
        if h.finalize() != crc {
            let last = at + hlen as u64 + len as u64 == self.len;
            return Ok(
                if last || self.rest_is_zero(head.get(..hlen).unwrap_or_default())? && payload.iter().all(|&b| b == 0) {
                    Next::Torn { offset: at }
                } else {
                    Next::Corrupt { offset: at, why: "checksum mismatch" }
                },
            );
        }
        self.offset = at + hlen as u64 + len as u64;
        Ok(Next::Frame(payload))
    }
}

#[cfg(test)]
mod tests;
