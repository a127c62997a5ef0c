//! Hashed timing wheel for the reactor's timers (heartbeats, liveness checks, handshake
//! and close deadlines).
//!
//! # Why a wheel
//! With 10k+ connections each holding a few timers that are re-armed on nearly every
//! message, timers must be cheap to insert and to cancel. A binary heap makes cancel
//! O(n) or leaves tombstones behind; a hashed wheel makes both O(1): a timer due at
//! tick `t` hangs off slot `t mod slots`, in an intrusive doubly linked list threaded
//! through a slab of entries, so cancel simply unlinks the entry.
//!
//! A timer further away than one revolution (`slots × tick_ms`) goes into the same slot
//! as its tick modulo the wheel size; it keeps its absolute deadline, and each time its
//! slot comes round it is re-checked and stays put until that deadline has passed. So the
//! wheel has no upper bound on deadlines, and firing is exact to the millisecond: a timer
//! never fires before its `at_ms`, however coarse the tick.
//!
//! # Why generations
//! Entries live in a slab (a `Vec` with a free list) and are reused. A [`TimerId`] names
//! the slab index *and* the generation the entry had when the timer was inserted; the
//! generation is bumped whenever the entry is freed. A handle kept by a connection that
//! has since closed, or for a timer that already fired, therefore no longer matches and
//! [`Wheel::cancel`] with it is a harmless no-op — it can never cancel an unrelated timer
//! that now occupies the reused entry.
//!
//! # Time
//! Pure: no clock reads. The caller passes `now_ms` (from a monotonic clock) to
//! [`Wheel::new`], [`Wheel::poll`] and [`Wheel::next_deadline_ms`]. If time jumps far
//! ahead, `poll` visits each slot at most once instead of every elapsed tick, so the work
//! is bounded by `min(elapsed ticks, slots)` plus the entries examined.

use std::cell::Cell;

/// Marks the end of a slot list / the free list.
const NIL: usize = usize::MAX;

/// Handle to a scheduled timer: slab index plus the generation it was issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: usize,
    generation: u32,
}

struct Entry<T> {
    /// Bumped every time the entry is freed, so old handles stop matching. Wraps after
    /// 2^32 reuses of one entry, which no realistic run reaches.
    generation: u32,
    /// Absolute deadline.
    at_ms: u64,
    /// Slot whose list this entry is on (meaningless while free).
    slot: usize,
    /// Neighbours in the slot list; `next` doubles as the free-list link.
    prev: usize,
    next: usize,
    /// `Some` while the timer is pending.
    value: Option<T>,
}

/// Cached answer for [`Wheel::next_deadline_ms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MinCache {
    /// Must be recomputed.
    Stale,
    /// The earliest pending deadline (`None` when the wheel is empty).
    Known(Option<u64>),
}

/// A hashed timing wheel holding values of type `T` (e.g. a connection token and the
/// timer's purpose).
pub struct Wheel<T> {
    tick_ms: u64,
    /// `slots - 1`; `slots` is a power of two.
    mask: u64,
    /// Time of tick 0.
    origin_ms: u64,
    /// Tick of the latest `poll` (its slot is revisited on the next poll).
    cur_tick: u64,
    /// Latest `now_ms` given to `poll` (monotone).
    last_now_ms: u64,
    /// Head entry of each slot's list.
    heads: Vec<usize>,
    entries: Vec<Entry<T>>,
    free_head: usize,
    len: usize,
    min_cache: Cell<MinCache>,
}

impl<T> Wheel<T> {
    /// `tick_ms`: granularity in ms (we use 10; 0 is treated as 1). `slots`: number of
    /// slots, rounded up to a power of two (at least 1; e.g. 512). `now_ms` is the clock
    /// origin; deadlines before it fire on the first poll.
    pub fn new(tick_ms: u64, slots: usize, now_ms: u64) -> Self {
        let slots = slots.max(1).checked_next_power_of_two().unwrap_or(1 << 16);
        Wheel {
            tick_ms: tick_ms.max(1),
            mask: (slots as u64).saturating_sub(1),
            origin_ms: now_ms,
            cur_tick: 0,
            last_now_ms: now_ms,
            heads: vec![NIL; slots],
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            min_cache: Cell::new(MinCache::Known(None)),
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tick_of(&self, at_ms: u64) -> u64 {
        at_ms.saturating_sub(self.origin_ms) / self.tick_ms
    }

    /// The tick whose slot holds a timer due at `at_ms`: overdue timers go to the current
    /// tick, which the next poll always visits.
    fn effective_tick(&self, at_ms: u64) -> u64 {
        self.tick_of(at_ms).max(self.cur_tick)
    }

    fn slot_of_tick(&self, tick: u64) -> usize {
        // The mask keeps the value below `heads.len()`, which is a usize.
        (tick & self.mask) as usize
    }

    /// Schedules `value` to fire at absolute time `at_ms` (if already past, it fires on
    /// the next poll). O(1) amortised.
    pub fn insert(&mut self, at_ms: u64, value: T) -> TimerId {
        let slot = self.slot_of_tick(self.effective_tick(at_ms));
        let reused = self.free_head;
        let (index, generation) = match self.entries.get_mut(reused) {
            Some(e) => {
                self.free_head = e.next;
                e.at_ms = at_ms;
                e.value = Some(value);
                (reused, e.generation)
            }
            None => {
                self.entries.push(Entry { generation: 0, at_ms, slot, prev: NIL, next: NIL, value: Some(value) });
                (self.entries.len() - 1, 0)
            }
        };
        self.link(index, slot);
        self.len += 1;
        if let MinCache::Known(min) = self.min_cache.get() {
            let min = Some(min.map_or(at_ms, |m| m.min(at_ms)));
            self.min_cache.set(MinCache::Known(min));
        }
        TimerId { index, generation }
    }

    /// Cancels a pending timer, returning its value. O(1). A stale handle (timer already
    /// fired or cancelled, entry possibly reused by another timer) returns `None` and
    /// changes nothing.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let e = self.entries.get(id.index)?;
        if e.generation != id.generation || e.value.is_none() {
            return None;
        }
        let at_ms = e.at_ms;
        self.unlink(id.index);
        let value = self.release(id.index);
        if self.min_cache.get() == MinCache::Known(Some(at_ms)) {
            self.min_cache.set(MinCache::Stale);
        }
        if self.len == 0 {
            self.min_cache.set(MinCache::Known(None));
        }
        value
    }

    /// Advances the wheel to `now_ms` and pushes every value with `at_ms <= now_ms` into
    /// `out`, each exactly once, in no particular order. A `now_ms` earlier than a
    /// previous poll is treated as that poll's time.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<T>) {
        let now_ms = now_ms.max(self.last_now_ms);
        let target = self.tick_of(now_ms).max(self.cur_tick);
        let before = self.len;
        if target - self.cur_tick >= self.mask {
            // At least a whole revolution elapsed: every slot, once.
            for slot in 0..self.heads.len() {
                self.expire_slot(slot, now_ms, out);
            }
        } else {
            // The current tick's slot is revisited: it may hold timers that were not yet
            // due at the last poll, or were inserted overdue since.
            for tick in self.cur_tick..=target {
                self.expire_slot(self.slot_of_tick(tick), now_ms, out);
            }
        }
        self.cur_tick = target;
        self.last_now_ms = now_ms;
        if self.len != before {
            self.min_cache.set(if self.len == 0 { MinCache::Known(None) } else { MinCache::Stale });
        }
    }

    /// Milliseconds from `now_ms` until the earliest pending deadline (0 if overdue),
    /// `None` if no timer is pending. Meant as the poll timeout.
    ///
    /// The earliest deadline is cached; the cache is updated by `insert` and invalidated
    /// only when the earliest timer is cancelled or timers fire. Recomputing walks the
    /// slots in tick order from the current tick and stops at the first tick holding a
    /// timer of the current revolution, falling back to a scan of all entries when every
    /// timer is more than a revolution away: O(slots + entries) at worst, once per
    /// invalidation.
    pub fn next_deadline_ms(&self, now_ms: u64) -> Option<u64> {
        let min = match self.min_cache.get() {
            MinCache::Known(min) => min,
            MinCache::Stale => {
                let min = self.compute_min();
                self.min_cache.set(MinCache::Known(min));
                min
            }
        };
        min.map(|at| at.saturating_sub(now_ms))
    }

    fn compute_min(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        for tick in self.cur_tick..self.cur_tick.saturating_add(self.mask + 1) {
            let mut best: Option<u64> = None;
            let mut cur = self.heads.get(self.slot_of_tick(tick)).copied().unwrap_or(NIL);
            while let Some(e) = self.entries.get(cur) {
                if self.effective_tick(e.at_ms) == tick {
                    best = Some(best.map_or(e.at_ms, |b| b.min(e.at_ms)));
                }
                cur = e.next;
            }
            // Every timer with an earlier effective tick was seen in an earlier slot, and
            // every timer with a later one is due no earlier than the next tick starts.
            if best.is_some() {
                return best;
            }
        }
        self.entries.iter().filter(|e| e.value.is_some()).map(|e| e.at_ms).min()
    }

    /// Fires every due timer on `slot`'s list; timers of later revolutions stay.
    fn expire_slot(&mut self, slot: usize, now_ms: u64, out: &mut Vec<T>) {
        let mut cur = self.heads.get(slot).copied().unwrap_or(NIL);
        while let Some(e) = self.entries.get(cur) {
            let next = e.next;
            if e.at_ms <= now_ms {
                self.unlink(cur);
                if let Some(v) = self.release(cur) {
                    out.push(v);
                }
            }
            cur = next;
        }
    }

    /// Pushes entry `index` at the head of `slot`'s list.
    fn link(&mut self, index: usize, slot: usize) {
        let Some(head) = self.heads.get_mut(slot) else {
            return;
        };
        let old = std::mem::replace(head, index);
        if let Some(h) = self.entries.get_mut(old) {
            h.prev = index;
        }
        if let Some(e) = self.entries.get_mut(index) {
            e.slot = slot;
            e.prev = NIL;
            e.next = old;
        }
    }

    /// Removes entry `index` from its slot's list.
    fn unlink(&mut self, index: usize) {
        let Some(e) = self.entries.get(index) else {
            return;
        };
        let (prev, next, slot) = (e.prev, e.next, e.slot);
        match self.entries.get_mut(prev) {
            Some(p) => p.next = next,
            None => {
                if let Some(h) = self.heads.get_mut(slot) {
                    *h = next;
                }
            }
        }
        if let Some(n) = self.entries.get_mut(next) {
            n.prev = prev;
        }
    }

    /// Frees an (already unlinked) entry: bumps its generation, puts it on the free list
    /// and returns its value.
    fn release(&mut self, index: usize) -> Option<T> {
        let e = self.entries.get_mut(index)?;
        let value = e.value.take();
        e.generation = e.generation.wrapping_add(1);
        e.prev = NIL;
        e.next = self.free_head;
        self.free_head = index;
        if value.is_some() {
            self.len -= 1;
        }
        value
    }
}

impl<T> std::fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("tick_ms", &self.tick_ms)
            .field("slots", &self.heads.len())
            .field("cur_tick", &self.cur_tick)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
