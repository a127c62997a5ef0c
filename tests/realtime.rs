//! Real time end to end (issue 6): pub/sub, key watches, resume, slow consumers and
//! key scopes, against the real server in-process.
//!
//! No timing assertions except generous deadlines; the measured expiry lateness is
//! printed (`cargo test --test realtime -- --nocapture`).

mod common;

use common::{Client, TestServer};
use dbx::config::Config;
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

/// How long a single wait for a reply or an event may take before the test fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Defaults for these tests: memory only, no rate limit (some tests send thousands
/// of requests on one connection), no credential.
fn config() -> Config {
    let mut c = Config::for_tests();
    c.persist = false;
    c.ws_rate_limit = 0;
    c
}

/// A server whose clients wait up to `REPLY_TIMEOUT`.
fn server(cfg: Config) -> TestServer {
    TestServer::start(cfg).timeout(REPLY_TIMEOUT)
}

/// `(key, event, rev)` of a keyspace message, for compact comparisons.
fn ks(v: &Value) -> (Option<String>, String, u64) {
    assert_eq!(v["type"], "keyspace", "not a keyspace message: {v}");
    assert!(v["timestamp"].is_string(), "keyspace message without timestamp: {v}");
    (
        v["key"].as_str().map(str::to_string),
        v["event"].as_str().expect("event").to_string(),
        v["rev"].as_u64().expect("rev"),
    )
}

fn k(key: &str, event: &str, rev: u64) -> (Option<String>, String, u64) {
    (Some(key.to_string()), event.to_string(), rev)
}

/// A short window for "nothing arrives" checks: an event caused by a reply the client
/// already holds is queued in the same loop turn, so it would be on the wire already.
const QUIET: Duration = Duration::from_millis(150);

fn rev_of(c: &mut Client) -> u64 {
    c.ok("server.info", json!({}))["rev"].as_u64().expect("rev")
}

fn epoch_of(c: &mut Client) -> String {
    c.ok("server.info", json!({}))["epoch"].as_str().expect("epoch").to_string()
}

// ---------------------------------------------------------------------------------
// Pub/sub
// ---------------------------------------------------------------------------------

#[test]
fn subscribe_result_and_data_echoed_exactly() {
    let srv = server(config());
    let mut sub = srv.client();
    let mut publ = srv.client();
    let r = sub.ok("pubsub.subscribe", json!({"channels": ["news", "other"]}));
    assert_eq!(r, json!({"subscribed": ["news", "other"]}));
    let r = sub.ok("pubsub.subscribe", json!({"patterns": ["sport.*"]}));
    assert_eq!(r, json!({"subscribed": ["sport.*"]}));
    assert_eq!(sub.err_code("pubsub.subscribe", json!({})), "invalid_params");

    let samples = [
        json!({"a": 1, "nested": {"b": [1, 2, {"c": null}]}, "s": "é ✓ \"q\""}),
        json!([1, "two", 3.5, false, null]),
        json!(42),
        json!(-7.25),
        json!("plain string"),
        json!(null),
        json!(true),
        json!({}),
        json!([]),
    ];
    for d in &samples {
        let r = publ.ok("pubsub.publish", json!({"channel": "news", "data": d}));
        assert_eq!(r["receivers"], 1);
        let e = sub.event();
        assert_eq!(e["type"], "event");
        assert_eq!(e["channel"], "news");
        assert_eq!(e["pattern"], Value::Null);
        assert!(e.as_object().expect("object").contains_key("pattern"), "pattern present (null): {e}");
        assert!(e["timestamp"].is_string());
        assert!(e.get("id").is_none());
        assert_eq!(&e["data"], d);
    }
    // The data is echoed byte for byte (raw JSON, not re-serialized).
    let id = publ.call_raw(
        r#"{"id":"raw","method":"pubsub.publish","params":{"channel":"news","data":{"x" : 1.50, "y":[ 1e3 ]}}}"#,
        json!("raw"),
    );
    assert_eq!(id["result"]["receivers"], 1);
    let raw = sub.next_event_raw(Duration::from_secs(5)).expect("event");
    assert!(raw.contains(r#""data":{"x" : 1.50, "y":[ 1e3 ]}"#), "data not echoed exactly: {raw}");

    // A pattern subscription.
    let r = publ.ok("pubsub.publish", json!({"channel": "sport.tennis", "data": "ace"}));
    assert_eq!(r["receivers"], 1);
    let e = sub.event();
    assert_eq!((&e["channel"], &e["pattern"], &e["data"]), (&json!("sport.tennis"), &json!("sport.*"), &json!("ace")));

    // Nobody there: 0 receivers, nothing delivered; the publisher itself gets nothing.
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "nobody", "data": 1}))["receivers"], 0);
    sub.no_event(QUIET);
    publ.no_event(QUIET);
}

#[test]
fn channel_and_pattern_each_deliver() {
    let srv = server(config());
    let mut sub = srv.client();
    let mut other = srv.client();
    let mut publ = srv.client();
    sub.ok("pubsub.subscribe", json!({"channels": ["chat.room1"], "patterns": ["chat.*", "chat.room?", "nomatch.*"]}));
    other.ok("pubsub.subscribe", json!({"patterns": ["*"]}));
    // sub: channel + 2 patterns = 3; other: 1.
    let r = publ.ok("pubsub.publish", json!({"channel": "chat.room1", "data": {"n": 1}}));
    assert_eq!(r["receivers"], 4);
    let mut patterns: Vec<Value> = (0..3).map(|_| sub.event()["pattern"].clone()).collect();
    patterns.sort_by_key(|p| p.to_string());
    assert_eq!(patterns, vec![json!("chat.*"), json!("chat.room?"), Value::Null]);
    sub.no_event(QUIET);
    let e = other.event();
    assert_eq!((&e["channel"], &e["pattern"]), (&json!("chat.room1"), &json!("*")));
    other.no_event(QUIET);
    // Subscribing twice to the same channel does not double deliveries.
    sub.ok("pubsub.subscribe", json!({"channels": ["chat.room1"]}));
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "chat.room1", "data": 2}))["receivers"], 4);
    // Character classes.
    sub.ok("pubsub.subscribe", json!({"patterns": ["x[ab]y"]}));
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "xby", "data": 3}))["receivers"], 2);
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "xcy", "data": 3}))["receivers"], 1);
}

#[test]
fn publish_order_is_kept() {
    const N: u64 = 500;
    let srv = server(config());
    let mut sub = srv.client();
    let mut pattern_sub = srv.client();
    let mut publ = srv.client();
    sub.ok("pubsub.subscribe", json!({"channels": ["seq"]}));
    pattern_sub.ok("pubsub.subscribe", json!({"patterns": ["s*"]}));
    // Pipelined: all 500 requests go out before any reply is read.
    let ids: Vec<u64> =
        (0..N).map(|i| publ.write("pubsub.publish", json!({"channel": "seq", "data": {"i": i}}))).collect();
    publ.flush();
    for id in ids {
        let r = publ.reply(id);
        assert_eq!(r["result"]["receivers"], 2, "{r}");
    }
    for c in [&mut sub, &mut pattern_sub] {
        for i in 0..N {
            let e = c.event();
            assert_eq!(e["data"]["i"], i, "event {i} out of order: {e}");
        }
        c.no_event(QUIET);
    }
}

#[test]
fn unsubscribe_some_and_all() {
    let srv = server(config());
    let mut sub = srv.client();
    let mut publ = srv.client();
    sub.ok("pubsub.subscribe", json!({"channels": ["a", "b"], "patterns": ["p.*", "q.*"]}));
    let r = sub.ok("pubsub.unsubscribe", json!({"channels": ["a", "not-subscribed"]}));
    assert_eq!(r, json!({"unsubscribed": ["a"]}));
    let r = sub.ok("pubsub.unsubscribe", json!({"patterns": ["q.*"]}));
    assert_eq!(r, json!({"unsubscribed": ["q.*"]}));
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "a", "data": 1}))["receivers"], 0);
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "q.1", "data": 1}))["receivers"], 0);
    assert_eq!(publ.ok("pubsub.publish", json!({"channel": "b", "data": 1}))["receivers"], 1);
    assert_eq!(sub.event()["channel"], "b");
    // None: everything that is left.
    let r = sub.ok("pubsub.unsubscribe", json!({}));
    let mut left: Vec<String> =
        r["unsubscribed"].as_array().expect("array").iter().map(|v| v.as_str().expect("str").to_string()).collect();
    left.sort();
    assert_eq!(left, vec!["b", "p.*"]);
    for ch in ["a", "b", "p.x"] {
        assert_eq!(publ.ok("pubsub.publish", json!({"channel": ch, "data": 1}))["receivers"], 0);
    }
    sub.no_event(QUIET);
    assert_eq!(sub.ok("pubsub.unsubscribe", json!({})), json!({"unsubscribed": []}));
}

// ---------------------------------------------------------------------------------
// Key watches
// ---------------------------------------------------------------------------------

#[test]
fn watch_returns_values_and_rev() {
    let srv = server(config());
    let mut w = srv.client();
    let mut c = srv.client();
    c.ok("string.set", json!({"key": "a", "value": "1"}));
    c.ok("string.set", json!({"key": "user:1", "value": "ann"}));
    c.ok("string.set", json!({"key": "user:2", "value": "bob"}));
    c.ok("string.set", json!({"key": "other", "value": "x"}));
    let rev = rev_of(&mut c);
    assert_eq!(rev, 4);
    let r = w.ok("key.watch", json!({"keys": ["a", "missing"], "patterns": ["user:*"]}));
    assert_eq!(r["watching"], json!(["a", "missing", "user:*"]));
    assert_eq!(r["rev"], rev);
    assert_eq!(
        r["values"],
        json!({
            "a": {"type": "string", "value": "1"},
            "user:1": {"type": "string", "value": "ann"},
            "user:2": {"type": "string", "value": "bob"},
        })
    );
    assert!(r.get("replay").is_none() && r.get("gap").is_none());
    assert_eq!(w.err_code("key.watch", json!({})), "invalid_params");
    assert_eq!(w.err_code("key.watch", json!({"keys": ["a"], "since": 1})), "invalid_params", "since needs epoch");
    // The hello carries the same epoch and rev.
    let fresh = srv.client();
    assert_eq!(fresh.hello["rev"], rev);
    assert_eq!(fresh.hello["epoch"], json!(epoch_of(&mut c)));
}

/// Every kind of write produces keyspace events with the write's rev, in rev order.
#[test]
fn every_write_emits_events_in_rev_order() {
    let srv = server(config());
    let mut w = srv.client();
    let mut c = srv.client();
    let start = w.ok("key.watch", json!({"patterns": ["k:*"]}))["rev"].as_u64().expect("rev");
    let mut expect = Vec::new();
    let mut write = |c: &mut Client, method: &str, params: Value, keys: &[&str]| -> u64 {
        let r = c.ok(method, params);
        let rev = r["rev"].as_u64().unwrap_or_else(|| panic!("{method} result without rev: {r}"));
        for key in keys {
            expect.push(k(key, method, rev));
        }
        rev
    };
    let r1 = write(&mut c, "string.set", json!({"key": "k:s", "value": "v"}), &["k:s"]);
    assert!(r1 > start);
    write(&mut c, "string.mset", json!({"pairs": {"k:m1": "1", "k:m2": "2"}}), &["k:m1", "k:m2"]);
    write(&mut c, "string.incr", json!({"key": "k:n"}), &["k:n"]);
    write(&mut c, "string.decr", json!({"key": "k:n", "by": 5}), &["k:n"]);
    write(&mut c, "string.append", json!({"key": "k:s", "value": "w"}), &["k:s"]);
    write(&mut c, "key.expire", json!({"key": "k:s", "ttl": 100}), &["k:s"]);
    write(&mut c, "key.persist", json!({"key": "k:s"}), &["k:s"]);
    write(&mut c, "key.rename", json!({"key": "k:s", "new_key": "k:t"}), &["k:s", "k:t"]);
    write(&mut c, "key.del", json!({"keys": ["k:m1", "k:m2", "k:none"]}), &["k:m1", "k:m2"]);
    // A write to a key outside the pattern: a rev, but no event for this watcher.
    c.ok("string.set", json!({"key": "elsewhere", "value": "1"}));
    // A batch: each operation its own rev and event.
    let b = c.ok(
        "batch",
        json!({"operations": [
            {"method": "string.set", "params": {"key": "k:b1", "value": "1"}},
            {"method": "string.get", "params": {"key": "k:b1"}},
            {"method": "string.incr", "params": {"key": "k:b1"}},
            {"method": "key.del", "params": {"key": "k:b1"}},
        ]}),
    );
    let results = b["results"].as_array().expect("results");
    let revs: Vec<u64> = [0, 2, 3].iter().map(|&i| results[i]["result"]["rev"].as_u64().expect("rev")).collect();
    assert!(revs[0] < revs[1] && revs[1] < revs[2], "batch revs {revs:?}");
    expect.push(k("k:b1", "string.set", revs[0]));
    expect.push(k("k:b1", "string.incr", revs[1]));
    expect.push(k("k:b1", "key.del", revs[2]));
    // key.expire with ttl <= 0 deletes.
    c.ok("string.set", json!({"key": "k:gone", "value": "1"}));
    let rset = rev_of(&mut c);
    expect.push(k("k:gone", "string.set", rset));
    let r = c.ok("key.expire", json!({"key": "k:gone", "ttl": 0}));
    expect.push(k("k:gone", "key.expire", r["rev"].as_u64().expect("rev")));

    let got: Vec<_> = (0..expect.len()).map(|_| ks(&w.event())).collect();
    assert_eq!(got, expect);
    let revs: Vec<u64> = got.iter().map(|e| e.2).collect();
    assert!(revs.windows(2).all(|p| p[0] <= p[1]), "rev order {revs:?}");
    w.no_event(QUIET);

    // server.flush: one event per watching connection, key null, the new epoch.
    let old_epoch = epoch_of(&mut c);
    let f = c.ok("server.flush", json!({}));
    let e = w.event();
    assert_eq!(e["key"], Value::Null);
    assert_eq!(e["event"], "server.flush");
    assert_eq!(e["rev"], f["rev"]);
    let new_epoch = epoch_of(&mut c);
    assert_ne!(new_epoch, old_epoch);
    assert_eq!(e["epoch"], json!(new_epoch));
    w.no_event(QUIET);
    // rev never goes back across a flush.
    assert!(rev_of(&mut c) >= f["rev"].as_u64().expect("rev"));
}

#[test]
fn exact_key_watch_and_unwatch() {
    let srv = server(config());
    let mut w = srv.client();
    let mut c = srv.client();
    w.ok("key.watch", json!({"keys": ["x", "y"], "patterns": ["z*"]}));
    let r = c.ok("string.set", json!({"key": "x", "value": "1"}));
    assert_eq!(ks(&w.event()), k("x", "string.set", r["rev"].as_u64().expect("rev")));
    c.ok("string.set", json!({"key": "xx", "value": "1"}));
    w.no_event(QUIET);
    assert_eq!(w.ok("key.unwatch", json!({"keys": ["x", "nope"]})), json!({"unwatched": ["x"]}));
    c.ok("string.set", json!({"key": "x", "value": "2"}));
    w.no_event(QUIET);
    let r = c.ok("string.set", json!({"key": "y", "value": "2"}));
    assert_eq!(ks(&w.event()), k("y", "string.set", r["rev"].as_u64().expect("rev")));
    let r = w.ok("key.unwatch", json!({}));
    let mut gone: Vec<&str> = r["unwatched"].as_array().expect("array").iter().filter_map(Value::as_str).collect();
    gone.sort_unstable();
    assert_eq!(gone, vec!["y", "z*"]);
    c.ok("string.set", json!({"key": "y", "value": "3"}));
    c.ok("string.set", json!({"key": "z1", "value": "3"}));
    c.ok("server.flush", json!({}));
    w.no_event(QUIET);
}

#[test]
fn noop_writes_emit_nothing_and_raise_no_rev() {
    let srv = server(config());
    let mut w = srv.client();
    let mut c = srv.client();
    c.ok("string.set", json!({"key": "a", "value": "1"}));
    w.ok("key.watch", json!({"keys": ["a", "missing"]}));
    let before = rev_of(&mut c);
    let r = c.ok("string.set", json!({"key": "a", "value": "2", "nx": true}));
    assert_eq!(r["set"], false);
    let r = c.ok("string.set", json!({"key": "missing", "value": "2", "xx": true}));
    assert_eq!(r["set"], false);
    let r = c.ok("key.del", json!({"key": "missing"}));
    assert_eq!(r["deleted"], 0);
    let r = c.ok("key.expire", json!({"key": "missing", "ttl": 10}));
    assert_eq!(r["updated"], false);
    let r = c.ok("key.persist", json!({"key": "a"}));
    assert_eq!(r["updated"], false, "a has no TTL");
    // Errors change nothing either.
    assert_eq!(c.err_code("string.incr", json!({"key": "a", "by": "x"})), "invalid_params");
    c.ok("string.set", json!({"key": "s", "value": "text"}));
    let before = before + 1; // that set (not watched) raised one rev
    assert_eq!(c.err_code("string.incr", json!({"key": "s"})), "not_integer");
    assert_eq!(rev_of(&mut c), before, "no-op writes raised the rev");
    w.no_event(QUIET);
    // The next real change is the very next rev.
    let r = c.ok("string.set", json!({"key": "a", "value": "3"}));
    assert_eq!(r["rev"], before + 1);
    assert_eq!(ks(&w.event()), k("a", "string.set", before + 1));
}

#[test]
fn own_write_reply_first_then_event() {
    let srv = server(config());
    let mut w = srv.client();
    w.ok("key.watch", json!({"patterns": ["mine:*"]}));
    let r = w.call("string.set", json!({"key": "mine:1", "value": "v"}));
    assert_eq!(w.queued(), 0, "the event came before the reply");
    let rev = r["result"]["rev"].as_u64().expect("rev");
    assert_eq!(ks(&w.event()), k("mine:1", "string.set", rev));
    // The same for a batch: the reply, then one event per operation.
    let r = w.call(
        "batch",
        json!({"operations": [
            {"method": "string.set", "params": {"key": "mine:2", "value": "1"}},
            {"method": "string.set", "params": {"key": "mine:3", "value": "1"}},
        ]}),
    );
    assert_eq!(w.queued(), 0, "batch events came before the reply");
    let results = r["result"]["results"].as_array().expect("results").clone();
    for (i, key) in ["mine:2", "mine:3"].iter().enumerate() {
        let rev = results[i]["result"]["rev"].as_u64().expect("rev");
        assert_eq!(ks(&w.event()), k(key, "string.set", rev));
    }
    w.no_event(QUIET);
}

#[test]
fn expired_event_arrives_on_time() {
    let srv = server(config());
    let mut w = srv.client();
    let mut c = srv.client();
    w.ok("key.watch", json!({"keys": ["t:exact"], "patterns": ["t:p*"]}));
    let t0 = Instant::now();
    let r1 = c.ok("string.set", json!({"key": "t:exact", "value": "v", "ttl": 0.5}));
    let r2 = c.ok("string.set", json!({"key": "t:pat", "value": "v", "ttl": 0.5}));
    assert_eq!(ks(&w.event()), k("t:exact", "string.set", r1["rev"].as_u64().expect("rev")));
    assert_eq!(ks(&w.event()), k("t:pat", "string.set", r2["rev"].as_u64().expect("rev")));
    let deadline = Duration::from_millis(500);
    let mut seen = Vec::new();
    for _ in 0..2 {
        // Nobody touches the keys: active expiry must fire the events.
        let e = w.next_event(deadline + Duration::from_secs(1)).expect("expired event within deadline + 1 s");
        let at = t0.elapsed();
        let (key, event, rev) = ks(&e);
        assert_eq!(event, "expired");
        assert!(rev > r2["rev"].as_u64().expect("rev"));
        assert!(at >= deadline - Duration::from_millis(5), "expired early: {at:?}");
        println!(
            "expired event for {} after {:?}: {} ms after the TTL deadline (contract: within 100 ms)",
            key.as_deref().unwrap_or("?"),
            at,
            at.saturating_sub(deadline).as_millis()
        );
        seen.push(key.expect("key"));
    }
    seen.sort();
    assert_eq!(seen, vec!["t:exact", "t:pat"]);
    assert_eq!(c.err_code("string.get", json!({"key": "t:exact"})), "not_found");
    w.no_event(QUIET);
}

// ---------------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------------

#[test]
fn reconnect_with_since_misses_nothing() {
    let srv = server(config());
    let mut c = srv.client();
    let mut w = srv.client();
    let epoch = w.hello["epoch"].as_str().expect("epoch").to_string();
    let r = w.ok("key.watch", json!({"keys": ["r:1"], "patterns": ["p:*"]}));
    let mut last = r["rev"].as_u64().expect("rev");
    c.ok("string.set", json!({"key": "r:1", "value": "a"}));
    last = ks(&w.event()).2.max(last);
    w.close();

    // While disconnected: two watched changes, two that are not.
    let a = c.ok("string.set", json!({"key": "p:x", "value": "1"}))["rev"].as_u64().expect("rev");
    c.ok("string.set", json!({"key": "q", "value": "1"}));
    let b = c.ok("string.mset", json!({"pairs": {"r:1": "b", "r:2": "c"}}))["rev"].as_u64().expect("rev");
    let d = c.ok("key.del", json!({"key": "p:x"}))["rev"].as_u64().expect("rev");
    let now = rev_of(&mut c);

    let mut w = srv.client();
    let r = w.ok("key.watch", json!({"keys": ["r:1"], "patterns": ["p:*"], "since": last, "epoch": epoch}));
    assert_eq!(r["watching"], json!(["r:1", "p:*"]));
    assert_eq!(r["rev"], now);
    assert!(r.get("gap").is_none() && r.get("values").is_none(), "{r}");
    let replay: Vec<_> = r["replay"].as_array().expect("replay").iter().map(ks).collect();
    assert_eq!(replay, vec![k("p:x", "string.set", a), k("r:1", "string.mset", b), k("p:x", "key.del", d)]);
    // Live from here on, no duplicate of the replay.
    w.no_event(QUIET);
    let e = c.ok("string.set", json!({"key": "p:y", "value": "1"}))["rev"].as_u64().expect("rev");
    assert_eq!(ks(&w.event()), k("p:y", "string.set", e));
    // since = current rev: an empty replay.
    let mut w2 = srv.client();
    let r = w2.ok("key.watch", json!({"keys": ["r:1"], "since": e, "epoch": epoch}));
    assert_eq!(r["replay"], json!([]));
    assert_eq!(r["rev"], e);
}

#[test]
fn gap_when_history_is_gone() {
    let mut cfg = config();
    cfg.watch_backlog = 5;
    let srv = server(cfg);
    let mut c = srv.client();
    let epoch = c.hello["epoch"].as_str().expect("epoch").to_string();
    let start = rev_of(&mut c);
    for i in 0..10 {
        c.ok("string.set", json!({"key": "g", "value": i.to_string()}));
    }
    let now = rev_of(&mut c);
    assert_eq!(now, start + 10);
    let mut w = srv.client();
    let r = w.ok("key.watch", json!({"keys": ["g"], "since": start, "epoch": epoch}));
    assert_eq!(r["gap"], true, "{r}");
    assert_eq!(r["epoch"], json!(epoch));
    assert_eq!(r["rev"], now);
    assert_eq!(r["values"], json!({"g": {"type": "string", "value": "9"}}));
    assert!(r.get("replay").is_none());
    // The last 5 changes are still there.
    let r = w.ok("key.watch", json!({"keys": ["g"], "since": now - 5, "epoch": epoch}));
    let revs: Vec<u64> = r["replay"].as_array().expect("replay").iter().map(|e| ks(e).2).collect();
    assert_eq!(revs, ((now - 4)..=now).collect::<Vec<_>>());
    // A rev from the future is a gap too.
    let r = w.ok("key.watch", json!({"keys": ["g"], "since": now + 100, "epoch": epoch}));
    assert_eq!(r["gap"], true);
    // Another epoch: a gap carrying the current epoch.
    let r = w.ok("key.watch", json!({"keys": ["g"], "since": now, "epoch": "not-the-epoch"}));
    assert_eq!(r["gap"], true);
    assert_eq!(r["epoch"], json!(epoch));
    // After a flush, the old epoch is gone even for a recent rev.
    c.ok("server.flush", json!({}));
    let r = w.ok("key.watch", json!({"keys": ["g"], "since": now, "epoch": epoch}));
    assert_eq!(r["gap"], true);
    assert_ne!(r["epoch"], json!(epoch));
    assert_eq!(r["values"], json!({}));
}

// ---------------------------------------------------------------------------------
// Slow consumers and scopes
// ---------------------------------------------------------------------------------

/// A subscriber that never reads is cut off; a fast one gets everything, in order.
#[test]
fn slow_subscriber_is_cut_off_fast_one_gets_everything() {
    let mut cfg = config();
    cfg.ws_max_outbound = 64 * 1024;
    let srv = server(cfg);
    let addr = srv.addr;

    // The slow one: a small receive buffer, and it never reads.
    let sock = common::tcp(addr);
    set_rcvbuf(&sock, 64 * 1024);
    let mut slow = Client::over(sock, addr, "/ws", &[], REPLY_TIMEOUT).map(|(c, _)| c).expect("slow connect");
    slow.ok("pubsub.subscribe", json!({"channels": ["firehose"]}));

    // The fast one reads on its own thread until it has every message.
    let mut fast = srv.client();
    fast.ok("pubsub.subscribe", json!({"channels": ["firehose"]}));
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    // What the fast one has received so far: the publisher waits for it before each
    // round, so the fast one never has more than a round (50 KiB, under the 64 KiB
    // limit) outstanding even when its thread gets no CPU for a while on a loaded
    // machine — only the slow one, which never reads, can cross the limit.
    let fast_got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let got_by_reader = fast_got.clone();
    let reader = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut expected_total = None;
        let mut progress = Instant::now();
        loop {
            if let Ok(n) = rx.try_recv() {
                expected_total = Some(n);
            }
            if expected_total == Some(got) {
                // Hand the client back: it stays connected for the count below.
                return (got, fast);
            }
            // Short waits: the total may arrive after the last event (a long blocking
            // read here would then wait for an event that never comes).
            match fast.next_event(Duration::from_millis(50)) {
                Some(e) => {
                    assert_eq!(e["data"]["i"], got, "fast subscriber: out of order");
                    got += 1;
                    got_by_reader.store(got, std::sync::atomic::Ordering::Release);
                    progress = Instant::now();
                }
                None => assert!(progress.elapsed() < Duration::from_secs(10), "fast subscriber starved at {got}"),
            }
        }
    });

    let mut publ = srv.client();
    let mut watcher = srv.client();
    let conns_before = watcher.ok("server.info", json!({}))["connections"].as_u64().expect("connections");
    let pad = "x".repeat(1000);
    let mut published = 0u64;
    let mut cut_at = None;
    let t0 = Instant::now();
    // Messages of 1 KiB, in pipelined rounds of 50; keep going (bounded) until the
    // slow subscriber is gone, since kernel buffers absorb part of the output.
    while published < 40_000 {
        let wait = Instant::now() + Duration::from_secs(10);
        while fast_got.load(std::sync::atomic::Ordering::Acquire) < published {
            assert!(Instant::now() < wait, "the fast subscriber fell a round behind for 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        let ids: Vec<u64> = (0..50)
            .map(|j| {
                publ.write("pubsub.publish", json!({"channel": "firehose", "data": {"i": published + j, "pad": pad}}))
            })
            .collect();
        publ.flush();
        for id in ids {
            let r = publ.reply(id);
            let n = r["result"]["receivers"].as_u64().expect("receivers");
            // Through a gateway, `receivers` counts gateway subscriptions (1 here, see
            // docs/BACKEND.md): the connection count below tells the cut there.
            if n == 1 && cut_at.is_none() && !common::redis::suites_on_redis() {
                cut_at = Some(published);
            }
            assert!(n == 1 || n == 2, "{r}");
            published += 1;
        }
        if cut_at.is_none()
            && common::redis::suites_on_redis()
            && watcher.ok("server.info", json!({}))["connections"].as_u64() == Some(conns_before - 1)
        {
            cut_at = Some(published);
        }
        // Then at least 1000 more, so the slow one has clearly missed messages.
        if cut_at.is_some_and(|c| published >= 1000.max(c + 1000)) {
            break;
        }
    }
    let cut_at = cut_at.expect("the slow subscriber was never cut off");
    println!("slow subscriber cut off after {cut_at} messages of ~1 KiB ({published} published in {:?})", t0.elapsed());
    tx.send(published).expect("tell reader");
    let (got, mut fast) = reader.join().expect("fast reader");
    assert_eq!(got, published);
    fast.no_event(QUIET);

    // The server let it go: one connection fewer; its socket ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = watcher.ok("server.info", json!({}))["connections"].as_u64().expect("connections");
        if n == conns_before - 1 {
            break;
        }
        assert!(Instant::now() < deadline, "connection count stayed {n} (before {conns_before})");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sock = slow.ws.into_inner();
    // A big window again: draining through a 4 KiB window crawls (delayed ACKs).
    set_rcvbuf(&sock, 4 << 20);
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0usize;
    let t1 = Instant::now();
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("slow socket did not end: {e} after {bytes} bytes"),
        }
    }
    println!("slow subscriber's socket ended after {bytes} bytes, drained in {:?}", t1.elapsed());
    assert!(bytes < published as usize * 1000, "slow subscriber got everything ({bytes} bytes)?");
}

fn set_rcvbuf(sock: &std::net::TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live i32.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

const SECRET: &str = "realtime-tests-hs256-secret-0123456789";

fn token(claims: Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("encode jwt")
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

#[test]
fn scoped_watcher_sees_only_its_keys() {
    let mut cfg = config();
    cfg.jwt_secret = Some(SECRET.into());
    cfg.api_keys = Some("admin-key".into());
    let srv = server(cfg);
    let mut admin = srv.client_key("admin-key");
    admin.ok("string.set", json!({"key": "user:1", "value": "ann"}));
    admin.ok("string.set", json!({"key": "other:1", "value": "secret"}));
    let tok = token(json!({"sub": "u", "exp": now_s() + 600, "keys": ["user:*"]}));
    let mut w = srv.client_bearer(&tok);
    let epoch = w.hello["epoch"].as_str().expect("epoch").to_string();
    let r = w.ok("key.watch", json!({"patterns": ["*"]}));
    assert_eq!(r["values"], json!({"user:1": {"type": "string", "value": "ann"}}));
    let start = r["rev"].as_u64().expect("rev");
    assert_eq!(w.err_code("key.watch", json!({"keys": ["other:1"]})), "forbidden");

    admin.ok("string.set", json!({"key": "other:2", "value": "x"}));
    let r = admin.ok("string.set", json!({"key": "user:2", "value": "y"}));
    admin.ok("key.del", json!({"key": "other:1"}));
    assert_eq!(ks(&w.event()), k("user:2", "string.set", r["rev"].as_u64().expect("rev")));
    w.no_event(QUIET);

    // Replay is scoped too.
    let mut w2 = srv.client_bearer(&tok);
    let r = w2.ok("key.watch", json!({"patterns": ["*"], "since": start, "epoch": epoch}));
    let replay: Vec<_> = r["replay"].as_array().expect("replay").iter().map(ks).collect();
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0].0.as_deref(), Some("user:2"));
}

/// `auth.refresh` may narrow the key scope; the watches follow the new scope.
#[test]
fn refresh_narrows_the_watch_scope() {
    let mut cfg = config();
    cfg.jwt_secret = Some(SECRET.into());
    cfg.api_keys = Some("admin-key".into());
    let srv = server(cfg);
    let mut admin = srv.client_key("admin-key");
    let wide = token(json!({"sub": "u", "exp": now_s() + 600, "keys": ["user:*", "cfg"]}));
    let narrow = token(json!({"sub": "u", "exp": now_s() + 600, "keys": ["user:*"]}));
    let mut w = srv.client_bearer(&wide);
    w.ok("key.watch", json!({"keys": ["cfg"], "patterns": ["*"]}));
    let r = admin.ok("string.set", json!({"key": "cfg", "value": "1"}));
    assert_eq!(ks(&w.event()), k("cfg", "string.set", r["rev"].as_u64().expect("rev")));
    w.no_event(QUIET);
    w.ok("auth.refresh", json!({"token": narrow}));
    admin.ok("string.set", json!({"key": "cfg", "value": "2"}));
    let r = admin.ok("string.set", json!({"key": "user:1", "value": "x"}));
    assert_eq!(ks(&w.event()), k("user:1", "string.set", r["rev"].as_u64().expect("rev")));
    w.no_event(QUIET);
}

/// A key watched both exactly and through a pattern gets one event per change.
#[test]
fn overlapping_watches_deliver_once() {
    let srv = server(config());
    let mut w = srv.client();
    let mut c = srv.client();
    w.ok("key.watch", json!({"keys": ["dup:1"], "patterns": ["dup:*", "*:1"]}));
    let r = c.ok("string.set", json!({"key": "dup:1", "value": "1"}));
    assert_eq!(ks(&w.event()), k("dup:1", "string.set", r["rev"].as_u64().expect("rev")));
    w.no_event(QUIET);
}
