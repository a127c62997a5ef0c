//! `DBX_MAXMEMORY` with both policies, through the real server.
mod common;
use common::*;
use dbx::config::MaxMemoryPolicy;
use serde_json::json;

const LIMIT: u64 = 2 * 1024 * 1024;

fn fill(c: &mut Client, prefix: &str, n: usize) -> usize {
    let mut ok = 0;
    let value = "x".repeat(1000);
    for i in 0..n {
        let r = c.call("string.set", json!({"key": format!("{prefix}{i}"), "value": value}));
        if r.get("error").is_some() {
            assert_eq!(r["error"]["code"], "oom", "{r}");
            return ok;
        }
        ok += 1;
    }
    ok
}

#[test]
fn noeviction_refuses_writes_but_serves_reads_and_deletes() {
    let srv = coll_server(|cfg| {
        cfg.maxmemory = LIMIT;
        cfg.maxmemory_policy = MaxMemoryPolicy::Noeviction;
    });
    let mut c = srv.client();
    let stored = fill(&mut c, "k", 10_000);
    assert!(stored > 100 && stored < 10_000, "stored {stored} before oom");
    let info = c.ok("server.info", json!({}));
    assert!(info["used_memory"].as_u64().unwrap() > LIMIT);
    assert_eq!(info["evicted_keys"], 0);
    assert_eq!(info["maxmemory"], LIMIT);
    // Every DENYOOM write is refused, also inside a batch; reads and deletes work.
    for (m, p) in [
        ("string.set", json!({"key": "new", "value": "v"})),
        ("hash.set", json!({"key": "h", "field": "f", "value": "v"})),
        ("set.add", json!({"key": "s", "member": "m"})),
        ("zset.add", json!({"key": "z", "member": "m", "score": 1})),
        ("list.push", json!({"key": "l", "value": "v"})),
    ] {
        assert_eq!(c.err_code(m, p), "oom", "{m}");
    }
    let b = c.ok(
        "batch",
        json!({"operations": [
            {"method": "string.get", "params": {"key": "k0"}},
            {"method": "string.set", "params": {"key": "new", "value": "v"}},
        ]}),
    );
    assert!(b["results"][0]["result"]["value"].is_string());
    assert_eq!(b["results"][1]["error"]["code"], "oom");
    assert!(c.ok("string.get", json!({"key": "k1"}))["value"].is_string());
    let keys: Vec<String> = (0..stored).map(|i| format!("k{i}")).collect();
    assert_eq!(c.ok("key.del", json!({"keys": keys}))["deleted"], stored as u64);
    // Under the limit again: writes work.
    c.ok("string.set", json!({"key": "new", "value": "v"}));
}

#[test]
fn allkeys_lru_evicts_and_never_answers_oom() {
    let srv = coll_server(|cfg| {
        cfg.maxmemory = LIMIT;
        cfg.maxmemory_policy = MaxMemoryPolicy::AllkeysLru;
    });
    let mut c = srv.client();
    let total = 6000;
    assert_eq!(fill(&mut c, "k", total), total, "no write is refused under allkeys-lru");
    let info = c.ok("server.info", json!({}));
    let evicted = info["evicted_keys"].as_u64().unwrap();
    assert!(evicted > 0, "{info}");
    assert_eq!(info["keys"].as_u64().unwrap() + evicted, total as u64);
    // The limit holds within one write's overshoot.
    assert!(info["used_memory"].as_u64().unwrap() < LIMIT + 4096, "{info}");
    // Collections are evictable and writable too.
    for i in 0..200 {
        c.ok("hash.set", json!({"key": format!("h{i}"), "field": "f", "value": "x".repeat(1000)}));
    }
    assert_eq!(c.ok("hash.len", json!({"key": "h199"}))["length"], 1);
}
