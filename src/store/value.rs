//! Stored values and their memory footprint.

use std::collections::VecDeque;

pub type HashMap<K, V> = hashbrown::HashMap<K, V>;
pub type HashSet<K> = hashbrown::HashSet<K>;

/// Collections are boxed so that the common string value keeps `Value` at 24 bytes.
pub enum Value {
    Str(Box<str>),
    Hash(Box<HashMap<Box<str>, Box<str>>>),
    Set(Box<HashSet<Box<str>>>),
    List(Box<VecDeque<Box<str>>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Str,
    Hash,
    Set,
    ZSet,
    List,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Str => "string",
            ValueKind::Hash => "hash",
            ValueKind::Set => "set",
            ValueKind::ZSet => "zset",
            ValueKind::List => "list",
        }
    }

    pub fn parse(s: &str) -> Option<ValueKind> {
        Some(match s {
            "string" => ValueKind::Str,
            "hash" => ValueKind::Hash,
            "set" => ValueKind::Set,
            "zset" => ValueKind::ZSet,
            "list" => ValueKind::List,
            _ => return None,
        })
    }
}

/// Heap bytes of a boxed string: payload rounded to the allocator's 16-byte classes
/// plus its 8-byte header (glibc malloc), so the estimate follows real RSS growth.
pub fn str_mem(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        (s.len() + 8).div_ceil(16).max(2) * 16
    }
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Str(_) => ValueKind::Str,
            Value::Hash(_) => ValueKind::Hash,
            Value::Set(_) => ValueKind::Set,
            Value::List(_) => ValueKind::List,
        }
    }

    /// Estimated heap bytes owned by the value (not counting the item itself).
    pub fn mem(&self) -> usize {
        match self {
            Value::Str(s) => str_mem(s),
            Value::Hash(h) => 64 + h.capacity() * 33 + h.iter().map(|(k, v)| str_mem(k) + str_mem(v)).sum::<usize>(),
            Value::Set(s) => 64 + s.capacity() * 17 + s.iter().map(|m| str_mem(m)).sum::<usize>(),
            Value::List(l) => 48 + l.capacity() * 16 + l.iter().map(|v| str_mem(v)).sum::<usize>(),
        }
    }
}
