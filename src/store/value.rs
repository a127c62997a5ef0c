//! Stored values and their memory footprint.
//!
//! Memory is accounted incrementally: each collection keeps the heap bytes of the
//! strings it owns in a counter updated on every insert and remove, so `Value::mem` is
//! O(1) (table and buffer sizes come from `capacity()`). The store compares `mem()`
//! before and after a change (`Store::modify`) and moves `used_memory` by the delta —
//! no command ever walks a whole collection to learn its size.

use super::key::Key;
pub use super::list::ListValue;
use super::mem::{alloc_mem, str_mem, table_mem};
use super::zset::ZSet;
use std::mem::size_of;

pub type HashMap<K, V> = hashbrown::HashMap<K, V>;
pub type HashSet<K> = hashbrown::HashSet<K>;

/// Collections are boxed so that the common string value keeps `Value` at 24 bytes.
pub enum Value {
    Str(Box<str>),
    Hash(Box<HashValue>),
    Set(Box<SetValue>),
    ZSet(Box<ZSet>),
    List(Box<ListValue>),
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

/// A hash: field → value. Fields and values are `Key`s: short ones (the common case)
/// live in the table entry itself, which saves two allocations per field.
#[derive(Default)]
pub struct HashValue {
    map: HashMap<Key, Key>,
    /// Heap bytes of the field and value strings (0 for inline ones).
    strings: usize,
}

impl HashValue {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.map.get(field).map(|v| &**v)
    }
    /// Set `field` to `value`. Returns (created, changed).
    pub fn insert(&mut self, field: &str, value: &str) -> (bool, bool) {
        if let Some(old) = self.map.get_mut(field) {
            if *old == *value {
                return (false, false);
            }
            let new = Key::from(value);
            self.strings = self.strings - old.heap_bytes() + new.heap_bytes();
            *old = new;
            return (false, true);
        }
        let (field, value) = (Key::from(field), Key::from(value));
        self.strings += field.heap_bytes() + value.heap_bytes();
        self.map.insert(field, value);
        (true, true)
    }
    pub fn remove(&mut self, field: &str) -> bool {
        match self.map.remove_entry(field) {
            Some((f, v)) => {
                self.strings -= f.heap_bytes() + v.heap_bytes();
                true
            }
            None => false,
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (&**k, &**v))
    }
    fn mem(&self) -> usize {
        alloc_mem(size_of::<Self>()) + table_mem(self.map.capacity(), size_of::<(Key, Key)>()) + self.strings
    }
}

/// A set of members.
#[derive(Default)]
pub struct SetValue {
    set: HashSet<Box<str>>,
    strings: usize,
}

impl SetValue {
    pub fn len(&self) -> usize {
        self.set.len()
    }
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
    pub fn contains(&self, member: &str) -> bool {
        self.set.contains(member)
    }
    pub fn insert(&mut self, member: &str) -> bool {
        if self.set.contains(member) {
            return false;
        }
        self.strings += str_mem(member);
        self.set.insert(member.into())
    }
    pub fn remove(&mut self, member: &str) -> bool {
        match self.set.take(member) {
            Some(m) => {
                self.strings -= str_mem(&m);
                true
            }
            None => false,
        }
    }
    /// Remove and return up to `n` members. Which ones is up to the hash order, which
    /// is seeded per process: arbitrary, not uniformly random (a uniform pick from a
    /// hash table costs O(n)).
    pub fn pop(&mut self, n: usize) -> Vec<Box<str>> {
        let picked: Vec<Box<str>> = self.set.iter().take(n).cloned().collect();
        for m in &picked {
            self.remove(m);
        }
        picked
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|m| &**m)
    }
    fn mem(&self) -> usize {
        alloc_mem(size_of::<Self>()) + table_mem(self.set.capacity(), size_of::<Box<str>>()) + self.strings
    }
}

impl Value {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Str(_) => ValueKind::Str,
            Value::Hash(_) => ValueKind::Hash,
            Value::Set(_) => ValueKind::Set,
            Value::ZSet(_) => ValueKind::ZSet,
            Value::List(_) => ValueKind::List,
        }
    }

    pub fn new_hash() -> Value {
        Value::Hash(Box::default())
    }
    pub fn new_set() -> Value {
        Value::Set(Box::default())
    }
    pub fn new_zset() -> Value {
        Value::ZSet(Box::default())
    }
    pub fn new_list() -> Value {
        Value::List(Box::default())
    }

    /// A collection with no elements (which the store deletes, as Redis does).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            Value::List(l) => l.is_empty(),
        }
    }

    /// Estimated heap bytes owned by the value (not counting the item itself). O(1).
    pub fn mem(&self) -> usize {
        match self {
            Value::Str(s) => str_mem(s),
            Value::Hash(h) => h.mem(),
            Value::Set(s) => s.mem(),
            Value::ZSet(z) => alloc_mem(size_of::<ZSet>()) + z.mem_bytes(),
            Value::List(l) => l.mem(),
        }
    }
}

#[cfg(test)]
mod tests;
