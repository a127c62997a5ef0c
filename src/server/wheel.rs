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
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::time::{Duration, Instant};

    fn fire(w: &mut Wheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.poll(now, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = Wheel::new(10, 512, 1_000);
        w.insert(1_105, 1);
        w.insert(1_100, 2);
        w.insert(1_109, 3);
        assert_eq!(w.len(), 3);
        assert!(fire(&mut w, 1_000).is_empty());
        assert!(fire(&mut w, 1_099).is_empty());
        assert_eq!(fire(&mut w, 1_100), vec![2]);
        assert!(fire(&mut w, 1_104).is_empty(), "same tick, not yet due");
        assert_eq!(fire(&mut w, 1_105), vec![1]);
        assert!(fire(&mut w, 1_108).is_empty());
        assert_eq!(fire(&mut w, 1_109), vec![3]);
        assert!(w.is_empty());
        assert!(fire(&mut w, 5_000).is_empty(), "each fires once");
    }

    #[test]
    fn past_deadlines_fire_on_next_poll() {
        let mut w = Wheel::new(10, 8, 1_000);
        w.insert(0, 1);
        w.insert(999, 2);
        w.insert(1_000, 3);
        assert_eq!(fire(&mut w, 1_000), vec![1, 2, 3]);
        // After time advanced, an overdue insert still fires on the very next poll,
        // even if that poll passes an older time.
        assert!(fire(&mut w, 5_000).is_empty());
        w.insert(4_000, 4);
        assert_eq!(w.next_deadline_ms(5_000), Some(0));
        assert_eq!(fire(&mut w, 4_500), vec![4]);
    }

    #[test]
    fn cancel_returns_value_once() {
        let mut w = Wheel::new(10, 64, 0);
        let a = w.insert(100, 1);
        let b = w.insert(100, 2);
        let c = w.insert(100, 3);
        assert_eq!(w.cancel(b), Some(2));
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.len(), 2);
        assert_eq!(fire(&mut w, 100), vec![1, 3]);
        assert_eq!(w.cancel(a), None, "already fired");
        assert_eq!(w.cancel(c), None);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_head_middle_tail_of_a_slot_list() {
        let mut w = Wheel::new(10, 4, 0);
        let ids: Vec<TimerId> = (0..5).map(|i| w.insert(50, i)).collect();
        assert_eq!(w.cancel(ids[4]), Some(4)); // list head (pushed last)
        assert_eq!(w.cancel(ids[2]), Some(2)); // middle
        assert_eq!(w.cancel(ids[0]), Some(0)); // tail
        assert_eq!(fire(&mut w, 50), vec![1, 3]);
    }

    #[test]
    fn stale_id_after_reuse_is_harmless() {
        let mut w = Wheel::new(10, 16, 0);
        let old = w.insert(10, 1);
        assert_eq!(fire(&mut w, 10), vec![1]);
        let new = w.insert(20, 2);
        assert_eq!(new.index, old.index, "entry was reused");
        assert_ne!(new, old);
        assert_eq!(w.cancel(old), None, "stale id must not cancel the new timer");
        assert_eq!(w.len(), 1);
        // Cancelled then reused.
        assert_eq!(w.cancel(new), Some(2));
        let newer = w.insert(30, 3);
        assert_eq!(newer.index, new.index);
        assert_eq!(w.cancel(new), None);
        assert_eq!(w.cancel(old), None);
        assert_eq!(fire(&mut w, 30), vec![3]);
        // An id from another wheel / out of range never panics.
        let bogus = TimerId { index: 12_345, generation: 0 };
        assert_eq!(w.cancel(bogus), None);
    }

    #[test]
    fn far_future_timers_survive_many_revolutions() {
        // 8 slots × 10 ms = 80 ms per revolution.
        let mut w = Wheel::new(10, 8, 0);
        let far = 10 * 80 + 37;
        w.insert(far, 1);
        w.insert(far + 80, 2); // same slot, one revolution later
        w.insert(5, 3);
        let mut now = 0;
        let mut fired = Vec::new();
        while now < far {
            for v in fire(&mut w, now) {
                fired.push((v, now));
            }
            now += 3;
        }
        assert_eq!(fired, vec![(3, 6)]);
        assert!(fire(&mut w, far - 1).is_empty());
        assert_eq!(fire(&mut w, far), vec![1]);
        assert!(fire(&mut w, far + 79).is_empty());
        assert_eq!(fire(&mut w, far + 80), vec![2]);
    }

    #[test]
    fn big_time_jump_is_cheap_and_exact() {
        let mut w = Wheel::new(10, 512, 0);
        w.insert(1_000, 1);
        w.insert(5_000_000, 2);
        w.insert(100_000_000_000, 3);
        let start = Instant::now();
        assert_eq!(fire(&mut w, 4_999_999), vec![1]);
        assert_eq!(fire(&mut w, 99_999_999_999), vec![2]);
        assert_eq!(w.next_deadline_ms(99_999_999_999), Some(1));
        assert_eq!(fire(&mut w, u64::MAX - 1), vec![3]);
        for i in 0..100 {
            let _ = fire(&mut w, u64::MAX / 100 * i);
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(w.is_empty());
        w.insert(u64::MAX, 4);
        assert_eq!(fire(&mut w, u64::MAX), vec![4]);
    }

    #[test]
    fn next_deadline() {
        let mut w = Wheel::new(10, 16, 0);
        assert_eq!(w.next_deadline_ms(0), None);
        let a = w.insert(500, 1);
        assert_eq!(w.next_deadline_ms(0), Some(500));
        assert_eq!(w.next_deadline_ms(123), Some(377));
        let b = w.insert(200, 2);
        assert_eq!(w.next_deadline_ms(0), Some(200));
        let c = w.insert(10_000, 3); // several revolutions ahead
        assert_eq!(w.next_deadline_ms(0), Some(200));
        assert_eq!(w.cancel(b), Some(2));
        assert_eq!(w.next_deadline_ms(0), Some(500));
        assert_eq!(w.next_deadline_ms(600), Some(0), "overdue");
        assert_eq!(fire(&mut w, 500), vec![1]);
        assert_eq!(w.next_deadline_ms(500), Some(9_500), "beyond one revolution");
        assert_eq!(w.cancel(a), None);
        w.insert(10_003, 4);
        w.insert(9_999, 5);
        assert_eq!(w.next_deadline_ms(500), Some(9_499));
        assert_eq!(fire(&mut w, 9_999), vec![5]);
        assert_eq!(w.next_deadline_ms(9_999), Some(1));
        assert_eq!(w.cancel(c), Some(3));
        assert_eq!(w.next_deadline_ms(9_999), Some(4));
        assert_eq!(fire(&mut w, 10_003), vec![4]);
        assert_eq!(w.next_deadline_ms(10_003), None);
        // Overdue insert after time moved on.
        w.insert(1, 6);
        assert_eq!(w.next_deadline_ms(10_003), Some(0));
    }

    #[test]
    fn next_deadline_prefers_earlier_tick_in_later_slot() {
        // Slot order must not be confused with time order after wrapping.
        let mut w = Wheel::new(10, 8, 0);
        assert!(fire(&mut w, 60).is_empty()); // cur_tick = 6
        w.insert(75, 1); // tick 7, slot 7
        w.insert(85, 2); // tick 8, slot 0
        w.insert(5, 3); // overdue, slot 6
        w.insert(65, 4); // tick 6, slot 6
        let _ = w.next_deadline_ms(60);
        assert_eq!(w.cancel(TimerId { index: 2, generation: 0 }), Some(3));
        assert_eq!(w.cancel(TimerId { index: 3, generation: 0 }), Some(4));
        // Tick 7 (slot 7) is earlier than tick 8 (slot 0).
        assert_eq!(w.next_deadline_ms(60), Some(15));
    }

    #[test]
    fn time_going_backwards_does_not_refire_or_panic() {
        let mut w = Wheel::new(10, 8, 1_000);
        w.insert(1_200, 1);
        assert!(fire(&mut w, 1_150).is_empty());
        assert!(fire(&mut w, 500).is_empty());
        assert_eq!(fire(&mut w, 1_200), vec![1]);
        let mut w: Wheel<u32> = Wheel::new(10, 8, 1_000);
        w.insert(1_005, 1);
        assert!(fire(&mut w, 0).is_empty());
        assert_eq!(fire(&mut w, 1_005), vec![1]);
    }

    #[test]
    fn odd_parameters() {
        let mut w = Wheel::new(0, 0, 0);
        w.insert(3, 1);
        w.insert(1, 2);
        assert_eq!(w.next_deadline_ms(0), Some(1));
        assert_eq!(fire(&mut w, 1), vec![2]);
        assert_eq!(fire(&mut w, 3), vec![1]);
        let mut w = Wheel::new(7, 100, 0); // rounded up to 128 slots
        assert_eq!(w.heads.len(), 128);
        w.insert(7 * 1_000, 1);
        assert!(fire(&mut w, 6_999).is_empty());
        assert_eq!(fire(&mut w, 7_000), vec![1]);
    }

    #[test]
    fn hundred_thousand_timers() {
        let start = Instant::now();
        let mut w = Wheel::new(10, 512, 0);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ids = Vec::new();
        let mut deadline = HashMap::new();
        for i in 0..100_000u32 {
            let at = rng.next() % 120_000; // up to 2 minutes: many revolutions
            ids.push(w.insert(at, i));
            deadline.insert(i, at);
        }
        assert_eq!(w.len(), 100_000);
        let mut cancelled = HashSet::new();
        for (i, id) in ids.iter().enumerate().step_by(2) {
            assert_eq!(w.cancel(*id), Some(i as u32));
            cancelled.insert(i as u32);
        }
        assert_eq!(w.len(), 50_000);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut now = 0;
        while now <= 121_000 {
            out.clear();
            w.poll(now, &mut out);
            for &v in &out {
                let at = deadline.get(&v).copied().unwrap_or(u64::MAX);
                assert!(at <= now, "fired early");
                assert!(at + 7 > now, "fired late: at {at}, now {now}");
                assert!(!cancelled.contains(&v));
                assert!(seen.insert(v), "fired twice");
            }
            if let Some(d) = w.next_deadline_ms(now) {
                assert!(d > 0);
            }
            now += 7;
        }
        assert_eq!(seen.len(), 50_000);
        assert!(w.is_empty());
        // Slab entries were all recycled: re-inserting does not grow it.
        let cap = w.entries.len();
        for i in 0..100_000 {
            w.insert(200_000 + u64::from(i), i);
        }
        assert_eq!(w.entries.len(), cap);
        assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random operations against a trivially correct model.
    #[test]
    fn matches_reference_model() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for round in 0..20 {
            let slots = [1usize, 2, 8, 64][round % 4];
            let tick = [1u64, 10, 33][round % 3];
            let origin = rng.next() % 10_000;
            let mut w = Wheel::new(tick, slots, origin);
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut ids: Vec<(TimerId, u32)> = Vec::new();
            let mut now = origin;
            for step in 0..3_000u32 {
                match rng.next() % 10 {
                    0..=3 => {
                        let span = [50u64, 1_000, 100_000][(rng.next() % 3) as usize];
                        let at = (now + rng.next() % span).saturating_sub(span / 10);
                        ids.push((w.insert(at, step), step));
                        model.insert(step, at);
                    }
                    4 | 5 => {
                        if !ids.is_empty() {
                            let k = (rng.next() % ids.len() as u64) as usize;
                            let (id, v) = ids[k];
                            let expect = model.remove(&v).map(|_| v);
                            assert_eq!(w.cancel(id), expect);
                        }
                    }
                    _ => {
                        let jump = match rng.next() % 20 {
                            0 => rng.next() % 1_000_000,
                            1 => 0,
                            _ => rng.next() % 100,
                        };
                        // Occasionally pass a time in the past.
                        let t = if rng.next().is_multiple_of(30) {
                            now.saturating_sub(50)
                        } else {
                            now += jump;
                            now
                        };
                        let mut out = Vec::new();
                        w.poll(t, &mut out);
                        out.sort_unstable();
                        let due: Vec<u32> = model.iter().filter(|&(_, &at)| at <= now).map(|(&v, _)| v).collect();
                        assert_eq!(out, due, "round {round} step {step}");
                        for v in &due {
                            model.remove(v);
                        }
                    }
                }
                assert_eq!(w.len(), model.len());
                let want = model.values().min().map(|&at| at.saturating_sub(now));
                assert_eq!(w.next_deadline_ms(now), want, "round {round} step {step}");
            }
        }
    }
}
