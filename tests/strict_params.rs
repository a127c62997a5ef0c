//! Strict request reading (issue 17): unknown parameters, duplicate members, ids that
//! are not finite numbers, lone surrogates in relayed data — each refused with a
//! precise error, nothing applied, and the connection keeps serving.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn an_unknown_parameter_is_refused_with_a_suggestion() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.call("string.set", json!({"key": "k", "value": "v", "tll": 60}));
    assert_eq!(r["error"]["code"], "invalid_params", "{r}");
    let m = r["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("Unknown parameter 'tll' for string.set (did you mean 'ttl'?)"), "{m}");
    assert_error(&c.call("string.get", json!({"key": "k"}))["error"], "not_found");
    // No suggestion when nothing is close; a method without parameters says so.
    let r = c.call("string.get", json!({"key": "k", "zzzzzzzz": 1}));
    let m = r["error"]["message"].as_str().unwrap();
    assert_eq!(m, "Unknown parameter 'zzzzzzzz' for string.get; it takes: key");
    let r = c.call("server.ping", json!({"x": 1}));
    assert_eq!(r["error"]["message"], "Unknown parameter 'x' for server.ping; it takes: none");
    // Every documented parameter is still accepted.
    c.ok("string.set", json!({"key": "k", "value": "v", "ttl": 60, "nx": true, "get": true}));
    c.ok("key.scan", json!({"cursor": "0", "match": "*", "count": 10, "type": "string"}));
    c.ok("key.del", json!({"keys": ["k"]}));
}

#[test]
fn batch_operations_follow_the_same_rule() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.ok(
        "batch",
        json!({"operations": [
            {"method": "string.set", "params": {"key": "a", "value": "1"}},
            {"method": "string.set", "params": {"key": "b", "value": "1", "tll": 5}},
        ]}),
    );
    assert_eq!(r["results"][0]["result"]["set"], true, "{r}");
    assert_error(&r["results"][1]["error"], "invalid_params");
    assert!(r["results"][1]["error"]["message"].as_str().unwrap().contains("did you mean 'ttl'?"), "{r}");
    assert_error(&c.call("string.get", json!({"key": "b"}))["error"], "not_found");
    // A duplicate member inside an operation's params is refused like one in a request.
    let r = c.ok("batch", json!({"operations": [{"method": "server.ping"}]}));
    assert_eq!(r["results"][0]["result"]["pong"], true);
    c.send_raw(
        r#"{"id":7,"method":"batch","params":{"operations":[{"method":"string.set","params":{"key":"x","value":"1","key":"y"}}]}}"#,
    );
    let r = c.recv_json();
    assert_eq!(r["id"], 7);
    assert_error(&r["result"]["results"][0]["error"], "invalid_request");
    assert!(r["result"]["results"][0]["error"]["message"].as_str().unwrap().contains("duplicate field 'key'"), "{r}");
}

#[test]
fn duplicate_members_are_refused_everywhere() {
    let s = start_default();
    let mut c = connect(&s);
    // Top level (as before) and inside params (first-wins before): both invalid_request.
    c.send_raw(r#"{"id":1,"id":2,"method":"server.ping"}"#);
    let r = c.recv_json();
    assert_error(&r["error"], "invalid_request");
    c.send_raw(r#"{"id":3,"method":"string.set","params":{"key":"a","value":"1","key":"b"}}"#);
    let r = c.recv_json();
    assert_eq!(r["id"], 3);
    assert_error(&r["error"], "invalid_request");
    assert_eq!(r["error"]["message"], "Invalid JSON: duplicate field 'key' in 'params'");
    assert_error(&c.call("string.get", json!({"key": "a"}))["error"], "not_found");
    assert_error(&c.call("string.get", json!({"key": "b"}))["error"], "not_found");
    // A key repeated in `pairs`: refused, nothing set (it counted 2 and kept the last).
    c.send_raw(r#"{"id":4,"method":"string.mset","params":{"pairs":{"a":"1","b":"2","a":"3"}}}"#);
    let r = c.recv_json();
    assert_error(&r["error"], "invalid_params");
    assert_eq!(r["error"]["message"], "Parameter 'pairs' names 'a' twice");
    assert_error(&c.call("string.get", json!({"key": "b"}))["error"], "not_found");
    // The same for a large map (the hashed path) and for hash fields.
    let mut big: String = (0..100).map(|i| format!("\"k{i}\":\"v\",")).collect();
    big.push_str("\"k50\":\"w\"");
    c.send_raw(&format!(r#"{{"id":5,"method":"string.mset","params":{{"pairs":{{{big}}}}}}}"#));
    assert_eq!(c.recv_json()["error"]["message"], "Parameter 'pairs' names 'k50' twice");
    c.send_raw(r#"{"id":6,"method":"hash.set","params":{"key":"h","fields":{"f":"1","f":"2"}}}"#);
    assert_eq!(c.recv_json()["error"]["message"], "Parameter 'fields' names 'f' twice");
    assert_eq!(c.ok("string.mset", json!({"pairs": {"a": "1", "b": "2"}}))["set"], 2);
}

#[test]
fn ids_must_be_finite_numbers() {
    let s = start_default();
    let mut c = connect(&s);
    // Plain integers skip the float parse only up to 300 digits: 309 digits overflow.
    let (long, huge) = ("9".repeat(300), format!("-{}", "9".repeat(309)));
    for id in ["1e400", "-1e400", "123456789e999", huge.as_str()] {
        c.send_raw(&format!(r#"{{"id":{id},"method":"server.ping"}}"#));
        let r = c.recv_json();
        assert!(r["id"].is_null(), "{id}: {r}");
        assert_error(&r["error"], "invalid_request");
        assert_eq!(r["error"]["message"], "'id' must be a finite number");
    }
    for id in ["1e300", "-0.5", "42", long.as_str(), &"1".repeat(308)] {
        c.send_raw(&format!(r#"{{"id":{id},"method":"server.ping"}}"#));
        let r = c.recv_json();
        assert_eq!(r["result"]["pong"], true, "{id}: {r}");
    }
}

#[test]
fn a_lone_surrogate_in_published_data_is_refused() {
    let s = start_default();
    let mut sub = connect(&s);
    sub.ok("pubsub.subscribe", json!({"channels": ["c"]}));
    let mut c = connect(&s);
    for data in [r#""\ud800""#, r#"{"a":["x\udfff"]}"#, r#"{"\ud83d":1}"#] {
        c.send_raw(&format!(r#"{{"id":1,"method":"pubsub.publish","params":{{"channel":"c","data":{data}}}}}"#));
        let r = c.recv_json();
        assert_error(&r["error"], "invalid_params");
        assert!(r["error"]["message"].as_str().unwrap().contains("lone surrogate"), "{r}");
    }
    assert!(sub.next_event(Duration::from_millis(300)).is_none(), "nothing relayed");
    // A surrogate pair is a character; escaped backslashes are not escapes.
    c.send_raw(r#"{"id":2,"method":"pubsub.publish","params":{"channel":"c","data":"\ud83d\ude00 \\ud800"}}"#);
    assert_eq!(c.recv_json()["result"]["receivers"], 1);
    let e = sub.next_event(Duration::from_secs(2)).expect("event");
    assert_eq!(e["data"], "\u{1F600} \\ud800");
}

/// A log written before unknown parameters were refused may hold one; replay applies
/// the record as that version did (ignoring it) instead of dropping the write.
#[test]
fn replay_of_an_older_record_with_an_unknown_parameter_applies_it() {
    use dbx::persist::format;
    let dir = TempDir::new("oldparam");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut b = format::AOF_MAGIC.to_vec();
    format::header(&mut b, 0, 0, 1, "0123456789abcdef");
    let at = format::begin_frame(&mut b);
    b.push(format::K_OPS);
    format::put_u64(&mut b, 1);
    format::put_u64(&mut b, 1_700_000_000_000);
    b.extend_from_slice(br#"[{"method":"string.set","params":{"key":"old","value":"v","tll":5}}]"#);
    format::end_frame(&mut b, at);
    std::fs::write(data.join("aof-0.log"), &b).unwrap();
    std::fs::write(data.join("CLEAN"), b"").unwrap();
    let s = Dbx::start(&Opts::new(&data));
    let mut c = s.client();
    assert_eq!(c.ok("string.get", json!({"key": "old"}))["value"], "v");
}
