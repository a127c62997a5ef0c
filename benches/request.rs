//! The request path without sockets: parse the JSON frame → dispatch through the
//! command table → serialize the reply envelope; and the raw store underneath.
//! Target (issue 2): `string.get` request path under 1 µs.

use criterion::{criterion_group, criterion_main, Criterion};
use dbx::cmd::{Ctx, Outcome, ServerFacts};
use dbx::engine::policy;
use dbx::proto::{parse_incoming, parse_incoming_with, recycle, Incoming, SpareFields};
use dbx::store::{Store, Value};
use std::hint::black_box;

const STAMP: &str = "2024-01-15T10:30:00.123Z";

fn request(c: &mut Criterion) {
    let mut store = Store::new();
    for i in 0..10_000 {
        store.set(&format!("key:{i:08}"), Value::Str("x".repeat(32).into()), 0, 0);
    }
    let facts = ServerFacts { max_batch: 1000, ..ServerFacts::default() };
    let mut buf = Vec::with_capacity(4096);
    // The command outcome is kept and reused, as the engine does.
    let mut fx = Outcome::default();
    let get = r#"{"id":12345,"method":"string.get","params":{"key":"key:00004242"}}"#;
    let set = r#"{"id":12346,"method":"string.set","params":{"key":"key:00004243","value":"0123456789abcdef0123456789abcdef"}}"#;
    for (name, text) in [("string.get", get), ("string.set", set)] {
        // The parse alone, its field list recycled as the engine does.
        let mut spare = SpareFields::new();
        c.bench_function(&format!("parse {name}"), |b| {
            b.iter(|| {
                if let Incoming::Request(req) = parse_incoming_with(black_box(text), std::mem::take(&mut spare)) {
                    spare = recycle(req.params.into_fields());
                }
            })
        });
        c.bench_function(&format!("request path {name}"), |b| {
            b.iter(|| {
                let Incoming::Request(req) = parse_incoming(black_box(text)) else { unreachable!() };
                let mut ctx = Ctx::new(&mut store, 1_000, &facts);
                fx.reset(false);
                let id = req.id.map(|r| r.get());
                let err = policy::respond(&mut ctx, &mut fx, None, id, &req.method, &req.params, STAMP, &mut buf);
                black_box((&buf, err.is_none()));
            })
        });
    }
    // The same with change tracking on, as the server runs it (feeds watches/history).
    c.bench_function("request path string.set (tracking changes)", |b| {
        b.iter(|| {
            let Incoming::Request(req) = parse_incoming(black_box(set)) else { unreachable!() };
            let mut ctx = Ctx::new(&mut store, 1_000, &facts);
            fx.reset(true);
            let id = req.id.map(|r| r.get());
            let err = policy::respond(&mut ctx, &mut fx, None, id, &req.method, &req.params, STAMP, &mut buf);
            black_box((&buf, err.is_none(), fx.changes.len()));
        })
    });
}

fn store_ops(c: &mut Criterion) {
    let mut store = Store::new();
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i:08}")).collect();
    for k in &keys {
        store.set(k, Value::Str("v".repeat(32).into()), 0, 0);
    }
    let mut i = 0usize;
    c.bench_function("store get (100k keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(store.get(&keys[i], 0).is_some())
        })
    });
    c.bench_function("store set existing (100k keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(store.set(&keys[i], Value::Str("w".repeat(32).into()), 0, 0).is_some())
        })
    });
}

criterion_group!(benches, request, store_ops);
criterion_main!(benches);
