use super::*;
use std::collections::VecDeque;

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// A value: mostly short (the case the packing is for), some across the one-byte
/// separator limit, a few longer than a chunk; ASCII and multi-byte UTF-8.
fn value(r: &mut Rng, i: u64, short: bool) -> String {
    let len = match if short { 0 } else { r.below(100) } {
        0..=69 => r.below(24),
        70..=89 => 100 + r.below(200),
        90..=97 => r.below(2000),
        _ => CHUNK_MAX as u64 - 10 + r.below(40),
    } as usize;
    let unit = if i.is_multiple_of(3) { "é" } else { "x" };
    let mut s = format!("{i}:");
    while s.len() < len {
        s.push_str(unit);
    }
    s
}

/// Every structural invariant, and the contents against the model.
fn check(l: &ListValue, model: &VecDeque<String>) {
    assert_eq!(l.len(), model.len());
    assert_eq!(l.is_empty(), model.is_empty());
    let mut total = 0;
    let mut bufs = 0;
    let mut marks = Vec::new();
    let k_last = l.chunks.len().saturating_sub(1);
    for (k, c) in l.chunks.iter().enumerate() {
        let n = l.count(k);
        assert!(n >= 1, "empty chunk {k}");
        assert!(c.start <= c.end() && c.end() <= c.buf.capacity());
        assert!(c.buf.is_char_boundary(c.start));
        // Forward and backward walks agree on the ends, and every element is in turn.
        assert_eq!(c.forward(c.start, c.first, n - 1), Some((c.end() - c.last, c.last)));
        assert_eq!(c.backward(c.end() - c.last, c.last, n - 1), Some((c.start, c.first)));
        for j in 0..n {
            let (pos, len) = c.forward(c.start, c.first, j).unwrap_or((usize::MAX, 0));
            if c.base.wrapping_add(j) % MARK_EVERY == 0 {
                marks.push(Mark::new(pos, len));
            }
        }
        assert_eq!(c.single(), n == 1);
        assert!(c.used() <= CHUNK_MAX || n == 1, "chunk {k} over size with {n} elements");
        if k > 0 && k < k_last {
            // A closed chunk keeps at most an eighth of slack, and is not small unless
            // a long neighbour closed it.
            let cap = c.buf.capacity();
            assert!(cap - c.used() <= cap / 8 + 16, "slack in chunk {k}");
            let neighbour = l.chunks[k - 1].last.max(l.chunks[k + 1].first);
            assert!(c.used() + 10 + neighbour > CHUNK_MAX * 3 / 4 * 7 / 8, "small chunk {k}");
        }
        total += n;
        bufs += alloc_mem(c.buf.capacity());
    }
    assert_eq!(total, l.len);
    assert_eq!(bufs, l.bufs, "heap bytes of the buffers");
    assert_eq!(marks_in(l.front(), l.len), marks.len());
    assert_eq!(l.marks.iter().copied().collect::<Vec<_>>(), marks, "marks");
    assert!(l.iter().eq(model.iter().map(String::as_str)));
    assert_eq!(l.iter().size_hint(), (model.len(), Some(model.len())));
}

/// Redis's inclusive start..=stop with negative indices, as `cmd::list` converts it.
fn span(start: i64, stop: i64, len: usize) -> (usize, usize) {
    let n = len as i64;
    let start = if start < 0 { (start + n).max(0) } else { start };
    let stop = if stop < 0 { stop + n } else { stop.min(n - 1) };
    if start > stop || start >= n {
        (0, 0)
    } else {
        (start as usize, stop as usize + 1)
    }
}

fn model_range(model: &VecDeque<String>, s: usize, e: usize) -> Vec<&str> {
    let e = e.min(model.len());
    model.iter().skip(s).take(e.saturating_sub(s)).map(String::as_str).collect()
}

fn random_ops(seed: u64, steps: usize, short: bool) {
    let mut r = Rng(seed);
    let mut l = ListValue::default();
    let mut model: VecDeque<String> = VecDeque::new();
    // Phases bias the mix: grow, drain, queue (push back, pop front), stack, both ends.
    for step in 0..steps {
        let phase = (step / (steps / 12)) % 5;
        let op = r.below(100);
        let push_weight = match phase {
            0 => 80,
            1 => 25,
            _ => 50,
        };
        if op < push_weight {
            let v = value(&mut r, step as u64, short);
            let front = match phase {
                2 => false,
                3 => false,
                _ => r.below(2) == 0,
            };
            if front {
                l.push_front(&v);
                model.push_front(v);
            } else {
                l.push_back(&v);
                model.push_back(v);
            }
        } else if op < 80 {
            let front = match phase {
                2 => true,
                3 => false,
                _ => r.below(2) == 0,
            };
            let (a, b) = if front { (l.pop_front(), model.pop_front()) } else { (l.pop_back(), model.pop_back()) };
            assert_eq!(a.as_deref(), b.as_deref());
        } else if op < 90 {
            let n = model.len() as i64;
            let i = r.below(2 * n as u64 + 3) as i64 - n - 1;
            let at = if i < 0 { i + n } else { i };
            let want = usize::try_from(at).ok().and_then(|at| model.get(at)).map(String::as_str);
            assert_eq!(usize::try_from(at).ok().and_then(|at| l.get(at)), want, "index {i}");
        } else if op < 97 {
            let n = model.len() as u64;
            let start = r.below(2 * n + 5) as i64 - n as i64 - 2;
            let stop = r.below(2 * n + 5) as i64 - n as i64 - 2;
            let (s, e) = span(start, stop, model.len());
            assert!(l.range(s, e).eq(model_range(&model, s, e)), "range {start} {stop}");
        } else if op < 98 {
            let n = model.len() as u64;
            let start = r.below(n / 4 + 2) as i64 - 1;
            let stop = r.below(n / 4 + 2) as i64 - (n / 4) as i64 - 1;
            let (s, e) = span(start, stop, model.len());
            l.retain_range(s, e);
            let kept: VecDeque<String> = model_range(&model, s, e).into_iter().map(String::from).collect();
            model = kept;
        }
        if step % 50 == 0 || model.len() < 5 {
            check(&l, &model);
        }
    }
    check(&l, &model);
}

#[test]
fn model_random_seeds() {
    for seed in 1..=12u64 {
        random_ops(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 6000, false);
    }
    // Only short values: thousands of elements, full chunks of hundreds, long walks.
    for seed in 1..=3u64 {
        random_ops(seed.wrapping_mul(0x2545_F491_4F6C_DD1D), 40_000, true);
    }
}

#[test]
fn separators_read_from_both_ends() {
    for x in [0, 1, 119, 120, 0x7f, 0x80, 0xff, 0x3fff, 0x4000, 0xffff, 1 << 32, (1 << 56) - 1] {
        let mut out = [0; 10];
        let sep = sep_str(x, &mut out).map(String::from).unwrap_or_default();
        assert_eq!(sep.len(), sep_len(x));
        assert!(sep.is_ascii());
        let buf = format!("é{sep}é");
        assert_eq!(sep_at(buf.as_bytes(), 2), Some((x, sep.len())), "{x}");
        assert_eq!(sep_before(buf.as_bytes(), 2 + sep.len()), Some((x, sep.len())), "{x}");
    }
    // More than 56 bits is refused (no string in memory is that long).
    assert_eq!(sep_str(usize::MAX, &mut [0; 10]), None);
    // Cut short: nothing, no panic.
    let mut out = [0; 10];
    let sep = sep_str(1 << 40, &mut out).map(|s| s.as_bytes().to_vec()).unwrap_or_default();
    assert_eq!(sep.len(), 8);
    assert_eq!(sep_at(&sep[..3], 0), None);
    assert_eq!(sep_before(&sep[2..], sep.len() - 2), None);
    assert_eq!(sep_before(&sep, 0), None);
    assert_eq!(marks_in(usize::MAX, 0), 0);
    assert_eq!(marks_in(0, 1), 1);
    assert_eq!(marks_in(1, 32), 1);
    assert_eq!(marks_in(1, 31), 0);
    assert_eq!(marks_in(usize::MAX - 31, 100), 4);
}

#[test]
fn any_index_is_safe() {
    let mut l = ListValue::default();
    assert_eq!(l.get(0), None);
    assert_eq!(l.range(0, usize::MAX).count(), 0);
    assert_eq!(l.pop_back(), None);
    assert_eq!(l.pop_front(), None);
    l.retain_range(3, 1);
    for i in 0..1000 {
        l.push_back(&format!("{i}"));
    }
    assert_eq!(l.get(usize::MAX), None);
    assert_eq!(l.get(1000), None);
    assert_eq!(l.get(999), Some("999"));
    assert_eq!(l.range(usize::MAX, usize::MAX).count(), 0);
    assert_eq!(l.range(5, 2).count(), 0);
    assert_eq!(l.range(990, usize::MAX).count(), 10);
    l.retain_range(usize::MAX, 0);
    assert!(l.is_empty());
    assert_eq!(l.bufs, 0);
}

#[test]
fn packs_short_values() {
    // The memory.sh data set: 1000 values of 16 bytes.
    let mut l = ListValue::default();
    for i in 0..1000 {
        l.push_back(&format!("el:{i:013}"));
    }
    let per = l.mem() as f64 / 1000.0;
    assert!(per < 18.0, "{per} bytes per element");
    // Small lists pay for what they hold, not for a chunk.
    let mut s = ListValue::default();
    s.push_back("a");
    assert!(s.mem() <= 192, "{}", s.mem());
    s.push_front("b");
    s.push_back("c");
    assert!(s.mem() <= 224, "{}", s.mem());
    assert!(s.marks.capacity() == 0);
    assert!(s.iter().eq(["b", "a", "c"]));
}

#[test]
fn front_pushes_write_over_popped_multibyte_characters() {
    let mut l = ListValue::default();
    l.push_back("z");
    l.push_front("ééééé");
    assert_eq!(l.pop_front().as_deref(), Some("ééééé"));
    // Ends at an odd offset inside the popped bytes, then starts inside them.
    l.push_front("ab");
    l.push_front("c");
    assert!(l.iter().eq(["c", "ab", "z"]));
    l.push_front("€");
    assert!(l.iter().eq(["€", "c", "ab", "z"]));
}

#[test]
fn long_values_get_their_own_chunk() {
    let big = "y".repeat(3 * CHUNK_MAX);
    let mut l = ListValue::default();
    let mut model = VecDeque::new();
    for i in 0..10 {
        let v = if i % 2 == 0 { big.clone() } else { format!("small {i}") };
        l.push_back(&v);
        model.push_back(v.clone());
        l.push_front(&v);
        model.push_front(v);
    }
    check(&l, &model);
    assert_eq!(l.get(0).map(str::len), Some("small 9".len()));
    l.retain_range(3, 17);
    let model: VecDeque<String> = model.into_iter().skip(3).take(14).collect();
    check(&l, &model);
}

/// Bytes moved by `relocate` per byte pushed stay bounded whatever the pattern: no
/// ping-pong between the two ends of a chunk, no compaction on every push.
#[test]
fn pushes_are_amortized() {
    type Op = fn(&mut ListValue, usize);
    let patterns: [(&str, Op); 5] = [
        // One chunk growing and draining at both ends: each side keeps room.
        ("alternate ends in one chunk", |l, i| {
            if (i / 200) % 2 == 0 {
                if i % 2 == 0 {
                    l.push_back("value-of-16bytes")
                } else {
                    l.push_front("value-of-16bytes")
                }
            } else if i % 2 == 0 {
                l.pop_back();
            } else {
                l.pop_front();
            }
        }),
        (
            "alternate ends",
            |l, i| if i % 2 == 0 { l.push_back("value-of-16bytes") } else { l.push_front("value-of-16bytes") },
        ),
        ("queue", |l, i| {
            l.push_back("value-of-16bytes");
            if i > 400 {
                l.pop_front();
            }
        }),
        ("queue reversed", |l, i| {
            l.push_front("value-of-16bytes");
            if i > 450 {
                l.pop_back();
            }
        }),
        ("stack", |l, i| {
            l.push_back("value-of-16bytes");
            if i % 3 == 0 {
                l.pop_back();
            }
        }),
    ];
    for (name, op) in patterns {
        let mut l = ListValue::default();
        MOVED.with(|m| m.set(0));
        let n = 200_000;
        for i in 0..n {
            op(&mut l, i);
        }
        let moved = MOVED.with(|m| m.get());
        assert!(moved <= 8 * 17 * n, "{name}: {moved} bytes moved for {n} pushes");
    }
}

#[test]
fn a_drained_list_gives_memory_back() {
    let mut l = ListValue::default();
    for i in 0..100_000 {
        l.push_back(&format!("el:{i:013}"));
    }
    let full = l.mem();
    while l.len() > 10 {
        l.pop_front();
    }
    assert!(l.mem() < 1024, "{} of {full}", l.mem());
    for i in 0..100_000 {
        l.push_front(&format!("el:{i:013}"));
    }
    while l.len() > 10 {
        l.pop_back();
    }
    assert!(l.mem() < 1024, "{}", l.mem());
    // A steady queue stays near its length's worth.
    for i in 0..100_000 {
        l.push_back(&format!("el:{i:013}"));
        l.pop_front();
    }
    assert!(l.mem() < 20 * 1024, "{}", l.mem());
}
