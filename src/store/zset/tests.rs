use super::*;
use std::cmp::Ordering;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn cmp_key(a: &(String, f64), b: &(String, f64)) -> Ordering {
    a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
}

/// Naive model: sorted Vec.
#[derive(Default)]
struct Model {
    v: Vec<(String, f64)>,
}

impl Model {
    fn pos(&self, m: &str) -> Option<usize> {
        self.v.iter().position(|e| e.0 == m)
    }
    fn insert(&mut self, m: &str, s: f64) -> bool {
        if let Some(p) = self.pos(m) {
            if self.v[p].1 == s {
                return false;
            }
            self.v.remove(p);
            self.ins(m, s);
            false
        } else {
            self.ins(m, s);
            true
        }
    }
    fn ins(&mut self, m: &str, s: f64) {
        let e = (m.to_string(), s);
        let at = self.v.partition_point(|x| cmp_key(x, &e) == Ordering::Less);
        self.v.insert(at, e);
    }
    fn remove(&mut self, m: &str) -> bool {
        match self.pos(m) {
            Some(p) => {
                self.v.remove(p);
                true
            }
            None => false,
        }
    }
    fn rank(&self, m: &str, rev: bool) -> Option<usize> {
        self.pos(m).map(|p| if rev { self.v.len() - 1 - p } else { p })
    }
    fn range_by_rank(&self, start: i64, stop: i64, rev: bool) -> Vec<(String, f64)> {
        let len = self.v.len() as i64;
        let mut start = if start < 0 { start + len } else { start };
        let mut stop = if stop < 0 { stop + len } else { stop };
        if start < 0 {
            start = 0;
        }
        if start > stop || start >= len {
            return vec![];
        }
        if stop >= len {
            stop = len - 1;
        }
        let mut v = self.v.clone();
        if rev {
            v.reverse();
        }
        v[start as usize..=stop as usize].to_vec()
    }
    fn range_by_score(
        &self,
        min: ScoreBound,
        max: ScoreBound,
        off: usize,
        lim: Option<usize>,
        rev: bool,
    ) -> Vec<(String, f64)> {
        let mut v: Vec<_> =
            self.v.iter().filter(|e| min.admits_from_below(e.1) && max.admits_from_above(e.1)).cloned().collect();
        if rev {
            v.reverse();
        }
        v.into_iter().skip(off).take(lim.unwrap_or(usize::MAX)).collect()
    }
}

fn owned(v: Vec<(&str, f64)>) -> Vec<(String, f64)> {
    v.into_iter().map(|(m, s)| (m.to_string(), s)).collect()
}

/// Verify every structural invariant (spans, prev links, tail, table,
/// memory accounting).
fn check(z: &ZSet) {
    if z.len == 0 {
        assert_eq!(z.iter().count(), 0);
        return;
    }
    // Level 0 walk: ranks, order, prev.
    let mut rank_of = std::collections::HashMap::new();
    let mut x = z.lvl(HEAD, 0).next;
    let mut prev = NIL;
    let mut r = 0usize;
    let mut last_key: Option<(f64, Vec<u8>)> = None;
    let mut heap = 0;
    while x != NIL {
        r += 1;
        let n = &z.nodes[x as usize];
        assert_eq!(n.prev, prev);
        if let Some((s, m)) = &last_key {
            assert!(*s < n.score || (*s == n.score && m.as_slice() < n.member.bytes()));
        }
        last_key = Some((n.score, n.member.bytes().to_vec()));
        heap += n.member.heap_bytes();
        rank_of.insert(x, r);
        prev = x;
        x = n.level0.next;
    }
    assert_eq!(r, z.len);
    assert_eq!(z.tail, prev);
    assert_eq!(heap, z.member_heap);
    rank_of.insert(HEAD, 0);
    // Upper levels: spans equal rank differences.
    for i in 0..z.level {
        let mut x = HEAD;
        loop {
            let l = z.lvl(x, i);
            if l.next == NIL {
                break;
            }
            assert_eq!(rank_of[&l.next] - rank_of[&x], l.span as usize, "level {i}");
            assert_eq!(l.score.to_bits(), z.nodes[l.next as usize].score.to_bits(), "cached score, level {i}");
            if i > 0 {
                assert_eq!(l.up, z.nodes[l.next as usize].upper, "cached up, level {i}");
            }
            x = l.next;
        }
    }
    assert!(z.level == 1 || z.lvl(HEAD, z.level - 1).next != NIL);
    // Table.
    let used = z.slots.iter().filter(|&&s| slot_index(s) != NIL).count();
    assert_eq!(used, z.len);
    for (m, _) in z.iter() {
        let h = z.hash(m.as_bytes());
        let (_, idx) = z.find(m.as_bytes(), h).expect("member in table");
        assert_eq!(z.nodes[idx as usize].member.as_str(), m);
    }
}

#[test]
fn node_is_compact() {
    assert_eq!(size_of::<Member>(), 24);
    assert_eq!(size_of::<Level>(), 24);
    assert_eq!(size_of::<L0>(), 16);
    assert_eq!(size_of::<Node>(), 56);
}

#[test]
fn basics_and_ties() {
    let mut z = ZSet::new();
    assert!(z.is_empty());
    assert_eq!(z.mem_bytes(), 0);
    assert!(z.insert("b", 1.0));
    assert!(z.insert("a", 1.0));
    assert!(z.insert("c", 0.5));
    assert!(!z.insert("c", 0.5));
    assert_eq!(z.len(), 3);
    let all: Vec<_> = z.iter().collect();
    assert_eq!(all, vec![("c", 0.5), ("a", 1.0), ("b", 1.0)]);
    assert_eq!(z.rank("a", false), Some(1));
    assert_eq!(z.rank("a", true), Some(1));
    assert_eq!(z.rank("c", true), Some(2));
    assert_eq!(z.rank("zz", false), None);
    assert_eq!(z.score("b"), Some(1.0));
    // Update changing order.
    assert!(!z.insert("c", 2.0));
    assert_eq!(z.range_by_rank(0, -1, false), vec![("a", 1.0), ("b", 1.0), ("c", 2.0)]);
    assert_eq!(z.range_by_rank(0, -1, true), vec![("c", 2.0), ("b", 1.0), ("a", 1.0)]);
    assert_eq!(z.range_by_rank(-2, -1, false), vec![("b", 1.0), ("c", 2.0)]);
    assert_eq!(z.range_by_rank(-100, 0, false), vec![("a", 1.0)]);
    assert_eq!(z.range_by_rank(3, 10, false), vec![]);
    assert_eq!(z.range_by_rank(2, 1, false), vec![]);
    assert_eq!(z.range_by_rank(1, 100, true), vec![("b", 1.0), ("a", 1.0)]);
    check(&z);
    // NaN rejected.
    assert!(!z.insert("n", f64::NAN));
    assert_eq!(z.try_insert("n", f64::NAN), None);
    assert_eq!(z.try_insert("a", f64::NAN), None);
    assert_eq!(z.score("a"), Some(1.0));
    assert_eq!(z.len(), 3);
    assert!(z.remove("a"));
    assert!(!z.remove("a"));
    assert!(z.remove("b"));
    assert!(z.remove("c"));
    assert!(z.is_empty());
    assert_eq!(z.mem_bytes(), 0);
    assert!(z.insert("x", -1.0));
    check(&z);
}

#[test]
fn long_members_and_unicode() {
    let mut z = ZSet::new();
    let long = "x".repeat(100);
    let uni = "héllo-wörld-ünïcödé-ßtring";
    assert!(z.insert(&long, 1.0));
    assert!(z.insert(uni, 1.0));
    assert!(z.insert("", 1.0));
    assert!(z.insert("1234567890123456789012", 1.0)); // exactly inline cap
    assert_eq!(z.score(&long), Some(1.0));
    assert_eq!(z.score(uni), Some(1.0));
    assert_eq!(z.score(""), Some(1.0));
    let all: Vec<_> = z.iter().map(|e| e.0.to_string()).collect();
    let mut sorted = vec![long.clone(), uni.to_string(), String::new(), "1234567890123456789012".to_string()];
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(z.member_heap, malloc_estimate(100) + malloc_estimate(uni.len()));
    check(&z);
    assert!(z.remove(&long));
    assert_eq!(z.member_heap, malloc_estimate(uni.len()));
    check(&z);
}

fn names(v: Vec<(&str, f64)>) -> Vec<&str> {
    v.into_iter().map(|e| e.0).collect()
}

#[test]
fn score_ranges_inf_and_exclusive() {
    let mut z = ZSet::new();
    z.insert("ninf", f64::NEG_INFINITY);
    z.insert("a", 1.0);
    z.insert("b", 2.0);
    z.insert("c", 2.0);
    z.insert("d", 3.0);
    z.insert("pinf", f64::INFINITY);
    let inf = ScoreBound::parse_str("+inf").unwrap();
    let ninf = ScoreBound::parse_str("-inf").unwrap();
    assert_eq!(names(z.range_by_score(ninf, inf, 0, None, false)), vec!["ninf", "a", "b", "c", "d", "pinf"]);
    assert_eq!(
        names(z.range_by_score(ScoreBound::exclusive(f64::NEG_INFINITY), inf, 0, None, false)),
        vec!["a", "b", "c", "d", "pinf"]
    );
    assert_eq!(
        names(z.range_by_score(
            ScoreBound::parse_str("(1").unwrap(),
            ScoreBound::parse_str("(3").unwrap(),
            0,
            None,
            false
        )),
        vec!["b", "c"]
    );
    assert_eq!(
        names(z.range_by_score(ScoreBound::inclusive(2.0), ScoreBound::inclusive(2.0), 0, None, true)),
        vec!["c", "b"]
    );
    assert_eq!(
        names(z.range_by_score(ScoreBound::inclusive(2.0), ScoreBound::exclusive(2.0), 0, None, false)),
        Vec::<&str>::new()
    );
    assert_eq!(
        names(z.range_by_score(ScoreBound::inclusive(3.0), ScoreBound::inclusive(1.0), 0, None, false)),
        Vec::<&str>::new()
    );
    assert_eq!(names(z.range_by_score(ninf, inf, 2, Some(2), false)), vec!["b", "c"]);
    assert_eq!(names(z.range_by_score(ninf, inf, 2, Some(3), true)), vec!["c", "b", "a"]);
    assert_eq!(names(z.range_by_score(ninf, ScoreBound::exclusive(f64::INFINITY), 0, Some(1), true)), vec!["d"]);
    assert_eq!(names(z.range_by_score(ninf, inf, 6, None, false)), Vec::<&str>::new());
    assert_eq!(names(z.range_by_score(ninf, inf, usize::MAX, None, false)), Vec::<&str>::new());
    assert_eq!(names(z.range_by_score(ninf, inf, usize::MAX, None, true)), Vec::<&str>::new());
    assert_eq!(names(z.range_by_score(ninf, inf, 0, Some(0), false)), Vec::<&str>::new());
    assert_eq!(z.count_by_score(ninf, inf), 6);
    assert_eq!(z.count_by_score(ScoreBound::exclusive(1.0), ScoreBound::inclusive(3.0)), 3);
    assert_eq!(z.count_by_score(ScoreBound::inclusive(5.0), ScoreBound::inclusive(4.0)), 0);
}

#[test]
fn parse_bounds() {
    let p = ScoreBound::parse_str;
    assert_eq!(p("-inf"), Some(ScoreBound::inclusive(f64::NEG_INFINITY)));
    assert_eq!(p("+inf"), Some(ScoreBound::inclusive(f64::INFINITY)));
    assert_eq!(p("inf"), Some(ScoreBound::inclusive(f64::INFINITY)));
    assert_eq!(p("(1.5"), Some(ScoreBound::exclusive(1.5)));
    assert_eq!(p("3"), Some(ScoreBound::inclusive(3.0)));
    assert_eq!(p("(-inf"), Some(ScoreBound::exclusive(f64::NEG_INFINITY)));
    assert_eq!(p("-2.5e3"), Some(ScoreBound::inclusive(-2500.0)));
    assert_eq!(p("nan"), None);
    assert_eq!(p("(nan"), None);
    assert_eq!(p(""), None);
    assert_eq!(p("("), None);
    assert_eq!(p("(("), None);
    assert_eq!(p("abc"), None);
    assert_eq!(p(" 1"), None);
    assert_eq!(p("1)"), None);
}

#[test]
fn zero_signs_equal() {
    let mut z = ZSet::new();
    z.insert("b", -0.0);
    z.insert("a", 0.0);
    assert_eq!(z.range_by_rank(0, -1, false).iter().map(|e| e.0).collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(!z.insert("b", 0.0));
    assert_eq!(z.score("b").map(f64::is_sign_negative), Some(true));
    assert_eq!(z.range_by_score(ScoreBound::inclusive(0.0), ScoreBound::inclusive(-0.0), 0, None, false).len(), 2);
    assert_eq!(z.range_by_score(ScoreBound::exclusive(0.0), ScoreBound::inclusive(1.0), 0, None, false).len(), 0);
    check(&z);
}

fn random_bound(rng: &mut Rng, scores: &[f64]) -> ScoreBound {
    let v = if rng.below(10) == 0 {
        scores[rng.below(scores.len() as u64) as usize] + 0.5
    } else {
        scores[rng.below(scores.len() as u64) as usize]
    };
    ScoreBound { value: v, exclusive: rng.below(2) == 0 }
}

#[test]
fn randomized_against_model() {
    let scores = [f64::NEG_INFINITY, -3.0, -1.5, -0.0, 0.0, 1.0, 2.0, 2.5, 7.0, 100.0, f64::INFINITY];
    let mut names: Vec<String> = (0..400).map(|i| format!("m{:03}", i * 7 % 400)).collect();
    names.push(String::new());
    names.push("a-very-long-member-name-that-is-heap-allocated".into());
    names.push("b-very-long-member-name-that-is-heap-allocated".into());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut z = ZSet::new();
    let mut m = Model::default();
    for step in 0..20_000u32 {
        let name = &names[rng.below(names.len() as u64) as usize];
        // Phase the mix so the set grows, churns, and drains.
        let phase = (step / 2_500) % 4;
        let op = rng.below(100);
        let ins_pct = match phase {
            0 => 70,
            1 | 2 => 40,
            _ => 15,
        };
        if op < ins_pct {
            let s = if rng.below(4) == 0 {
                (rng.below(2000) as f64 - 1000.0) / 8.0
            } else {
                scores[rng.below(scores.len() as u64) as usize]
            };
            assert_eq!(z.insert(name, s), m.insert(name, s), "insert {name} {s}");
        } else if op < ins_pct + 25 {
            assert_eq!(z.remove(name), m.remove(name));
        } else {
            match rng.below(4) {
                0 => {
                    assert_eq!(z.score(name), m.pos(name).map(|p| m.v[p].1));
                    let rev = rng.below(2) == 0;
                    assert_eq!(z.rank(name, rev), m.rank(name, rev));
                }
                1 => {
                    let a = rng.below(1000) as i64 - 500;
                    let b = rng.below(1000) as i64 - 500;
                    let rev = rng.below(2) == 0;
                    assert_eq!(
                        owned(z.range_by_rank(a, b, rev)),
                        m.range_by_rank(a, b, rev),
                        "rank range {a} {b} {rev}"
                    );
                }
                _ => {
                    let lo = random_bound(&mut rng, &scores);
                    let hi = random_bound(&mut rng, &scores);
                    let off = if rng.below(3) == 0 { 0 } else { rng.below(40) as usize };
                    let lim = match rng.below(4) {
                        0 => None,
                        _ => Some(rng.below(30) as usize),
                    };
                    let rev = rng.below(2) == 0;
                    assert_eq!(
                        owned(z.range_by_score(lo, hi, off, lim, rev)),
                        m.range_by_score(lo, hi, off, lim, rev),
                        "score range {lo:?} {hi:?} {off} {lim:?} {rev}"
                    );
                    assert_eq!(z.count_by_score(lo, hi), m.range_by_score(lo, hi, 0, None, false).len());
                }
            }
        }
        assert_eq!(z.len(), m.v.len());
        if step % 97 == 0 {
            check(&z);
            assert_eq!(owned(z.iter().collect()), m.v);
        }
    }
    check(&z);
    assert_eq!(owned(z.iter().collect()), m.v);
    // Remove everything.
    for (name, _) in m.v.clone() {
        assert!(z.remove(&name));
        assert!(!z.remove(&name));
    }
    assert!(z.is_empty());
    assert_eq!(z.mem_bytes(), 0);
    assert_eq!(z.iter().count(), 0);
    assert!(z.range_by_rank(0, -1, false).is_empty());
    assert!(z
        .range_by_score(ScoreBound::inclusive(f64::NEG_INFINITY), ScoreBound::inclusive(f64::INFINITY), 0, None, true)
        .is_empty());
}

#[test]
fn many_elements_ranks_and_offsets() {
    let mut z = ZSet::new();
    let n = 20_000usize;
    for i in 0..n {
        // Insert in scrambled order.
        let k = (i * 7919) % n;
        assert!(z.insert(&format!("k{k:06}"), (k / 3) as f64));
    }
    check(&z);
    for k in (0..n).step_by(37) {
        assert_eq!(z.rank(&format!("k{k:06}"), false), Some(k));
        assert_eq!(z.rank(&format!("k{k:06}"), true), Some(n - 1 - k));
    }
    let r = z.range_by_score(ScoreBound::inclusive(100.0), ScoreBound::inclusive(f64::INFINITY), 1000, Some(3), false);
    assert_eq!(
        owned(r),
        vec![("k001300".to_string(), 433.0), ("k001301".to_string(), 433.0), ("k001302".to_string(), 434.0)]
    );
    let r = z.range_by_score(ScoreBound::inclusive(f64::NEG_INFINITY), ScoreBound::exclusive(100.0), 10, Some(2), true);
    assert_eq!(owned(r), vec![("k000289".to_string(), 96.0), ("k000288".to_string(), 96.0)]);
    // Move every element to the front, one by one.
    for k in 0..n {
        z.insert(&format!("k{k:06}"), -((k + 1) as f64));
    }
    check(&z);
    assert_eq!(z.range_by_rank(0, 0, false), vec![("k019999", -20000.0)]);
    for k in 0..n {
        assert!(z.remove(&format!("k{k:06}")));
    }
    assert!(z.is_empty());
    assert_eq!(z.mem_bytes(), 0);
}
