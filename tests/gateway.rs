//! Gateway mode (issue 16): DBX in front of a real redis-server. Every test starts its
//! own Redis on a free port (tests/common/redis.rs) and in-process gateways on it.

mod common;
use common::redis::{wait_ready, Redis};
use common::*;

#[test]
fn strings_through_a_gateway() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let mut c = g.client();
    let set = c.ok("string.set", json!({"key": "a", "value": "1"}));
    assert!(set["rev"].as_u64().unwrap() >= 1, "{set}");
    assert_eq!(c.string_value("a"), json!("1"));
    assert_eq!(r.cmd(&["GET", "a"]).unwrap(), "1");
    let e = c.err("string.get", json!({"key": "nope"}));
    assert_error(&e, "not_found");
    assert_eq!(c.ok("server.ping", json!({}))["pong"], json!(true));
}
