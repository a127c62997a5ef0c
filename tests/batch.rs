//! `batch` end to end (§4, §8).

mod common;

use common::*;

#[test]
fn runs_in_order_with_one_result_each() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.call(
        "batch",
        json!({"operations":[
            {"method":"string.set","params":{"key":"k","value":"1"}},
            {"method":"string.incr","params":{"key":"k","by":4}},
            {"method":"string.get","params":{"key":"k"}},
            {"method":"key.del","params":{"key":"k"}},
            {"method":"key.exists","params":{"key":"k"}},
            {"method":"server.ping"}
        ]}),
    );
    assert_rfc3339_utc(&r["timestamp"]);
    assert_eq!(
        r["result"],
        json!({"results":[
            {"result":{"set":true,"rev":1}},
            {"result":{"value":5,"rev":2}},
            {"result":{"value":"5","ttl":null}},
            {"result":{"deleted":1,"rev":3}},
            {"result":{"exists":false}},
            {"result":{"pong":true}}
        ]})
    );
    assert_eq!(c.rev(), 3);
}

#[test]
fn errors_do_not_stop_the_others() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.ok(
        "batch",
        json!({"operations":[
            {"method":"string.get","params":{"key":"missing"}},
            {"method":"string.set","params":{"key":"a","value":"x"}},
            {"method":"string.incr","params":{"key":"a"}},
            {"method":"no.such.method","params":{}},
            {"method":"batch","params":{"operations":[{"method":"server.ping"}]}},
            {"method":"string.set","params":{"key":"a"}},
            {"method":"string.set","params":{"key":"b","value":"y"}},
        ]}),
    );
    let res = r["results"].as_array().expect("results array");
    assert_eq!(res.len(), 7, "{r}");
    assert_eq!(res[0], json!({"error":{"code":"not_found","message":"Key 'missing' not found"}}));
    assert_eq!(res[1], json!({"result":{"set":true,"rev":1}}));
    assert_error(&res[2]["error"], "not_integer");
    assert_error(&res[3]["error"], "method_not_found");
    assert!(res[3]["error"]["message"].as_str().unwrap().contains("no.such.method"));
    assert_error(&res[4]["error"], "invalid_request");
    assert_invalid_param(&res[5]["error"], "value");
    assert_eq!(res[6], json!({"result":{"set":true,"rev":2}}));
    for (i, x) in res.iter().enumerate() {
        assert_eq!(x.as_object().unwrap().len(), 1, "op {i} has exactly result or error: {x}");
    }
    assert_eq!(c.ok("string.mget", json!({"keys":["a","b"]})), json!({"values":["x","y"]}));
}

#[test]
fn malformed_operations_are_that_operations_error() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.ok(
        "batch",
        json!({"operations":[
            "not an object",
            {"params":{"key":"k"}},
            {"method":7},
            {"method":"server.ping","params":[1]},
            {"method":"server.ping","params":null},
            {"method":"server.ping"}
        ]}),
    );
    let res = r["results"].as_array().unwrap();
    assert_eq!(res.len(), 6);
    for (i, x) in res[..4].iter().enumerate() {
        assert_error(&x["error"], "invalid_request");
        assert!(x.get("result").is_none(), "op {i}: {x}");
    }
    assert_eq!(res[4], json!({"result":{"pong":true}}));
    assert_eq!(res[5], json!({"result":{"pong":true}}));
}

#[test]
fn batch_params_are_checked() {
    let s = start(|c| c.max_batch = 5);
    let mut c = connect(&s);
    assert_invalid_param(&c.err("batch", json!({})), "operations");
    assert_invalid_param(&c.err("batch", json!({"operations":[]})), "operations");
    assert_invalid_param(&c.err("batch", json!({"operations":{"method":"server.ping"}})), "operations");
    // Exactly the limit is fine; one more is refused whole, nothing executed.
    let ops: Vec<_> =
        (0..5).map(|i| json!({"method":"string.set","params":{"key":format!("k{i}"),"value":"v"}})).collect();
    assert_eq!(c.ok("batch", json!({"operations":ops}))["results"].as_array().unwrap().len(), 5);
    let ops: Vec<_> =
        (0..6).map(|i| json!({"method":"string.set","params":{"key":format!("n{i}"),"value":"v"}})).collect();
    let e = c.err("batch", json!({"operations":ops}));
    assert_invalid_param(&e, "operations");
    assert_eq!(c.ok("server.dbsize", json!({})), json!({"keys":5}));
    assert_eq!(c.rev(), 5);
}

#[test]
fn default_max_batch_is_1000() {
    // Rate limiting off so that only the batch limit is in play.
    let s = start(|c| c.ws_rate_limit = 0);
    let mut c = connect(&s);
    let ops: Vec<_> = (0..1000).map(|_| json!({"method":"server.ping"})).collect();
    assert_eq!(c.ok("batch", json!({"operations":ops}))["results"].as_array().unwrap().len(), 1000);
    let ops: Vec<_> = (0..1001).map(|_| json!({"method":"server.ping"})).collect();
    assert_invalid_param(&c.err("batch", json!({"operations":ops})), "operations");
}

#[test]
fn revs_inside_a_batch_rise_by_one_per_changing_op() {
    let s = start_default();
    let mut c = connect(&s);
    let r = c.ok(
        "batch",
        json!({"operations":[
            {"method":"string.set","params":{"key":"a","value":"1"}},
            {"method":"string.set","params":{"key":"a","value":"2","nx":true}},
            {"method":"string.mset","params":{"pairs":{"b":"1","c":"1"}}},
            {"method":"key.del","params":{"key":"zzz"}},
            {"method":"key.del","params":{"keys":["b","c"]}},
            {"method":"server.flush"},
            {"method":"string.set","params":{"key":"a","value":"3"}}
        ]}),
    );
    assert_eq!(
        r["results"],
        json!([
            {"result":{"set":true,"rev":1}},
            {"result":{"set":false,"rev":1}},
            {"result":{"set":2,"rev":2}},
            {"result":{"deleted":0,"rev":2}},
            {"result":{"deleted":2,"rev":3}},
            {"result":{"flushed":1,"rev":4}},
            {"result":{"set":true,"rev":5}}
        ])
    );
    // The flush inside the batch started a new epoch.
    assert_ne!(c.ok("server.info", json!({}))["epoch"], c.hello["epoch"]);
}

#[test]
fn batch_without_id_and_with_numeric_id() {
    let s = start_default();
    let mut c = connect(&s);
    c.send_raw(r#"{"method":"batch","params":{"operations":[{"method":"server.ping"}]}}"#);
    let r = c.recv_json();
    assert_eq!(r["id"], json!(null));
    assert_eq!(r["result"], json!({"results":[{"result":{"pong":true}}]}));
    c.send_raw(r#"{"id":99,"method":"batch","params":{"operations":[{"method":"server.ping"}]}}"#);
    assert_eq!(c.recv_json()["id"], 99);
}
