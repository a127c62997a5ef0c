//! Store-level throughput per type (no sockets, no JSON): what one core can do on the
//! data structures alone. `cargo bench --bench store`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dbx::store::{ListValue, ScoreBound, Store, Value};
use std::hint::black_box;

const N: usize = 10_000;

fn keys(prefix: &str) -> Vec<String> {
    (0..N).map(|i| format!("{prefix}:{i:08}")).collect()
}

fn hash(st: &mut Store, key: &str, field: &str, value: &str) {
    st.modify(key, 0, Some(Value::new_hash), |v| {
        if let Value::Hash(h) = v {
            h.insert(field, value);
        }
    });
}

fn strings(c: &mut Criterion) {
    let ks = keys("key");
    let mut g = c.benchmark_group("string");
    g.throughput(Throughput::Elements(N as u64));
    let mut st = Store::new();
    g.bench_function("set", |b| {
        b.iter(|| {
            for k in &ks {
                st.set(k, Value::Str("v".repeat(32).into()), 0, 0);
            }
        })
    });
    g.bench_function("get", |b| {
        b.iter(|| {
            for k in &ks {
                black_box(st.get(k, 0).is_some());
            }
        })
    });
    g.finish();
}

fn hashes(c: &mut Criterion) {
    let fs = keys("field");
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Elements(N as u64));
    let mut st = Store::new();
    g.bench_function("set", |b| b.iter(|| fs.iter().for_each(|f| hash(&mut st, "h", f, "value"))));
    g.bench_function("get", |b| {
        b.iter(|| {
            for f in &fs {
                if let Some(Value::Hash(h)) = st.get("h", 0).map(|it| &it.value) {
                    black_box(h.get(f));
                }
            }
        })
    });
    g.finish();
}

fn sets(c: &mut Criterion) {
    let ms = keys("member");
    let mut g = c.benchmark_group("set");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("add", |b| {
        b.iter_batched(
            Store::new,
            |mut st| {
                for m in &ms {
                    st.modify("s", 0, Some(Value::new_set), |v| {
                        if let Value::Set(s) = v {
                            s.insert(m);
                        }
                    });
                }
                st
            },
            BatchSize::LargeInput,
        )
    });
    let mut st = Store::new();
    for m in &ms {
        st.modify("s", 0, Some(Value::new_set), |v| {
            if let Value::Set(s) = v {
                s.insert(m);
            }
        });
    }
    g.bench_function("contains", |b| {
        b.iter(|| {
            for m in &ms {
                if let Some(Value::Set(s)) = st.get("s", 0).map(|it| &it.value) {
                    black_box(s.contains(m));
                }
            }
        })
    });
    g.finish();
}

fn zadd(st: &mut Store, m: &str, score: f64) {
    st.modify("z", 0, Some(Value::new_zset), |v| {
        if let Value::ZSet(z) = v {
            z.insert(m, score);
        }
    });
}

fn zsets(c: &mut Criterion) {
    let ms = keys("member");
    let mut g = c.benchmark_group("zset");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("add", |b| {
        b.iter_batched(
            Store::new,
            |mut st| {
                for (i, m) in ms.iter().enumerate() {
                    zadd(&mut st, m, (i * 7919 % N) as f64);
                }
                st
            },
            BatchSize::LargeInput,
        )
    });
    let mut st = Store::new();
    for (i, m) in ms.iter().enumerate() {
        zadd(&mut st, m, (i * 7919 % N) as f64);
    }
    g.bench_function("score", |b| {
        b.iter(|| {
            for m in &ms {
                if let Some(Value::ZSet(z)) = st.get("z", 0).map(|it| &it.value) {
                    black_box(z.score(m));
                }
            }
        })
    });
    // N range queries of 10 elements each (Throughput counts queries).
    g.bench_function("range_by_score_10", |b| {
        b.iter(|| {
            for i in 0..N {
                if let Some(Value::ZSet(z)) = st.get("z", 0).map(|it| &it.value) {
                    let lo = (i % (N - 10)) as f64;
                    black_box(z.range_by_score(
                        ScoreBound::inclusive(lo),
                        ScoreBound::inclusive(lo + 9.0),
                        0,
                        None,
                        false,
                    ));
                }
            }
        })
    });
    g.finish();
}

fn lists(c: &mut Criterion) {
    let mut g = c.benchmark_group("list");
    // N pushes and N pops per iteration.
    g.throughput(Throughput::Elements(2 * N as u64));
    let mut st = Store::new();
    g.bench_function("push_pop", |b| {
        b.iter(|| {
            for i in 0..N {
                st.modify("l", 0, Some(Value::new_list), |v| {
                    if let Value::List(l) = v {
                        if i % 2 == 0 {
                            l.push_back("value-of-16bytes");
                        } else {
                            l.push_front("value-of-16bytes");
                        }
                    }
                });
            }
            for i in 0..N {
                st.modify("l", 0, None, |v| {
                    if let Value::List(l) = v {
                        black_box(if i % 2 == 0 { l.pop_front() } else { l.pop_back() });
                    }
                });
            }
        })
    });
    // Reads on a list of N elements (16-byte values), straight on the list type.
    let full = || {
        let mut l = ListValue::default();
        for i in 0..N {
            l.push_back(&format!("value:{i:010}"));
        }
        l
    };
    let l = full();
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("index", |b| {
        // N lookups spread over the whole list (a stride coprime with N).
        b.iter(|| {
            let mut i = 0;
            for _ in 0..N {
                black_box(l.get(i));
                i = (i + 7919) % N;
            }
        })
    });
    g.bench_function("range_100", |b| {
        // N/100 ranges of 100 elements at offsets spread over the list: N elements read.
        b.iter(|| {
            let mut start = 0;
            for _ in 0..N / 100 {
                for v in l.range(start, start + 100) {
                    black_box(v);
                }
                start = (start + 7919) % (N - 100);
            }
        })
    });
    g.bench_function("iter", |b| {
        // The whole list in order, as the snapshot writer reads it.
        b.iter(|| {
            l.iter().for_each(|v| {
                black_box(v);
            })
        })
    });
    g.bench_function("trim", |b| {
        // Cut 10% from each end of a fresh list of N elements (the build is not timed).
        b.iter_batched(
            full,
            |mut l| {
                l.retain_range(N / 10, N - N / 10);
                l
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, strings, hashes, sets, zsets, lists);
criterion_main!(benches);
