//! The methods the generator sends and the request texts it builds.
//!
//! `Gen` picks a method and a key per request (`Rng`, seeded per worker) and
//! appends the request JSON to a reused buffer, with no allocation per request;
//! the test pins its output to the texts of the earlier `format!`-based builder.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Get = 0,
    Set = 1,
    Incr = 2,
    HGet = 3,
    HSet = 4,
    Publish = 5,
    Ping = 6,
}

pub(crate) const KINDS: [Kind; 7] =
    [Kind::Get, Kind::Set, Kind::Incr, Kind::HGet, Kind::HSet, Kind::Publish, Kind::Ping];

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Set => "set",
            Kind::Incr => "incr",
            Kind::HGet => "hget",
            Kind::HSet => "hset",
            Kind::Publish => "publish",
            Kind::Ping => "ping",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.name() == s)
    }
}

/// xorshift64*: tiny, fast, good enough for picking keys.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Builds request texts. `prefix` and `value` are already JSON-escaped (without quotes).
pub(crate) struct Gen {
    pub(crate) table: Vec<Kind>,
    pub(crate) rng: Rng,
    pub(crate) keyspace: u64,
    pub(crate) prefix: String,
    pub(crate) value: String,
    /// JSON-escaped channel name (without quotes).
    pub(crate) channel: String,
}

impl Gen {
    #[inline]
    pub(crate) fn pick(&mut self) -> (Kind, u64) {
        let k = self.table[self.rng.below(self.table.len() as u64) as usize];
        let key = self.rng.below(self.keyspace);
        (k, key)
    }

    /// `publisher` and `now_ns` go into published data (fan-out order and latency).
    pub(crate) fn build(&self, buf: &mut Vec<u8>, id: u64, kind: Kind, key: u64, publisher: usize, now_ns: u64) {
        let mut n = itoa::Buffer::new();
        buf.clear();
        let p = self.prefix.as_bytes();
        let v = self.value.as_bytes();
        buf.extend_from_slice(br#"{"id":"#);
        buf.extend_from_slice(n.format(id).as_bytes());
        let (method, key_tag): (&[u8], &[u8]) = match kind {
            Kind::Get => (b"string.get", b""),
            Kind::Set => (b"string.set", b""),
            Kind::Incr => (b"string.incr", b"c"),
            Kind::HGet => (b"hash.get", b"h"),
            Kind::HSet => (b"hash.set", b"h"),
            Kind::Publish => {
                buf.extend_from_slice(br#","method":"pubsub.publish","params":{"channel":""#);
                buf.extend_from_slice(self.channel.as_bytes());
                buf.extend_from_slice(br#"","data":{"p":"#);
                buf.extend_from_slice(n.format(publisher).as_bytes());
                buf.extend_from_slice(br#","n":"#);
                buf.extend_from_slice(n.format(id).as_bytes());
                buf.extend_from_slice(br#","t":"#);
                buf.extend_from_slice(n.format(now_ns).as_bytes());
                buf.extend_from_slice(br#","v":""#);
                buf.extend_from_slice(v);
                buf.extend_from_slice(br#""}}}"#);
                return;
            }
            Kind::Ping => {
                buf.extend_from_slice(br#","method":"server.ping"}"#);
                return;
            }
        };
        buf.extend_from_slice(br#","method":""#);
        buf.extend_from_slice(method);
        buf.extend_from_slice(br#"","params":{"key":""#);
        buf.extend_from_slice(p);
        buf.extend_from_slice(key_tag);
        buf.extend_from_slice(n.format(key).as_bytes());
        buf.push(b'"');
        match kind {
            Kind::Set => {
                buf.extend_from_slice(br#","value":""#);
                buf.extend_from_slice(v);
                buf.push(b'"');
            }
            Kind::HGet => buf.extend_from_slice(br#","field":"f""#),
            Kind::HSet => {
                buf.extend_from_slice(br#","field":"f","value":""#);
                buf.extend_from_slice(v);
                buf.push(b'"');
            }
            _ => {}
        }
        buf.extend_from_slice(b"}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request texts of the earlier `format!`-based builder.
    fn old_build(g: &Gen, id: u64, kind: Kind, key: u64, publisher: usize, now_ns: u64) -> String {
        let p = &g.prefix;
        let v = &g.value;
        match kind {
            Kind::Get => format!(r#"{{"id":{id},"method":"string.get","params":{{"key":"{p}{key}"}}}}"#),
            Kind::Set => {
                format!(r#"{{"id":{id},"method":"string.set","params":{{"key":"{p}{key}","value":"{v}"}}}}"#)
            }
            Kind::Incr => format!(r#"{{"id":{id},"method":"string.incr","params":{{"key":"{p}c{key}"}}}}"#),
            Kind::HGet => {
                format!(r#"{{"id":{id},"method":"hash.get","params":{{"key":"{p}h{key}","field":"f"}}}}"#)
            }
            Kind::HSet => {
                format!(r#"{{"id":{id},"method":"hash.set","params":{{"key":"{p}h{key}","field":"f","value":"{v}"}}}}"#)
            }
            Kind::Publish => format!(
                r#"{{"id":{id},"method":"pubsub.publish","params":{{"channel":"{}","data":{{"p":{publisher},"n":{id},"t":{now_ns},"v":"{v}"}}}}}}"#,
                g.channel
            ),
            Kind::Ping => format!(r#"{{"id":{id},"method":"server.ping"}}"#),
        }
    }

    #[test]
    fn requests_match_the_format_builder() {
        let g = Gen {
            table: vec![Kind::Get],
            rng: Rng::new(1),
            keyspace: 10,
            prefix: r#"be\"nch:"#.into(),
            value: "xyz".repeat(20),
            channel: "bench:chan".into(),
        };
        let mut buf = Vec::new();
        for kind in KINDS {
            for (id, key) in [(0, 0), (1, 9), (123_456, 99_999), (u64::MAX, u64::MAX)] {
                g.build(&mut buf, id, kind, key, 7, 1_234_567_890);
                assert_eq!(String::from_utf8(buf.clone()).unwrap(), old_build(&g, id, kind, key, 7, 1_234_567_890));
            }
        }
    }
}
