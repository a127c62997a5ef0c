//! `string.*` end to end: exact result shapes, errors, revisions, TTL.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn get_missing_is_not_found_with_exact_message() {
    let s = start_default();
    let mut c = connect(&s);
    c.send_raw(r#"{"id":"msg_1","method":"string.get","params":{"key":"my-key"},"timestamp":"2024-01-15T10:30:00Z"}"#);
    let r = c.recv_json();
    assert_eq!(r["id"], "msg_1");
    assert_eq!(r["error"], json!({"code":"not_found","message":"Key 'my-key' not found"}));
    assert!(r.get("result").is_none(), "{r}");
    assert_rfc3339_utc(&r["timestamp"]);
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error", "id", "timestamp"], "{r}");
}

#[test]
fn set_then_get() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.call("string.set", json!({"key":"k","value":"v"}));
    assert_eq!(r["result"], json!({"set":true,"rev":1}));
    assert_rfc3339_utc(&r["timestamp"]);
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"v","ttl":null}));
    // Overwrite.
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"w"})), json!({"set":true,"rev":2}));
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"w","ttl":null}));
    // Unicode and escapes round-trip.
    let v = "héllo \"wörld\"\n\u{1F600}\\";
    c.ok("string.set", json!({"key":"ü/k","value":v}));
    assert_eq!(c.ok("string.get", json!({"key":"ü/k"})), json!({"value":v,"ttl":null}));
    // Empty value.
    c.ok("string.set", json!({"key":"e","value":""}));
    assert_eq!(c.ok("string.get", json!({"key":"e"})), json!({"value":"","ttl":null}));
}

#[test]
fn set_number_value_is_stored_as_decimal_text() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"n","value":42}));
    assert_eq!(c.ok("string.get", json!({"key":"n"})), json!({"value":"42","ttl":null}));
    c.ok("string.set", json!({"key":"f","value":-1.5}));
    assert_eq!(c.ok("string.get", json!({"key":"f"})), json!({"value":"-1.5","ttl":null}));
}

#[test]
fn set_invalid_params_name_the_parameter() {
    let s = start_default();
    let mut c = connect(&s);
    assert_invalid_param(&c.err("string.set", json!({"value":"v"})), "key");
    assert_invalid_param(&c.err("string.set", json!({"key":"k"})), "value");
    assert_invalid_param(&c.err("string.set", json!({"key":1,"value":"v"})), "key");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":true})), "value");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":{"a":1}})), "value");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":"v","ttl":0})), "ttl");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":"v","ttl":-5})), "ttl");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":"v","ttl":-0.001})), "ttl");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":"v","ttl":"10"})), "ttl");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":"v","nx":"yes"})), "nx");
    assert_invalid_param(&c.err("string.set", json!({"key":"k","value":"v","get":1})), "get");
    let e = c.err("string.set", json!({"key":"k","value":"v","nx":true,"xx":true}));
    assert_invalid_param(&e, "nx");
    assert_invalid_param(&e, "xx");
    assert_invalid_param(&c.err("string.get", json!({})), "key");
    assert_invalid_param(&c.err("string.get", json!({"key":["a"]})), "key");
    // Nothing was written by any of these.
    assert_eq!(c.rev(), 0);
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":0}));
}

#[test]
fn set_nx_xx() {
    let s = start_default();
    let mut c = connect(&s);
    // xx on a missing key: not set, no rev.
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"1","xx":true})), json!({"set":false,"rev":0}));
    assert_error(&c.err("string.get", json!({"key":"k"})), "not_found");
    // nx on a missing key: set.
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"1","nx":true})), json!({"set":true,"rev":1}));
    // nx on an existing key: not set, rev unchanged, value unchanged.
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"2","nx":true})), json!({"set":false,"rev":1}));
    assert_eq!(c.ok("string.get", json!({"key":"k"}))["value"], "1");
    // xx on an existing key: set.
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"3","xx":true})), json!({"set":true,"rev":2}));
    assert_eq!(c.ok("string.get", json!({"key":"k"}))["value"], "3");
    // Explicit false flags are the same as absent.
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"4","nx":false,"xx":false})), json!({"set":true,"rev":3}));
}

#[test]
fn set_get_returns_previous() {
    let s = start_default();
    let mut c = connect(&s);
    assert_eq!(
        c.ok("string.set", json!({"key":"k","value":"a","get":true})),
        json!({"set":true,"previous":null,"rev":1})
    );
    assert_eq!(
        c.ok("string.set", json!({"key":"k","value":"b","get":true})),
        json!({"set":true,"previous":"a","rev":2})
    );
    // With nx on an existing key: not set, previous still reported.
    assert_eq!(
        c.ok("string.set", json!({"key":"k","value":"c","get":true,"nx":true})),
        json!({"set":false,"previous":"b","rev":2})
    );
    // With xx on a missing key.
    assert_eq!(
        c.ok("string.set", json!({"key":"m","value":"c","get":true,"xx":true})),
        json!({"set":false,"previous":null,"rev":2})
    );
}

#[test]
fn set_with_ttl_and_ttl_rounding() {
    let s = start_default();
    let mut c = connect(&s);
    assert_eq!(c.ok("string.set", json!({"key":"k","value":"v","ttl":10})), json!({"set":true,"rev":1}));
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"v","ttl":10}));
    // Fractional TTLs are rounded up to whole seconds in results.
    c.ok("string.set", json!({"key":"f","value":"v","ttl":1.5}));
    assert_eq!(c.ok("string.get", json!({"key":"f"})), json!({"value":"v","ttl":2}));
    c.ok("string.set", json!({"key":"g","value":"v","ttl":100.5}));
    assert_eq!(c.ok("string.get", json!({"key":"g"}))["ttl"], 101);
    // A plain set clears the TTL (as Redis SET does).
    c.ok("string.set", json!({"key":"k","value":"w"}));
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"w","ttl":null}));
    assert_eq!(c.ok("key.ttl", json!({"key":"k"})), json!({"ttl":null}));
}

#[test]
fn ttl_expiry_is_observable() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"short","value":"v","ttl":0.2}));
    c.ok("string.set", json!({"key":"long","value":"v","ttl":100}));
    assert_eq!(c.ok("string.get", json!({"key":"short"})), json!({"value":"v","ttl":1}));
    let err = poll_until(Duration::from_secs(5), "key 'short' to expire", || {
        let r = c.call("string.get", json!({"key":"short"}));
        r.get("error").cloned()
    });
    assert_eq!(err, json!({"code":"not_found","message":"Key 'short' not found"}));
    assert_eq!(c.ok("key.exists", json!({"key":"short"})), json!({"exists":false}));
    assert_eq!(c.ok("key.type", json!({"key":"short"})), json!({"type":"none"}));
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":1}));
    assert_eq!(c.ok("string.get", json!({"key":"long"}))["value"], "v");
}

#[test]
fn active_expiry_removes_keys_nobody_reads() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"a","value":"v","ttl":0.1}));
    c.ok("string.set", json!({"key":"b","value":"v","ttl":0.1}));
    // dbsize does not touch the keys: only active expiry can bring it to 0.
    poll_until(Duration::from_secs(5), "dbsize to reach 0", || {
        (c.ok("server.dbsize", json!({})) == json!({"keys":0})).then_some(())
    });
}

#[test]
fn mget() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.mset", json!({"pairs":{"a":"1","b":"2"}}));
    assert_eq!(c.ok("string.mget", json!({"keys":["a","missing","b","a"]})), json!({"values":["1",null,"2","1"]}));
    assert_eq!(c.ok("string.mget", json!({"keys":["nope"]})), json!({"values":[null]}));
    assert_invalid_param(&c.err("string.mget", json!({})), "keys");
    assert_invalid_param(&c.err("string.mget", json!({"keys":[]})), "keys");
    assert_invalid_param(&c.err("string.mget", json!({"keys":"a"})), "keys");
    assert_invalid_param(&c.err("string.mget", json!({"keys":["a",1]})), "keys");
}

#[test]
fn mset_is_one_write_and_all_or_nothing() {
    let s = start_default();
    let mut c = connect(&s);
    assert_eq!(c.ok("string.mset", json!({"pairs":{"a":"1","b":2,"c":"3"}})), json!({"set":3,"rev":1}));
    assert_eq!(c.ok("string.mget", json!({"keys":["a","b","c"]})), json!({"values":["1","2","3"]}));
    // mset clears TTLs like set.
    c.ok("string.set", json!({"key":"t","value":"x","ttl":100}));
    assert_eq!(c.ok("string.mset", json!({"pairs":{"t":"y"}})), json!({"set":1,"rev":3}));
    assert_eq!(c.ok("string.get", json!({"key":"t"})), json!({"value":"y","ttl":null}));
    // Errors: nothing is written.
    assert_invalid_param(&c.err("string.mset", json!({})), "pairs");
    assert_invalid_param(&c.err("string.mset", json!({"pairs":{}})), "pairs");
    assert_invalid_param(&c.err("string.mset", json!({"pairs":["a","1"]})), "pairs");
    let e = c.err("string.mset", json!({"pairs":{"x":"1","y":true}}));
    assert_invalid_param(&e, "pairs");
    assert_error(&c.err("string.get", json!({"key":"x"})), "not_found");
    assert_eq!(c.rev(), 3);
}

#[test]
fn incr_decr() {
    let s = start_default();
    let mut c = connect(&s);
    // A missing key counts as 0.
    assert_eq!(c.ok("string.incr", json!({"key":"n"})), json!({"value":1,"rev":1}));
    assert_eq!(c.ok("string.incr", json!({"key":"n","by":10})), json!({"value":11,"rev":2}));
    assert_eq!(c.ok("string.decr", json!({"key":"n"})), json!({"value":10,"rev":3}));
    assert_eq!(c.ok("string.decr", json!({"key":"n","by":15})), json!({"value":-5,"rev":4}));
    assert_eq!(c.ok("string.incr", json!({"key":"n","by":-5})), json!({"value":-10,"rev":5}));
    assert_eq!(c.ok("string.decr", json!({"key":"m"})), json!({"value":-1,"rev":6}));
    // The value is stored as text.
    assert_eq!(c.ok("string.get", json!({"key":"n"})), json!({"value":"-10","ttl":null}));
    // A value set as a number is an integer.
    c.ok("string.set", json!({"key":"num","value":41}));
    assert_eq!(c.ok("string.incr", json!({"key":"num"}))["value"], 42);
}

#[test]
fn incr_keeps_ttl() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"n","value":"5","ttl":100}));
    assert_eq!(c.ok("string.incr", json!({"key":"n"}))["value"], 6);
    assert_eq!(c.ok("string.get", json!({"key":"n"})), json!({"value":"6","ttl":100}));
}

#[test]
fn incr_errors() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"s","value":"abc"}));
    c.ok("string.set", json!({"key":"f","value":"1.5"}));
    c.ok("string.set", json!({"key":"max","value":i64::MAX.to_string()}));
    c.ok("string.set", json!({"key":"min","value":i64::MIN.to_string()}));
    c.ok("string.set", json!({"key":"big","value":"9223372036854775808"}));
    let rev = c.rev();
    assert_error(&c.err("string.incr", json!({"key":"s"})), "not_integer");
    assert_error(&c.err("string.incr", json!({"key":"f"})), "not_integer");
    assert_error(&c.err("string.incr", json!({"key":"big"})), "not_integer");
    // Overflow is not_integer, and the value is left alone.
    assert_error(&c.err("string.incr", json!({"key":"max"})), "not_integer");
    assert_error(&c.err("string.decr", json!({"key":"min"})), "not_integer");
    assert_error(&c.err("string.incr", json!({"key":"min","by":-1})), "not_integer");
    assert_error(&c.err("string.decr", json!({"key":"zero","by":i64::MIN})), "not_integer");
    assert_error(&c.err("string.incr", json!({"key":"max","by":i64::MAX})), "not_integer");
    assert_eq!(c.ok("string.get", json!({"key":"max"}))["value"], i64::MAX.to_string());
    assert_eq!(c.ok("string.get", json!({"key":"s"}))["value"], "abc");
    // `by` must be a 64-bit integer.
    assert_invalid_param(&c.err("string.incr", json!({"key":"n","by":1.5})), "by");
    assert_invalid_param(&c.err("string.incr", json!({"key":"n","by":"1"})), "by");
    assert_invalid_param(&c.err("string.incr", json!({"key":"n","by":9223372036854775808u64})), "by");
    assert_invalid_param(&c.err("string.decr", json!({"key":"n","by":true})), "by");
    assert_invalid_param(&c.err("string.incr", json!({})), "key");
    // None of the failures wrote anything.
    assert_eq!(c.rev(), rev);
    assert_error(&c.err("string.get", json!({"key":"zero"})), "not_found");
    assert_error(&c.err("string.get", json!({"key":"n"})), "not_found");
    // The edges themselves are fine.
    assert_eq!(c.ok("string.incr", json!({"key":"min","by":i64::MAX}))["value"], -1);
    assert_eq!(c.ok("string.decr", json!({"key":"max","by":i64::MAX}))["value"], 0);
}

#[test]
fn append_and_strlen_count_utf8_bytes() {
    let s = start_default();
    let mut c = connect(&s);
    assert_eq!(c.ok("string.strlen", json!({"key":"k"})), json!({"length":0}));
    assert_eq!(c.ok("string.append", json!({"key":"k","value":"abc"})), json!({"length":3,"rev":1}));
    assert_eq!(c.ok("string.append", json!({"key":"k","value":"é"})), json!({"length":5,"rev":2}));
    assert_eq!(c.ok("string.append", json!({"key":"k","value":"日本"})), json!({"length":11,"rev":3}));
    assert_eq!(c.ok("string.append", json!({"key":"k","value":"\u{1F600}"})), json!({"length":15,"rev":4}));
    assert_eq!(c.ok("string.append", json!({"key":"k","value":7})), json!({"length":16,"rev":5}));
    assert_eq!(c.ok("string.get", json!({"key":"k"}))["value"], "abcé日本\u{1F600}7");
    assert_eq!(c.ok("string.strlen", json!({"key":"k"})), json!({"length":16}));
    c.ok("string.set", json!({"key":"h","value":"héllo"}));
    assert_eq!(c.ok("string.strlen", json!({"key":"h"})), json!({"length":6}));
    assert_invalid_param(&c.err("string.append", json!({"key":"k"})), "value");
    assert_invalid_param(&c.err("string.strlen", json!({})), "key");
}

#[test]
fn append_keeps_ttl_and_empty_append_is_a_no_op() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"k","value":"ab","ttl":100}));
    assert_eq!(c.ok("string.append", json!({"key":"k","value":"c"})), json!({"length":3,"rev":2}));
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"abc","ttl":100}));
    // Appending "" to an existing key changes nothing: no rev.
    assert_eq!(c.ok("string.append", json!({"key":"k","value":""})), json!({"length":3,"rev":2}));
}

#[test]
fn rev_rises_by_one_per_changing_write_only() {
    let s = start_default();
    let mut c = connect(&s);
    assert_eq!(c.hello["rev"], 0);
    let mut expect = 0;
    let writes = [
        ("string.set", json!({"key":"a","value":"1"}), true),
        ("string.set", json!({"key":"a","value":"1","nx":true}), false),
        ("string.set", json!({"key":"zz","value":"1","xx":true}), false),
        ("string.incr", json!({"key":"a"}), true),
        ("string.mset", json!({"pairs":{"b":"1","c":"2"}}), true),
        ("string.append", json!({"key":"b","value":"x"}), true),
        ("key.del", json!({"key":"missing"}), false),
        ("key.del", json!({"keys":["b","c","missing"]}), true),
        ("key.expire", json!({"key":"missing","ttl":10}), false),
        ("key.expire", json!({"key":"a","ttl":10}), true),
        ("key.persist", json!({"key":"a"}), true),
        ("key.persist", json!({"key":"a"}), false),
        ("key.rename", json!({"key":"a","new_key":"b"}), true),
    ];
    for (method, params, changes) in writes {
        if changes {
            expect += 1;
        }
        let r = c.ok(method, params.clone());
        assert_eq!(r["rev"], expect, "{method} {params} → {r}");
        // Reads do not carry or raise rev.
        let info = c.ok("server.info", json!({}));
        assert_eq!(info["rev"], expect);
    }
    assert!(c.ok("string.get", json!({"key":"b"})).get("rev").is_none());
}

#[test]
fn very_large_ttls() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"k","value":"v","ttl":1_000_000_000_000_000u64}));
    assert_eq!(c.ok("string.get", json!({"key":"k"})), json!({"value":"v","ttl":1_000_000_000_000_000u64}));
    // Beyond what milliseconds can hold: saturates, the key simply does not expire soon.
    c.ok("string.set", json!({"key":"h","value":"v","ttl":1e300}));
    assert!(c.ok("key.ttl", json!({"key":"h"}))["ttl"].as_i64().is_some_and(|t| t > 1_000_000_000_000_000));
    assert_eq!(c.ok("key.expire", json!({"key":"k","ttl":1e300})), json!({"updated":true,"rev":3}));
    assert!(c.ok("key.ttl", json!({"key":"k"}))["ttl"].as_i64().is_some_and(|t| t > 1_000_000_000_000_000));
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

#[test]
fn increments_by_zero_change_nothing() {
    let s = start_default();
    let mut c = connect(&s);
    c.ok("string.set", json!({"key":"n","value":"5"}));
    c.ok("hash.set", json!({"key":"h","field":"f","value":"5"}));
    c.ok("zset.add", json!({"key":"z","member":"m","score":5}));
    let rev = c.ok("server.info", json!({}))["rev"].as_u64().unwrap();
    assert_eq!(c.ok("string.incr", json!({"key":"n","by":0})), json!({"value":5,"rev":rev}));
    assert_eq!(c.ok("string.decr", json!({"key":"n","by":0})), json!({"value":5,"rev":rev}));
    assert_eq!(c.ok("hash.incr", json!({"key":"h","field":"f","by":0})), json!({"value":5,"rev":rev}));
    assert_eq!(c.ok("zset.incr", json!({"key":"z","member":"m","by":0})), json!({"score":5,"rev":rev}));
    // A non-canonical integer is rewritten by an increment of 0: that is a change.
    c.ok("string.set", json!({"key":"p","value":"007"}));
    let r = c.ok("string.incr", json!({"key":"p","by":0}));
    assert_eq!(r["value"], 7);
    assert_eq!(r["rev"], rev + 2);
    // Missing keys and fields are created: changes.
    assert_eq!(c.ok("string.incr", json!({"key":"new","by":0})), json!({"value":0,"rev":rev + 3}));
    assert_eq!(c.ok("hash.incr", json!({"key":"h","field":"g","by":0})), json!({"value":0,"rev":rev + 4}));
}
