//! Lists packed into chunks, as Redis packs a list into a quicklist of listpacks.
//!
//! One allocation per element costs a 16-byte value 32 bytes of heap plus an 8-byte
//! pointer; packed, it costs its bytes plus one. So elements live side by side in
//! chunks of at most `CHUNK_MAX` bytes, and the chunks in a `VecDeque`:
//!
//! - **Inside a chunk** element `i`'s UTF-8 bytes are followed by a separator holding
//!   `len(i) ^ len(i + 1)` in a varint that reads from either end (`put_sep`), and the
//!   chunk keeps the lengths of its first and last elements. Knowing one element's
//!   length, the separator after it gives the next one's and the separator before it the
//!   previous one's, so a chunk walks both ways with one byte per element for values up
//!   to 127 bytes (a length prefix alone cannot pop the back; a prefix and a suffix, as
//!   listpack does, costs two).
//! - **Ends.** Free space sits before `start` and after `end`: a push writes into it,
//!   a pop moves `start` or `end`. Both are O(1) amortized: when a side is full the
//!   bytes are moved over or into a buffer twice the size (`Chunk::room`), which happens
//!   once per a quarter of the buffer pushed.
//! - **Positions.** Each chunk knows the position of its first element on a number line
//!   that the far end never moves (`base`: a front push takes `base - 1`, a front pop
//!   moves to `base + 1`). Only the ends of a list change (push, pop, trim), so the
//!   bases of the chunks between never do: an index is a binary search over bases, then
//!   a walk inside one chunk from its nearer end (at most half a chunk). Positions wrap
//!   and are compared relative to the front, so no count can overflow.
//! - **Sizes.** A chunk takes elements until they reach `CHUNK_MAX` bytes (an element
//!   longer than that gets a chunk of its own). A new chunk starts as small as its first
//!   element and doubles, so a list of three short values stays one small allocation; a
//!   chunk that is closed by its neighbour gives back its slack (`fit`), and an end
//!   chunk drained to a quarter of its buffer halves it (`after_pop`). Only the two end
//!   chunks can be small; the ones between are full, which bounds the per-chunk cost.
//!
//! Memory is accounted as the rest of the store does (`value.rs`): `bufs` follows the
//! chunk buffers' heap bytes on every (re)allocation, so `mem` is O(1).

use super::value::alloc_mem;
use std::collections::VecDeque;
use std::mem::size_of;

/// Bytes of packed elements in one chunk before the next element starts a new one:
/// Redis's default (`list-max-listpack-size -2`). Smaller chunks make an index walk
/// shorter and cost more per chunk (a `Chunk` and a heap header each).
const CHUNK_MAX: usize = 8192;

// Bytes moved by `Chunk::relocate` on this thread, for the tests of amortization.
#[cfg(test)]
thread_local! {
    static MOVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A list of strings with O(1) push and pop at both ends.
#[derive(Default)]
pub struct ListValue {
    chunks: VecDeque<Chunk>,
    len: usize,
    /// Heap bytes of the chunk buffers (`alloc_mem` of each one's length).
    bufs: usize,
    /// The side a chunk last made room for: when pushes alternate between the two ends
    /// of a one-chunk list, `Chunk::room` splits the free space between them instead of
    /// moving every byte from one side to the other on each push.
    room: Side,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Side {
    #[default]
    Neither,
    Front,
    Back,
}

struct Chunk {
    /// Packed elements in `start..end`, free bytes around them.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Byte lengths of the first and the last element (the ends of the XOR chain).
    first: usize,
    last: usize,
    /// Position of the first element (see the module doc). Wrapping.
    base: usize,
}

/// Bytes a buffer of at least `n` bytes can use for the heap it costs: the allocator
/// rounds every request up (`alloc_mem`), so asking for the rounded size is free.
fn usable(n: usize) -> usize {
    alloc_mem(n.max(1)) - 8
}

/// Size of a separator for `x`: one byte below 128; otherwise a marker byte
/// `0x80 | k`, `k` little-endian bytes and the marker again, so that it reads from
/// either end.
fn sep_len(x: usize) -> usize {
    if x < 0x80 {
        1
    } else {
        (usize::BITS - x.leading_zeros()).div_ceil(8) as usize + 2
    }
}

/// Write the separator for `x` at `at`; returns its size.
fn put_sep(buf: &mut [u8], at: usize, x: usize) -> Option<usize> {
    let n = sep_len(x);
    let out = buf.get_mut(at..at + n)?;
    if n == 1 {
        *out.first_mut()? = x as u8;
    } else {
        let k = n - 2;
        let mark = 0x80 | k as u8;
        let (head, rest) = out.split_first_mut()?;
        let (tail, digits) = rest.split_last_mut()?;
        *head = mark;
        *tail = mark;
        digits.copy_from_slice(x.to_le_bytes().get(..k)?);
    }
    Some(n)
}

/// Little-endian bytes of a long separator.
fn sep_value(digits: &[u8]) -> Option<usize> {
    let mut b = [0u8; 8];
    b.get_mut(..digits.len())?.copy_from_slice(digits);
    Some(u64::from_le_bytes(b) as usize)
}

/// The separator starting at `at`: (value, size).
fn sep_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let b = *buf.get(at)?;
    if b < 0x80 {
        return Some((b as usize, 1));
    }
    let k = usize::from(b & 0x7f);
    Some((sep_value(buf.get(at + 1..at + 1 + k)?)?, k + 2))
}

/// The separator ending just before `end`: (value, size).
fn sep_before(buf: &[u8], end: usize) -> Option<(usize, usize)> {
    let b = *buf.get(end.checked_sub(1)?)?;
    if b < 0x80 {
        return Some((b as usize, 1));
    }
    let k = usize::from(b & 0x7f);
    let from = end.checked_sub(k + 1)?;
    Some((sep_value(buf.get(from..end - 1)?)?, k + 2))
}

/// The element of `len` bytes at `pos`. Its bytes were copied from a `&str` at exactly
/// these bounds, so the check cannot fail; it is kept because it costs little (ASCII is
/// validated a word at a time) and turns a bug in the offsets into a missing element
/// rather than undefined behaviour.
fn elem(buf: &[u8], pos: usize, len: usize) -> Option<&str> {
    std::str::from_utf8(buf.get(pos..pos + len)?).ok()
}

impl Chunk {
    /// A chunk holding `v` alone in a buffer that fits it, with the free bytes (if any
    /// rounding left some) on the side the next push will come from.
    fn new(v: &str, base: usize, front: bool) -> Chunk {
        let n = v.len();
        let cap = usable(n);
        let mut buf = vec![0u8; cap].into_boxed_slice();
        let start = if front { cap - n } else { 0 };
        if let Some(dst) = buf.get_mut(start..start + n) {
            dst.copy_from_slice(v.as_bytes());
        }
        Chunk { buf, start, end: start + n, first: n, last: n, base }
    }

    fn used(&self) -> usize {
        self.end - self.start
    }

    fn single(&self) -> bool {
        self.start + self.first == self.end
    }

    fn first_str(&self) -> Option<&str> {
        elem(&self.buf, self.start, self.first)
    }

    fn last_str(&self) -> Option<&str> {
        elem(&self.buf, self.end - self.last, self.last)
    }

    /// (position, length) of the element `j` places after the first.
    fn nth(&self, j: usize) -> Option<(usize, usize)> {
        let (mut pos, mut len) = (self.start, self.first);
        for _ in 0..j {
            let (x, n) = sep_at(&self.buf, pos + len)?;
            pos += len + n;
            len ^= x;
        }
        Some((pos, len))
    }

    /// (position, length) of the element `j` places before the last.
    fn nth_back(&self, j: usize) -> Option<(usize, usize)> {
        let (mut end, mut len) = (self.end, self.last);
        for _ in 0..j {
            let (x, n) = sep_before(&self.buf, end - len)?;
            end -= len + n;
            len ^= x;
        }
        Some((end - len, len))
    }

    /// The element at offset `j` of `count`, walked to from the nearer end.
    fn locate(&self, j: usize, count: usize) -> Option<(usize, usize)> {
        if j < count / 2 {
            self.nth(j)
        } else {
            self.nth_back(count.checked_sub(j + 1)?)
        }
    }

    /// Drop the first `j` elements (fewer than the chunk holds).
    fn cut_front(&mut self, j: usize) {
        if let Some((pos, len)) = self.nth(j) {
            (self.start, self.first) = (pos, len);
            self.base = self.base.wrapping_add(j);
        }
    }

    /// Drop the last `j` elements (fewer than the chunk holds).
    fn cut_back(&mut self, j: usize) {
        if let Some((pos, len)) = self.nth_back(j) {
            (self.end, self.last) = (pos + len, len);
        }
    }

    /// Move the bytes to `at` in a buffer of `cap` bytes (the same one when it has that
    /// size). Returns the change in heap bytes.
    fn relocate(&mut self, cap: usize, at: usize) -> isize {
        let used = self.used();
        #[cfg(test)]
        MOVED.with(|m| m.set(m.get() + used));
        let old = self.buf.len();
        if cap == old {
            if self.buf.get(at..at + used).is_none() {
                return 0;
            }
            self.buf.copy_within(self.start..self.end, at);
        } else {
            let mut buf = vec![0u8; cap].into_boxed_slice();
            match (buf.get_mut(at..at + used), self.buf.get(self.start..self.end)) {
                (Some(dst), Some(src)) => dst.copy_from_slice(src),
                _ => return 0,
            }
            self.buf = buf;
        }
        (self.start, self.end) = (at, at + used);
        alloc_mem(cap) as isize - alloc_mem(old) as isize
    }

    /// Make `need` free bytes on one side (`front`, or the back) for a push, or say
    /// that the chunk is full (`None`: the push starts a new chunk). The bytes are moved
    /// over when that leaves a quarter of the buffer free, else into a buffer twice the
    /// size up to `CHUNK_MAX`; either way the next move is a quarter of the buffer of
    /// pushes away, which makes pushes O(1) amortized. The free space goes to the side
    /// that asked, or half to each side when `split`. `Some(change in heap bytes)`.
    fn room(&mut self, need: usize, front: bool, split: bool) -> Option<isize> {
        let (cap, used) = (self.buf.len(), self.used());
        let target = used + need;
        if target > CHUNK_MAX {
            return None;
        }
        if need <= if front { self.start } else { cap - self.end } {
            return Some(0);
        }
        let new_cap = if target <= cap - cap / 4 {
            cap
        } else if cap < CHUNK_MAX - CHUNK_MAX / 8 {
            // Doubling from a rounded size lands just under CHUNK_MAX: that is full.
            usable((cap * 2).max(target).min(CHUNK_MAX))
        } else {
            return None;
        };
        let free = new_cap - target;
        let other = if split { free / 2 } else { 0 };
        let at = if front { new_cap - other - used } else { other };
        Some(self.relocate(new_cap, at))
    }

    /// Give back the free bytes of the sides that no push can reach any more (a
    /// neighbour closed one, or both), when they are more than an eighth of the buffer.
    fn fit(&mut self, open_front: bool, open_back: bool) -> isize {
        let cap = self.buf.len();
        let front = if open_front { self.start } else { 0 };
        let back = if open_back { cap - self.end } else { 0 };
        let want = usable(front + self.used() + back);
        if cap - want > cap / 8 {
            self.relocate(want, front)
        } else {
            0
        }
    }

    /// Halve the buffer of an end chunk drained to a quarter of it (amortized O(1): the
    /// next halving or doubling is at least a quarter of the buffer away), with the free
    /// bytes on the sides that pushes reach.
    fn shrink(&mut self, open_front: bool, open_back: bool) -> isize {
        let cap = self.buf.len();
        if cap <= 256 || self.used() >= cap / 4 {
            return 0;
        }
        let new_cap = usable(cap / 2);
        let free = new_cap - self.used();
        let at = match (open_front, open_back) {
            (true, true) => free / 2,
            (true, false) => free,
            _ => 0,
        };
        self.relocate(new_cap, at)
    }
}

impl ListValue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position of the first element (see the module doc).
    fn front(&self) -> usize {
        self.chunks.front().map_or(0, |c| c.base)
    }

    /// Elements in chunk `k`.
    fn count(&self, k: usize) -> usize {
        let Some(c) = self.chunks.get(k) else { return 0 };
        let next = self.chunks.get(k + 1).map_or(self.front().wrapping_add(self.len), |n| n.base);
        next.wrapping_sub(c.base)
    }

    fn grow_bufs(&mut self, delta: isize) {
        self.bufs = self.bufs.wrapping_add_signed(delta);
    }

    /// Add a chunk holding `v` at one end, closing the chunk it lands next to.
    fn new_chunk(&mut self, v: &str, front: bool) {
        let base = if front { self.front().wrapping_sub(1) } else { self.front().wrapping_add(self.len) };
        let only = self.chunks.len() == 1;
        let delta = if front {
            self.chunks.front_mut().map_or(0, |c| c.fit(false, only))
        } else {
            self.chunks.back_mut().map_or(0, |c| c.fit(only, false))
        };
        self.grow_bufs(delta);
        let c = Chunk::new(v, base, front);
        self.bufs += alloc_mem(c.buf.len());
        // A one-chunk list (the common small one) keeps a one-slot ring.
        if self.chunks.capacity() == 0 {
            self.chunks.reserve_exact(1);
        }
        if front {
            self.chunks.push_front(c);
        } else {
            self.chunks.push_back(c);
        }
        self.len += 1;
    }

    pub fn push_back(&mut self, v: &str) {
        let n = v.len();
        let split = self.chunks.len() == 1 && self.room == Side::Front;
        let Some(c) = self.chunks.back_mut() else { return self.new_chunk(v, false) };
        let x = c.last ^ n;
        let need = sep_len(x) + n;
        let moved = c.end + need > c.buf.len();
        let Some(delta) = c.room(need, false, split) else { return self.new_chunk(v, false) };
        self.grow_bufs(delta);
        let Some(c) = self.chunks.back_mut() else { return };
        let Some(sep) = put_sep(&mut c.buf, c.end, x) else { return };
        let at = c.end + sep;
        let Some(dst) = c.buf.get_mut(at..at + n) else { return };
        dst.copy_from_slice(v.as_bytes());
        (c.end, c.last) = (at + n, n);
        self.len += 1;
        if moved {
            self.room = Side::Back;
        }
    }

    pub fn push_front(&mut self, v: &str) {
        let n = v.len();
        let split = self.chunks.len() == 1 && self.room == Side::Back;
        let Some(c) = self.chunks.front_mut() else { return self.new_chunk(v, true) };
        let x = c.first ^ n;
        let need = sep_len(x) + n;
        let moved = c.start < need;
        let Some(delta) = c.room(need, true, split) else { return self.new_chunk(v, true) };
        self.grow_bufs(delta);
        let Some(c) = self.chunks.front_mut() else { return };
        let Some(at) = c.start.checked_sub(need) else { return };
        let Some(dst) = c.buf.get_mut(at..at + n) else { return };
        dst.copy_from_slice(v.as_bytes());
        if put_sep(&mut c.buf, at + n, x).is_none() {
            return;
        }
        (c.start, c.first) = (at, n);
        c.base = c.base.wrapping_sub(1);
        self.len += 1;
        if moved {
            self.room = Side::Front;
        }
    }

    pub fn pop_back(&mut self) -> Option<Box<str>> {
        let c = self.chunks.back_mut()?;
        let v: Box<str> = c.last_str()?.into();
        if c.single() {
            let c = self.chunks.pop_back()?;
            self.bufs -= alloc_mem(c.buf.len());
        } else {
            let (x, n) = sep_before(&c.buf, c.end - c.last)?;
            c.end -= c.last + n;
            c.last ^= x;
        }
        self.len -= 1;
        self.after_pop(false);
        Some(v)
    }

    pub fn pop_front(&mut self) -> Option<Box<str>> {
        let c = self.chunks.front_mut()?;
        let v: Box<str> = c.first_str()?.into();
        if c.single() {
            let c = self.chunks.pop_front()?;
            self.bufs -= alloc_mem(c.buf.len());
        } else {
            let (x, n) = sep_at(&c.buf, c.start + c.first)?;
            c.start += c.first + n;
            c.first ^= x;
            c.base = c.base.wrapping_add(1);
        }
        self.len -= 1;
        self.after_pop(true);
        Some(v)
    }

    /// Give memory back after elements left one end: halve that end's chunk if it
    /// drained, and the ring of chunks (as a `VecDeque` of elements did before).
    fn after_pop(&mut self, front: bool) {
        let only = self.chunks.len() == 1;
        let delta = if front {
            self.chunks.front_mut().map_or(0, |c| c.shrink(true, only))
        } else {
            self.chunks.back_mut().map_or(0, |c| c.shrink(only, false))
        };
        self.grow_bufs(delta);
        let cap = self.chunks.capacity();
        if cap > 4 && self.chunks.len() < cap / 4 {
            self.chunks.shrink_to(cap / 2);
        }
    }

    /// The chunk holding element `i` and `i`'s offset in it.
    fn find(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        let front = self.front();
        let k = self.chunks.partition_point(|c| c.base.wrapping_sub(front) <= i).checked_sub(1)?;
        Some((k, i - self.chunks.get(k)?.base.wrapping_sub(front)))
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let (k, j) = self.find(i)?;
        let c = self.chunks.get(k)?;
        let (pos, len) = c.locate(j, self.count(k))?;
        elem(&c.buf, pos, len)
    }

    /// The elements at `start..end` (clamped), in order.
    pub fn range(&self, start: usize, end: usize) -> Iter<'_> {
        let end = end.min(self.len);
        if start >= end {
            return Iter::empty();
        }
        let Some((k, j)) = self.find(start) else { return Iter::empty() };
        let Some(c) = self.chunks.get(k) else { return Iter::empty() };
        let (Some((pos, len)), Some(buf)) = (c.locate(j, self.count(k)), c.buf.get(..c.end)) else {
            return Iter::empty();
        };
        Iter { rest: self.chunks.range(k + 1..), buf, pos, len, left: end - start }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.range(0, self.len)
    }

    /// Keep only the elements at `start..end` (clamped): whole chunks go, and at most
    /// one chunk at each end is walked to the cut.
    pub fn retain_range(&mut self, start: usize, end: usize) {
        let end = end.min(self.len);
        let start = start.min(end);
        let mut back = self.len - end;
        while back > 0 {
            let k = self.chunks.len().saturating_sub(1);
            let n = self.count(k);
            if n <= back {
                let Some(c) = self.chunks.pop_back() else { break };
                self.bufs -= alloc_mem(c.buf.len());
                self.len -= n;
                back -= n;
            } else if let Some(c) = self.chunks.back_mut() {
                c.cut_back(back);
                self.len -= back;
                back = 0;
            }
        }
        let mut front = start;
        while front > 0 {
            let n = self.count(0);
            if n <= front {
                let Some(c) = self.chunks.pop_front() else { break };
                self.bufs -= alloc_mem(c.buf.len());
                self.len -= n;
                front -= n;
            } else if let Some(c) = self.chunks.front_mut() {
                c.cut_front(front);
                self.len -= front;
                front = 0;
            }
        }
        self.after_pop(false);
        self.after_pop(true);
    }

    pub fn mem(&self) -> usize {
        alloc_mem(size_of::<Self>()) + alloc_mem(self.chunks.capacity() * size_of::<Chunk>()) + self.bufs
    }
}

/// Elements in order from a position, chunk by chunk.
pub struct Iter<'a> {
    /// The chunks after the current one.
    rest: std::collections::vec_deque::Iter<'a, Chunk>,
    /// The current chunk's bytes up to its last element's end.
    buf: &'a [u8],
    /// The next element: its position in `buf` and its length.
    pos: usize,
    len: usize,
    left: usize,
}

impl<'a> Iter<'a> {
    fn empty() -> Iter<'a> {
        Iter { rest: Default::default(), buf: &[], pos: 0, len: 0, left: 0 }
    }

    /// Step to the element after the current one.
    fn advance(&mut self) -> Option<()> {
        let next = self.pos + self.len;
        if next >= self.buf.len() {
            let c = self.rest.next()?;
            self.buf = c.buf.get(..c.end)?;
            (self.pos, self.len) = (c.start, c.first);
        } else {
            let (x, n) = sep_at(self.buf, next)?;
            self.pos = next + n;
            self.len ^= x;
        }
        Some(())
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        let v = elem(self.buf, self.pos, self.len);
        self.left -= 1;
        if self.left > 0 && self.advance().is_none() {
            self.left = 0;
        }
        v
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests;
