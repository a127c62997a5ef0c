//! `list.*` against the real server.
mod common;
use common::*;
use serde_json::json;

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
