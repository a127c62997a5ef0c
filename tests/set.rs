//! `set.*` against the real server.
mod common;
use common::*;
use serde_json::json;

#[test]
fn add_remove_members() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let r = c.ok("set.add", json!({"key": "s", "members": ["a", "b", "c", "a"]}));
    assert_eq!(r["added"], 3);
    assert!(r["rev"].is_u64());
    assert_eq!(c.ok("set.add", json!({"key": "s", "member": "a"}))["added"], 0);
    assert_eq!(sorted(&c.ok("set.members", json!({"key": "s"}))["members"]), ["a", "b", "c"]);
    assert_eq!(c.ok("set.contains", json!({"key": "s", "member": "b"})), json!({"contains": true}));
    assert_eq!(c.ok("set.contains", json!({"key": "s", "member": "z"})), json!({"contains": false}));
    assert_eq!(c.ok("set.contains", json!({"key": "nope", "member": "z"})), json!({"contains": false}));
    assert_eq!(c.ok("set.card", json!({"key": "s"})), json!({"count": 3}));
    assert_eq!(c.ok("set.card", json!({"key": "nope"})), json!({"count": 0}));
    assert_eq!(c.ok("set.members", json!({"key": "nope"})), json!({"members": []}));
    assert_eq!(c.ok("set.remove", json!({"key": "s", "members": ["a", "z"]}))["removed"], 1);
    assert_eq!(c.ok("set.remove", json!({"key": "s", "member": "b"}))["removed"], 1);
    assert_eq!(c.ok("set.remove", json!({"key": "s", "member": "c"}))["removed"], 1);
    assert_eq!(c.ok("key.exists", json!({"key": "s"}))["exists"], false, "an emptied set is deleted");
    assert_eq!(c.ok("set.remove", json!({"key": "s", "member": "c"}))["removed"], 0);
    assert_eq!(c.err_code("set.add", json!({"key": "s", "members": []})), "invalid_params");
    assert_eq!(c.err_code("set.add", json!({"key": "s"})), "invalid_params");
}

#[test]
fn algebra() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    c.ok("set.add", json!({"key": "a", "members": ["1", "2", "3", "4"]}));
    c.ok("set.add", json!({"key": "b", "members": ["3", "4", "5"]}));
    c.ok("set.add", json!({"key": "c", "members": ["4", "5", "6"]}));
    assert_eq!(sorted(&c.ok("set.inter", json!({"keys": ["a", "b"]}))["members"]), ["3", "4"]);
    assert_eq!(sorted(&c.ok("set.inter", json!({"keys": ["a", "b", "c"]}))["members"]), ["4"]);
    assert_eq!(c.ok("set.inter", json!({"keys": ["a", "missing"]})), json!({"members": []}));
    assert_eq!(
        sorted(&c.ok("set.union", json!({"keys": ["a", "b", "missing"]}))["members"]),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(sorted(&c.ok("set.diff", json!({"keys": ["a", "b", "c"]}))["members"]), ["1", "2"]);
    assert_eq!(sorted(&c.ok("set.diff", json!({"keys": ["a", "missing"]}))["members"]), ["1", "2", "3", "4"]);
    assert_eq!(c.ok("set.diff", json!({"keys": ["missing", "a"]})), json!({"members": []}));
    c.ok("string.set", json!({"key": "str", "value": "x"}));
    assert_eq!(c.err_code("set.union", json!({"keys": ["a", "str"]})), "wrong_type");
    assert_eq!(c.err_code("set.inter", json!({"keys": ["missing", "str"]})), "wrong_type");
}

#[test]
fn pop() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    c.ok("set.add", json!({"key": "s", "members": ["a", "b", "c"]}));
    let one = c.ok("set.pop", json!({"key": "s"}));
    assert_eq!(one["members"].as_array().unwrap().len(), 1);
    assert!(one["rev"].is_u64());
    let rest = c.ok("set.pop", json!({"key": "s", "count": 10}));
    let mut all = sorted(&rest["members"]);
    all.extend(sorted(&one["members"]));
    all.sort();
    assert_eq!(all, ["a", "b", "c"]);
    assert_eq!(c.ok("key.exists", json!({"key": "s"}))["exists"], false);
    assert_eq!(c.ok("set.pop", json!({"key": "s"}))["members"], json!([]));
}

#[test]
fn wrong_type() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_wrong_type(
        &mut c,
        "set",
        &[
            ("set.add", json!({"member": "m"})),
            ("set.remove", json!({"member": "m"})),
            ("set.members", json!({})),
            ("set.contains", json!({"member": "m"})),
            ("set.card", json!({})),
            ("set.inter", json!({"keys": []})),
            ("set.union", json!({"keys": []})),
            ("set.diff", json!({"keys": []})),
            ("set.pop", json!({})),
        ],
    );
}
