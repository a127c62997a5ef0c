//! `zset.*` against the real server.
mod common;
use common::*;
use serde_json::json;

fn pairs(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["member"].as_str().unwrap().to_string(), e["score"].clone()))
        .collect()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    pairs(v).into_iter().map(|(m, _)| m).collect()
}

#[test]
fn add_score_rank_card() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let r = c.ok("zset.add", json!({"key": "z", "member": "a", "score": 1}));
    assert_eq!(r["added"], 1);
    assert!(r["rev"].is_u64());
    let r = c.ok(
        "zset.add",
        json!({"key": "z", "members": [{"member": "b", "score": 2.5}, {"member": "c", "score": 2.5}, {"member": "a", "score": 3}]}),
    );
    assert_eq!(r["added"], 2, "an update is not an addition");
    assert_eq!(c.ok("zset.score", json!({"key": "z", "member": "a"})), json!({"score": 3}));
    assert_eq!(c.ok("zset.score", json!({"key": "z", "member": "b"})), json!({"score": 2.5}));
    assert_eq!(c.err_code("zset.score", json!({"key": "z", "member": "zz"})), "not_found");
    assert_eq!(c.err_code("zset.score", json!({"key": "nope", "member": "a"})), "not_found");
    assert_eq!(c.ok("zset.rank", json!({"key": "z", "member": "b"})), json!({"rank": 0}), "ties order by member");
    assert_eq!(c.ok("zset.rank", json!({"key": "z", "member": "c"})), json!({"rank": 1}));
    assert_eq!(c.ok("zset.rank", json!({"key": "z", "member": "a", "rev": true})), json!({"rank": 0}));
    assert_eq!(c.err_code("zset.rank", json!({"key": "z", "member": "zz"})), "not_found");
    assert_eq!(c.err_code("zset.rank", json!({"key": "nope", "member": "zz"})), "not_found");
    assert_eq!(c.ok("zset.card", json!({"key": "z"})), json!({"count": 3}));
    assert_eq!(c.ok("zset.card", json!({"key": "nope"})), json!({"count": 0}));
}

#[test]
fn invalid_scores() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    for bad in [json!("nan"), json!("abc"), json!(null), json!([1]), json!("(1")] {
        assert_eq!(c.err_code("zset.add", json!({"key": "z", "member": "a", "score": bad})), "invalid_params", "{bad}");
    }
    assert_eq!(c.err_code("zset.add", json!({"key": "z", "members": [{"member": "a"}]})), "invalid_params");
    assert_eq!(
        c.err_code("zset.add", json!({"key": "z", "members": [{"member": "a", "score": 1}, {"score": 1}]})),
        "invalid_params"
    );
    assert_eq!(c.err_code("zset.add", json!({"key": "z", "members": []})), "invalid_params");
    assert_eq!(c.ok("key.exists", json!({"key": "z"}))["exists"], false, "nothing half-applied");
    // Infinities are valid scores, spelled as strings both ways.
    c.ok(
        "zset.add",
        json!({"key": "z", "members": [{"member": "lo", "score": "-inf"}, {"member": "hi", "score": "+inf"}]}),
    );
    assert_eq!(c.ok("zset.score", json!({"key": "z", "member": "hi"})), json!({"score": "+inf"}));
    assert_eq!(c.ok("zset.score", json!({"key": "z", "member": "lo"})), json!({"score": "-inf"}));
    assert_eq!(
        c.err_code("zset.incr", json!({"key": "z", "member": "hi", "by": "-inf"})),
        "invalid_params",
        "inf - inf is NaN"
    );
}

#[test]
fn incr_and_remove() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_eq!(c.ok("zset.incr", json!({"key": "z", "member": "a", "by": 2}))["score"], 2);
    assert_eq!(c.ok("zset.incr", json!({"key": "z", "member": "a", "by": 0.5}))["score"], 2.5);
    assert_eq!(c.err_code("zset.incr", json!({"key": "z", "member": "a"})), "invalid_params", "by is required");
    c.ok("zset.add", json!({"key": "z", "member": "b", "score": 1}));
    assert_eq!(c.ok("zset.remove", json!({"key": "z", "members": ["a", "q"]}))["removed"], 1);
    assert_eq!(c.ok("zset.remove", json!({"key": "z", "member": "b"}))["removed"], 1);
    assert_eq!(c.ok("key.exists", json!({"key": "z"}))["exists"], false, "an emptied zset is deleted");
    assert_eq!(c.ok("zset.remove", json!({"key": "z", "member": "b"}))["removed"], 0);
}

#[test]
fn ranges() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let members: Vec<_> = (0..10).map(|i| json!({"member": format!("m{i}"), "score": i})).collect();
    c.ok("zset.add", json!({"key": "z", "members": members}));
    let r = c.ok("zset.range", json!({"key": "z", "start": 0, "stop": 2}));
    assert_eq!(
        r,
        json!({"members": [{"member": "m0", "score": 0}, {"member": "m1", "score": 1}, {"member": "m2", "score": 2}]})
    );
    assert_eq!(names(&c.ok("zset.range", json!({"key": "z", "start": -2, "stop": -1}))), ["m8", "m9"]);
    assert_eq!(names(&c.ok("zset.range", json!({"key": "z", "start": 0, "stop": 1, "rev": true}))), ["m9", "m8"]);
    assert_eq!(names(&c.ok("zset.range", json!({"key": "z", "start": 5, "stop": 2}))), Vec::<String>::new());
    assert_eq!(c.ok("zset.range", json!({"key": "nope", "start": 0, "stop": -1})), json!({"members": []}));
    let by = |c: &mut Client, p: serde_json::Value| {
        let mut q = p;
        q["key"] = json!("z");
        names(&c.ok("zset.range_by_score", q))
    };
    assert_eq!(by(&mut c, json!({"min": 2, "max": 4})), ["m2", "m3", "m4"]);
    assert_eq!(by(&mut c, json!({"min": "(2", "max": "(4"})), ["m3"]);
    assert_eq!(by(&mut c, json!({"min": "-inf", "max": 1})), ["m0", "m1"]);
    assert_eq!(by(&mut c, json!({"min": "8.5", "max": "+inf"})), ["m9"]);
    assert_eq!(by(&mut c, json!({"min": "-inf", "max": "+inf", "offset": 2, "limit": 3})), ["m2", "m3", "m4"]);
    assert_eq!(by(&mut c, json!({"min": 2, "max": 6, "rev": true, "limit": 2})), ["m6", "m5"]);
    assert_eq!(by(&mut c, json!({"min": 5, "max": 1})), Vec::<String>::new());
    assert_eq!(c.err_code("zset.range_by_score", json!({"key": "z", "min": "x", "max": 1})), "invalid_params");
    assert_eq!(c.err_code("zset.range_by_score", json!({"key": "z", "min": 1})), "invalid_params");
    assert_eq!(c.ok("zset.range_by_score", json!({"key": "nope", "min": 1, "max": 2})), json!({"members": []}));
}

#[test]
fn wrong_type() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    assert_wrong_type(
        &mut c,
        "zset",
        &[
            ("zset.add", json!({"member": "m", "score": 1})),
            ("zset.score", json!({"member": "m"})),
            ("zset.incr", json!({"member": "m", "by": 1})),
            ("zset.remove", json!({"member": "m"})),
            ("zset.rank", json!({"member": "m"})),
            ("zset.range", json!({"start": 0, "stop": -1})),
            ("zset.range_by_score", json!({"min": "-inf", "max": "+inf"})),
            ("zset.card", json!({})),
        ],
    );
}
