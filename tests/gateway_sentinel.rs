//! Gateway mode with Redis Sentinel (issue 16): one primary, one replica, one sentinel
//! with quorum 1 on loopback; the primary is SIGKILLed and the gateway follows the
//! failover by itself.

mod common;
use common::redis::{Redis, Sentinel};
use common::*;
use std::time::Duration;

#[test]
fn writes_resume_on_the_new_primary_and_watchers_never_see_a_hole() {
    let mut primary = Redis::start();
    let port = primary.port.to_string();
    let replica = Redis::start_with(&["--maxmemory-policy", "noeviction", "--replicaof", "127.0.0.1", &port]);
    let sentinel = Sentinel::start("m", primary.port);
    poll_until(Duration::from_secs(15), "sentinel sees the replica", || {
        sentinel.cmd_all(&["SENTINEL", "replicas", "m"]).contains(&replica.port.to_string()).then_some(())
    });
    let url = format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port);
    let g = TestServer::with(|c| {
        c.backend = dbx::config::parse_backend(&url).unwrap();
        c.ws_rate_limit = 0;
        c.backend_timeout = 1.0;
    })
    .timeout(Duration::from_secs(10));
    common::redis::wait_ready(&g);
    let mut w = g.client();
    let start = w.ok("key.watch", json!({"keys": ["k"]}));
    let mut c = g.client();
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(c.ok("string.set", json!({"key": "k", "value": i}))["rev"].as_u64().unwrap());
    }
    // The replica has everything (so the new primary is not behind).
    poll_until(Duration::from_secs(10), "replica in sync", || {
        (replica.cmd(&["GET", "k"]).ok().as_deref() == Some("9")).then_some(())
    });
    primary.kill();
    let after = poll_until(Duration::from_secs(30), "writes accepted by the new primary", || {
        let r = c.call("string.set", json!({"key": "k", "value": "after"}));
        if let Some(e) = r.get("error") {
            assert_eq!(e["code"], "unavailable", "{r}");
            std::thread::sleep(Duration::from_millis(100));
            return None;
        }
        r["result"]["rev"].as_u64()
    });
    assert!(after > *acked.last().unwrap(), "revs never go back: {after} after {acked:?}");
    // The watcher got every acknowledged write, in order, then either the write on the
    // new primary or a new epoch (resync): never a silent hole.
    let mut seen = Vec::new();
    loop {
        let e = w.event();
        if e["event"] == "epoch" || e["event"] == "server.flush" {
            assert!(e["epoch"].is_string(), "{e}");
            break;
        }
        let rev = e["rev"].as_u64().unwrap();
        seen.push(rev);
        if rev == after {
            break;
        }
    }
    let before: Vec<u64> = seen.iter().copied().filter(|r| *r <= acked[9]).collect();
    assert_eq!(before, acked, "start {start}");
    assert_eq!(c.string_value("k"), json!("after"));
    let (status, body) = http_status(g.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("127.0.0.1:{}", replica.port)), "{body}");
}
