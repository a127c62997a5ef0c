//! `list.*` against the real server.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

fn all(c: &mut Client, key: &str) -> serde_json::Value {
    c.ok("list.range", json!({"key": key, "start": 0, "stop": -1}))["values"].clone()
}

#[test]
fn push_pop_sides() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let r = c.ok("list.push", json!({"key": "l", "values": ["a", "b", "c"]}));
    assert_eq!(r["length"], 3);
    assert!(r["rev"].is_u64());
    assert_eq!(c.ok("list.push", json!({"key": "l", "values": ["x", "y", "z"], "side": "left"}))["length"], 6);
    assert_eq!(all(&mut c, "l"), json!(["z", "y", "x", "a", "b", "c"]), "a left push of [x,y,z] leaves z,y,x");
    assert_eq!(c.ok("list.push", json!({"key": "l", "value": 7}))["length"], 7);
    assert_eq!(
        c.ok("list.pop", json!({"key": "l"})),
        json!({"values": ["z"], "rev": c.ok("server.info", json!({}))["rev"]})
    );
    assert_eq!(c.ok("list.pop", json!({"key": "l", "side": "right"}))["values"], json!(["7"]));
    assert_eq!(c.ok("list.pop", json!({"key": "l", "side": "right", "count": 2}))["values"], json!(["c", "b"]));
    assert_eq!(c.ok("list.pop", json!({"key": "l", "count": 0}))["values"], json!([]));
    assert_eq!(c.ok("list.len", json!({"key": "l"})), json!({"length": 3}));
    assert_eq!(c.ok("list.pop", json!({"key": "l", "count": 10}))["values"], json!(["y", "x", "a"]));
    assert_eq!(c.ok("key.exists", json!({"key": "l"}))["exists"], false, "an emptied list is deleted");
    assert_eq!(c.ok("list.pop", json!({"key": "l"}))["values"], json!([]));
    assert_eq!(c.ok("list.len", json!({"key": "l"})), json!({"length": 0}));
    assert_eq!(c.err_code("list.push", json!({"key": "l", "value": "a", "side": "middle"})), "invalid_params");
    assert_eq!(c.err_code("list.push", json!({"key": "l", "values": []})), "invalid_params");
    assert_eq!(c.ok("key.exists", json!({"key": "l"}))["exists"], false, "refused pushes create nothing");
}

#[test]
fn range_index_trim() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    c.ok("list.push", json!({"key": "l", "values": ["0", "1", "2", "3", "4", "5"]}));
    let range = |c: &mut Client, s: i64, e: i64| {
        c.ok("list.range", json!({"key": "l", "start": s, "stop": e}))["values"].clone()
    };
    assert_eq!(range(&mut c, 1, 2), json!(["1", "2"]));
    assert_eq!(range(&mut c, -2, -1), json!(["4", "5"]));
    assert_eq!(range(&mut c, -100, 1), json!(["0", "1"]));
    assert_eq!(range(&mut c, 4, 100), json!(["4", "5"]));
    assert_eq!(range(&mut c, 3, 2), json!([]));
    assert_eq!(range(&mut c, 6, 10), json!([]));
    assert_eq!(c.ok("list.range", json!({"key": "nope", "start": 0, "stop": -1})), json!({"values": []}));
    assert_eq!(c.ok("list.index", json!({"key": "l", "index": 0})), json!({"value": "0"}));
    assert_eq!(c.ok("list.index", json!({"key": "l", "index": -1})), json!({"value": "5"}));
    assert_eq!(c.err_code("list.index", json!({"key": "l", "index": 6})), "not_found");
    assert_eq!(c.err_code("list.index", json!({"key": "l", "index": -7})), "not_found");
    assert_eq!(c.err_code("list.index", json!({"key": "nope", "index": 0})), "not_found");
    assert_eq!(c.err_code("list.range", json!({"key": "l", "start": 0})), "invalid_params");
    let r = c.ok("list.trim", json!({"key": "l", "start": 1, "stop": -2}));
    assert_eq!(r["length"], 4);
    assert_eq!(all(&mut c, "l"), json!(["1", "2", "3", "4"]));
    assert_eq!(c.ok("list.trim", json!({"key": "l", "start": 5, "stop": 10}))["length"], 0);
    assert_eq!(c.ok("key.exists", json!({"key": "l"}))["exists"], false, "trimmed to nothing: deleted");
    assert_eq!(c.ok("list.trim", json!({"key": "l", "start": 0, "stop": 1}))["length"], 0);
}

#[test]
fn wrong_type() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_wrong_type(
        &mut c,
        "list",
        &[
            ("list.push", json!({"value": "v"})),
            ("list.pop", json!({})),
            ("list.range", json!({"start": 0, "stop": -1})),
            ("list.len", json!({})),
            ("list.index", json!({"index": 0})),
            ("list.trim", json!({"start": 0, "stop": -1})),
        ],
    );
}

/// Values of every shape a packed list stores differently: short ASCII, multi-byte
/// UTF-8 (one- and four-byte characters), past the one-byte separator (120 bytes), and
/// longer than a chunk (8 KiB), which gets a chunk of its own.
fn shaped(i: usize) -> String {
    match i % 11 {
        0 => format!("é{i}é"),
        1 => format!("{i}:{}", "x".repeat(150)),
        2 => format!("😀{i}"),
        3 if i.is_multiple_of(7) => format!("{i}:{}", "y".repeat(10_000)),
        4 => String::new(),
        _ => format!("value:{i:010}"),
    }
}

/// Long lists (thousands of elements in many chunks) against a model, then the same
/// list after a restart that replays the log, and after one that loads a snapshot.
#[test]
fn long_lists_across_chunks_survive_replay_and_snapshot() {
    let dir = TempDir::new("long-lists");
    let o = Opts::new(&dir.path().join("data"));
    let s = Dbx::start(&o);
    let mut c = s.client();
    let mut model: std::collections::VecDeque<String> = Default::default();
    for round in 0..40 {
        let values: Vec<String> = (0..100).map(|i| shaped(round * 100 + i)).collect();
        let left = round % 3 == 1;
        let n =
            c.ok("list.push", json!({"key": "long", "values": values, "side": if left { "left" } else { "right" }}));
        for v in values {
            if left {
                model.push_front(v);
            } else {
                model.push_back(v);
            }
        }
        assert_eq!(n["length"], model.len());
    }
    let check = |c: &mut Client, model: &std::collections::VecDeque<String>| {
        assert_eq!(c.ok("list.len", json!({"key": "long"}))["length"], model.len());
        assert_eq!(all(c, "long"), json!(model));
        let n = model.len() as i64;
        for i in [0, 1, 31, 32, 33, 500, 1000, 1777, n / 2, n - 33, n - 1, -1, -2, -32, -n] {
            let at = if i < 0 { i + n } else { i } as usize;
            assert_eq!(c.ok("list.index", json!({"key": "long", "index": i}))["value"], model[at], "index {i}");
        }
        assert_eq!(c.err_code("list.index", json!({"key": "long", "index": n})), "not_found");
        assert_eq!(c.err_code("list.index", json!({"key": "long", "index": -n - 1})), "not_found");
        for (start, stop) in [(0, 99), (1000, 1099), (-150, -1), (-n - 5, 10), (n / 2, n + 50), (-40, -60)] {
            let (s, e) =
                (if start < 0 { (start + n).max(0) } else { start }, if stop < 0 { stop + n } else { stop.min(n - 1) });
            let want: Vec<&String> = if s > e { vec![] } else { model.range(s as usize..=e as usize).collect() };
            let got = c.ok("list.range", json!({"key": "long", "start": start, "stop": stop}))["values"].clone();
            assert_eq!(got, json!(want), "range {start} {stop}");
        }
    };
    check(&mut c, &model);
    // Pops and a trim at both ends cut into chunks.
    let popped = c.ok("list.pop", json!({"key": "long", "count": 250}))["values"].clone();
    assert_eq!(popped, json!(model.drain(..250).collect::<Vec<_>>()));
    let popped = c.ok("list.pop", json!({"key": "long", "count": 333, "side": "right"}))["values"].clone();
    let tail: Vec<String> = model.drain(model.len() - 333..).rev().collect();
    assert_eq!(popped, json!(tail));
    assert_eq!(
        c.ok("list.trim", json!({"key": "long", "start": 117, "stop": -212}))["length"],
        model.len() - 117 - 211
    );
    model.drain(model.len() - 211..);
    model.drain(..117);
    check(&mut c, &model);

    // Replayed from the log.
    drop(c);
    let mut s = s;
    assert_eq!(s.term().code(), Some(0));
    let s = Dbx::start(&o);
    assert!(s.stderr().contains("replayed"), "{}", s.stderr());
    let mut c = s.client();
    check(&mut c, &model);

    // Written to a snapshot, then loaded from it (with a few changes logged after it).
    assert_eq!(c.ok("server.save", json!({}))["started"], true);
    poll_within(Duration::from_secs(20), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
        .expect("snapshot written");
    c.ok("list.push", json!({"key": "long", "values": ["after", "the", "snapshot"]}));
    model.extend(["after", "the", "snapshot"].map(String::from));
    drop(c);
    let mut s = s;
    assert_eq!(s.term().code(), Some(0));
    let s = Dbx::start(&o);
    assert!(s.stderr().contains("loaded") && s.stderr().contains("snapshot-"), "{}", s.stderr());
    let mut c = s.client();
    check(&mut c, &model);
}
