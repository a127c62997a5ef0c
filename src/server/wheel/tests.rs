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
