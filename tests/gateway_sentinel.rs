//! Gateway mode with Redis Sentinel (issue 16), on loopback: one primary, one replica
//! and one sentinel (quorum 1), or three sentinels (quorum 2) of which the first listed
//! is killed; the primary is SIGKILLed and the gateways follow the failover by
//! themselves. Also the sentinels' own password (DBX_BACKEND_SENTINEL_PASSWORD).

mod common;
use common::redis::{Redis, Sentinel, SentinelOpts};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn sentinel_gateway(url: &str) -> TestServer {
    let url = url.to_string();
    let g = TestServer::with(|c| {
        c.backend = dbx::config::parse_backend(&url).unwrap();
        c.ws_rate_limit = 0;
        c.backend_timeout = 1.0;
    })
    .timeout(Duration::from_secs(10));
    common::redis::wait_ready(&g);
    g
}

#[test]
fn writes_resume_on_the_new_primary_and_watchers_never_see_a_hole() {
    let mut primary = Redis::start();
    let port = primary.port.to_string();
    let replica = Redis::start_with(&["--maxmemory-policy", "noeviction", "--replicaof", "127.0.0.1", &port]);
    let sentinel = Sentinel::start("m", primary.port);
    poll_until(Duration::from_secs(15), "sentinel sees the replica", || {
        sentinel.cmd_all(&["SENTINEL", "replicas", "m"]).contains(&replica.port.to_string()).then_some(())
    });
    let g = sentinel_gateway(&format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port));
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

/// Three sentinels (quorum 2) listed in the URL, after a fourth one that monitors
/// another master name only (it answers "no such master": the next one is asked); the
/// first of the three is SIGKILLed, then the primary. A watcher on gateway A, writes through gateway B all along (one in flight):
/// both gateways move to the next sentinel, find the new primary, and writes resume on
/// it; every acknowledged write's change reaches the watcher in rev order, except those
/// before an `epoch` event (the new primary missed them: the watcher is told to resync,
/// never left with a silent hole). A client resuming on B with `since`/`epoch` gets the
/// same: a replay of exactly the acknowledged writes after its rev, or `gap`.
#[test]
fn three_sentinels_the_first_one_dead_a_failover_under_writes_and_a_watcher_elsewhere() {
    let mut primary = Redis::start();
    let port = primary.port.to_string();
    let replica = Redis::start_with(&["--maxmemory-policy", "noeviction", "--replicaof", "127.0.0.1", &port]);
    let mut sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start_opts("m", primary.port, SentinelOpts { quorum: 2, ..SentinelOpts::default() }))
        .collect();
    // Each sentinel knows the other two (hello messages every 2 s) and the replica.
    poll_until(Duration::from_secs(30), "sentinels know each other and the replica", || {
        sentinels
            .iter()
            .all(|s| {
                s.cmd_all(&["SENTINEL", "ckquorum", "m"]).contains("3 usable")
                    && s.cmd_all(&["SENTINEL", "replicas", "m"]).contains(&replica.port.to_string())
            })
            .then_some(())
    });
    // Monitors a Redis that is not there, under another name.
    let stranger = Sentinel::start("other", free_port());
    let hosts: Vec<String> =
        std::iter::once(&stranger).chain(&sentinels).map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let url = format!("redis+sentinel://{}/m", hosts.join(","));
    let a = sentinel_gateway(&url);
    let b = sentinel_gateway(&url);
    let mut w = a.client();
    let start = w.ok("key.watch", json!({"keys": ["k"]}));
    let epoch0 = start["epoch"].as_str().map(str::to_string).unwrap_or_default();
    let epoch0 =
        if epoch0.is_empty() { w.ok("server.info", json!({}))["epoch"].as_str().unwrap().to_string() } else { epoch0 };
    let rev0 = start["rev"].as_u64().unwrap();

    // The writer: one write in flight on B, all along; acknowledged revs are kept.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let unavailable = Arc::new(Mutex::new(0u32));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, unavailable, stop) = (acked.clone(), unavailable.clone(), stop.clone());
        let mut c = b.client();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = c.call("string.set", json!({"key": "k", "value": i}));
                match r["result"]["rev"].as_u64() {
                    Some(rev) => acked.lock().unwrap().push(rev),
                    None => {
                        assert_eq!(r["error"]["code"], "unavailable", "{r}");
                        *unavailable.lock().unwrap() += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    poll_until(Duration::from_secs(10), "writes flow", || (acked.lock().unwrap().len() >= 20).then_some(()));
    // The first listed sentinel goes; the gateways talk to the next one from now on.
    sentinels[0].kill();
    std::thread::sleep(Duration::from_millis(300));
    let before_kill = acked.lock().unwrap().len();
    primary.kill();
    // Writes fail for a while, then resume on the replica, promoted by sentinels 2 and 3.
    poll_until(Duration::from_secs(40), "writes accepted by the new primary", || {
        (*unavailable.lock().unwrap() > 0 && acked.lock().unwrap().len() >= before_kill + 30).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.windows(2).all(|p| p[0] < p[1]), "revs only go up: {acked:?}");
    let last = *acked.last().unwrap();

    // The watcher: changes in rev order; an `epoch` event may cut the history once.
    let mut seen = Vec::new();
    let mut epoch_at = None;
    while !seen.contains(&last) {
        let e = w.event();
        if e["event"] == "epoch" {
            assert!(e["epoch"].is_string() && e["epoch"] != json!(epoch0), "{e}");
            epoch_at = Some(e["rev"].as_u64().unwrap());
            continue;
        }
        let rev = e["rev"].as_u64().unwrap();
        assert!(seen.last().is_none_or(|l| *l < rev), "rev order: {rev} after {seen:?}");
        seen.push(rev);
    }
    for r in &acked {
        let cut = epoch_at.is_some_and(|at| *r < at);
        assert!(seen.contains(r) || cut, "acknowledged rev {r} never delivered and no epoch before it: {seen:?}");
    }
    // Whatever the primary, the health check names it: the replica now.
    let (status, body) = http_status(a.addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("127.0.0.1:{}", replica.port)), "{body}");
    // A client resuming on B from the watch's first rev: exactly the acknowledged
    // writes after it, or a gap (when the new primary missed some).
    let mut r = b.client();
    let resumed = r.ok("key.watch", json!({"keys": ["k"], "since": rev0, "epoch": epoch0}));
    if resumed.get("gap").is_some() {
        assert!(epoch_at.is_some(), "gap without a new epoch: {resumed}");
        assert_eq!(resumed["values"]["k"]["value"], r.string_value("k"), "{resumed}");
    } else {
        let replayed: Vec<u64> =
            resumed["replay"].as_array().unwrap().iter().map(|e| e["rev"].as_u64().unwrap()).collect();
        for x in &acked {
            assert!(replayed.contains(x), "acknowledged rev {x} missing from the replay {replayed:?}");
        }
    }
}

/// Sentinels with a `requirepass` (DBX_BACKEND_SENTINEL_PASSWORD) in front of a primary
/// with a password of its own (the URL's credentials). A wrong or missing sentinel
/// password, or a wrong primary password, is a start-up error naming the setting (exit
/// 2, no password printed); a sentinel that only becomes reachable later and refuses the
/// password is reported on /health and in the log (once), the gateway serving
/// `unavailable` meanwhile.
#[test]
fn sentinel_password_and_primary_password() {
    let primary = Redis::start_with(&["--maxmemory-policy", "noeviction", "--requirepass", "data-pw"]);
    let opts = |port| SentinelOpts {
        port,
        password: Some("sentinel-pw"),
        primary_password: Some("data-pw"),
        ..SentinelOpts::default()
    };
    let s = Sentinel::start_opts("m", primary.port, opts(None));
    let url = |cred: &str, port: u16| format!("redis+sentinel://{cred}127.0.0.1:{port}/m");
    let refused = |env: &[(&str, &str)], setting: &str| {
        let mut d = Dbx::spawn(&Opts::memory().envs(env));
        let st = d.wait_exit(Duration::from_secs(10)).expect("exits");
        let err = d.stderr();
        assert_eq!(st.code(), Some(2), "{env:?}: {err}");
        let first = err.lines().find(|l| l.contains("DBX_BACKEND")).unwrap_or("");
        assert!(first.contains(setting), "{env:?}: {err}");
        for secret in ["sentinel-pw", "data-pw", "nope"] {
            assert!(!err.contains(secret), "a password was printed: {err}");
        }
        err
    };
    let good = url(":data-pw@", s.port);
    let err =
        refused(&[("DBX_BACKEND", &good), ("DBX_BACKEND_SENTINEL_PASSWORD", "nope")], "DBX_BACKEND_SENTINEL_PASSWORD");
    assert!(err.contains("WRONGPASS") || err.contains("invalid"), "{err}");
    let err = refused(&[("DBX_BACKEND", &good)], "DBX_BACKEND_SENTINEL_PASSWORD");
    assert!(err.contains("NOAUTH"), "{err}");
    let err = refused(
        &[("DBX_BACKEND", &url(":nope@", s.port)), ("DBX_BACKEND_SENTINEL_PASSWORD", "sentinel-pw")],
        "DBX_BACKEND",
    );
    assert!(err.contains("AUTH"), "{err}");
    let err = refused(
        &[("DBX_BACKEND", &format!("redis://127.0.0.1:{}", primary.port)), ("DBX_BACKEND_SENTINEL_PASSWORD", "nope")],
        "DBX_BACKEND_SENTINEL_PASSWORD",
    );
    assert!(err.contains("not redis+sentinel://"), "{err}");

    // Both right: the gateway serves, and the data is in the primary.
    let ok = Opts::memory()
        .env("DBX_BACKEND", &good)
        .env("DBX_BACKEND_SENTINEL_PASSWORD", "sentinel-pw")
        .env("DBX_WS_RATE_LIMIT", "0");
    let d = Dbx::start(&ok);
    let mut c = poll_until(Duration::from_secs(10), "gateway ready", || {
        let mut c = d.client();
        c.call("server.dbsize", json!({})).get("result").is_some().then_some(c)
    });
    c.ok("string.set", json!({"key": "a", "value": "through the sentinel"}));
    assert_eq!(c.string_value("a"), json!("through the sentinel"));
    let stored = common::redis::raw_cmd_as(primary.port, Some("data-pw"), &["GET", "a"]).unwrap();
    assert_eq!(stored, "through the sentinel");
    assert!(!d.stderr().contains("pw"), "a password was logged: {}", d.stderr());

    // A sentinel down at start: the gateway starts; when the sentinel comes and refuses
    // the password, /health says why (naming the setting), requests get `unavailable`.
    let later = free_port();
    let mut d = Dbx::start(
        &Opts::memory()
            .env("DBX_BACKEND", &url(":data-pw@", later))
            .env("DBX_BACKEND_SENTINEL_PASSWORD", "nope")
            .env("DBX_WS_RATE_LIMIT", "0"),
    );
    assert_eq!(d.health().0, 503);
    let _s2 = Sentinel::start_opts("m", primary.port, opts(Some(later)));
    let body = poll_until(Duration::from_secs(10), "the refusal on /health", || {
        let (status, body) = d.health();
        assert_eq!(status, 503, "{body}");
        body["backend_sentinel_error"].as_str().filter(|e| e.contains("refused AUTH")).map(str::to_string)
    });
    assert!(body.contains("DBX_BACKEND_SENTINEL_PASSWORD") && !body.contains("nope"), "{body}");
    let mut c = d.client();
    assert_eq!(c.err_code("string.get", json!({"key": "a"})), "unavailable");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(d.try_wait().is_none(), "the gateway keeps running");
    let logged = d.stderr().matches("refused AUTH").count();
    assert_eq!(logged, 1, "logged once, not at every retry: {}", d.stderr());
}

/// A sentinel listed first that accepts the connection and never answers (SIGSTOP): the
/// gateway gives up on it after DBX_BACKEND_TIMEOUT and gets the primary from the next.
#[test]
fn a_silent_sentinel_is_passed_over_after_the_timeout() {
    let primary = Redis::start();
    let silent = Sentinel::start("m", primary.port);
    let good = Sentinel::start("m", primary.port);
    silent.signal(libc::SIGSTOP);
    let url = format!("redis+sentinel://127.0.0.1:{},127.0.0.1:{}/m", silent.port, good.port);
    let t = std::time::Instant::now();
    let g = sentinel_gateway(&url); // DBX_BACKEND_TIMEOUT 1 s
    assert!(t.elapsed() >= Duration::from_millis(900), "the silent one was not asked first? {:?}", t.elapsed());
    let mut c = g.client();
    c.ok("string.set", json!({"key": "a", "value": "1"}));
    assert_eq!(c.string_value("a"), json!("1"));
    silent.signal(libc::SIGCONT);
}
