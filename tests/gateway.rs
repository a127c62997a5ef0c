//! Gateway mode (issue 16): DBX in front of a real redis-server. Every test starts its
//! own Redis on a free port (tests/common/redis.rs) and in-process gateways on it.

mod common;
use common::redis::{wait_ready, Redis};
use common::*;
use std::time::Duration;

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
    let e = c.err("server.save", json!({}));
    assert_error(&e, "unavailable");
    assert!(e["message"].as_str().unwrap().contains("Redis persists"), "{e}");
    let info = c.ok("server.info", json!({}));
    assert_eq!(info["backend"], json!(r.url() + "/0"), "{info}");
    assert!(info["used_memory"].as_u64().unwrap() > 0, "{info}");
}

fn health(srv: &TestServer) -> u16 {
    http_status(srv.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0
}

#[test]
fn the_reserved_prefix_is_refused_before_redis() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let mut c = g.client();
    for (m, p) in [
        ("string.set", json!({"key": "__dbx:rev", "value": "0"})),
        ("string.get", json!({"key": "__dbx:epoch"})),
        ("key.del", json!({"keys": ["a", "__dbx:changes"]})),
        ("key.rename", json!({"key": "a", "new_key": "__dbx:x"})),
    ] {
        let e = c.err(m, p);
        assert_error(&e, "invalid_params");
        assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
    }
    let b = c.ok(
        "batch",
        json!({"operations": [{"method": "string.set", "params": {"key": "__dbx:lib", "value": "x"}},
                              {"method": "string.set", "params": {"key": "ok", "value": "y"}}]}),
    );
    assert_eq!(b["results"][0]["error"]["code"], "invalid_params", "{b}");
    assert!(b["results"][1]["result"]["rev"].is_u64(), "{b}");
    // The bookkeeping is intact and scan never shows it.
    assert_ne!(r.cmd(&["GET", "__dbx:lib"]).unwrap(), "x");
    let scan = c.ok("key.scan", json!({"match": "*", "count": 1000}));
    assert_eq!(scan["keys"], json!(["ok"]), "{scan}");
}

#[test]
fn bytes_round_trip_exactly() {
    let r = Redis::start();
    let g = r.gateway(|c| c.max_message_size = 4 << 20);
    wait_ready(&g);
    let mut c = g.client();
    let big: String = (0..(1 << 20)).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let cases = [
        ("crlf\r\nkey", "line1\r\nline2\n\r"),
        ("nul\u{0}key", "a\u{0}b\u{0}"),
        ("bin", "\u{1}\u{2}\u{7f}\u{ff}é漢字🦀"),
        ("json", "{\"not\":\"parsed\"}\\"),
        ("resp", "*1\r\n$4\r\nPING\r\n"),
    ];
    for (k, v) in cases {
        c.ok("string.set", json!({"key": k, "value": v}));
        assert_eq!(c.string_value(k), json!(v), "{k:?}");
    }
    c.ok("string.set", json!({"key": "big", "value": big}));
    assert_eq!(c.string_value("big"), json!(big));
    // Redis holds exactly those bytes.
    assert_eq!(r.cmd(&["STRLEN", "big"]).unwrap().trim(), ":1048576");
}

#[test]
fn a_batch_is_atomic_across_connections() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let addr = g.addr;
    let writers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = connect_path(addr, "/ws");
                for _ in 0..100 {
                    let ops = json!({"operations": [
                        {"method": "string.incr", "params": {"key": "a"}},
                        {"method": "string.incr", "params": {"key": "b"}}]});
                    c.ok("batch", ops);
                }
            })
        })
        .collect();
    let mut reader = g.client();
    let mut seen = 0;
    while seen < 200 {
        let b = reader.ok(
            "batch",
            json!({"operations": [{"method": "string.get", "params": {"key": "a"}},
                                  {"method": "string.get", "params": {"key": "b"}}]}),
        );
        let a = &b["results"][0]["result"]["value"];
        let bb = &b["results"][1]["result"]["value"];
        assert_eq!(a, bb, "a batch saw half of another: {b}");
        seen += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(reader.string_value("a"), json!("200"));
}

#[test]
fn watch_on_one_gateway_sees_writes_on_another_in_rev_order() {
    let r = Redis::start();
    let (a, b) = two_gateways(&r);
    let mut w = a.client();
    let start = w.ok("key.watch", json!({"keys": ["k"], "patterns": ["p:*"]}));
    let rev0 = start["rev"].as_u64().unwrap();
    let mut c = b.client();
    let mut revs = Vec::new();
    for i in 0..30 {
        let key = if i % 2 == 0 { "k".to_string() } else { format!("p:{i}") };
        revs.push((key.clone(), c.ok("string.set", json!({"key": key, "value": i}))["rev"].as_u64().unwrap()));
        c.ok("string.set", json!({"key": "unwatched", "value": i}));
    }
    for (key, rev) in revs {
        let e = w.event();
        assert_eq!(e["type"], "keyspace", "{e}");
        assert_eq!((e["key"].as_str().unwrap(), e["rev"].as_u64().unwrap()), (key.as_str(), rev), "{e}");
        assert!(rev > rev0);
    }
    w.no_event(Duration::from_millis(200));
}

#[test]
fn a_watcher_resumes_on_another_gateway_after_a_kill() {
    let r = Redis::start();
    let opts = Opts::memory().env("DBX_BACKEND", &r.url()).env("DBX_WS_RATE_LIMIT", "0");
    let mut a = Dbx::start(&opts);
    let b = r.gateway(|_| {});
    wait_ready(&b);
    let mut w = poll_until(Duration::from_secs(10), "gateway A ready", || {
        let mut c = a.client();
        c.call("server.dbsize", json!({})).get("result").is_some().then_some(c)
    });
    let start = w.ok("key.watch", json!({"keys": ["k"]}));
    let epoch = w.ok("server.info", json!({}))["epoch"].as_str().unwrap().to_string();
    let mut last = start["rev"].as_u64().unwrap();
    let mut writer = b.client();
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(writer.ok("string.set", json!({"key": "k", "value": i}))["rev"].as_u64().unwrap());
        if i == 5 {
            // Take what A delivered so far, then SIGKILL it mid-stream.
            while let Some(e) = w.next_event(Duration::from_millis(300)) {
                last = e["rev"].as_u64().unwrap();
            }
            a.kill();
        }
    }
    let mut w2 = b.client();
    let resumed = w2.ok("key.watch", json!({"keys": ["k"], "since": last, "epoch": epoch}));
    assert!(resumed.get("gap").is_none(), "{resumed}");
    let replayed: Vec<u64> = resumed["replay"].as_array().unwrap().iter().map(|e| e["rev"].as_u64().unwrap()).collect();
    let missing: Vec<u64> = written.iter().copied().filter(|r| *r > last).collect();
    assert_eq!(replayed, missing, "{resumed}");
    // A wrong epoch is a gap with the current values.
    let gap = w2.ok("key.watch", json!({"keys": ["k"], "since": 1, "epoch": "0000000000000000"}));
    assert_eq!(gap["gap"], json!(true), "{gap}");
    assert_eq!(gap["values"]["k"]["value"], json!("19"), "{gap}");
}

#[test]
fn pubsub_crosses_gateways() {
    let r = Redis::start();
    let (a, b) = two_gateways(&r);
    let mut sa = a.client();
    sa.ok("pubsub.subscribe", json!({"channels": ["news"], "patterns": ["n*"]}));
    let mut sb = b.client();
    sb.ok("pubsub.subscribe", json!({"channels": ["news"]}));
    // The subscriptions reach Redis asynchronously: publish until both are counted.
    let mut p = b.client();
    poll_until(Duration::from_secs(5), "subscriptions mirrored in Redis", || {
        let n = p.ok("pubsub.publish", json!({"channel": "warmup", "data": 0}))["receivers"].as_u64().unwrap();
        let m = p.ok("pubsub.publish", json!({"channel": "news", "data": "probe"}))["receivers"].as_u64().unwrap();
        let _ = n;
        (m == 3).then_some(())
    });
    // Drain the probes.
    std::thread::sleep(Duration::from_millis(200));
    while sa.next_event(Duration::from_millis(50)).is_some() {}
    while sb.next_event(Duration::from_millis(50)).is_some() {}
    let got = p.ok("pubsub.publish", json!({"channel": "news", "data": {"x": [1, 2]}}));
    // receivers: Redis's answer (one per gateway subscription: A's channel and
    // pattern, B's channel).
    assert_eq!(got["receivers"], json!(3), "{got}");
    let mut on_a: Vec<Value> = vec![sa.event(), sa.event()];
    on_a.sort_by_key(|e| e.get("pattern").is_some());
    assert_eq!(on_a[0]["channel"], "news");
    assert_eq!(on_a[0]["data"], json!({"x": [1, 2]}));
    assert_eq!(on_a[1]["pattern"], "n*", "{:?}", on_a);
    let e = sb.event();
    assert_eq!((e["channel"].as_str(), &e["data"]), (Some("news"), &json!({"x": [1, 2]})));
    sa.no_event(Duration::from_millis(200));
    // Unsubscribed everywhere: nobody receives.
    sa.ok("pubsub.unsubscribe", json!({}));
    sb.ok("pubsub.unsubscribe", json!({}));
    poll_until(Duration::from_secs(5), "subscriptions dropped in Redis", || {
        (p.ok("pubsub.publish", json!({"channel": "news", "data": 1}))["receivers"] == json!(0)).then_some(())
    });
}

#[test]
fn expiry_is_recorded_once_across_gateways() {
    let r = Redis::start();
    let (a, b) = two_gateways(&r);
    let mut wa = a.client();
    let mut wb = b.client();
    wa.ok("key.watch", json!({"keys": ["t"]}));
    wb.ok("key.watch", json!({"keys": ["t"]}));
    let mut c = a.client();
    let set_rev = c.ok("string.set", json!({"key": "t", "value": "v", "ttl": 0.3}))["rev"].as_u64().unwrap();
    let started = std::time::Instant::now();
    for w in [&mut wa, &mut wb] {
        let e = w.event();
        assert_eq!((e["event"].as_str(), e["rev"].as_u64()), (Some("string.set"), Some(set_rev)), "{e}");
    }
    let mut revs = Vec::new();
    for w in [&mut wa, &mut wb] {
        let e = w.event();
        assert_eq!(e["event"], "expired", "{e}");
        revs.push(e["rev"].as_u64().unwrap());
        w.no_event(Duration::from_millis(300));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(300 + 100 + 700), "expired after {took:?}");
    assert_eq!(revs[0], revs[1], "one expiry, one rev");
    assert_eq!(revs[0], set_rev + 1);
    assert_error(&c.err("string.get", json!({"key": "t"})), "not_found");
}

#[test]
fn redis_down_then_back_recovers_without_a_restart() {
    let mut r =
        Redis::start_with(&["--maxmemory-policy", "noeviction", "--appendonly", "yes", "--appendfsync", "always"]);
    let g = r.gateway(|c| c.backend_timeout = 1.0);
    wait_ready(&g);
    // Under load: writers keep writing (pipelined) while Redis is killed and restarted;
    // every write acknowledged with a result must be there afterwards.
    let addr = g.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = connect_path(addr, "/ws");
                let (mut acked, mut refused, mut i) = (Vec::new(), 0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let ids: Vec<(u32, u64)> = (0..8)
                        .map(|j| {
                            (i + j, c.write("string.set", json!({"key": format!("w{w}:{}", i + j), "value": i + j})))
                        })
                        .collect();
                    c.flush();
                    for (n, id) in ids {
                        let v = c.reply(id);
                        match v.get("error") {
                            None => acked.push(n),
                            Some(e) => {
                                assert_eq!(e["code"], "unavailable", "{v}");
                                refused += 1;
                            }
                        }
                    }
                    i += 8;
                }
                (w, acked, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    r.kill();
    let mut c = g.client();
    let e = poll_until(Duration::from_secs(5), "unavailable", || {
        let v = c.call("string.get", json!({"key": "w0:0"}));
        v.get("error").cloned()
    });
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(health(&g), 503);
    std::thread::sleep(Duration::from_millis(300));
    r.restart();
    poll_until(Duration::from_secs(10), "recovered", || {
        c.call("string.get", json!({"key": "w0:0"})).get("result").is_some().then_some(())
    });
    assert_eq!(health(&g), 200);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused_total = 0;
    for t in writers {
        let (w, acked, refused) = t.join().unwrap();
        refused_total += refused;
        assert!(acked.len() > 16, "writer {w} got {} acks", acked.len());
        for n in acked {
            assert_eq!(c.string_value(&format!("w{w}:{n}")), json!(n.to_string()), "acknowledged write w{w}:{n} lost");
        }
    }
    assert!(refused_total > 0, "the writers never saw Redis down");
}

#[test]
fn a_silent_redis_times_out_and_the_inflight_cap_sheds_load() {
    let r = Redis::start();
    let g = r.gateway(|c| {
        c.backend_timeout = 0.5;
        c.backend_max_inflight = 2;
        c.backend_connections = 1;
    });
    wait_ready(&g);
    let mut c = g.client();
    c.ok("string.set", json!({"key": "x", "value": "1"}));
    r.signal(libc::SIGSTOP);
    let t0 = std::time::Instant::now();
    let ids: Vec<u64> = (0..3).map(|_| c.send("string.get", json!({"key": "x"}))).collect();
    // Replies go out in request order: the third (refused at once) waits for the two
    // that time out.
    for id in &ids[..2] {
        let v = c.reply(*id);
        assert_eq!(v["error"]["code"], "unavailable", "{v}");
    }
    let third = c.reply(ids[2]);
    assert_eq!(third["error"]["code"], "overloaded", "{third}");
    assert!(third["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
    r.signal(libc::SIGCONT);
    poll_until(Duration::from_secs(10), "recovered", || {
        c.call("string.get", json!({"key": "x"})).get("result").is_some().then_some(())
    });
}

#[test]
fn redis_down_at_start_then_up() {
    let port = free_port();
    let opts = Opts::memory().env("DBX_BACKEND", &format!("redis://127.0.0.1:{port}"));
    let d = Dbx::start(&opts);
    let (status, body) = d.health();
    assert_eq!(status, 503, "{body}");
    let mut c = d.client();
    assert_eq!(c.err_code("string.get", json!({"key": "a"})), "unavailable");
    assert_eq!(c.ok("server.ping", json!({}))["pong"], json!(true), "answered locally");
    let metrics = |d: &Dbx| http_status(d.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").1;
    assert!(metrics(&d).contains("\ndbx_backend_up 0"), "{}", metrics(&d));
    let _r = Redis::start_on(port);
    poll_until(Duration::from_secs(10), "recovered", || {
        c.call("string.set", json!({"key": "a", "value": "1"})).get("result").is_some().then_some(())
    });
    assert_eq!(d.health().0, 200);
    assert!(metrics(&d).contains("\ndbx_backend_up 1"), "{}", metrics(&d));
    assert!(d.stderr().contains("DBX_PERSIST, DBX_DATA_DIR and DBX_MAXMEMORY* do not apply"), "{}", d.stderr());
}

#[test]
fn an_evicting_redis_is_refused_at_start() {
    let r = Redis::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let opts = Opts::memory().env("DBX_BACKEND", &r.url());
    let mut d = Dbx::spawn(&opts);
    let st = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(2));
    let err = d.stderr();
    assert!(
        err.contains("DBX_BACKEND") && err.contains("allkeys-lru") && err.contains("DBX_BACKEND_ALLOW_EVICTION"),
        "{err}"
    );
    let ok = Dbx::start(&opts.clone().env("DBX_BACKEND_ALLOW_EVICTION", "true"));
    assert!(ok.stderr().contains("gateway mode"), "{}", ok.stderr());
}

#[test]
fn bad_backend_settings_are_start_up_errors() {
    for (k, v, needle) in [
        ("DBX_BACKEND", "redis://h:0", "bad port"),
        ("DBX_BACKEND", "mysql://h:1", "unknown scheme"),
        ("DBX_BACKEND_CONNECTIONS", "0", "1 to 64"),
        ("DBX_BACKEND_TIMEOUT", "-1", "seconds"),
        ("DBX_BACKEND_MAX_INFLIGHT", "0", "at least 1"),
        ("DBX_BACKEND_TLS_CA", "/nonexistent/ca.pem", "cannot read"),
    ] {
        let mut d =
            Dbx::spawn(&Opts::memory().env(k, v).envs(
                &(if k == "DBX_BACKEND_TLS_CA" { vec![("DBX_BACKEND", "rediss://127.0.0.1:1")] } else { vec![] }),
            ));
        let st = d.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(st.code(), Some(2), "{k}={v}");
        let err = d.stderr();
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains(k) && first.contains(needle), "{k}={v}: {err}");
    }
}

#[test]
fn oom_from_redis_is_oom_and_reads_still_work() {
    let r = Redis::start_with(&["--maxmemory-policy", "noeviction", "--maxmemory", "3mb"]);
    let g = r.gateway(|c| c.max_message_size = 1 << 20);
    wait_ready(&g);
    let mut c = g.client();
    let v = "x".repeat(200_000);
    let mut code = String::new();
    for i in 0..100 {
        let res = c.call("string.set", json!({"key": format!("k{i}"), "value": v}));
        if let Some(e) = res.get("error") {
            code = e["code"].as_str().unwrap().to_string();
            break;
        }
    }
    assert_eq!(code, "oom");
    assert_eq!(c.string_value("k0"), json!(v), "reads work over the limit");
    c.ok("key.del", json!({"keys": ["k0"]}));
}

#[test]
fn roles_and_key_scopes_hold_in_front_of_redis() {
    let r = Redis::start();
    let g = r.gateway(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.api_keys = Some("admin-key,reader:read".into());
    });
    wait_ready(&g);
    let mut admin = g.client_key("admin-key");
    for k in ["user:1", "user:2", "other:1"] {
        admin.ok("string.set", json!({"key": k, "value": k}));
    }
    let mut reader = g.client_key("reader");
    assert_eq!(reader.err_code("string.set", json!({"key": "user:1", "value": "x"})), "forbidden");
    assert_eq!(reader.string_value("other:1"), json!("other:1"));
    let tok = hs(json!({"sub": "u", "exp": now_s() + 600, "keys": ["user:*"]}));
    let mut scoped = g.client_bearer(&tok);
    assert_eq!(scoped.err_code("string.get", json!({"key": "other:1"})), "forbidden");
    assert_eq!(scoped.err_code("server.flush", json!({})), "forbidden");
    // key.scan runs in Redis, which knows no scopes: the gateway filters its keys.
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let s = scoped.ok("key.scan", json!({"cursor": cursor, "count": 1000}));
        keys.extend(s["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()));
        cursor = s["cursor"].as_str().unwrap().to_string();
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    let b = scoped.ok("batch", json!({"operations": [{"method": "key.scan", "params": {"count": 1000}}]}));
    let inner: Vec<&str> =
        b["results"][0]["result"]["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(inner.iter().all(|k| k.starts_with("user:")), "{b}");
}

/// Single requests of one loop turn go to Redis as one grouped call: each keeps its
/// own result or error, and each client's order.
#[test]
fn grouped_requests_keep_their_own_results_and_order() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let addr = g.addr;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = connect_path(addr, "/ws");
                c.ok("hash.set", json!({"key": format!("h{t}"), "field": "f", "value": "1"}));
                let mut ids = Vec::new();
                for i in 0..200 {
                    let k = format!("c{t}");
                    ids.push(("set", c.write("string.set", json!({"key": k, "value": i}))));
                    ids.push(("get", c.write("string.get", json!({"key": k}))));
                    ids.push(("wrong", c.write("string.incr", json!({"key": format!("h{t}")}))));
                    ids.push(("missing", c.write("string.get", json!({"key": format!("none{t}:{i}")}))));
                }
                c.flush();
                let mut i = 0;
                let mut last_rev = 0;
                for (what, id) in ids {
                    let v = c.reply(id);
                    match what {
                        "set" => {
                            let rev = v["result"]["rev"].as_u64().expect("rev");
                            assert!(rev > last_rev, "{v}");
                            last_rev = rev;
                        }
                        "get" => {
                            assert_eq!(v["result"]["value"], json!(i.to_string()), "{v}");
                            i += 1;
                        }
                        "wrong" => assert_eq!(v["error"]["code"], "wrong_type", "{v}"),
                        _ => assert_eq!(v["error"]["code"], "not_found", "{v}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Redis comes back empty (no persistence): its history is not the one delivered. The
/// watcher is told (an `epoch` event), revs go on, later writes reach it.
#[test]
fn an_empty_redis_after_a_restart_is_a_new_epoch_for_watchers() {
    let mut r = Redis::start();
    let g = r.gateway(|c| c.backend_timeout = 1.0);
    wait_ready(&g);
    let mut w = g.client();
    w.ok("key.watch", json!({"keys": ["k"]}));
    let mut c = g.client();
    let mut last = 0;
    for i in 0..5 {
        last = c.ok("string.set", json!({"key": "k", "value": i}))["rev"].as_u64().unwrap();
    }
    for _ in 0..5 {
        assert_eq!(w.event()["event"], "string.set");
    }
    r.restart(); // no persistence: everything is gone
    let rev = poll_until(Duration::from_secs(10), "writes accepted again", || {
        c.call("string.set", json!({"key": "k", "value": "after"}))["result"]["rev"].as_u64()
    });
    let e = w.event();
    assert_eq!(e["event"], "epoch", "{e}");
    assert!(e["epoch"].is_string(), "{e}");
    let mut e = w.event();
    while e["event"] == "epoch" {
        e = w.event(); // the library may record its own epoch change too
    }
    assert_eq!((e["event"].as_str(), e["rev"].as_u64()), (Some("string.set"), Some(rev)), "{e}");
    assert!(rev > last, "revs never go back: {last} then {rev}");
}

#[test]
fn redis_auth_and_database_from_the_url() {
    let r = Redis::start_with(&["--maxmemory-policy", "noeviction", "--requirepass", "s3cr%t"]);
    let bad = Opts::memory().env("DBX_BACKEND", &format!("redis://:wrong@127.0.0.1:{}", r.port));
    let mut d = Dbx::spawn(&bad);
    let st = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(2));
    let err = d.stderr();
    assert!(err.contains("DBX_BACKEND") && err.contains("AUTH"), "{err}");
    assert!(!err.contains("wrong"), "the password must not be printed: {err}");
    // %25 is '%': the password is percent-decoded; /3 selects database 3.
    let good = Opts::memory()
        .env("DBX_BACKEND", &format!("redis://default:s3cr%25t@127.0.0.1:{}/3", r.port))
        .env("DBX_WS_RATE_LIMIT", "0");
    let d = Dbx::start(&good);
    let mut c = poll_until(Duration::from_secs(10), "gateway ready", || {
        let mut c = d.client();
        c.call("server.dbsize", json!({})).get("result").is_some().then_some(c)
    });
    c.ok("string.set", json!({"key": "in3", "value": "x"}));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"AUTH s3cr%t\r\nSELECT 3\r\nGET in3\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.ends_with("$1\r\nx\r\n"), "{text:?}");
    assert!(!d.stderr().contains("s3cr"), "the password must not be logged");
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rcgen): `dir`/ca.pem,
/// cert.pem, key.pem.
fn tls_files(dir: &std::path::Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "gateway test CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(p, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut l = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    l.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = l.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// `rediss://`: TLS to a redis-server listening on its TLS port too, the CA from
/// DBX_BACKEND_TLS_CA; a CA that did not sign Redis's certificate never serves.
#[test]
fn rediss_speaks_tls_to_redis() {
    let certs = TempDir::new("rediss-certs");
    tls_files(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls_port = free_port().to_string();
    let (cert, key, ca) = (p("cert.pem"), p("key.pem"), p("ca.pem"));
    let r = Redis::start_with(&[
        "--maxmemory-policy",
        "noeviction",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let g = TestServer::with(|c| {
        c.backend = dbx::config::parse_backend(&url).unwrap();
        c.backend_tls_ca = Some(ca.clone().into());
        c.ws_rate_limit = 0;
    })
    .timeout(Duration::from_secs(10));
    wait_ready(&g);
    let mut w = g.client();
    w.ok("key.watch", json!({"keys": ["t"]}));
    let mut c = g.client();
    let big = "z".repeat(300_000);
    let rev = c.ok("string.set", json!({"key": "t", "value": big}))["rev"].as_u64().unwrap();
    assert_eq!(c.string_value("t"), json!(big));
    assert_eq!(w.event()["rev"], json!(rev));
    // The plaintext port holds the same data: it went through TLS to this Redis.
    assert_eq!(r.cmd(&["STRLEN", "t"]).unwrap().trim(), ":300000");
    let other = TempDir::new("rediss-other");
    tls_files(other.path());
    let g2 = TestServer::with(|c| {
        c.backend = dbx::config::parse_backend(&url).unwrap();
        c.backend_tls_ca = Some(other.path().join("ca.pem"));
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut c2 = g2.client();
    let e = c2.err("string.get", json!({"key": "t"}));
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("TLS") || e["message"].as_str().unwrap().contains("certificate"),
        "{e}"
    );
}

/// A gateway that stopped reading the change stream for longer than the backlog covers
/// (SIGSTOP here) tells its watchers on waking instead of skipping the hole.
#[test]
fn a_stream_trimmed_past_a_stopped_gateway_is_a_resync_not_a_hole() {
    let r = Redis::start();
    let opts = Opts::memory().env("DBX_BACKEND", &r.url()).env("DBX_WS_RATE_LIMIT", "0").env("DBX_WATCH_BACKLOG", "10");
    let a = Dbx::start(&opts);
    let mut w = poll_until(Duration::from_secs(10), "gateway A ready", || {
        let mut c = a.client();
        c.call("server.dbsize", json!({})).get("result").is_some().then_some(c)
    });
    w.ok("key.watch", json!({"patterns": ["k*"]}));
    let b = r.gateway(|c| c.watch_backlog = 10);
    wait_ready(&b);
    let mut c = b.client();
    c.ok("string.set", json!({"key": "k0", "value": "0"}));
    assert_eq!(w.event()["key"], "k0");
    a.signal(libc::SIGSTOP);
    let mut last = 0;
    for i in 0..600 {
        last = c.ok("string.set", json!({"key": format!("k{}", i % 7), "value": i}))["rev"].as_u64().unwrap();
    }
    // The stream holds only the last ~100 (MAXLEN ~ 10 trims by whole nodes).
    let first = r.cmd(&["XRANGE", "__dbx:changes", "-", "+", "COUNT", "1"]).unwrap();
    a.signal(libc::SIGCONT);
    // What A had already received stays in order; then the hole is announced (key null,
    // event epoch) before the changes still in the stream, up to the last one.
    let (mut revs, mut resync_at) = (Vec::new(), None);
    loop {
        let e = w.event();
        if e["event"] == "epoch" {
            assert_eq!(e["key"], Value::Null, "{e}");
            resync_at = Some(revs.len());
            continue;
        }
        let rev = e["rev"].as_u64().unwrap();
        revs.push(rev);
        if rev == last {
            break;
        }
    }
    let at = resync_at.unwrap_or_else(|| panic!("no resync event; stream starts {first}, revs {revs:?}"));
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
    let before = revs.get(at.wrapping_sub(1)).copied().unwrap_or(1);
    let after = revs[at];
    assert!(after > before + 1, "the resync marks a real hole: {before} -> {after}");
    // Everywhere else the revs are contiguous: no silent hole.
    for (i, p) in revs.windows(2).enumerate() {
        if i + 1 != at {
            assert_eq!(p[1], p[0] + 1, "silent hole at {i}: {revs:?}");
        }
    }
}

/// What the function library answers for `string.get key` right now (the reference the
/// gateway's native fast path must match byte for byte).
fn library_get(r: &Redis, key: &str) -> Value {
    library_call(r, "string.get", json!({ "key": key }))
}

fn library_call(r: &Redis, method: &str, params: Value) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis().to_string();
    let ops = json!([{"method": method, "params": params}]).to_string();
    let text = r.cmd(&["FCALL", "dbx_exec", "0", &now, "100000", &ops]).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["results"][0].clone()
}

/// `string.get` runs as native GET/PEXPIRETIME/HGET in one MULTI (src/backend/fast.rs),
/// `hash.get` of a field as HGET/PEXPIRETIME/EXISTS, `string.mget` as MGET and
/// PEXPIRETIMEs: each of their edges answers exactly
/// what the library answers.
#[test]
fn fast_get_answers_exactly_as_the_library() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let mut c = g.client();
    let fast = |c: &mut Client, k: &str| {
        let v = c.call("string.get", json!({ "key": k }));
        match (v.get("result"), v.get("error")) {
            (Some(res), _) => json!({ "result": res }),
            (_, Some(e)) => json!({ "error": e }),
            _ => panic!("{v}"),
        }
    };
    c.ok("string.set", json!({"key": "bytes", "value": "a\r\nb\u{0}c é漢🦀 \"\\ \u{1f}\u{7f}"}));
    c.ok("string.set", json!({"key": "num", "value": 1.50}));
    c.ok("string.set", json!({"key": "ttl", "value": "x", "ttl": 100}));
    // Deadlines past 2^53 ms (exact text in __dbx:deadlines:exact) and past 2^62 ms
    // (the native expiry is clamped there).
    c.ok("string.set", json!({"key": "far", "value": "x", "ttl": 1.0e13}));
    c.ok("string.set", json!({"key": "farther", "value": "x", "ttl": 5.0e15}));
    c.ok("string.set", json!({"key": "farthest", "value": "x", "ttl": 1.0e300}));
    c.ok("hash.set", json!({"key": "h", "field": "f", "value": "1"}));
    c.ok("list.push", json!({"key": "l", "values": ["1"]}));
    // Not UTF-8 (only something other than DBX can write it): each bad byte is U+FFFD.
    r.cmd(&["EVAL", "return redis.call('SET', KEYS[1], 'a\\226\\130A\\255\\237\\160\\128z')", "1", "raw"]).unwrap();
    for k in ["bytes", "num", "ttl", "far", "farther", "farthest", "h", "l", "raw", "missing", "nul\u{0}\r\nkey"] {
        let got = fast(&mut c, k);
        assert_eq!(got, library_get(&r, k), "{k:?}");
    }
    assert_eq!(fast(&mut c, "raw")["result"]["value"], json!("a\u{FFFD}\u{FFFD}A\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}z"));
    assert_eq!(fast(&mut c, "far")["result"]["ttl"], json!(10_000_000_000_000u64));
    assert_error(&c.err("string.get", json!({"key": "h"})), "wrong_type");
    assert_eq!(fast(&mut c, "missing"), json!({"error": {"code": "not_found", "message": "Key 'missing' not found"}}));
    assert_error(&c.err("string.get", json!({"key": 5})), "invalid_params");
    assert_error(&c.err("string.get", json!({"key": "k", "extra": 1})), "invalid_params");

    // hash.get of one field runs as HGET/PEXPIRETIME/EXISTS: the same edges.
    c.ok("hash.set", json!({"key": "ht", "field": "f", "value": "v"}));
    c.ok("key.expire", json!({"key": "ht", "ttl": 100}));
    r.cmd(&["EVAL", "return redis.call('HSET', KEYS[1], 'f', 'a\\255\\0\\r\\n')", "1", "hraw"]).unwrap();
    for (k, f) in
        [("h", "f"), ("h", "nope"), ("ht", "f"), ("missing", "f"), ("bytes", "f"), ("hraw", "f"), ("h", "\u{0}\n")]
    {
        let got = c.call("hash.get", json!({"key": k, "field": f}));
        let got = match (got.get("result"), got.get("error")) {
            (Some(res), _) => json!({ "result": res }),
            (_, Some(e)) => json!({ "error": e }),
            _ => panic!("{got}"),
        };
        assert_eq!(got, library_call(&r, "hash.get", json!({"key": k, "field": f})), "{k:?} {f:?}");
    }
    assert_eq!(c.ok("hash.get", json!({"key": "h", "field": "f"}))["value"], json!("1"));
    assert_eq!(
        c.err("hash.get", json!({"key": "h", "field": "nope"}))["message"],
        "Field 'nope' not found in hash 'h'"
    );

    // string.mget: MGET plus each key's PEXPIRETIME; a key past its deadline is null.
    c.ok("string.set", json!({"key": "short", "value": "x", "ttl": 0.05}));
    std::thread::sleep(Duration::from_millis(60));
    let keys = json!(["bytes", "missing", "h", "ttl", "raw", "bytes", "farthest", "short", "num"]);
    let got = c.ok("string.mget", json!({ "keys": keys }));
    assert_eq!(json!({ "result": got }), library_call(&r, "string.mget", json!({ "keys": keys })));
    assert_eq!(got["values"][1], Value::Null);
    assert_eq!(got["values"][7], Value::Null);
    assert_eq!(got["values"][8], json!("1.5"));
    assert_error(&c.err("string.mget", json!({"keys": []})), "invalid_params");
}

/// A key read right after its deadline is gone (the gateway's clock decides, as the
/// library's), and its `expired` change is still recorded once, with a rev.
#[test]
fn fast_get_past_the_deadline_is_not_found_and_expiry_is_still_recorded() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let mut w = g.client();
    w.ok("key.watch", json!({"keys": ["t"]}));
    let mut c = g.client();
    let set_rev = c.ok("string.set", json!({"key": "t", "value": "v", "ttl": 0.05}))["rev"].as_u64().unwrap();
    assert_eq!(c.ok("string.get", json!({"key": "t"}))["ttl"], json!(1));
    std::thread::sleep(Duration::from_millis(52));
    assert_error(&c.err("string.get", json!({"key": "t"})), "not_found");
    let e = w.event();
    assert_eq!((e["event"].as_str(), e["rev"].as_u64()), (Some("string.set"), Some(set_rev)), "{e}");
    let e = w.event();
    assert_eq!((e["event"].as_str(), e["rev"].as_u64()), (Some("expired"), Some(set_rev + 1)), "{e}");
    w.no_event(Duration::from_millis(300));
}

/// Pipelined on one connection: every get sees the set sent before it, mixed with
/// library calls and batches (which still run whole in one FCALL).
#[test]
fn fast_gets_keep_the_connection_order() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let mut c = connect_path(g.addr, "/ws");
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(("set", i, c.write("string.set", json!({"key": "k", "value": i}))));
        ids.push(("get", i, c.write("string.get", json!({"key": "k"}))));
        ids.push(("get", i, c.write("string.get", json!({"key": "k"}))));
        if i % 7 == 0 {
            ids.push((
                "batch",
                i,
                c.write(
                    "batch",
                    json!({"operations": [{"method": "string.set", "params": {"key": "k", "value": i + 1000}},
                                          {"method": "string.get", "params": {"key": "k"}},
                                          {"method": "string.set", "params": {"key": "k", "value": i}}]}),
                ),
            ));
            ids.push(("get", i, c.write("string.get", json!({"key": "k"}))));
        }
        ids.push(("del", i, c.write("key.del", json!({"keys": ["k"]}))));
        ids.push(("gone", i, c.write("string.get", json!({"key": "k"}))));
    }
    c.flush();
    for (what, i, id) in ids {
        let v = c.reply(id);
        match what {
            "get" => assert_eq!(v["result"]["value"], json!(i.to_string()), "{v}"),
            "batch" => assert_eq!(v["result"]["results"][1]["result"]["value"], json!((i + 1000).to_string()), "{v}"),
            "gone" => assert_eq!(v["error"]["code"], "not_found", "{v}"),
            _ => assert!(v.get("result").is_some(), "{v}"),
        }
    }
}

/// `redis://localhost:PORT`: the name is looked up on the gateway's resolver thread (the
/// loop never waits on DNS; resolve.rs), and the gateway serves, then reconnects by
/// itself when Redis restarts. A name that does not resolve leaves the loop answering
/// at once (`server.ping`), requests `unavailable`, and the reason on /health.
#[test]
fn a_backend_named_by_host_name_serves_and_reconnects() {
    let mut r = Redis::start();
    let url = format!("redis://localhost:{}", r.port);
    let g = TestServer::with(|c| {
        c.backend = dbx::config::parse_backend(&url).unwrap();
        c.ws_rate_limit = 0;
        c.backend_timeout = 1.0;
    })
    .timeout(Duration::from_secs(10));
    wait_ready(&g);
    let mut c = g.client();
    c.ok("string.set", json!({"key": "a", "value": "1"}));
    r.restart();
    poll_until(Duration::from_secs(10), "reconnected after the restart", || {
        c.call("string.set", json!({"key": "a", "value": "2"})).get("result").is_some().then_some(())
    });
    assert_eq!(c.string_value("a"), json!("2"));
    assert_eq!(health(&g), 200);

    let nowhere = TestServer::with(|c| {
        c.backend = dbx::config::parse_backend("redis://dbx-no-such-host.invalid:6379").unwrap();
    });
    let mut c = nowhere.client();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        assert_eq!(c.ok("server.ping", json!({}))["pong"], json!(true));
        assert!(t.elapsed() < Duration::from_millis(500), "the loop waited {:?}", t.elapsed());
        assert_eq!(c.err_code("string.get", json!({"key": "a"})), "unavailable");
        std::thread::sleep(Duration::from_millis(50));
    }
    // (However long this system's DNS takes to say no: the reason arrives in the end.)
    let body = poll_until(Duration::from_secs(30), "the lookup failure on /health", || {
        let (status, body) = http_status(nowhere.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 503, "{body}");
        body.contains("backend_resolve_error").then_some(body)
    });
    assert!(body.contains("dbx-no-such-host.invalid"), "{body}");
}

/// `/metrics` of a gateway: `dbx_backend_request_duration_seconds{kind=…}`, one
/// histogram per kind of backend command, counting the traffic that went through; the
/// page passes `promtool check metrics` (when promtool is installed: .ci/run installs
/// it) and the checks below in any case.
#[test]
fn backend_latency_histograms_in_metrics() {
    let r = Redis::start();
    let g = r.gateway(|_| {});
    wait_ready(&g);
    let mut c = g.client();
    for i in 0..5 {
        c.ok("string.set", json!({"key": "a", "value": i}));
        c.ok("string.get", json!({"key": "a"}));
    }
    c.ok("batch", json!({"operations": [{"method": "string.get", "params": {"key": "a"}}]}));
    c.ok("key.watch", json!({"keys": ["a"]}));
    c.ok("pubsub.publish", json!({"channel": "ch", "data": 1}));
    c.ok("server.info", json!({}));
    std::thread::sleep(Duration::from_millis(200)); // a few dbx_expire_due timer calls
    let (status, text) = http_status(g.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let body = text.split_once("\r\n\r\n").map_or(text.as_str(), |b| b.1);
    let name = "dbx_backend_request_duration_seconds";
    assert_eq!(body.matches(&format!("# TYPE {name} histogram\n")).count(), 1, "{body}");
    let sample = |series: &str| -> f64 {
        let line = body.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.and_then(|l| l.rsplit_once(' ')).and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| {
            panic!("no {series} in {body}");
        })
    };
    for (kind, at_least) in
        [("run", 5.0), ("native_read", 5.0), ("batch", 1.0), ("watch_read", 1.0), ("publish", 1.0), ("info", 1.0)]
    {
        let count = sample(&format!("{name}_count{{kind=\"{kind}\"}}"));
        assert!(count >= at_least, "{kind}: {count} < {at_least}");
        // Cumulative buckets, +Inf = count, a positive sum.
        let mut last = 0.0;
        for l in body.lines().filter(|l| l.starts_with(&format!("{name}_bucket{{kind=\"{kind}\",le="))) {
            let v: f64 = l.rsplit_once(' ').unwrap().1.parse().unwrap();
            assert!(v >= last, "{l}");
            last = v;
        }
        assert_eq!(last, count, "{kind}: +Inf bucket");
        assert!(sample(&format!("{name}_sum{{kind=\"{kind}\"}}")) > 0.0);
    }
    assert!(sample(&format!("{name}_count{{kind=\"expire_due\"}}")) >= 1.0);
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "promtool check metrics: {said}");
        }
        Err(e) => eprintln!("promtool not installed ({e}): checked by the assertions above only"),
    }
}

/// Pipelined plain sets from several connections go to Redis as runs (`P count k v …`,
/// one MSET each, one stream entry per call): every write still has its own rev, and a
/// watcher on another gateway gets each one, in rev order, with the rev its writer was
/// given — also when a TTL in the database sends the runs down the one-by-one path, and
/// with JSON operations between them.
#[test]
fn runs_of_plain_sets_reach_a_watcher_on_another_gateway_with_their_revs() {
    let r = Redis::start();
    let (a, b) = two_gateways(&r);
    let mut w = a.client();
    let rev0 = w.ok("key.watch", json!({"patterns": ["r:*"]}))["rev"].as_u64().unwrap();
    let addr = b.addr;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = connect_path(addr, "/ws");
                let mut ids = Vec::new();
                for i in 0..300 {
                    let key = format!("r:{t}:{}", i % 7);
                    let (method, params) = match i {
                        // a JSON op inside the runs, and from i = 150 on a key with a TTL
                        100 => ("hash.set", json!({"key": format!("r:h{t}"), "field": "f", "value": "1"})),
                        150 => ("string.set", json!({"key": key, "value": "t", "ttl": 600})),
                        _ => ("string.set", json!({"key": key, "value": format!("{t}:{i}")})),
                    };
                    ids.push((key_of(&params), c.write(method, params)));
                }
                c.flush();
                ids.into_iter()
                    .map(|(key, id)| {
                        let v = c.reply(id);
                        (key, v["result"]["rev"].as_u64().unwrap_or_else(|| panic!("{v}")))
                    })
                    .collect::<Vec<(String, u64)>>()
            })
        })
        .collect();
    let mut written: Vec<(String, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    written.sort_by_key(|x| x.1);
    let revs: Vec<u64> = written.iter().map(|x| x.1).collect();
    assert_eq!(revs, (rev0 + 1..=rev0 + 1200).collect::<Vec<_>>(), "one rev per write, none shared, none skipped");
    for (key, rev) in &written {
        let e = w.event();
        assert_eq!((e["key"].as_str(), e["rev"].as_u64()), (Some(key.as_str()), Some(*rev)), "{e}");
    }
    w.no_event(Duration::from_millis(200));
    // the runs really were runs: fewer MSETs than plain sets before the TTL
    let stats = r.cmd(&["INFO", "commandstats"]).unwrap();
    let msets: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_mset:calls="))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MSET in {stats}"));
    println!("{msets} MSETs for {} plain sets", 4 * 149);
    assert!(msets < 4 * 149, "{msets} MSETs for {} plain sets", 4 * 149);
    // what the last writes left is what Redis holds
    let mut c = b.client();
    assert_eq!(c.ok("string.get", json!({"key": "r:0:4"}))["value"], "0:298");
}

/// Two gateways on one Redis, both ready.
fn two_gateways(r: &Redis) -> (TestServer, TestServer) {
    let (a, b) = (r.gateway(|_| {}), r.gateway(|_| {}));
    wait_ready(&a);
    wait_ready(&b);
    (a, b)
}

fn key_of(params: &serde_json::Value) -> String {
    params["key"].as_str().unwrap().to_string()
}
