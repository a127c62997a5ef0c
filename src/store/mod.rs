//! The keyspace: values, expiry, revisions and memory accounting. No JSON, no sockets;
//! time (`now_ms`, unix milliseconds) is always passed in so tests need no sleeping.
//!
//! Layout: items live in a slab (`Vec<Option<Item>>` with a free list) and a
//! `hashbrown::HashTable<u32>` maps a key to its slot. A key keeps its slot for as long
//! as it exists, which gives `key.scan` its guarantee for free: the cursor is a slot
//! index, and a key present for the whole scan sits at one index the cursor passes
//! exactly once, whatever is added or removed meanwhile. Slots also make eviction
//! sampling a random index, and the expiry heap can name a slot instead of copying keys.

pub mod key;
mod list;
pub mod mem;
pub mod value;
pub mod zset;

use hashbrown::HashTable;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

pub use key::Key;
pub use value::{HashValue, ListValue, SetValue, Value, ValueKind};
pub use zset::{ScoreBound, ZSet};

/// Bytes an item costs beyond its key and value allocations. Zero: the slab slot (which
/// holds short keys inline) and the hash-table bucket are counted by capacity in
/// `used_memory` (so growth slack is included), and allocator headers are in
/// `mem::alloc_mem`. Measured with
/// `scripts/memory.sh`: the estimate is within 1% of glibc heap growth.
pub const ITEM_OVERHEAD: usize = 0;

pub struct Item {
    /// Inline up to `key::INLINE` bytes, so `find` compares without leaving the slot.
    pub key: Key,
    pub value: Value,
    /// Unix ms at which the key expires; 0 = never.
    pub expires_at: u64,
    /// Coarse last-access clock (100 ms units) for approximate LRU eviction.
    pub lru: u32,
}

impl Item {
    fn mem(&self) -> usize {
        ITEM_OVERHEAD + self.key.heap_bytes() + self.value.mem()
    }
}

/// Why a key went away on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    Expired,
    Evicted,
}

pub struct Store {
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    slots: Vec<Option<Item>>,
    free: Vec<u32>,
    /// (deadline, slot): lazily validated against the slot's current `expires_at`.
    expiries: BinaryHeap<Reverse<(u64, u32)>>,
    with_ttl: usize,
    used: usize,
    /// The global revision: raised by every write that changes something.
    rev: u64,
    /// Keys that went away on their own since the last `take_gone`, with the rev each
    /// removal produced, for watchers and the log.
    gone: Vec<(Box<str>, Gone, u64)>,
    pub expired_total: u64,
    pub evicted_total: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// Copy `value` into `old`, which has its length, keeping `old`'s allocation: as a
/// `String` of that capacity, cleared and refilled, so it never reallocates. Nothing
/// reads the old bytes back (an earlier version re-checked them as UTF-8, and that read
/// waited on the cold cache line the write had just missed).
fn overwrite(old: &mut Box<str>, value: &str) {
    let mut s = String::from(std::mem::take(old));
    s.clear();
    s.push_str(value);
    *old = s.into_boxed_str();
}

fn lru_clock(now_ms: u64) -> u32 {
    (now_ms / 100) as u32
}

impl Store {
    pub fn new() -> Store {
        Store {
            table: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            slots: Vec::new(),
            free: Vec::new(),
            expiries: BinaryHeap::new(),
            with_ttl: 0,
            used: 0,
            rev: 0,
            gone: Vec::new(),
            expired_total: 0,
            evicted_total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Estimated bytes held by keys and values (`server.info.used_memory`).
    pub fn used_memory(&self) -> usize {
        self.used
            + mem::alloc_mem(self.slots.capacity() * std::mem::size_of::<Option<Item>>())
            + mem::table_mem(self.table.capacity(), std::mem::size_of::<u32>())
            + mem::alloc_mem(self.free.capacity() * std::mem::size_of::<u32>())
            + mem::alloc_mem(self.expiries.capacity() * std::mem::size_of::<Reverse<(u64, u32)>>())
    }

    pub fn rev(&self) -> u64 {
        self.rev
    }

    /// Raise the revision for one executed write and return it.
    pub fn bump_rev(&mut self) -> u64 {
        self.rev += 1;
        self.rev
    }

    /// Restore the revision counter (log replay); it never goes back.
    pub fn set_rev(&mut self, rev: u64) {
        self.rev = self.rev.max(rev);
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &str) -> Option<u32> {
        let h = self.hash(key);
        let slots = &self.slots;
        self.table
            .find(h, |&i| {
                slots.get(i as usize).and_then(|s| s.as_ref()).is_some_and(|it| it.key.as_bytes() == key.as_bytes())
            })
            .copied()
    }

    fn item(&self, idx: u32) -> Option<&Item> {
        self.slots.get(idx as usize).and_then(|s| s.as_ref())
    }

    fn item_mut(&mut self, idx: u32) -> Option<&mut Item> {
        self.slots.get_mut(idx as usize).and_then(|s| s.as_mut())
    }

    /// Slot of a live key, expiring it first if its time has passed (lazy expiry).
    fn live(&mut self, key: &str, now_ms: u64) -> Option<u32> {
        let idx = self.find(key)?;
        let exp = self.item(idx)?.expires_at;
        if exp != 0 && exp <= now_ms {
            self.remove_slot(idx, Some(Gone::Expired));
            return None;
        }
        Some(idx)
    }

    /// Read access: the item if it exists and has not expired; marks it used.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<&Item> {
        let idx = self.live(key, now_ms)?;
        let it = self.item_mut(idx)?;
        it.lru = lru_clock(now_ms);
        Some(&*it)
    }

    /// Shared access without expiring or marking used: for reading several keys at once
    /// after `get` has expired them (`set.inter` …).
    pub fn peek(&self, key: &str) -> Option<&Item> {
        self.item(self.find(key)?)
    }

    /// Write access to an existing value. The caller must report size changes through
    /// `adjust_mem` (collections know their own deltas cheaply).
    pub fn get_mut(&mut self, key: &str, now_ms: u64) -> Option<&mut Item> {
        let idx = self.live(key, now_ms)?;
        let it = self.item_mut(idx)?;
        it.lru = lru_clock(now_ms);
        Some(it)
    }

    /// Account a change in a value's size made through `get_mut`.
    pub fn adjust_mem(&mut self, before: usize, after: usize) {
        self.used = self.used.saturating_sub(before) + after;
    }

    /// Change the value at `key` in place through `f`, creating it with `init` first if
    /// the key is missing (None: leave a missing key alone and return None). The size
    /// change is accounted from `Value::mem` before and after (O(1) for every type), the
    /// TTL is kept (Redis semantics), and a collection left empty is deleted — also one
    /// that `init` created and `f` did not fill, e.g. because `f` refused its params.
    pub fn modify<R>(
        &mut self,
        key: &str,
        now_ms: u64,
        init: Option<fn() -> Value>,
        f: impl FnOnce(&mut Value) -> R,
    ) -> Option<R> {
        let idx = match (self.live(key, now_ms), init) {
            (Some(idx), _) => idx,
            (None, Some(init)) => self.insert_new(Item { key: key.into(), value: init(), expires_at: 0, lru: 0 }),
            (None, None) => return None,
        };
        let it = self.item_mut(idx)?;
        it.lru = lru_clock(now_ms);
        let before = it.value.mem();
        let r = f(&mut it.value);
        let after = it.value.mem();
        let empty = it.value.is_empty_collection();
        self.adjust_mem(before, after);
        if empty {
            self.remove_slot(idx, None);
        }
        Some(r)
    }

    pub fn contains(&mut self, key: &str, now_ms: u64) -> bool {
        self.live(key, now_ms).is_some()
    }

    pub fn kind(&mut self, key: &str, now_ms: u64) -> Option<ValueKind> {
        self.get(key, now_ms).map(|it| it.value.kind())
    }

    /// Insert or replace `key` with `value`. `expires_at`: 0 = no TTL. Returns the
    /// previous value if there was a live one.
    pub fn set(&mut self, key: &str, value: Value, expires_at: u64, now_ms: u64) -> Option<Value> {
        if let Some(idx) = self.live(key, now_ms) {
            let it = self.item_mut(idx)?;
            let before = it.value.mem();
            let after = value.mem();
            let old = std::mem::replace(&mut it.value, value);
            let old_exp = std::mem::replace(&mut it.expires_at, expires_at);
            it.lru = lru_clock(now_ms);
            self.adjust_mem(before, after);
            self.ttl_changed(idx, old_exp, expires_at);
            return Some(old);
        }
        let item = Item { key: key.into(), value, expires_at, lru: lru_clock(now_ms) };
        self.insert_new(item);
        None
    }

    /// `set` of a string value (`string.set`, `string.mset`). Overwriting a string of the
    /// same length reuses its allocation: the common overwrite then costs no `malloc`
    /// and, above all, no `free` of the old value, whose chunk header is a cache miss
    /// (5-6% of the server's time under `string.set` at 16 in flight). Same semantics as
    /// `set`: any old value is replaced, the TTL is the given one.
    pub fn set_str(&mut self, key: &str, value: &str, expires_at: u64, now_ms: u64) {
        let Some(idx) = self.live(key, now_ms) else {
            let item = Item { key: key.into(), value: Value::Str(value.into()), expires_at, lru: lru_clock(now_ms) };
            self.insert_new(item);
            return;
        };
        let Some(it) = self.item_mut(idx) else { return };
        // A string of the same length keeps its allocation, so its size is unchanged:
        // only a replacement needs the accounting.
        let sizes = match &mut it.value {
            Value::Str(old) if old.len() == value.len() => {
                overwrite(old, value);
                None
            }
            other => {
                let before = other.mem();
                *other = Value::Str(value.into());
                Some((before, other.mem()))
            }
        };
        let old_exp = std::mem::replace(&mut it.expires_at, expires_at);
        it.lru = lru_clock(now_ms);
        if let Some((before, after)) = sizes {
            self.adjust_mem(before, after);
        }
        self.ttl_changed(idx, old_exp, expires_at);
    }

    fn insert_new(&mut self, item: Item) -> u32 {
        self.used += item.mem();
        let exp = item.expires_at;
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i as usize) {
                    *s = Some(item);
                }
                i
            }
            None => {
                self.slots.push(Some(item));
                (self.slots.len() - 1) as u32
            }
        };
        let h = self.hash(self.item(idx).map_or("", |it| &it.key));
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.table.insert_unique(h, idx, |&i| {
            hasher.hash_one(slots.get(i as usize).and_then(|s| s.as_ref()).map_or("", |it| &*it.key))
        });
        self.ttl_changed(idx, 0, exp);
        idx
    }

    /// Inlined for the common write, of a key without a TTL before and after.
    #[inline]
    fn ttl_changed(&mut self, idx: u32, old: u64, new: u64) {
        if old != 0 || new != 0 {
            self.ttl_moved(idx, old, new);
        }
    }

    fn ttl_moved(&mut self, idx: u32, old: u64, new: u64) {
        if old == 0 && new != 0 {
            self.with_ttl += 1;
        } else if old != 0 && new == 0 {
            self.with_ttl -= 1;
        }
        if new != 0 && new != old {
            self.expiries.push(Reverse((new, idx)));
            // Overwritten TTLs leave stale heap entries; rebuild when they dominate.
            if self.expiries.len() > 2 * self.with_ttl + 1024 {
                self.rebuild_expiries();
            }
        }
    }

    fn rebuild_expiries(&mut self) {
        let heap: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref().filter(|it| it.expires_at != 0).map(|it| Reverse((it.expires_at, i as u32)))
            })
            .collect();
        self.expiries = BinaryHeap::from(heap);
    }

    fn remove_slot(&mut self, idx: u32, why: Option<Gone>) -> Option<Item> {
        let item = self.slots.get_mut(idx as usize)?.take()?;
        let h = self.hash(&item.key);
        if let Ok(e) = self.table.find_entry(h, |&i| i == idx) {
            e.remove();
        }
        self.free.push(idx);
        self.used = self.used.saturating_sub(item.mem());
        if item.expires_at != 0 {
            self.with_ttl -= 1;
        }
        if let Some(why) = why {
            match why {
                Gone::Expired => self.expired_total += 1,
                Gone::Evicted => self.evicted_total += 1,
            }
            let rev = self.bump_rev();
            self.gone.push(((&item.key).into(), why, rev));
        }
        if self.table.is_empty() {
            // Give the memory of a flushed or drained keyspace back.
            self.slots.clear();
            self.slots.shrink_to(1024);
            self.free.clear();
            self.free.shrink_to(1024);
        }
        Some(item)
    }

    /// Delete a key; returns its value if it existed.
    pub fn remove(&mut self, key: &str, now_ms: u64) -> Option<Value> {
        let idx = self.live(key, now_ms)?;
        self.remove_slot(idx, None).map(|it| it.value)
    }

    /// Set or clear the expiry of an existing key. Returns false if the key is missing.
    pub fn set_expiry(&mut self, key: &str, expires_at: u64, now_ms: u64) -> bool {
        let Some(idx) = self.live(key, now_ms) else {
            return false;
        };
        let Some(it) = self.item_mut(idx) else {
            return false;
        };
        let old = std::mem::replace(&mut it.expires_at, expires_at);
        self.ttl_changed(idx, old, expires_at);
        true
    }

    /// Remaining ms of a key's TTL: Some(None) = no TTL, None = missing.
    pub fn ttl_ms(&mut self, key: &str, now_ms: u64) -> Option<Option<u64>> {
        let it = self.get(key, now_ms)?;
        Some((it.expires_at != 0).then(|| it.expires_at.saturating_sub(now_ms)))
    }

    /// Move `key` to `new_key` (keeping its TTL), replacing `new_key` unless `nx`.
    /// None if `key` is missing; Some(false) if `nx` and `new_key` exists.
    pub fn rename(&mut self, key: &str, new_key: &str, nx: bool, now_ms: u64) -> Option<bool> {
        let idx = self.live(key, now_ms)?;
        if key == new_key {
            return Some(!nx);
        }
        if self.live(new_key, now_ms).is_some() {
            if nx {
                return Some(false);
            }
            self.remove(new_key, now_ms);
        }
        let mut item = self.remove_slot(idx, None)?;
        item.key = new_key.into();
        item.lru = lru_clock(now_ms);
        self.insert_new(item);
        Some(true)
    }

    /// Delete everything; returns how many keys there were.
    pub fn flush(&mut self) -> usize {
        let n = self.table.len();
        self.table = HashTable::new();
        self.slots = Vec::new();
        self.free = Vec::new();
        self.expiries = BinaryHeap::new();
        self.with_ttl = 0;
        self.used = 0;
        n
    }

    /// Active expiry: remove keys whose deadline has passed, at most `budget` of them
    /// (the rest wait for the next loop turn). Returns how many were removed.
    pub fn expire_cycle(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(&Reverse((at, idx))) = self.expiries.peek() else {
                break;
            };
            if at > now_ms {
                break;
            }
            self.expiries.pop();
            let due = self.item(idx).is_some_and(|it| it.expires_at != 0 && it.expires_at <= now_ms);
            if due {
                self.remove_slot(idx, Some(Gone::Expired));
                n += 1;
            }
        }
        n
    }

    /// The earliest pending expiry deadline (may be stale, i.e. early: harmless).
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Keys that expired or were evicted since the last call, with their revs.
    pub fn take_gone(&mut self) -> Vec<(Box<str>, Gone, u64)> {
        std::mem::take(&mut self.gone)
    }

    /// How many removals `take_gone` would return now (the log notes where a request
    /// started, then reads its evictions with `gone_since`).
    pub fn gone_len(&self) -> usize {
        self.gone.len()
    }

    /// Removals recorded since `gone_len()` returned `from`.
    pub fn gone_since(&self, from: usize) -> &[(Box<str>, Gone, u64)] {
        self.gone.get(from..).unwrap_or_default()
    }

    pub fn has_gone(&self) -> bool {
        !self.gone.is_empty()
    }

    /// Evict one approximately least-recently-used key: sample `samples` random slots
    /// and remove the oldest (Redis's approach). Returns false if the store is empty.
    pub fn evict_one(&mut self, samples: usize, rng: &mut u64) -> bool {
        if self.table.is_empty() {
            return false;
        }
        // Sample up to `samples` live slots (bounded tries: the slab may be sparse).
        let mut best: Option<(u32, u32)> = None;
        let n = self.slots.len() as u64;
        let (mut found, mut tries) = (0, 0);
        while found < samples && tries < samples * 16 {
            tries += 1;
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let idx = (*rng % n) as u32;
            if let Some(it) = self.item(idx) {
                found += 1;
                if best.is_none_or(|(_, lru)| it.lru < lru) {
                    best = Some((idx, it.lru));
                }
            }
        }
        let idx = match best {
            Some((idx, _)) => idx,
            // Very sparse slab: take the first live slot.
            None => match self.slots.iter().position(|s| s.is_some()) {
                Some(i) => i as u32,
                None => return false,
            },
        };
        self.remove_slot(idx, Some(Gone::Evicted)).is_some()
    }

    /// Scan from slot `cursor`, visiting up to `count` slots; calls `f` for each live
    /// key. Returns the next cursor, 0 when done.
    pub fn scan(&mut self, cursor: u64, count: usize, now_ms: u64, mut f: impl FnMut(&Item)) -> u64 {
        let mut i = cursor as usize;
        let end = i.saturating_add(count.max(1)).min(self.slots.len());
        while i < end {
            let idx = i as u32;
            i += 1;
            let expired = match self.item(idx) {
                Some(it) if it.expires_at != 0 && it.expires_at <= now_ms => true,
                Some(it) => {
                    f(it);
                    false
                }
                None => false,
            };
            if expired {
                self.remove_slot(idx, Some(Gone::Expired));
            }
        }
        if i >= self.slots.len() {
            0
        } else {
            i as u64
        }
    }

    /// Every live item, in slot order (snapshots, `key.watch` pattern reads).
    pub fn iter(&self) -> impl Iterator<Item = &Item> {
        self.slots.iter().filter_map(|s| s.as_ref())
    }
}

#[cfg(test)]
mod tests;
