//! `key.scan` over every type, under concurrent writes, through the real server.
mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;

fn scan_all(c: &mut Client, extra: serde_json::Value, mut between: impl FnMut(&mut Client, usize)) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut round = 0;
    loop {
        let mut p = extra.clone();
        p["cursor"] = json!(cursor);
        let r = c.ok("key.scan", p);
        keys.extend(r["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()));
        cursor = r["cursor"].as_str().unwrap().to_string();
        between(c, round);
        round += 1;
        if cursor == "0" {
            return keys;
        }
    }
}

#[test]
fn type_filter_covers_every_type() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    seed_all_types(&mut c);
    for (ty, key) in TYPED_KEYS {
        let keys = scan_all(&mut c, json!({"type": ty, "count": 100}), |_, _| {});
        assert_eq!(keys, [key], "type {ty}");
    }
    let all: HashSet<_> = scan_all(&mut c, json!({"match": "t:*"}), |_, _| {}).into_iter().collect();
    assert_eq!(all.len(), 5);
    assert_eq!(scan_all(&mut c, json!({"match": "t:*set"}), |_, _| {}).len(), 2);
    assert_eq!(c.err_code("key.scan", json!({"type": "stream"})), "invalid_params");
}

#[test]
fn stable_keys_survive_churn() {
    let srv = coll_server(|_| {});
    let mut c = srv.client();
    let mut writer = srv.client();
    let mut stable = HashSet::new();
    for i in 0..400 {
        let key = format!("stable:{i}");
        match i % 5 {
            0 => c.ok("string.set", json!({"key": key, "value": "v"})),
            1 => c.ok("hash.set", json!({"key": key, "field": "f", "value": "v"})),
            2 => c.ok("set.add", json!({"key": key, "member": "m"})),
            3 => c.ok("zset.add", json!({"key": key, "member": "m", "score": i})),
            _ => c.ok("list.push", json!({"key": key, "value": "v"})),
        };
        stable.insert(key);
    }
    // Churn: another connection creates and deletes keys of every type between calls
    // (freeing and reusing slots on both sides of the cursor).
    let seen: HashSet<String> = scan_all(&mut c, json!({"count": 17}), |_, round| {
        for j in 0..15 {
            let key = format!("tmp:{round}:{j}");
            writer.ok("list.push", json!({"key": key, "values": ["a", "b"]}));
            writer.ok("zset.add", json!({"key": format!("{key}z"), "member": "m", "score": 1}));
        }
        for j in 0..10 {
            let key = format!("tmp:{round}:{j}");
            writer.ok("list.pop", json!({"key": key, "count": 2}));
            writer.ok("key.del", json!({"key": format!("{key}z")}));
        }
        if round > 0 {
            writer
                .ok("key.del", json!({"keys": (10..15).map(|j| format!("tmp:{}:{j}", round - 1)).collect::<Vec<_>>()}));
        }
    })
    .into_iter()
    .collect();
    let missed: Vec<_> = stable.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missed.is_empty(), "keys present for the whole scan were missed: {missed:?}");
}
