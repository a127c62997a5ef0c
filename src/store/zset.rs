//! Sorted set (Redis `ZSET` semantics).
//!
//! Layout:
//! * an indexed skip list (Redis `zskiplist` with spans) stored in an arena
//!   `Vec<Node>` addressed by `u32` indices (no `unsafe`, no per-node
//!   allocation). Level 0 links live inline in the node; the (rare, p = 1/4)
//!   upper levels live in a shared `Vec<Level>` pool with per-height free lists.
//! * an open-addressing hash table (`Vec<u64>` slots: 32-bit hash tag + 32-bit
//!   node index, linear probing, backward-shift deletion) mapping
//!   member → node. The member string is stored exactly once, in the node:
//!   inline when it is at most 22 bytes, otherwise as a `Box<str>`.
//!
//! Complexities: insert / remove / score update / rank are O(log n); score
//! lookup is O(1); range-by-rank is O(log n + k); range-by-score locates its
//! first element by score in O(log n), skips `offset` elements by rank
//! arithmetic in O(log n), then walks k elements: O(log n + k) in total.
//!
//! Ordering is by score (`f64`, never NaN), ties broken by the byte-wise order
//! of the member. `-0.0` and `0.0` compare equal (as in Redis).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::mem::size_of;

/// Maximum skip-list height (same as Redis).
const MAX_LEVEL: usize = 32;
/// "null" index for node links and hash slots.
const NIL: u32 = u32::MAX;
/// Arena index of the header node.
const HEAD: u32 = 0;
/// Empty hash slot (node index bits == NIL).
const EMPTY_SLOT: u64 = u64::MAX;
/// Members up to this many bytes are stored inline in the node.
const INLINE_CAP: usize = 22;

/// One bound of a score range (`ZRANGEBYSCORE min max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreBound {
    pub value: f64,
    pub exclusive: bool,
}

impl ScoreBound {
    /// Parse a Redis-style bound: `"-inf"`, `"+inf"`, `"inf"`, `"(1.5"`,
    /// `"3"`. A leading `(` makes the bound exclusive. Returns `None` for
    /// NaN, empty input or anything that is not a float.
    pub fn parse_str(s: &str) -> Option<ScoreBound> {
        let (exclusive, rest) = match s.strip_prefix('(') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let value: f64 = rest.parse().ok()?;
        if value.is_nan() {
            return None;
        }
        Some(ScoreBound { value, exclusive })
    }

    /// Inclusive bound at `v`.
    pub fn inclusive(v: f64) -> ScoreBound {
        ScoreBound { value: v, exclusive: false }
    }

    /// Exclusive bound at `v`.
    pub fn exclusive(v: f64) -> ScoreBound {
        ScoreBound { value: v, exclusive: true }
    }

    /// `score` satisfies this bound used as a minimum.
    #[inline]
    fn admits_from_below(&self, score: f64) -> bool {
        if self.exclusive {
            score > self.value
        } else {
            score >= self.value
        }
    }

    /// `score` satisfies this bound used as a maximum.
    #[inline]
    fn admits_from_above(&self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}

/// A member string, stored inline when short.
#[derive(Clone)]
enum Member {
    Inline { len: u8, buf: [u8; INLINE_CAP] },
    Heap(Box<str>),
}

impl Member {
    fn new(s: &str) -> Member {
        let b = s.as_bytes();
        if b.len() <= INLINE_CAP {
            let mut buf = [0u8; INLINE_CAP];
            if let Some(dst) = buf.get_mut(..b.len()) {
                dst.copy_from_slice(b);
            }
            Member::Inline { len: b.len() as u8, buf }
        } else {
            Member::Heap(Box::from(s))
        }
    }

    const EMPTY: Member = Member::Inline { len: 0, buf: [0u8; INLINE_CAP] };

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Member::Inline { len, buf } => buf.get(..*len as usize).unwrap_or(&[]),
            Member::Heap(b) => b.as_bytes(),
        }
    }

    #[inline]
    fn as_str(&self) -> &str {
        match self {
            Member::Heap(b) => b,
            // Inline bytes were copied from a `&str`, so this never fails.
            Member::Inline { .. } => std::str::from_utf8(self.bytes()).unwrap_or(""),
        }
    }

    /// Estimated heap bytes owned by this member.
    fn heap_bytes(&self) -> usize {
        match self {
            Member::Inline { .. } => 0,
            Member::Heap(b) => malloc_estimate(b.len()),
        }
    }
}

/// Rough size of a heap allocation of `n` bytes as seen by a typical
/// general-purpose allocator (glibc: 8-byte header, 16-byte granularity,
/// 32-byte minimum chunk).
fn malloc_estimate(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Level {
    next: u32,
    /// Number of level-0 steps from this node to `next` (or to one past the
    /// end when `next == NIL`).
    span: u32,
    /// Cached score of `next` (meaningless when `next == NIL`): lets the
    /// descent compare without touching the next node unless scores tie.
    score: f64,
    /// Cached `upper` (pool offset) of `next`: lets the descent move along
    /// upper levels touching only the compact level pool, not the nodes.
    up: u32,
}

impl Level {
    const NIL: Level = Level { next: NIL, span: 0, score: 0.0, up: NIL };
}

/// Level-0 link stored inline in the node (no `up` needed at level 0).
#[derive(Clone, Copy, Debug, PartialEq)]
struct L0 {
    next: u32,
    span: u32,
    score: f64,
}

impl L0 {
    const NIL: L0 = L0 { next: NIL, span: 0, score: 0.0 };
}

#[derive(Clone)]
struct Node {
    score: f64,
    level0: L0,
    /// Previous node at level 0 (`NIL` for the first node).
    prev: u32,
    /// Offset in `pool` of levels 1.. of this node (`NIL` if height 1).
    upper: u32,
    member: Member,
}

/// Sorted set with Redis semantics. See the module documentation.
#[derive(Clone)]
pub struct ZSet {
    /// Arena; `nodes[0]` is the header once initialised. Empty set = no
    /// allocation at all.
    nodes: Vec<Node>,
    /// Upper levels (1..height) of nodes; `pool[0..MAX_LEVEL-1]` belong to
    /// the header.
    pool: Vec<Level>,
    /// Free-list heads of `pool` chunks indexed by node height.
    pool_free: Vec<u32>,
    /// Free-list head of arena nodes (linked through `level0.next`).
    free_node: u32,
    /// Hash table: `(hash32 << 32) | node_index`, `EMPTY_SLOT` if free.
    slots: Vec<u64>,
    hasher: RandomState,
    /// Current height of the skip list (>= 1 once initialised).
    level: usize,
    len: usize,
    tail: u32,
    rng: u64,
    /// Sum of estimated heap bytes of out-of-line member strings.
    member_heap: usize,
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::new()
    }
}

impl fmt::Debug for ZSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[inline]
fn slot_index(s: u64) -> u32 {
    s as u32
}

#[inline]
fn slot_hash(s: u64) -> u32 {
    (s >> 32) as u32
}

#[inline]
fn make_slot(hash: u32, idx: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(idx)
}

impl ZSet {
    pub fn new() -> Self {
        let hasher = RandomState::new();
        // Seed the level generator from the per-instance random hasher;
        // xorshift state must be non-zero.
        let rng = hasher.hash_one(0x5eed_u64) | 1;
        ZSet {
            nodes: Vec::new(),
            pool: Vec::new(),
            pool_free: Vec::new(),
            free_node: NIL,
            slots: Vec::new(),
            hasher,
            level: 1,
            len: 0,
            tail: NIL,
            rng,
            member_heap: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Insert `member` with `score`, or update its score. Returns `true` if
    /// the member was newly added. A NaN score is rejected: nothing happens
    /// and `false` is returned (use [`ZSet::try_insert`] to tell the cases
    /// apart; callers are expected to validate scores first).
    pub fn insert(&mut self, member: &str, score: f64) -> bool {
        self.try_insert(member, score).unwrap_or(false)
    }

    /// Like [`ZSet::insert`] but returns `None` (and does nothing) if the
    /// score is NaN or the set is at its capacity limit (~4 billion).
    pub fn try_insert(&mut self, member: &str, score: f64) -> Option<bool> {
        if score.is_nan() {
            return None;
        }
        let hash = self.hash(member.as_bytes());
        if let Some((_, x)) = self.find(member.as_bytes(), hash) {
            self.update_score(x, score);
            return Some(false);
        }
        if self.len >= (NIL as usize) - 2 {
            return None;
        }
        if self.nodes.is_empty() {
            self.init();
        }
        let height = self.random_level();
        let x = self.alloc_node(Member::new(member), score, height)?;
        self.link(x, height);
        self.table_insert(hash, x);
        Some(true)
    }

    /// Remove `member`; returns `true` if it was present.
    pub fn remove(&mut self, member: &str) -> bool {
        let hash = self.hash(member.as_bytes());
        let Some((pos, x)) = self.find(member.as_bytes(), hash) else {
            return false;
        };
        self.table_remove(pos);
        let height = self.unlink(x);
        self.free_node(x, height);
        if self.len == 0 {
            // Give all memory back.
            self.nodes = Vec::new();
            self.pool = Vec::new();
            self.pool_free = Vec::new();
            self.slots = Vec::new();
            self.free_node = NIL;
            self.level = 1;
            self.tail = NIL;
            self.member_heap = 0;
        }
        true
    }

    pub fn score(&self, member: &str) -> Option<f64> {
        let hash = self.hash(member.as_bytes());
        let (_, x) = self.find(member.as_bytes(), hash)?;
        self.nodes.get(x as usize).map(|n| n.score)
    }

    /// 0-based rank in ascending order (`rev = true`: descending).
    pub fn rank(&self, member: &str, rev: bool) -> Option<usize> {
        let hash = self.hash(member.as_bytes());
        let (_, x) = self.find(member.as_bytes(), hash)?;
        let score = self.nodes.get(x as usize)?.score;
        // Number of elements strictly before (score, member).
        let mut before = 0usize;
        let mut cur = HEAD;
        let mut cu = 0u32;
        for i in (0..self.level).rev() {
            loop {
                let l = self.lvl_at(cur, cu, i);
                if self.next_less(l, score, member.as_bytes()) {
                    before += l.span as usize;
                    cur = l.next;
                    cu = l.up;
                } else {
                    break;
                }
            }
        }
        if rev {
            Some(self.len.saturating_sub(1).saturating_sub(before))
        } else {
            Some(before)
        }
    }

    /// `ZRANGE start stop` by rank: inclusive, negative indices count from
    /// the end, out-of-range → empty. `rev = true`: `ZREVRANGE`.
    pub fn range_by_rank(&self, start: i64, stop: i64, rev: bool) -> Vec<(&str, f64)> {
        let len = self.len as i64;
        let mut start = if start < 0 { start + len } else { start };
        let mut stop = if stop < 0 { stop + len } else { stop };
        if start < 0 {
            start = 0;
        }
        if start > stop || start >= len {
            return Vec::new();
        }
        if stop >= len {
            stop = len - 1;
        }
        let count = (stop - start + 1) as usize;
        let mut out = Vec::with_capacity(count);
        if rev {
            let x = self.node_by_rank((len - start) as usize);
            self.collect_backward(x, count, |_| true, &mut out);
        } else {
            let x = self.node_by_rank((start + 1) as usize);
            self.collect_forward(x, count, |_| true, &mut out);
        }
        out
    }

    /// `ZRANGEBYSCORE min max [LIMIT offset count]`; `limit = None` means no
    /// limit. `rev = true`: `ZREVRANGEBYSCORE` semantics (walk from `max`
    /// down to `min`; the bounds are still passed as `min`, `max`).
    ///
    /// O(log n + k): the first element is located by score, `offset` is
    /// skipped by rank arithmetic, then k elements are walked.
    pub fn range_by_score(
        &self,
        min: ScoreBound,
        max: ScoreBound,
        offset: usize,
        limit: Option<usize>,
        rev: bool,
    ) -> Vec<(&str, f64)> {
        let mut out = Vec::new();
        let limit = limit.unwrap_or(usize::MAX);
        if limit == 0 || self.len == 0 || Self::range_is_empty(min, max) {
            return out;
        }
        if rev {
            // Last element <= max (1-based rank `last`).
            let (last, x) = self.last_within_max(max);
            if last == 0 || offset >= last {
                return out;
            }
            let x = if offset == 0 { x } else { self.node_by_rank(last - offset) };
            self.collect_backward(x, limit, |s| min.admits_from_below(s), &mut out);
        } else {
            // Elements before the first one >= min.
            let before = self.count_below_min(min);
            let Some(first) = before.checked_add(offset).and_then(|r| r.checked_add(1)) else {
                return out;
            };
            if first > self.len {
                return out;
            }
            let x = self.node_by_rank(first);
            self.collect_forward(x, limit, |s| max.admits_from_above(s), &mut out);
        }
        out
    }

    /// `ZCOUNT min max` in O(log n).
    pub fn count_by_score(&self, min: ScoreBound, max: ScoreBound) -> usize {
        if self.len == 0 || Self::range_is_empty(min, max) {
            return 0;
        }
        let (last, _) = self.last_within_max(max);
        last.saturating_sub(self.count_below_min(min))
    }

    /// Iterate all elements in ascending rank order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        Iter { set: self, cur: self.lvl(HEAD, 0).next, left: self.len }
    }

    /// Approximate heap bytes owned by this set: arena, level pool, hash
    /// table (by capacity) plus out-of-line member strings (estimated
    /// allocator chunk sizes). O(1); does not include `size_of::<ZSet>()`.
    pub fn mem_bytes(&self) -> usize {
        self.nodes.capacity() * size_of::<Node>()
            + self.pool.capacity() * size_of::<Level>()
            + self.pool_free.capacity() * size_of::<u32>()
            + self.slots.capacity() * size_of::<u64>()
            + self.member_heap
    }

    // ------------------------------------------------------------------
    // skip list internals

    fn init(&mut self) {
        self.nodes.push(Node { score: f64::NEG_INFINITY, level0: L0::NIL, prev: NIL, upper: 0, member: Member::EMPTY });
        self.pool.clear();
        self.pool.resize(MAX_LEVEL - 1, Level::NIL);
        self.pool_free = vec![NIL; MAX_LEVEL + 1];
        self.level = 1;
        self.tail = NIL;
        self.free_node = NIL;
    }

    fn random_level(&mut self) -> usize {
        // xorshift64; P(level >= k+1) = 4^-k.
        let mut r = self.rng;
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        self.rng = r;
        (1 + (r.trailing_zeros() / 2) as usize).min(MAX_LEVEL)
    }

    fn alloc_node(&mut self, member: Member, score: f64, height: usize) -> Option<u32> {
        let upper = if height >= 2 {
            let head = self.pool_free.get(height).copied().unwrap_or(NIL);
            if head != NIL {
                let next = self.pool.get(head as usize).map_or(NIL, |l| l.next);
                if let Some(h) = self.pool_free.get_mut(height) {
                    *h = next;
                }
                head
            } else {
                let off = self.pool.len();
                if off + height >= NIL as usize {
                    return None;
                }
                self.pool.resize(off + height - 1, Level::NIL);
                off as u32
            }
        } else {
            NIL
        };
        self.member_heap += member.heap_bytes();
        let node = Node { score, level0: L0::NIL, prev: NIL, upper, member };
        if self.free_node != NIL {
            let x = self.free_node;
            if let Some(slot) = self.nodes.get_mut(x as usize) {
                self.free_node = slot.level0.next;
                *slot = node;
                return Some(x);
            }
        }
        let x = self.nodes.len() as u32;
        self.nodes.push(node);
        Some(x)
    }

    fn free_node(&mut self, x: u32, height: usize) {
        let Some(n) = self.nodes.get_mut(x as usize) else {
            return;
        };
        self.member_heap = self.member_heap.saturating_sub(n.member.heap_bytes());
        n.member = Member::EMPTY;
        let upper = n.upper;
        n.upper = NIL;
        n.prev = NIL;
        n.level0 = L0 { next: self.free_node, ..L0::NIL };
        self.free_node = x;
        let head = if height >= 2 && upper != NIL { self.pool_free.get_mut(height) } else { None };
        if let Some(head) = head {
            let old = *head;
            *head = upper;
            if let Some(l) = self.pool.get_mut(upper as usize) {
                l.next = old;
            }
        }
    }

    /// Level `i` of node `x`.
    #[inline]
    fn lvl(&self, x: u32, i: usize) -> Level {
        let xu = self.nodes.get(x as usize).map_or(NIL, |n| n.upper);
        self.lvl_at(x, xu, i)
    }

    /// Level `i` of node `x` whose pool offset is `xu`; for `i >= 1` only
    /// the pool is touched.
    #[inline]
    fn lvl_at(&self, x: u32, xu: u32, i: usize) -> Level {
        if i == 0 {
            match self.nodes.get(x as usize) {
                Some(n) => Level { next: n.level0.next, span: n.level0.span, score: n.level0.score, up: NIL },
                None => Level::NIL,
            }
        } else {
            self.pool.get((xu as usize).wrapping_add(i - 1)).copied().unwrap_or(Level::NIL)
        }
    }

    #[inline]
    fn set_lvl(&mut self, x: u32, i: usize, l: Level) {
        let Some(n) = self.nodes.get_mut(x as usize) else {
            return;
        };
        if i == 0 {
            n.level0 = L0 { next: l.next, span: l.span, score: l.score };
        } else if let Some(slot) = self.pool.get_mut((n.upper as usize).wrapping_add(i - 1)) {
            *slot = l;
        }
    }

    /// key(l.next) < (score, member), using the cached score of `l.next`.
    #[inline]
    fn next_less(&self, l: Level, score: f64, member: &[u8]) -> bool {
        l.next != NIL
            && (l.score < score
                || (l.score == score && self.nodes.get(l.next as usize).is_some_and(|n| n.member.bytes() < member)))
    }

    /// key(x) < (score, member)
    #[inline]
    fn less(&self, x: u32, score: f64, member: &[u8]) -> bool {
        match self.nodes.get(x as usize) {
            Some(n) => n.score < score || (n.score == score && n.member.bytes() < member),
            None => false,
        }
    }

    /// key(x) > (score, member)
    #[inline]
    fn greater(&self, x: u32, score: f64, member: &[u8]) -> bool {
        match self.nodes.get(x as usize) {
            Some(n) => n.score > score || (n.score == score && n.member.bytes() > member),
            None => false,
        }
    }

    /// For each level, the last node whose key is < (score, member), and the
    /// rank (number of level-0 steps from the header) of that node.
    fn search(&self, score: f64, member: &[u8], update: &mut [u32; MAX_LEVEL], rank: &mut [usize; MAX_LEVEL]) {
        let mut x = HEAD;
        let mut xu = 0u32;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.lvl_at(x, xu, i);
                if self.next_less(l, score, member) {
                    traversed += l.span as usize;
                    x = l.next;
                    xu = l.up;
                } else {
                    break;
                }
            }
            if let (Some(u), Some(r)) = (update.get_mut(i), rank.get_mut(i)) {
                *u = x;
                *r = traversed;
            }
        }
    }

    /// Link the (already allocated, unlinked) node `x` of height `height`
    /// into the list at the position given by its key.
    fn link(&mut self, x: u32, height: usize) {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0usize; MAX_LEVEL];
        let (xscore, xup) = {
            let Some(n) = self.nodes.get(x as usize) else {
                return;
            };
            self.search(n.score, n.member.bytes(), &mut update, &mut rank);
            (n.score, n.upper)
        };
        let height = height.clamp(1, MAX_LEVEL);
        if height > self.level {
            let span = self.len as u32;
            for (i, (u, r)) in update.iter_mut().zip(rank.iter_mut()).enumerate().take(height).skip(self.level) {
                *u = HEAD;
                *r = 0;
                self.set_lvl(HEAD, i, Level { next: NIL, span, score: 0.0, up: NIL });
            }
            self.level = height;
        }
        let r0 = rank.first().copied().unwrap_or(0);
        for (i, (&u, &ri)) in update.iter().zip(rank.iter()).enumerate().take(height) {
            let ul = self.lvl(u, i);
            let d = r0.saturating_sub(ri) as u32;
            self.set_lvl(x, i, Level { next: ul.next, span: ul.span.saturating_sub(d), score: ul.score, up: ul.up });
            self.set_lvl(u, i, Level { next: x, span: d + 1, score: xscore, up: xup });
        }
        for (i, &u) in update.iter().enumerate().take(self.level).skip(height) {
            let mut l = self.lvl(u, i);
            l.span = l.span.saturating_add(1);
            self.set_lvl(u, i, l);
        }
        let u0 = update.first().copied().unwrap_or(HEAD);
        let prev = if u0 == HEAD { NIL } else { u0 };
        let next = self.lvl(x, 0).next;
        if let Some(n) = self.nodes.get_mut(x as usize) {
            n.prev = prev;
        }
        if next != NIL {
            if let Some(n) = self.nodes.get_mut(next as usize) {
                n.prev = x;
            }
        } else {
            self.tail = x;
        }
        self.len += 1;
    }

    /// Unlink node `x` from the list; returns its height. The node's own
    /// links are left stale (caller relinks or frees it).
    fn unlink(&mut self, x: u32) -> usize {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0usize; MAX_LEVEL];
        {
            let Some(n) = self.nodes.get(x as usize) else {
                return 0;
            };
            self.search(n.score, n.member.bytes(), &mut update, &mut rank);
        }
        let mut height = 0;
        for (i, &u) in update.iter().enumerate().take(self.level) {
            let ul = self.lvl(u, i);
            if ul.next == x {
                let xl = self.lvl(x, i);
                self.set_lvl(
                    u,
                    i,
                    Level { next: xl.next, span: (ul.span + xl.span).saturating_sub(1), score: xl.score, up: xl.up },
                );
                height = i + 1;
            } else {
                let mut l = self.lvl(u, i);
                l.span = l.span.saturating_sub(1);
                self.set_lvl(u, i, l);
            }
        }
        let (prev, next) = match self.nodes.get(x as usize) {
            Some(n) => (n.prev, n.level0.next),
            None => (NIL, NIL),
        };
        if next != NIL {
            if let Some(n) = self.nodes.get_mut(next as usize) {
                n.prev = prev;
            }
        } else {
            self.tail = prev;
        }
        while self.level > 1 && self.lvl(HEAD, self.level - 1).next == NIL {
            self.level -= 1;
        }
        self.len = self.len.saturating_sub(1);
        height
    }

    fn update_score(&mut self, x: u32, score: f64) {
        let (old, prev, next) = match self.nodes.get(x as usize) {
            Some(n) => (n.score, n.prev, n.level0.next),
            None => return,
        };
        if old == score {
            // Same position (also for -0.0 vs 0.0); keep as in Redis.
            return;
        }
        let in_place = match self.nodes.get(x as usize) {
            Some(n) => {
                let m = n.member.bytes();
                (prev == NIL || self.less(prev, score, m)) && (next == NIL || self.greater(next, score, m))
            }
            None => false,
        };
        if in_place {
            // Same position: refresh the cached score in every predecessor.
            let mut update = [HEAD; MAX_LEVEL];
            let mut rank = [0usize; MAX_LEVEL];
            if let Some(n) = self.nodes.get(x as usize) {
                self.search(old, n.member.bytes(), &mut update, &mut rank);
            }
            for (i, &u) in update.iter().enumerate().take(self.level) {
                let mut l = self.lvl(u, i);
                if l.next != x {
                    break;
                }
                l.score = score;
                self.set_lvl(u, i, l);
            }
            if let Some(n) = self.nodes.get_mut(x as usize) {
                n.score = score;
            }
            return;
        }
        let height = self.unlink(x);
        if let Some(n) = self.nodes.get_mut(x as usize) {
            n.score = score;
        }
        self.link(x, height);
    }

    /// Node at 1-based rank `r` (NIL if out of range). O(log n).
    fn node_by_rank(&self, r: usize) -> u32 {
        if r == 0 || r > self.len {
            return NIL;
        }
        let mut x = HEAD;
        let mut xu = 0u32;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.lvl_at(x, xu, i);
                if l.next != NIL && traversed + l.span as usize <= r {
                    traversed += l.span as usize;
                    x = l.next;
                    xu = l.up;
                } else {
                    break;
                }
            }
            if traversed == r {
                return x;
            }
        }
        NIL
    }

    /// Number of elements whose score does not satisfy `min`.
    fn count_below_min(&self, min: ScoreBound) -> usize {
        let mut x = HEAD;
        let mut xu = 0u32;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.lvl_at(x, xu, i);
                if l.next != NIL && !min.admits_from_below(l.score) {
                    traversed += l.span as usize;
                    x = l.next;
                    xu = l.up;
                } else {
                    break;
                }
            }
        }
        traversed
    }

    /// (1-based rank, node) of the last element satisfying `max`; rank 0 if
    /// none.
    fn last_within_max(&self, max: ScoreBound) -> (usize, u32) {
        let mut x = HEAD;
        let mut xu = 0u32;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.lvl_at(x, xu, i);
                if l.next != NIL && max.admits_from_above(l.score) {
                    traversed += l.span as usize;
                    x = l.next;
                    xu = l.up;
                } else {
                    break;
                }
            }
        }
        (traversed, x)
    }

    fn range_is_empty(min: ScoreBound, max: ScoreBound) -> bool {
        min.value > max.value || (min.value == max.value && (min.exclusive || max.exclusive))
    }

    fn collect_forward<'a>(
        &'a self,
        mut x: u32,
        limit: usize,
        ok: impl Fn(f64) -> bool,
        out: &mut Vec<(&'a str, f64)>,
    ) {
        while out.len() < limit {
            let Some(n) = self.nodes.get(x as usize) else {
                break;
            };
            if x == HEAD || !ok(n.score) {
                break;
            }
            out.push((n.member.as_str(), n.score));
            x = n.level0.next;
        }
    }

    fn collect_backward<'a>(
        &'a self,
        mut x: u32,
        limit: usize,
        ok: impl Fn(f64) -> bool,
        out: &mut Vec<(&'a str, f64)>,
    ) {
        while out.len() < limit {
            let Some(n) = self.nodes.get(x as usize) else {
                break;
            };
            if x == HEAD || !ok(n.score) {
                break;
            }
            out.push((n.member.as_str(), n.score));
            x = n.prev;
        }
    }

    // ------------------------------------------------------------------
    // hash table internals

    #[inline]
    fn hash(&self, member: &[u8]) -> u32 {
        self.hasher.hash_one(member) as u32
    }

    /// (slot position, node index) of `member`.
    fn find(&self, member: &[u8], hash: u32) -> Option<(usize, u32)> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut pos = hash as usize & mask;
        loop {
            let s = *self.slots.get(pos)?;
            let idx = slot_index(s);
            if idx == NIL {
                return None;
            }
            if slot_hash(s) == hash && self.nodes.get(idx as usize).is_some_and(|n| n.member.bytes() == member) {
                return Some((pos, idx));
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Insert a member known to be absent. `self.len` already counts it.
    fn table_insert(&mut self, hash: u32, idx: u32) {
        // Keep load factor <= 3/4.
        if self.len * 4 > self.slots.len() * 3 {
            self.table_grow();
        }
        let mask = self.slots.len() - 1;
        let mut pos = hash as usize & mask;
        while let Some(s) = self.slots.get_mut(pos) {
            if slot_index(*s) == NIL {
                *s = make_slot(hash, idx);
                return;
            }
            pos = (pos + 1) & mask;
        }
    }

    fn table_grow(&mut self) {
        let cap = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY_SLOT; cap]);
        let mask = cap - 1;
        for s in old {
            if slot_index(s) == NIL {
                continue;
            }
            let mut pos = slot_hash(s) as usize & mask;
            while let Some(d) = self.slots.get_mut(pos) {
                if slot_index(*d) == NIL {
                    *d = s;
                    break;
                }
                pos = (pos + 1) & mask;
            }
        }
    }

    /// Remove the entry at `pos` (backward-shift deletion, no tombstones).
    fn table_remove(&mut self, pos: usize) {
        let mask = self.slots.len().wrapping_sub(1);
        let mut hole = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & mask;
            let Some(&s) = self.slots.get(j) else {
                break;
            };
            if slot_index(s) == NIL {
                break;
            }
            let home = slot_hash(s) as usize & mask;
            // Entry at j may move into the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = EMPTY_SLOT;
        }
    }
}

struct Iter<'a> {
    set: &'a ZSet,
    cur: u32,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let n = self.set.nodes.get(self.cur as usize)?;
        self.cur = n.level0.next;
        self.left -= 1;
        Some((n.member.as_str(), n.score))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests;
