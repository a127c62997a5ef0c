//! `hash.*` against the real server.
mod common;
use common::*;
use serde_json::json;

#[test]
fn set_get_and_shapes() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let r = c.ok("hash.set", json!({"key": "h", "field": "a", "value": "1"}));
    assert_eq!(r["created"], 1);
    assert!(r["rev"].as_u64().unwrap() > 0, "writes carry rev: {r}");
    let r = c.ok("hash.set", json!({"key": "h", "fields": {"a": "2", "b": 3, "c": "x"}}));
    assert_eq!(r["created"], 2);
    assert_eq!(c.ok("hash.get", json!({"key": "h", "field": "a"})), json!({"value": "2"}));
    assert_eq!(c.ok("hash.get", json!({"key": "h", "field": "b"}))["value"], "3", "numbers stored as text");
    assert_eq!(c.ok("hash.get", json!({"key": "h"})), json!({"fields": {"a": "2", "b": "3", "c": "x"}}));
    assert_eq!(c.err_code("hash.get", json!({"key": "h", "field": "zz"})), "not_found");
    assert_eq!(c.err_code("hash.get", json!({"key": "nope", "field": "a"})), "not_found");
    assert_eq!(c.ok("hash.get", json!({"key": "nope"})), json!({"fields": {}}));
    assert_eq!(c.ok("hash.mget", json!({"key": "h", "fields": ["a", "zz", "c"]})), json!({"values": ["2", null, "x"]}));
    assert_eq!(c.ok("hash.mget", json!({"key": "nope", "fields": ["a"]})), json!({"values": [null]}));
    assert_eq!(c.ok("hash.exists", json!({"key": "h", "field": "a"})), json!({"exists": true}));
    assert_eq!(c.ok("hash.exists", json!({"key": "h", "field": "q"})), json!({"exists": false}));
    assert_eq!(c.ok("hash.exists", json!({"key": "nope", "field": "q"})), json!({"exists": false}));
    assert_eq!(c.ok("hash.len", json!({"key": "h"})), json!({"length": 3}));
    assert_eq!(c.ok("hash.len", json!({"key": "nope"})), json!({"length": 0}));
    assert_eq!(sorted(&c.ok("hash.keys", json!({"key": "h"}))["fields"]), ["a", "b", "c"]);
    assert_eq!(sorted(&c.ok("hash.values", json!({"key": "h"}))["values"]), ["2", "3", "x"]);
    assert_eq!(c.ok("hash.keys", json!({"key": "nope"})), json!({"fields": []}));
    assert_eq!(c.ok("hash.values", json!({"key": "nope"})), json!({"values": []}));
    assert_eq!(c.err_code("hash.set", json!({"key": "h", "field": "a"})), "invalid_params");
    assert_eq!(c.err_code("hash.set", json!({"key": "h", "fields": {}})), "invalid_params");
    assert_eq!(c.err_code("hash.set", json!({"key": "h", "fields": {"a": [1]}})), "invalid_params");
    assert_eq!(c.err_code("hash.set", json!({"key": "h"})), "invalid_params");
}

#[test]
fn unchanged_set_raises_no_rev() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let r1 = c.ok("hash.set", json!({"key": "h", "field": "a", "value": "1"}))["rev"].as_u64().unwrap();
    let r2 = c.ok("hash.set", json!({"key": "h", "field": "a", "value": "1"}))["rev"].as_u64().unwrap();
    assert_eq!(r1, r2, "setting the same value changes nothing");
}

#[test]
fn del_and_empty_hash_disappears() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    c.ok("hash.set", json!({"key": "h", "fields": {"a": "1", "b": "2", "c": "3"}}));
    assert_eq!(c.ok("hash.del", json!({"key": "h", "field": "a"}))["deleted"], 1);
    assert_eq!(c.ok("hash.del", json!({"key": "h", "fields": ["a", "b", "zz"]}))["deleted"], 1);
    assert_eq!(c.ok("key.exists", json!({"key": "h"}))["exists"], true);
    assert_eq!(c.ok("hash.del", json!({"key": "h", "fields": ["c"]}))["deleted"], 1);
    assert_eq!(c.ok("key.exists", json!({"key": "h"}))["exists"], false, "an emptied hash is deleted");
    assert_eq!(c.ok("key.type", json!({"key": "h"}))["type"], "none");
    assert_eq!(c.ok("hash.del", json!({"key": "h", "field": "x"}))["deleted"], 0);
}

#[test]
fn incr() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_eq!(c.ok("hash.incr", json!({"key": "h", "field": "n"}))["value"], 1);
    assert_eq!(c.ok("hash.incr", json!({"key": "h", "field": "n", "by": 41}))["value"], 42);
    assert_eq!(c.ok("hash.incr", json!({"key": "h", "field": "n", "by": -50}))["value"], -8);
    c.ok("hash.set", json!({"key": "h", "field": "s", "value": "abc"}));
    assert_eq!(c.err_code("hash.incr", json!({"key": "h", "field": "s"})), "not_integer");
    c.ok("hash.set", json!({"key": "h", "field": "m", "value": i64::MAX.to_string()}));
    assert_eq!(c.err_code("hash.incr", json!({"key": "h", "field": "m"})), "not_integer");
    assert_eq!(c.err_code("hash.incr", json!({"key": "h2", "field": "m", "by": 1.5})), "invalid_params");
    assert_eq!(c.ok("key.exists", json!({"key": "h2"}))["exists"], false, "a refused incr creates nothing");
}

#[test]
fn ttl_is_kept_when_modified() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    c.ok("hash.set", json!({"key": "h", "field": "a", "value": "1"}));
    c.ok("key.expire", json!({"key": "h", "ttl": 100}));
    c.ok("hash.set", json!({"key": "h", "field": "b", "value": "2"}));
    c.ok("hash.del", json!({"key": "h", "field": "a"}));
    assert_eq!(c.ok("key.ttl", json!({"key": "h"}))["ttl"], 100);
}

#[test]
fn wrong_type() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_wrong_type(
        &mut c,
        "hash",
        &[
            ("hash.get", json!({"field": "f"})),
            ("hash.get", json!({})),
            ("hash.mget", json!({"fields": ["f"]})),
            ("hash.set", json!({"field": "f", "value": "v"})),
            ("hash.del", json!({"field": "f"})),
            ("hash.exists", json!({"field": "f"})),
            ("hash.len", json!({})),
            ("hash.keys", json!({})),
            ("hash.values", json!({})),
            ("hash.incr", json!({"field": "f"})),
        ],
    );
}

/// `string.*` reads and in-place updates refuse collections (`string.set` replaces).
#[test]
fn string_methods_on_collections() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_wrong_type(
        &mut c,
        "string",
        &[
            ("string.get", json!({})),
            ("string.incr", json!({})),
            ("string.decr", json!({})),
            ("string.append", json!({"value": "x"})),
            ("string.strlen", json!({})),
        ],
    );
    assert_eq!(c.ok("string.mget", json!({"keys": ["t:hash", "t:string"]})), json!({"values": [null, "v"]}));
    c.ok("string.set", json!({"key": "t:zset", "value": "now a string"}));
    assert_eq!(c.ok("key.type", json!({"key": "t:zset"}))["type"], "string");
}
