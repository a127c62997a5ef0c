//! `key.*` end to end: exact result shapes, errors, revisions, scan.

mod common;

use common::*;
use std::collections::BTreeSet;

#[test]
fn del_key_and_keys() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.mset", json!({"pairs":{"a":"1","b":"2","c":"3","d":"4"}}));
    assert_eq!(c.ok("key.del", json!({"key":"a"})), json!({"deleted":1,"rev":2}));
    assert_eq!(c.ok("key.del", json!({"key":"a"})), json!({"deleted":0,"rev":2}));
    // Several keys: one operation, one rev.
    assert_eq!(c.ok("key.del", json!({"keys":["b","c","nope"]})), json!({"deleted":2,"rev":3}));
    assert_eq!(c.ok("key.del", json!({"keys":["b","c"]})), json!({"deleted":0,"rev":3}));
    // A key named twice is deleted once.
    assert_eq!(c.ok("key.del", json!({"keys":["d","d"]})), json!({"deleted":1,"rev":4}));
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":0}));
    let e = c.err("key.del", json!({}));
    assert_invalid_param(&e, "key");
    assert_invalid_param(&e, "keys");
    assert_invalid_param(&c.err("key.del", json!({"keys":[]})), "keys");
    assert_invalid_param(&c.err("key.del", json!({"keys":"a"})), "keys");
    assert_invalid_param(&c.err("key.del", json!({"key":5})), "key");
}

#[test]
fn exists_key_and_keys() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.mset", json!({"pairs":{"a":"1","b":"2"}}));
    assert_eq!(c.ok("key.exists", json!({"key":"a"})), json!({"exists":true}));
    assert_eq!(c.ok("key.exists", json!({"key":"z"})), json!({"exists":false}));
    assert_eq!(c.ok("key.exists", json!({"keys":["a","b","z"]})), json!({"count":2}));
    assert_eq!(c.ok("key.exists", json!({"keys":["z"]})), json!({"count":0}));
    // As Redis EXISTS: a key named twice counts twice.
    assert_eq!(c.ok("key.exists", json!({"keys":["a","a"]})), json!({"count":2}));
    let e = c.err("key.exists", json!({}));
    assert_invalid_param(&e, "key");
    assert_invalid_param(&c.err("key.exists", json!({"keys":[]})), "keys");
    assert_invalid_param(&c.err("key.exists", json!({"key":true})), "key");
}

#[test]
fn key_type() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"s","value":"1"}));
    assert_eq!(c.ok("key.type", json!({"key":"s"})), json!({"type":"string"}));
    assert_eq!(c.ok("key.type", json!({"key":"nope"})), json!({"type":"none"}));
    assert_invalid_param(&c.err("key.type", json!({})), "key");
}

#[test]
fn expire_and_ttl() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"k","value":"v"}));
    assert_eq!(c.ok("key.ttl", json!({"key":"k"})), json!({"ttl":null}));
    assert_eq!(c.ok("key.expire", json!({"key":"k","ttl":100})), json!({"updated":true,"rev":2}));
    assert_eq!(c.ok("key.ttl", json!({"key":"k"})), json!({"ttl":100}));
    // Fractional TTLs; results are whole seconds rounded up.
    assert_eq!(c.ok("key.expire", json!({"key":"k","ttl":2.5})), json!({"updated":true,"rev":3}));
    assert_eq!(c.ok("key.ttl", json!({"key":"k"})), json!({"ttl":3}));
    // Missing key: not updated, no rev.
    assert_eq!(c.ok("key.expire", json!({"key":"missing","ttl":10})), json!({"updated":false,"rev":3}));
    assert_eq!(
        c.err("key.ttl", json!({"key":"missing"})),
        json!({"code":"not_found","message":"Key 'missing' not found"})
    );
    assert_invalid_param(&c.err("key.expire", json!({"key":"k"})), "ttl");
    assert_invalid_param(&c.err("key.expire", json!({"key":"k","ttl":"5"})), "ttl");
    assert_invalid_param(&c.err("key.expire", json!({"ttl":5})), "key");
    assert_invalid_param(&c.err("key.ttl", json!({})), "key");
    // A 1 ms TTL: the key may already be gone, but it never reads as "ttl": 0.
    assert_eq!(c.ok("key.expire", json!({"key":"k","ttl":0.001})), json!({"updated":true,"rev":4}));
    let r = c.call("key.ttl", json!({"key":"k"}));
    if let Some(e) = r.get("error") {
        assert_eq!(e, &json!({"code":"not_found","message":"Key 'k' not found"}));
    } else {
        assert_eq!(r["result"], json!({"ttl":1}));
    }
}

#[test]
fn expire_non_positive_deletes() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.mset", json!({"pairs":{"a":"1","b":"2"}}));
    assert_eq!(c.ok("key.expire", json!({"key":"a","ttl":0})), json!({"updated":true,"rev":2}));
    assert_eq!(c.ok("key.exists", json!({"key":"a"})), json!({"exists":false}));
    assert_eq!(c.ok("key.expire", json!({"key":"b","ttl":-10})), json!({"updated":true,"rev":3}));
    assert_eq!(c.ok("key.exists", json!({"key":"b"})), json!({"exists":false}));
    assert_eq!(c.ok("key.expire", json!({"key":"a","ttl":0})), json!({"updated":false,"rev":3}));
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":0}));
}

#[test]
fn persist() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"k","value":"v","ttl":100}));
    c.ok("string.set", json!({"key":"p","value":"v"}));
    assert_eq!(c.ok("key.persist", json!({"key":"k"})), json!({"updated":true,"rev":3}));
    assert_eq!(c.ok("key.ttl", json!({"key":"k"})), json!({"ttl":null}));
    assert_eq!(c.ok("key.persist", json!({"key":"k"})), json!({"updated":false,"rev":3}));
    assert_eq!(c.ok("key.persist", json!({"key":"p"})), json!({"updated":false,"rev":3}));
    assert_eq!(c.ok("key.persist", json!({"key":"missing"})), json!({"updated":false,"rev":3}));
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"v","ttl":null}));
    assert_invalid_param(&c.err("key.persist", json!({})), "key");
}

#[test]
fn rename() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"a","value":"1","ttl":100}));
    assert_eq!(c.ok("key.rename", json!({"key":"a","new_key":"b"})), json!({"renamed":true,"rev":2}));
    assert_error(&c.err("string.get", json!({"key":"a"})), "not_found");
    // The TTL moves with the value (as Redis RENAME).
    assert_eq!(c.ok("string.get", json!({"key":"b"})), json!({"value":"1","ttl":100}));
    // Missing source → not_found naming the key; no rev.
    assert_eq!(
        c.err("key.rename", json!({"key":"a","new_key":"c"})),
        json!({"code":"not_found","message":"Key 'a' not found"})
    );
    // Onto an existing key: replaced (and its TTL with it).
    c.ok("string.set", json!({"key":"c","value":"3"}));
    assert_eq!(c.ok("key.rename", json!({"key":"c","new_key":"b"})), json!({"renamed":true,"rev":4}));
    assert_eq!(c.ok("string.get", json!({"key":"b"})), json!({"value":"3","ttl":null}));
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":1}));
    // nx with an existing target: nothing happens.
    c.ok("string.set", json!({"key":"d","value":"4"}));
    assert_eq!(c.ok("key.rename", json!({"key":"d","new_key":"b","nx":true})), json!({"renamed":false,"rev":5}));
    assert_eq!(c.ok("string.mget", json!({"keys":["b","d"]})), json!({"values":["3","4"]}));
    // nx with a free target: renamed.
    assert_eq!(c.ok("key.rename", json!({"key":"d","new_key":"e","nx":true})), json!({"renamed":true,"rev":6}));
    assert_eq!(c.ok("string.mget", json!({"keys":["d","e"]})), json!({"values":[null,"4"]}));
    // nx with a missing source is still not_found.
    assert_error(&c.err("key.rename", json!({"key":"zz","new_key":"e","nx":true})), "not_found");
    assert_invalid_param(&c.err("key.rename", json!({"key":"e"})), "new_key");
    assert_invalid_param(&c.err("key.rename", json!({"new_key":"e"})), "key");
    assert_invalid_param(&c.err("key.rename", json!({"key":"e","new_key":"f","nx":"x"})), "nx");
    assert_eq!(c.rev(), 6);
}

#[test]
fn rename_onto_itself_changes_nothing() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"a","value":"1"}));
    assert_eq!(c.ok("key.rename", json!({"key":"a","new_key":"a"})), json!({"renamed":true,"rev":1}));
    assert_eq!(c.ok("string.get", json!({"key":"a"})), json!({"value":"1","ttl":null}));
}

/// Iterate a whole scan; returns every key seen and checks each page's shape.
fn scan_all(c: &mut Client, extra: serde_json::Value) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let mut params = extra.clone();
        params["cursor"] = json!(cursor);
        let r = c.ok("key.scan", params);
        let obj = r.as_object().expect("object");
        assert_eq!(obj.len(), 2, "scan result has exactly cursor and keys: {r}");
        cursor = r["cursor"].as_str().unwrap_or_else(|| panic!("cursor must be a string: {r}")).to_string();
        out.extend(
            r["keys"].as_array().expect("keys array").iter().map(|k| k.as_str().expect("key string").to_string()),
        );
        if cursor == "0" {
            return out;
        }
    }
    panic!("scan did not finish");
}

#[test]
fn scan() {
    let s = start_default();
    let mut c = connect(&s);
    let mut all = BTreeSet::new();
    for i in 0..25 {
        let k = format!("user:{i}");
        c.ok("string.set", json!({"key":k,"value":"v"}));
        all.insert(k);
    }
    for i in 0..5 {
        let k = format!("other:{i}");
        c.ok("string.set", json!({"key":k,"value":"v"}));
        all.insert(k);
    }
    // Empty store: "0" and nothing.
    // Whole iteration, several page sizes: every key exactly once.
    for count in [1, 3, 10, 1000] {
        let got = scan_all(&mut c, json!({"count":count}));
        let set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(set, all, "count {count}");
        assert_eq!(got.len(), all.len(), "no duplicates without concurrent changes (count {count})");
    }
    // Default count, no params at all (cursor defaults to "0").
    let first = c.ok("key.scan", json!({}));
    assert!(first["cursor"].is_string());
    let got: BTreeSet<String> = scan_all(&mut c, json!({})).into_iter().collect();
    assert_eq!(got, all);
    // match
    let users: BTreeSet<String> = scan_all(&mut c, json!({"match":"user:*","count":7})).into_iter().collect();
    assert_eq!(users, all.iter().filter(|k| k.starts_with("user:")).cloned().collect());
    let one: Vec<String> = scan_all(&mut c, json!({"match":"user:1?"}));
    assert_eq!(one.into_iter().collect::<BTreeSet<_>>(), (10..20).map(|i| format!("user:{i}")).collect());
    assert!(scan_all(&mut c, json!({"match":"nothing*"})).is_empty());
    // type filter
    let strings: BTreeSet<String> = scan_all(&mut c, json!({"type":"string"})).into_iter().collect();
    assert_eq!(strings, all);
    for t in ["hash", "set", "zset", "list"] {
        assert!(scan_all(&mut c, json!({"type":t})).is_empty(), "type {t}");
    }
    // Invalid parameters name the parameter.
    assert_invalid_param(&c.err("key.scan", json!({"cursor":"abc"})), "cursor");
    assert_invalid_param(&c.err("key.scan", json!({"cursor":"-1"})), "cursor");
    assert_invalid_param(&c.err("key.scan", json!({"cursor":7})), "cursor");
    assert_invalid_param(&c.err("key.scan", json!({"type":"bogus"})), "type");
    assert_invalid_param(&c.err("key.scan", json!({"count":-1})), "count");
    assert_invalid_param(&c.err("key.scan", json!({"count":"10"})), "count");
    assert_invalid_param(&c.err("key.scan", json!({"match":1})), "match");
}

#[test]
fn scan_empty_store_and_past_the_end() {
    let s = start_default();
    let mut c = connect(&s);
    assert_eq!(c.ok("key.scan", json!({})), json!({"cursor":"0","keys":[]}));
    assert_eq!(c.ok("key.scan", json!({"cursor":"0","count":100})), json!({"cursor":"0","keys":[]}));
    // A cursor beyond the table is simply done.
    c.ok("string.set", json!({"key":"a","value":"1"}));
    assert_eq!(c.ok("key.scan", json!({"cursor":"99999999"})), json!({"cursor":"0","keys":[]}));
}

#[test]
fn scan_skips_expired_keys() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"keep","value":"1"}));
    c.ok("string.set", json!({"key":"gone","value":"1","ttl":0.05}));
    poll_until(std::time::Duration::from_secs(5), "'gone' to expire", || {
        c.call("string.get", json!({"key":"gone"})).get("error").map(|_| ())
    });
    assert_eq!(scan_all(&mut c, json!({"count":100})), vec!["keep".to_string()]);
}
