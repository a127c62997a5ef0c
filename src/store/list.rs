//! Lists packed into chunks, as Redis packs a list into a quicklist of listpacks.
//!
//! One allocation per element costs a 16-byte value 32 bytes of heap plus an 8-byte
//! pointer; packed, it costs its bytes plus one. So elements live side by side in
//! chunks of at most `CHUNK_MAX` bytes, and the chunks in a `VecDeque`:
//!
//! - **Inside a chunk** element `i`'s bytes are followed by a separator holding
//!   `len(i) ^ len(i + 1)` in a varint that reads from either end (`sep_str`), and the
//!   chunk keeps the lengths of its first and last elements. Knowing one element's
//!   length, the separator after it gives the next one's and the separator before it the
//!   previous one's, so a chunk walks both ways with one byte per element whenever
//!   neighbours' lengths XOR below 120 (always when both are under 64 bytes). A length
//!   prefix alone cannot pop the back; a prefix and a suffix, as listpack has, cost two.
//! - **Safe by construction.** A chunk's buffer is a `String` (separators are ASCII), so
//!   reading an element is `str::get`, two O(1) char-boundary checks, rather than UTF-8
//!   validation (which cost more than the rest of an iteration) or `unsafe`; a wrong
//!   offset could only yield a wrong or missing element, never undefined behaviour.
//! - **Ends.** Free bytes sit before `start` and in the `String`'s spare capacity: a
//!   push writes into them, a pop moves `start` or truncates. Both are O(1)
//!   amortized: when a side is full the bytes move over, or into a buffer twice the
//!   size (`Chunk::room`), once per a quarter of the buffer pushed.
//! - **Positions.** Each chunk knows the position of its first element on a number line
//!   that the far end never moves (`base`: a front push takes `base - 1`, a front pop
//!   moves to `base + 1`). Only the ends of a list change (push, pop, trim), so the
//!   bases of the chunks between never do: finding an element's chunk is a binary
//!   search over bases. Positions wrap and are compared relative to the front.
//! - **Marks.** Inside a chunk of hundreds of elements, a walk from its nearer end would
//!   still take hundreds of dependent loads, so the list keeps a mark (offset, length)
//!   for every element whose position is a multiple of `MARK_EVERY`: any element is then
//!   at most `MARK_EVERY / 2` steps from a mark or a chunk end. Marks are pushed and
//!   popped with the elements they name, and shifted when a chunk's bytes move.
//! - **Sizes.** A chunk takes elements until they reach `CHUNK_MAX` bytes (an element
//!   longer than that gets a chunk of its own). A new chunk starts as small as its first
//!   element and doubles, so a list of three short values stays one small allocation; a
//!   chunk that a neighbour closes gives back its slack (`Chunk::fit`), and an end chunk
//!   drained to a quarter of its buffer halves it (`Chunk::shrink`). Only end chunks
//!   (or the neighbours of an element longer than a chunk) can be small.
//!
//! Memory is accounted as the rest of the store does (`value.rs`): `bufs` follows the
//! chunk buffers' heap bytes on every (re)allocation, so `mem` is O(1).

use super::mem::alloc_mem;
use std::collections::VecDeque;
use std::mem::size_of;

/// Bytes of packed elements in one chunk before the next element starts a new one:
/// Redis's default (`list-max-listpack-size -2`).
const CHUNK_MAX: usize = 8192;

/// Distance between marks, a power of two: 4 bytes per 32 elements (0.125 B each) for
/// walks of at most 16 steps.
const MARK_EVERY: usize = 32;

/// Where the positions of a new list start: half-way to the first mark, so that a list
/// of fewer than 16 elements never allocates marks whichever end it grows from.
const START: usize = MARK_EVERY / 2;

/// Separator values below this are one byte; longer ones are marker, digits, marker.
const SEP_SHORT: usize = 120;

const ZERO_BYTES: [u8; 1024] = [0; 1024];
/// What a new buffer's free front is filled with (a `String` holds only UTF-8).
const ZEROS: &str = match std::str::from_utf8(&ZERO_BYTES) {
    Ok(s) => s,
    Err(_) => "",
};

// Bytes moved by `Chunk::relocate` on this thread, for the tests of amortization.
#[cfg(test)]
thread_local! {
    static MOVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A list of strings with O(1) push and pop at both ends.
#[derive(Default)]
pub struct ListValue {
    chunks: VecDeque<Chunk>,
    /// One per element whose position is a multiple of `MARK_EVERY`, in order.
    marks: VecDeque<Mark>,
    len: usize,
    /// Heap bytes of the chunk buffers (`alloc_mem` of each one's capacity).
    bufs: usize,
    /// The side a chunk last made room for: when pushes alternate between the two ends
    /// of a one-chunk list, `Chunk::room` splits the free space between them instead of
    /// moving every byte from one side to the other on each push.
    room: Side,
}

/// Where `ListValue::locate` starts its walk.
enum Way {
    First,
    Last,
    MarkBefore,
    MarkAfter,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Side {
    #[default]
    Neither,
    Front,
    Back,
}

struct Chunk {
    /// Elements in `start..buf.len()`; the bytes before `start` (zeros, or what front
    /// pops left) and the spare capacity after are the room for pushes.
    buf: String,
    start: usize,
    /// Byte lengths of the first and the last element (the ends of the XOR chain).
    first: usize,
    last: usize,
    /// Position of the first element (see the module doc). Wrapping.
    base: usize,
}

/// An element's offset in its chunk's buffer and its length. Both fit: a chunk of two
/// or more elements is at most `CHUNK_MAX` bytes (a mark in a one-element chunk, which
/// may be longer, is never read: its chunk's start is as near).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    pos: u16,
    len: u16,
}

impl Mark {
    fn new(pos: usize, len: usize) -> Mark {
        Mark { pos: pos as u16, len: len as u16 }
    }
}

/// Bytes a buffer of at least `n` bytes can use for the heap it costs: the allocator
/// rounds every request up (`alloc_mem`), so asking for the rounded size is free.
fn usable(n: usize) -> usize {
    alloc_mem(n.max(1)) - 8
}

/// Size of the separator for `x`: one byte below `SEP_SHORT`; otherwise a marker
/// `SEP_SHORT - 1 + k`, `k` base-128 digits and the marker again (all ASCII), so that
/// it reads from either end. `k` is at most 8, 56 bits: more than any length in memory.
fn sep_len(x: usize) -> usize {
    if x < SEP_SHORT {
        1
    } else {
        (usize::BITS - x.leading_zeros()).div_ceil(7) as usize + 2
    }
}

/// The separator for `x` as text, in `out`.
fn sep_str(x: usize, out: &mut [u8; 10]) -> Option<&str> {
    let n = sep_len(x);
    if n == 1 {
        // ASCII: one byte, and no validation (cheaper than `from_utf8` on a push).
        return Some(char::from(x as u8).encode_utf8(out));
    } else {
        let k = n - 2;
        if k > 8 {
            return None;
        }
        let mark = (SEP_SHORT - 1 + k) as u8;
        *out.first_mut()? = mark;
        *out.get_mut(k + 1)? = mark;
        for (i, d) in out.get_mut(1..=k)?.iter_mut().enumerate() {
            *d = (x >> (7 * i)) as u8 & 0x7f;
        }
    }
    std::str::from_utf8(out.get(..n)?).ok()
}

/// Base-128 digits of a long separator, least significant first.
fn sep_value(digits: &[u8]) -> usize {
    digits.iter().rev().fold(0, |x, &d| x << 7 | usize::from(d))
}

/// The separator starting at `at`: (value, size).
fn sep_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let b = usize::from(*buf.get(at)?);
    if b < SEP_SHORT {
        return Some((b, 1));
    }
    let k = b + 1 - SEP_SHORT;
    Some((sep_value(buf.get(at + 1..at + 1 + k)?), k + 2))
}

/// The separator ending just before `end`: (value, size).
fn sep_before(buf: &[u8], end: usize) -> Option<(usize, usize)> {
    let b = usize::from(*buf.get(end.checked_sub(1)?)?);
    if b < SEP_SHORT {
        return Some((b, 1));
    }
    let k = b + 1 - SEP_SHORT;
    let from = end.checked_sub(k + 1)?;
    Some((sep_value(buf.get(from..end - 1)?), k + 2))
}

/// Append `n` zeros.
fn push_zeros(s: &mut String, mut n: usize) {
    while n > 0 {
        let m = n.min(ZEROS.len());
        s.push_str(ZEROS.get(..m).unwrap_or_default());
        n -= m;
    }
}

/// Overwrite `at..at + v.len()` with `v` if both ends are char boundaries (the caller
/// makes sure), else write nothing: `replace_range` would panic.
fn write_at(s: &mut String, at: usize, v: &str) -> Option<()> {
    let end = at + v.len();
    if !(s.is_char_boundary(at) && s.is_char_boundary(end)) || end > s.len() {
        return None;
    }
    s.replace_range(at..end, v);
    Some(())
}

/// Overwrite `from..to` with zeros, piece by piece, each piece ending on a char
/// boundary.
fn zero(s: &mut String, mut from: usize, to: usize) -> Option<()> {
    while from < to {
        let mut m = (to - from).min(ZEROS.len());
        while m > 0 && !s.is_char_boundary(from + m) {
            m -= 1;
        }
        if m == 0 {
            return None;
        }
        write_at(s, from, ZEROS.get(..m)?)?;
        from += m;
    }
    Some(())
}

/// Marks at positions `from..from + n`.
fn marks_in(from: usize, n: usize) -> usize {
    let first = from.wrapping_neg() % MARK_EVERY;
    if n > first {
        (n - 1 - first) / MARK_EVERY + 1
    } else {
        0
    }
}

impl Chunk {
    /// A chunk holding `v` alone in a buffer that fits it, with the free bytes (if any
    /// rounding left some) on the side the next push will come from.
    fn new(v: &str, base: usize, front: bool) -> Chunk {
        let n = v.len();
        let cap = usable(n);
        let mut buf = String::with_capacity(cap);
        if front {
            push_zeros(&mut buf, cap - n);
        }
        let start = buf.len();
        buf.push_str(v);
        Chunk { buf, start, first: n, last: n, base }
    }

    fn end(&self) -> usize {
        self.buf.len()
    }

    fn used(&self) -> usize {
        self.buf.len() - self.start
    }

    fn single(&self) -> bool {
        self.start + self.first == self.end()
    }

    fn elem(&self, pos: usize, len: usize) -> Option<&str> {
        self.buf.get(pos..pos + len)
    }

    /// (position, length) of the element `steps` places after the one at `pos`.
    fn forward(&self, mut pos: usize, mut len: usize, steps: usize) -> Option<(usize, usize)> {
        let buf = self.buf.as_bytes();
        for _ in 0..steps {
            let (x, n) = sep_at(buf, pos + len)?;
            pos += len + n;
            len ^= x;
        }
        Some((pos, len))
    }

    /// (position, length) of the element `steps` places before the one at `pos`.
    fn backward(&self, mut pos: usize, mut len: usize, steps: usize) -> Option<(usize, usize)> {
        let buf = self.buf.as_bytes();
        for _ in 0..steps {
            let (x, n) = sep_before(buf, pos)?;
            len ^= x;
            pos = pos.checked_sub(n + len)?;
        }
        Some((pos, len))
    }

    /// Move the bytes to `at` in a new buffer of `cap` bytes. Returns the change in
    /// heap bytes and the distance moved (wrapping), for the marks.
    fn relocate(&mut self, cap: usize, at: usize) -> (isize, usize) {
        let used = self.used();
        #[cfg(test)]
        MOVED.with(|m| m.set(m.get() + used));
        let Some(data) = self.buf.get(self.start..) else { return (0, 0) };
        let mut buf = String::with_capacity(cap.max(at + used));
        push_zeros(&mut buf, at);
        buf.push_str(data);
        let delta = alloc_mem(buf.capacity()) as isize - alloc_mem(self.buf.capacity()) as isize;
        let shift = at.wrapping_sub(self.start);
        (self.buf, self.start) = (buf, at);
        (delta, shift)
    }

    /// Make `need` free bytes on one side (`front`, or the back) for a push, or say
    /// that the chunk is full (`None`: the push starts a new chunk). The bytes are moved
    /// over when that leaves a quarter of the buffer free, else into a buffer twice the
    /// size up to `CHUNK_MAX`; either way the next move is a quarter of the buffer of
    /// pushes away, which makes pushes O(1) amortized. The free space goes to the side
    /// that asked, or half to each side when `split`.
    fn room(&mut self, need: usize, front: bool, split: bool) -> Option<(isize, usize)> {
        let (cap, used) = (self.buf.capacity(), self.used());
        let target = used + need;
        if target > CHUNK_MAX {
            return None;
        }
        if need <= if front { self.start } else { cap - self.end() } {
            return Some((0, 0));
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
    fn fit(&mut self, open_front: bool, open_back: bool) -> (isize, usize) {
        let cap = self.buf.capacity();
        let front = if open_front { self.start } else { 0 };
        let back = if open_back { cap - self.end() } else { 0 };
        let want = usable(front + self.used() + back);
        if cap.saturating_sub(want) > cap / 8 {
            self.relocate(want, front)
        } else {
            (0, 0)
        }
    }

    fn drained(&self) -> bool {
        let cap = self.buf.capacity();
        cap > 256 && self.used() < cap / 4
    }

    /// Halve the buffer of an end chunk drained to a quarter of it (amortized O(1): the
    /// next halving or doubling is at least a quarter of the buffer away), with the free
    /// bytes on the sides that pushes reach.
    fn shrink(&mut self, open_front: bool, open_back: bool) -> (isize, usize) {
        let cap = self.buf.capacity();
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
        self.chunks.front().map_or(START, |c| c.base)
    }

    /// Elements in chunk `k`.
    fn count(&self, k: usize) -> usize {
        let Some(c) = self.chunks.get(k) else { return 0 };
        let next = self.chunks.get(k + 1).map_or(self.front().wrapping_add(self.len), |n| n.base);
        next.wrapping_sub(c.base)
    }

    /// Book a chunk's (re)allocation: its heap bytes, and its marks when its bytes moved.
    fn moved(&mut self, k: usize, (delta, shift): (isize, usize)) {
        self.bufs = self.bufs.wrapping_add_signed(delta);
        if shift == 0 {
            return;
        }
        let Some(c) = self.chunks.get(k) else { return };
        let front = self.front();
        let from = c.base.wrapping_sub(front);
        let (a, b) = (marks_in(front, from), marks_in(front, from + self.count(k)));
        for m in self.marks.range_mut(a..b) {
            m.pos = usize::from(m.pos).wrapping_add(shift) as u16;
        }
    }

    /// Add a chunk holding `v` at one end, closing the chunk it lands next to.
    fn new_chunk(&mut self, v: &str, front: bool) {
        let base = if front { self.front().wrapping_sub(1) } else { self.front().wrapping_add(self.len) };
        let only = self.chunks.len() == 1;
        let k = if front { 0 } else { self.chunks.len().saturating_sub(1) };
        if let Some(c) = self.chunks.get_mut(k) {
            let r = if front { c.fit(false, only) } else { c.fit(only, false) };
            self.moved(k, r);
        }
        let c = Chunk::new(v, base, front);
        self.bufs += alloc_mem(c.buf.capacity());
        let mark = base.is_multiple_of(MARK_EVERY).then(|| Mark::new(c.start, v.len()));
        // A one-chunk list (the common small one) keeps a one-slot ring.
        if self.chunks.capacity() == 0 {
            self.chunks.reserve_exact(1);
        }
        if front {
            self.chunks.push_front(c);
            if let Some(m) = mark {
                self.marks.push_front(m);
            }
        } else {
            self.chunks.push_back(c);
            if let Some(m) = mark {
                self.marks.push_back(m);
            }
        }
        self.len += 1;
    }

    pub fn push_back(&mut self, v: &str) {
        let n = v.len();
        let k = self.chunks.len().saturating_sub(1);
        let split = k == 0 && self.room == Side::Front;
        let Some(c) = self.chunks.get_mut(k) else { return self.new_chunk(v, false) };
        let x = c.last ^ n;
        let need = sep_len(x) + n;
        let moved = c.end() + need > c.buf.capacity();
        let Some(r) = c.room(need, false, split) else { return self.new_chunk(v, false) };
        self.moved(k, r);
        if moved {
            self.room = Side::Back;
        }
        let pos = self.front().wrapping_add(self.len);
        let Some(c) = self.chunks.get_mut(k) else { return };
        let mut sep = [0; 10];
        let Some(sep) = sep_str(x, &mut sep) else { return };
        // `room` made the capacity: neither push reallocates.
        c.buf.push_str(sep);
        let at = c.end();
        c.buf.push_str(v);
        c.last = n;
        self.len += 1;
        if pos.is_multiple_of(MARK_EVERY) {
            self.marks.push_back(Mark::new(at, n));
        }
    }

    pub fn push_front(&mut self, v: &str) {
        let n = v.len();
        let split = self.chunks.len() == 1 && self.room == Side::Back;
        let Some(c) = self.chunks.front_mut() else { return self.new_chunk(v, true) };
        let x = c.first ^ n;
        let need = sep_len(x) + n;
        let moved = c.start < need;
        let Some(r) = c.room(need, true, split) else { return self.new_chunk(v, true) };
        self.moved(0, r);
        if moved {
            self.room = Side::Front;
        }
        let Some(c) = self.chunks.front_mut() else { return };
        let Some(at) = c.start.checked_sub(need) else { return };
        let mut sep = [0; 10];
        let Some(sep) = sep_str(x, &mut sep) else { return };
        // The free front holds zeros or what front pops left there; a popped multi-byte
        // character may straddle the new element's ends, and is zeroed first.
        if !(c.buf.is_char_boundary(at) && c.buf.is_char_boundary(at + n)) {
            let mut from = at;
            while from > 0 && !c.buf.is_char_boundary(from) {
                from -= 1;
            }
            if zero(&mut c.buf, from, c.start).is_none() {
                return;
            }
        }
        if write_at(&mut c.buf, at + n, sep).and_then(|()| write_at(&mut c.buf, at, v)).is_none() {
            return;
        }
        (c.start, c.first) = (at, n);
        c.base = c.base.wrapping_sub(1);
        let pos = c.base;
        self.len += 1;
        if pos.is_multiple_of(MARK_EVERY) {
            self.marks.push_front(Mark::new(at, n));
        }
    }

    pub fn pop_back(&mut self) -> Option<Box<str>> {
        let pos = self.front().wrapping_add(self.len).wrapping_sub(1);
        let c = self.chunks.back_mut()?;
        let at = c.end() - c.last;
        let v: Box<str> = c.elem(at, c.last)?.into();
        if c.single() {
            let c = self.chunks.pop_back()?;
            self.bufs -= alloc_mem(c.buf.capacity());
        } else {
            let (x, n) = sep_before(c.buf.as_bytes(), at)?;
            let end = at - n;
            if !c.buf.is_char_boundary(end) {
                return None;
            }
            c.buf.truncate(end);
            c.last ^= x;
        }
        self.len -= 1;
        if pos.is_multiple_of(MARK_EVERY) {
            self.marks.pop_back();
        }
        self.after_pop(false);
        Some(v)
    }

    pub fn pop_front(&mut self) -> Option<Box<str>> {
        let pos = self.front();
        let c = self.chunks.front_mut()?;
        let v: Box<str> = c.elem(c.start, c.first)?.into();
        if c.single() {
            let c = self.chunks.pop_front()?;
            self.bufs -= alloc_mem(c.buf.capacity());
        } else {
            let (x, n) = sep_at(c.buf.as_bytes(), c.start + c.first)?;
            c.start += c.first + n;
            c.first ^= x;
            c.base = c.base.wrapping_add(1);
        }
        self.len -= 1;
        if pos.is_multiple_of(MARK_EVERY) {
            self.marks.pop_front();
        }
        self.after_pop(true);
        Some(v)
    }

    /// Give memory back after elements left one end: halve that end's chunk if it
    /// drained, and the rings of chunks and marks (as a `VecDeque` of elements did).
    fn after_pop(&mut self, front: bool) {
        let only = self.chunks.len() == 1;
        let k = if front { 0 } else { self.chunks.len().saturating_sub(1) };
        if let Some(c) = self.chunks.get_mut(k) {
            if c.drained() {
                let r = if front { c.shrink(true, only) } else { c.shrink(only, false) };
                self.moved(k, r);
            }
        }
        let cap = self.chunks.capacity();
        if cap > 4 && self.chunks.len() < cap / 4 {
            self.chunks.shrink_to(cap / 2);
        }
        let cap = self.marks.capacity();
        if cap > 4 && self.marks.len() < cap / 4 {
            self.marks.shrink_to(cap / 2);
        }
    }

    /// Element `i`: its chunk, and its position and length in it. A binary search for
    /// the chunk, then a walk from the nearest of the chunk's ends and the marks around
    /// `i` (at most `MARK_EVERY / 2` steps).
    fn locate(&self, i: usize) -> Option<(usize, usize, usize)> {
        if i >= self.len {
            return None;
        }
        let front = self.front();
        let k = self.chunks.partition_point(|c| c.base.wrapping_sub(front) <= i).checked_sub(1)?;
        let c = self.chunks.get(k)?;
        let j = i - c.base.wrapping_sub(front);
        let to_end = self.count(k).checked_sub(j + 1)?;
        // The marks at or before and after `i`, `before` and `after` steps away. A mark
        // nearer than both chunk ends is in this chunk; on a tie the ends win (the mark
        // of a one-element chunk may not fit in a `Mark`).
        let before = front.wrapping_add(i) % MARK_EVERY;
        let after = MARK_EVERY - before;
        let mut way = if j <= to_end { (j, Way::First) } else { (to_end, Way::Last) };
        if before < way.0 {
            way = (before, Way::MarkBefore);
        }
        if after < way.0 {
            way = (after, Way::MarkAfter);
        }
        let (pos, len) = match way {
            (d, Way::First) => c.forward(c.start, c.first, d)?,
            (d, Way::Last) => c.backward(c.end() - c.last, c.last, d)?,
            (d, Way::MarkBefore) => {
                let m = self.marks.get(marks_in(front, i - d))?;
                c.forward(m.pos.into(), m.len.into(), d)?
            }
            (d, Way::MarkAfter) => {
                let m = self.marks.get(marks_in(front, i + d))?;
                c.backward(m.pos.into(), m.len.into(), d)?
            }
        };
        Some((k, pos, len))
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let (k, pos, len) = self.locate(i)?;
        self.chunks.get(k)?.elem(pos, len)
    }

    /// The elements at `start..end` (clamped), in order.
    pub fn range(&self, start: usize, end: usize) -> Iter<'_> {
        let end = end.min(self.len);
        if start >= end {
            return Iter::empty();
        }
        let Some((k, pos, len)) = self.locate(start) else { return Iter::empty() };
        let Some(c) = self.chunks.get(k) else { return Iter::empty() };
        Iter { rest: self.chunks.range(k + 1..), buf: &c.buf, pos, len, left: end - start }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.range(0, self.len)
    }

    /// Keep only the elements at `start..end` (clamped): whole chunks go, and the chunk
    /// at each end is cut at an element found as `get` finds it.
    pub fn retain_range(&mut self, start: usize, end: usize) {
        let end = end.min(self.len);
        let start = start.min(end);
        if start == end {
            *self = ListValue::default();
            return;
        }
        // Both cuts are found before anything changes (a walk may start at a mark of
        // an element that goes).
        let (Some((kb, pb, lb)), Some((kf, pf, lf))) = (self.locate(end - 1), self.locate(start)) else {
            return;
        };
        let front = self.front();
        for c in self.chunks.drain(kb + 1..) {
            self.bufs -= alloc_mem(c.buf.capacity());
        }
        if let Some(c) = self.chunks.get_mut(kb) {
            if c.buf.is_char_boundary(pb + lb) {
                c.buf.truncate(pb + lb);
                c.last = lb;
            }
        }
        for c in self.chunks.drain(..kf) {
            self.bufs -= alloc_mem(c.buf.capacity());
        }
        if let Some(c) = self.chunks.front_mut() {
            (c.start, c.first) = (pf, lf);
            c.base = front.wrapping_add(start);
        }
        let (drop_front, drop_back) = (marks_in(front, start), marks_in(front.wrapping_add(end), self.len - end));
        self.marks.truncate(self.marks.len().saturating_sub(drop_back));
        self.marks.drain(..drop_front.min(self.marks.len()));
        self.len = end - start;
        self.after_pop(false);
        self.after_pop(true);
    }

    pub fn mem(&self) -> usize {
        alloc_mem(size_of::<Self>())
            + alloc_mem(self.chunks.capacity() * size_of::<Chunk>())
            + alloc_mem(self.marks.capacity() * size_of::<Mark>())
            + self.bufs
    }
}

/// Elements in order from a position, chunk by chunk.
pub struct Iter<'a> {
    /// The chunks after the current one.
    rest: std::collections::vec_deque::Iter<'a, Chunk>,
    /// The current chunk's buffer.
    buf: &'a str,
    /// The next element: its position in `buf` and its length.
    pos: usize,
    len: usize,
    left: usize,
}

impl<'a> Iter<'a> {
    fn empty() -> Iter<'a> {
        Iter { rest: Default::default(), buf: "", pos: 0, len: 0, left: 0 }
    }

    /// Step to the element after the current one.
    fn advance(&mut self) -> Option<()> {
        let next = self.pos + self.len;
        if next >= self.buf.len() {
            let c = self.rest.next()?;
            self.buf = &c.buf;
            (self.pos, self.len) = (c.start, c.first);
        } else {
            let (x, n) = sep_at(self.buf.as_bytes(), next)?;
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
        let v = self.buf.get(self.pos..self.pos + self.len);
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
