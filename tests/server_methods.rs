//! `server.*`, the envelope (§2, §8) and the hello message (§5), end to end.

mod common;

use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn hello_message() {
    let s = start_default();
    let c = connect(&s);
    let h = &c.hello;
    let obj = h.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "connection_id",
            "epoch",
            "heartbeat_interval",
            "max_message_size",
            "rate_limit",
            "rev",
            "timestamp",
            "type",
            "version"
        ]
    );
    assert_eq!(h["type"], "hello");
    assert_eq!(h["version"], "1.0");
    assert!(h["connection_id"].as_str().is_some_and(|s| !s.is_empty()), "{h}");
    assert_eq!(h["heartbeat_interval"], 30);
    assert_eq!(h["rate_limit"], 1000);
    assert_eq!(h["max_message_size"], 1048576);
    assert!(h["epoch"].as_str().is_some_and(|s| !s.is_empty()), "{h}");
    assert_eq!(h["rev"], 0);
    assert!(h.get("id").is_none());
    assert_rfc3339_utc(&h["timestamp"]);
}

#[test]
fn hello_reflects_config_and_state() {
    let s = start(|c| {
        c.ws_heartbeat_interval = 2.5;
        c.ws_rate_limit = 0;
        c.max_message_size = 4096;
    });
    let mut a = connect(&s);
    assert_eq!(a.hello["heartbeat_interval"], 2.5);
    assert_eq!(a.hello["rate_limit"], 0);
    assert_eq!(a.hello["max_message_size"], 4096);
    a.ok("string.set", json!({"key":"k","value":"v"}));
    a.ok("string.set", json!({"key":"k","value":"w"}));
    let b = connect(&s);
    assert_eq!(b.hello["rev"], 2);
    assert_eq!(b.hello["epoch"], a.hello["epoch"]);
    assert_ne!(b.hello["connection_id"], a.hello["connection_id"]);
}

#[test]
fn ping_time_dbsize() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.call("server.ping", json!({}));
    assert_eq!(r["result"], json!({"pong":true}));
    assert_eq!(r["id"], 1);
    assert_rfc3339_utc(&r["timestamp"]);
    // params may be omitted or null.
    c.send_raw(r#"{"id":"p","method":"server.ping"}"#);
    assert_eq!(c.recv_json()["result"], json!({"pong":true}));
    c.send_raw(r#"{"id":"q","method":"server.ping","params":null}"#);
    assert_eq!(c.recv_json()["result"], json!({"pong":true}));
    // server.time: a plausible unix ms.
    let before = now_ms();
    let t = c.ok("server.time", json!({}));
    let after = now_ms();
    assert_eq!(t.as_object().unwrap().len(), 1, "{t}");
    let ms = t["unix_ms"].as_u64().expect("unix_ms is an integer");
    assert!(ms + 1000 >= before && ms <= after + 1000, "unix_ms {ms} not near {before}..{after}");
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":0}));
    c.ok("string.mset", json!({"pairs":{"a":"1","b":"2","c":"3"}}));
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":3}));
}

#[test]
fn info_shape_and_counters() {
    let s = start_default();
    let mut c = connect(&s);
    let i = c.ok("server.info", json!({}));
    for f in ["version", "epoch"] {
        assert!(i[f].is_string(), "{f} in {i}");
    }
    for f in ["uptime_s", "connections", "keys", "used_memory", "ops_total", "rev"] {
        assert!(i[f].is_u64(), "{f} in {i}");
    }
    assert_eq!(i["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(i["connections"], 1);
    assert_eq!(i["keys"], 0);
    assert_eq!(i["rev"], 0);
    assert_eq!(i["epoch"], c.hello["epoch"]);
    assert!(i.get("rev").is_some());

    // ops_total counts executed operations; a batch counts each of its operations.
    c.ok("server.ping", json!({}));
    c.ok("string.set", json!({"key":"k","value":"v"}));
    c.ok("batch", json!({"operations":[
        {"method":"server.ping"},{"method":"string.get","params":{"key":"k"}},{"method":"key.exists","params":{"key":"k"}}
    ]}));
    let j = c.ok("server.info", json!({}));
    // Between the two info calls: 2 + 3 operations, plus one of the info calls.
    assert_eq!(j["ops_total"].as_u64().unwrap() - i["ops_total"].as_u64().unwrap(), 6, "{i} → {j}");
    assert_eq!(j["keys"], 1);
    assert_eq!(j["rev"], 1);
    assert!(j["used_memory"].as_u64().unwrap() > 0);

    // connections is the current count.
    let d = connect(&s);
    assert_eq!(c.ok("server.info", json!({}))["connections"], 2);
    drop(d);
    poll_until(Duration::from_secs(5), "connections back to 1", || {
        (c.ok("server.info", json!({}))["connections"] == 1).then_some(())
    });
}

#[test]
fn flush_changes_epoch_and_rev_never_goes_back() {
    let s = start_default();
    let mut c = connect(&s);
    let epoch0 = c.hello["epoch"].clone();
    c.ok("string.mset", json!({"pairs":{"a":"1","b":"2","c":"3"}}));
    c.ok("string.set", json!({"key":"t","value":"1","ttl":100}));
    assert_eq!(c.rev(), 2);
    assert_eq!(c.ok("server.flush", json!({})), json!({"flushed":4,"rev":3}));
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":0}));
    assert_error(&c.err("string.get", json!({"key":"a"})), "not_found");
    let info = c.ok("server.info", json!({}));
    assert_eq!(info["rev"], 3);
    assert_eq!(info["keys"], 0);
    let epoch1 = info["epoch"].clone();
    assert_ne!(epoch1, epoch0, "flush must start a new epoch");
    // New connections see the new epoch and the current rev.
    let d = connect(&s);
    assert_eq!(d.hello["epoch"], epoch1);
    assert_eq!(d.hello["rev"], 3);
    // Writes continue from there.
    assert_eq!(c.ok("string.set", json!({"key":"a","value":"1"})), json!({"set":true,"rev":4}));
    // A flush of an empty store still cuts history: one rev, another epoch.
    c.ok("key.del", json!({"key":"a"}));
    assert_eq!(c.ok("server.flush", json!({})), json!({"flushed":0,"rev":6}));
    let epoch2 = c.ok("server.info", json!({}))["epoch"].clone();
    assert_ne!(epoch2, epoch1);
    // Unknown params are refused (tests/strict_params.rs), and nothing changed.
    assert_eq!(c.call("server.dbsize", json!({"whatever":1}))["error"]["code"], "invalid_params");
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":0}));
}

#[test]
fn envelope_ids() {
    let s = start_default();
    let mut c = connect(&s);
    // No id → "id": null, and the request is executed.
    c.send_raw(r#"{"method":"string.set","params":{"key":"k","value":"v"}}"#);
    let r = c.recv_json();
    assert!(r.as_object().unwrap().contains_key("id"), "{r}");
    assert_eq!(r["id"], json!(null));
    assert_eq!(r["result"], json!({"set":true,"rev":1}));
    // "id": null is the same.
    c.send_raw(r#"{"id":null,"method":"server.ping"}"#);
    let r = c.recv_json();
    assert_eq!(r["id"], json!(null));
    assert_eq!(r["result"], json!({"pong":true}));
    // Numbers are echoed as numbers, verbatim.
    for (raw, want) in [
        ("7", json!(7)),
        ("0", json!(0)),
        ("-3", json!(-3)),
        ("1.5", json!(1.5)),
        ("12345678901234", json!(12345678901234u64)),
    ] {
        c.send_raw(&format!(r#"{{"id":{raw},"method":"server.ping"}}"#));
        let r = c.recv_json();
        assert_eq!(r["id"], want, "id {raw}: {r}");
        assert_eq!(r["result"], json!({"pong":true}));
    }
    // Strings are echoed as strings, including escapes.
    for id in ["msg_1", "", "a\"b\\c", "ünï", "42"] {
        c.send_raw(&json!({"id":id,"method":"server.ping"}).to_string());
        let r = c.recv_json();
        assert_eq!(r["id"], json!(id));
    }
    // timestamp in the request is ignored; unknown top-level fields too.
    c.send_raw(r#"{"id":"t","method":"server.ping","timestamp":"garbage","extra":[1,2]}"#);
    let r = c.recv_json();
    assert_eq!(r["id"], "t");
    assert_eq!(r["result"], json!({"pong":true}));
    assert_rfc3339_utc(&r["timestamp"]);
}

#[test]
fn envelope_errors_keep_the_connection() {
    let s = start_default();
    let mut c = connect(&s);
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (r#"not json"#, json!(null), "invalid_request"),
        (r#"[1,2,3]"#, json!(null), "invalid_request"),
        (r#""a string""#, json!(null), "invalid_request"),
        (r#"42"#, json!(null), "invalid_request"),
        (r#"{"id":1}"#, json!(1), "invalid_request"),
        (r#"{"id":"x","method":5}"#, json!("x"), "invalid_request"),
        (r#"{"id":2,"method":"server.ping","params":[1]}"#, json!(2), "invalid_request"),
        (r#"{"id":3,"method":"server.ping","params":"x"}"#, json!(3), "invalid_request"),
        (r#"{"id":4,"method":"nope.nothing"}"#, json!(4), "method_not_found"),
        (r#"{"id":5,"method":""}"#, json!(5), "method_not_found"),
        (r#"{"id":6,"method":"string.get""#, json!(null), "invalid_request"),
    ];
    for (text, id, code) in cases {
        c.send_raw(text);
        let r = c.recv_json();
        assert_eq!(&r["id"], id, "{text} → {r}");
        assert!(r.get("result").is_none(), "{text} → {r}");
        assert_error(&r["error"], code);
        assert_rfc3339_utc(&r["timestamp"]);
        // Still usable.
        assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
    }
    let e = c.err("nope.nothing", json!({}));
    assert_eq!(e["code"], "method_not_found");
    assert!(e["message"].as_str().unwrap().contains("nope.nothing"), "{e}");
}

#[test]
fn client_heartbeat_gets_no_reply() {
    let s = start_default();
    let mut c = connect(&s);
    c.send_raw(r#"{"type":"heartbeat","timestamp":"2024-01-15T10:30:00Z"}"#);
    // The next message is the ping's reply, not something for the heartbeat.
    let r = c.call("server.ping", json!({}));
    assert_eq!(r["result"], json!({"pong":true}));
}

#[test]
fn server_heartbeat_arrives() {
    let s = start(|c| c.ws_heartbeat_interval = 0.2);
    let mut c = connect(&s);
    let hb = poll_until(Duration::from_secs(5), "a heartbeat", || {
        let v = c.recv_json_any();
        (v["type"] == "heartbeat").then_some(v)
    });
    assert!(hb.get("id").is_none());
    assert_rfc3339_utc(&hb["timestamp"]);
    // A requests still works in between heartbeats.
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

#[test]
fn rate_limit_refuses_then_refills() {
    // 60 per minute: a burst of 60, then one token per second.
    let s = start(|c| c.ws_rate_limit = 60);
    let mut c = connect(&s);
    assert_eq!(c.hello["rate_limit"], 60);
    for _ in 0..60 {
        c.ok("server.ping", json!({}));
    }
    let r = c.call("server.ping", json!({}));
    assert_eq!(r["id"], 61);
    let e = &r["error"];
    assert_error(e, "rate_limited");
    assert_eq!(e.as_object().unwrap().len(), 3, "code, message, retry_after_ms: {e}");
    let wait = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&wait), "{e}");
    // Other connections have their own bucket.
    let mut other = connect(&s);
    assert_eq!(other.ok("server.ping", json!({})), json!({"pong":true}));
    // Tokens come back with time.
    poll_until(Duration::from_secs(5), "the bucket to refill", || {
        c.call("server.ping", json!({})).get("result").cloned()
    });
}

#[test]
fn rate_limited_batch_is_refused_whole() {
    let s = start(|c| c.ws_rate_limit = 5);
    let mut c = connect(&s);
    let set = |k: &str| json!({"method":"string.set","params":{"key":k,"value":"v"}});
    assert_eq!(
        c.ok("batch", json!({"operations":[set("a"), set("b"), set("c")]}))["results"].as_array().unwrap().len(),
        3
    );
    // Two tokens left; three operations: nothing runs.
    let e = c.err("batch", json!({"operations":[set("d"), set("e"), set("f")]}));
    assert_error(&e, "rate_limited");
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 1), "{e}");
    // More operations than the whole burst: refused as well.
    let ops: Vec<_> = (0..6).map(|i| set(&format!("x{i}"))).collect();
    assert_error(&c.err("batch", json!({"operations":ops})), "rate_limited");
    let mut other = connect(&s);
    assert_eq!(other.ok("server.dbsize", json!({})), json!({"keys":3}));
    assert_eq!(other.rev(), 3);
}

#[test]
fn idle_connection_is_closed_with_1001() {
    let s = start(|c| {
        c.ws_heartbeat_interval = 0.3;
        c.ws_timeout = 0.3;
    });
    // A raw client that never answers pings and sends nothing.
    let mut idle = RawWs::open(s.addr);
    assert_eq!(idle.read_close_code(), 1001);
    // A client that keeps talking stays open well past interval + timeout.
    let mut c = connect(&s);
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < end {
        assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client that only sends heartbeats stays open too.
    let mut h = RawWs::open(s.addr);
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < end {
        h.send(&text_frame(r#"{"type":"heartbeat"}"#));
        std::thread::sleep(Duration::from_millis(100));
    }
    h.send(&text_frame(r#"{"id":"still","method":"server.ping"}"#));
    loop {
        let f = h.read_frame().expect("still open");
        assert_ne!(f.opcode, OP_CLOSE, "closed although active: {f:?}");
        if f.opcode == OP_TEXT && f.json()["id"] == "still" {
            break;
        }
    }
}

#[test]
fn shutdown_closes_websockets_with_1001() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    s.handle.trigger();
    assert_eq!(ws.read_close_code(), 1001);
    ws.send(&close_frame(1001, ""));
    ws.expect_eof();
}
