//! Durability against the real binary (issue 7): restart, SIGKILL under load with
//! `always`, torn tail, mid-file corruption, snapshots while writes continue, a crash
//! at every snapshot step, and a full disk.

mod common;

use common::{files, poll_within, process_client, Dbx, Opts, TempDir};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn restart_keeps_values_ttls_rev_and_epoch() {
    let dir = TempDir::new("restart");
    let o = Opts::new(&dir.path().join("data"));
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    c.ok("string.set", json!({"key": "plain", "value": "héllo \"quoted\""}));
    c.ok("string.set", json!({"key": "ttl", "value": "v", "ttl": 100}));
    c.ok("string.set", json!({"key": "short", "value": "v", "ttl": 0.2}));
    c.ok("string.incr", json!({"key": "n", "by": 41}));
    c.ok("string.incr", json!({"key": "n"}));
    c.ok("string.mset", json!({"pairs": {"m1": "a", "m2": "b"}}));
    c.ok("string.append", json!({"key": "m1", "value": "z"}));
    c.ok("key.del", json!({"key": "m2"}));
    c.ok("string.set", json!({"key": "gone", "value": "x"}));
    c.ok("key.rename", json!({"key": "gone", "new_key": "renamed"}));
    let b = c.ok(
        "batch",
        json!({"operations": [
            {"method": "string.set", "params": {"key": "b1", "value": "1"}},
            {"method": "string.get", "params": {"key": "nope"}},
            {"method": "string.set", "params": {"key": "b2", "value": "2", "nx": true}},
            {"method": "string.set", "params": {"key": "b2", "value": "3", "nx": true}},
        ]}),
    );
    assert_eq!(b["results"][3]["result"]["set"], false);
    c.ok("key.expire", json!({"key": "b1", "ttl": 50}));
    std::thread::sleep(Duration::from_millis(300)); // "short" expires
    let info = c.ok("server.info", json!({}));
    let (rev, epoch) = (info["rev"].as_u64().unwrap(), info["epoch"].clone());
    assert_eq!(s.term().code(), Some(0));
    assert!(s.stderr().contains("fsynced"), "{}", s.stderr());

    let s = Dbx::start(&o);
    assert!(s.stderr().contains("replayed"), "{}", s.stderr());
    let mut c = s.client();
    assert_eq!(c.hello["epoch"], epoch, "epoch survives a restart");
    assert!(c.hello["rev"].as_u64().unwrap() >= rev, "rev continues");
    assert_eq!(c.string_value("plain"), "héllo \"quoted\"");
    assert_eq!(c.string_value("n"), "42");
    assert_eq!(c.string_value("m1"), "az");
    assert_eq!(c.string_value("m2"), Value::Null);
    assert_eq!(c.string_value("short"), Value::Null);
    assert_eq!(c.string_value("gone"), Value::Null);
    assert_eq!(c.string_value("renamed"), "x");
    assert_eq!(c.string_value("b2"), "2");
    let ttl = c.ok("key.ttl", json!({"key": "ttl"}))["ttl"].as_i64().unwrap();
    assert!((95..=100).contains(&ttl), "absolute deadline kept, ttl {ttl}");
    let ttl = c.ok("key.ttl", json!({"key": "b1"}))["ttl"].as_i64().unwrap();
    assert!((45..=50).contains(&ttl), "ttl {ttl}");
    let r = c.ok("string.set", json!({"key": "after", "value": "1"}));
    assert!(r["rev"].as_u64().unwrap() > rev);

    // A flush starts a new epoch, and that epoch survives too.
    let f = c.ok("server.flush", json!({}));
    assert!(f["flushed"].as_u64().unwrap() > 0);
    c.ok("string.set", json!({"key": "post-flush", "value": "1"}));
    let epoch2 = c.ok("server.info", json!({}))["epoch"].clone();
    assert_ne!(epoch2, epoch);
    drop(c);
    let mut s = s;
    assert_eq!(s.term().code(), Some(0));
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(c.hello["epoch"], epoch2);
    assert_eq!(c.string_value("plain"), Value::Null);
    assert_eq!(c.string_value("post-flush"), "1");

    // A crash under `everysec` may have lost acknowledged writes of its last moments:
    // the next start begins a new epoch so resuming watchers resync (data on disk stays).
    drop(c);
    let mut s = s;
    s.kill();
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_ne!(c.hello["epoch"], epoch2, "unclean shutdown under everysec starts a new epoch");
    assert_eq!(c.string_value("post-flush"), "1");
}

#[test]
fn persist_false_writes_no_file() {
    let dir = TempDir::new("off");
    let data = dir.path().join("data");
    let o = Opts::new(&data).env("DBX_PERSIST", "false");
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    c.ok("string.set", json!({"key": "a", "value": "1"}));
    let r = c.call("server.save", json!({}));
    assert_eq!(r["error"]["code"], "unavailable");
    let (st, h) = s.health();
    assert_eq!(st, 200);
    assert_eq!(h["persistence"], "off");
    s.term();
    assert!(!data.exists(), "no data directory with DBX_PERSIST=false");
}

/// SIGKILL in the middle of a write load under `always`: every acknowledged write is
/// there after the restart.
#[test]
fn sigkill_under_load_keeps_every_acknowledged_write() {
    let dir = TempDir::new("kill");
    let o = Opts::new(&dir.path().join("data")).env("DBX_APPENDFSYNC", "always");
    let mut s = Dbx::start(&o);
    let port = s.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut threads = Vec::new();
    for t in 0..8 {
        let (stop, acked) = (stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let mut c = process_client(port);
            c.set_timeout(Duration::from_secs(2));
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (k, v) = (format!("k{t}-{i}"), format!("v{i}"));
                let id = c.send("string.set", json!({"key": k, "value": v, "ttl": 3600}));
                match c.try_reply(id) {
                    Some(r) if r["result"]["set"] == true => acked.lock().unwrap().push((k, v)),
                    _ => break, // killed
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    s.kill();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "load ran: {} writes", acked.len());
    let s = Dbx::start(&o);
    let mut c = s.client();
    for chunk in acked.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let got = c.ok("string.mget", json!({ "keys": keys }));
        for ((k, v), g) in chunk.iter().zip(got["values"].as_array().unwrap()) {
            assert_eq!(g, v, "acknowledged write of {k} lost");
        }
    }
    println!("{} acknowledged writes all present after SIGKILL", acked.len());
}

fn log_file(data: &std::path::Path) -> std::path::PathBuf {
    let name = files(data).into_iter().rfind(|f| f.starts_with("aof-")).expect("a log file");
    data.join(name)
}

// A torn tail (after a crash, and after a clean shutdown) and damaged lengths:
// tests/log_damage.rs.

#[test]
fn corruption_in_the_middle_refuses_to_start_and_can_be_truncated() {
    let dir = TempDir::new("corrupt");
    let data = dir.path().join("data");
    let o = Opts::new(&data);
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    for i in 0..50 {
        c.ok("string.set", json!({"key": format!("k{i:02}"), "value": "v"}));
    }
    s.term();
    let log = log_file(&data);
    let mut bytes = std::fs::read(&log).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&log, &bytes).unwrap();

    let mut s = Dbx::spawn(&o);
    let st = s.wait_exit(Duration::from_secs(20)).expect("must refuse to start");
    assert!(!st.success());
    let err = s.stderr();
    assert!(err.contains("aof-0.log") && err.contains("byte offset"), "{err}");
    assert!(err.contains("--aof-truncate-corrupt"), "{err}");

    let s = Dbx::start(&o.clone().arg("--aof-truncate-corrupt"));
    assert!(s.stderr().contains("cutting the log back"), "{}", s.stderr());
    let mut c = s.client();
    assert_eq!(c.string_value("k00"), "v", "records before the damage are kept");
    assert_eq!(c.string_value("k49"), Value::Null, "records after it are gone");
    c.ok("string.set", json!({"key": "after", "value": "1"}));
}

/// Writer threads for the snapshot tests: each keeps writing new keys and records
/// what was acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, n: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..n)
            .map(|t| {
                let (stop, acked, tag) = (stop.clone(), acked.clone(), tag.to_string());
                std::thread::spawn(move || {
                    let mut c = process_client(port);
                    c.set_timeout(Duration::from_secs(2));
                    for i in 0..10_000_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let k = format!("{tag}{t}-{i}");
                        let id = c.send("string.set", json!({"key": k, "value": "v"}));
                        match c.try_reply(id) {
                            Some(r) if r["result"]["set"] == true => acked.lock().unwrap().push(k),
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        Load { stop, acked, threads }
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let v = self.acked.lock().unwrap().clone();
        v
    }
}

fn check_all(c: &mut common::Client, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let got = c.ok("string.mget", json!({ "keys": chunk }));
        for (k, g) in chunk.iter().zip(got["values"].as_array().unwrap()) {
            assert_eq!(g, "v", "acknowledged write of {k} lost");
        }
    }
}

#[test]
fn snapshot_while_writes_continue() {
    let dir = TempDir::new("snap");
    let data = dir.path().join("data");
    let o = Opts::new(&data).env("DBX_APPENDFSYNC", "always");
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    let pairs: serde_json::Map<String, Value> = (0..20_000).map(|i| (format!("pre{i}"), json!("v"))).collect();
    c.ok("string.mset", json!({ "pairs": pairs }));
    let load = Load::start(s.port, 4, "w");
    std::thread::sleep(Duration::from_millis(200));
    // Two saves back to back: the second finds the first running.
    let a = c.send("server.save", json!({}));
    let b = c.send("server.save", json!({}));
    assert_eq!(c.try_reply(a).unwrap()["result"]["started"], true);
    assert_eq!(c.try_reply(b).unwrap()["result"]["started"], false);
    let done = poll_within(Duration::from_secs(20), || {
        let (_, h) = s.health();
        (h["last_snapshot"]["ok"] == true).then_some(h)
    })
    .expect("snapshot finished");
    assert_eq!(done["snapshot_generation"], 1);
    std::thread::sleep(Duration::from_millis(200));
    let acked = load.stop();
    assert!(!acked.is_empty(), "{}", s.stderr());
    let f = files(&data);
    assert!(f.contains(&"snapshot-1.dbx".to_string()), "{f:?}");
    assert!(f.contains(&"aof-1.log".to_string()), "{f:?}");
    assert!(!f.contains(&"aof-0.log".to_string()), "old log removed: {f:?}");
    s.kill();
    let s = Dbx::start(&o);
    assert!(s.stderr().contains("loaded"), "{}", s.stderr());
    let mut c = s.client();
    assert_eq!(c.string_value("pre19999"), "v");
    check_all(&mut c, &acked);
    assert_eq!(c.ok("server.dbsize", json!({}))["keys"].as_u64().unwrap() as usize, 20_000 + acked.len());
}

#[test]
fn log_growth_triggers_a_snapshot() {
    let dir = TempDir::new("auto");
    let data = dir.path().join("data");
    let o = Opts::new(&data).env("DBX_AOF_REWRITE_MIN_SIZE", "64kb");
    let s = Dbx::start(&o);
    let mut c = s.client();
    for i in 0..1000 {
        c.ok("string.set", json!({"key": format!("k{}", i % 10), "value": "x".repeat(100)}));
    }
    // A complete snapshot: `snapshot-N.dbx`, not the child's `.tmp` still being written
    // (polling for any `snapshot-` name raced with the rename under load).
    poll_within(Duration::from_secs(10), || {
        files(&data).iter().any(|n| n.starts_with("snapshot-") && n.ends_with(".dbx")).then_some(())
    })
    .unwrap_or_else(|| panic!("no complete snapshot after 64 KiB of log: {:?}", files(&data)));
}

/// A crash at each step of a snapshot leaves a loadable state with every write.
#[test]
fn crash_at_every_snapshot_step_is_recoverable() {
    for step in ["snapshot-log-switched", "snapshot-child-writing", "snapshot-before-rename", "snapshot-after-rename"] {
        let dir = TempDir::new("crash");
        let data = dir.path().join("data");
        let o = Opts::new(&data).env("DBX_APPENDFSYNC", "always");
        // A first snapshot, so that a crash also has older files to clean up.
        let mut s = Dbx::start(&o);
        let mut c = s.client();
        for i in 0..200 {
            c.ok("string.set", json!({"key": format!("a{i}"), "value": "v"}));
        }
        assert_eq!(c.ok("server.save", json!({}))["started"], true);
        poll_within(Duration::from_secs(10), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
            .expect("first snapshot");
        for i in 0..200 {
            c.ok("string.set", json!({"key": format!("b{i}"), "value": "v"}));
        }
        s.term();

        let mut s = Dbx::start(&o.clone().env("DBX_TEST_CRASH_AT", step));
        let mut c = s.client();
        for i in 0..200 {
            c.ok("string.set", json!({"key": format!("c{i}"), "value": "v"}));
        }
        let id = c.send("server.save", json!({}));
        if step == "snapshot-child-writing" {
            // The child dies; the server keeps going and reports the failure.
            assert_eq!(c.try_reply(id).unwrap()["result"]["started"], true);
            poll_within(Duration::from_secs(10), || (s.health().1["last_snapshot"]["ok"] == false).then_some(()))
                .expect("failed snapshot reported");
            c.ok("string.set", json!({"key": "d", "value": "v"}));
            s.kill();
        } else {
            let _ = c.try_reply(id);
            let st = s.wait_crash(Duration::from_secs(10));
            assert!(!st.success(), "{step}: {st}");
        }
        let s = Dbx::start(&o);
        let mut c = s.client();
        for p in ["a", "b", "c"] {
            for i in [0, 199] {
                assert_eq!(c.string_value(&format!("{p}{i}")), "v", "{step}: {p}{i}");
            }
        }
        assert_eq!(
            c.ok("server.dbsize", json!({}))["keys"],
            if step == "snapshot-child-writing" { 601 } else { 600 },
            "{step}"
        );
        assert!(!files(&data).iter().any(|f| f.ends_with(".tmp")), "{step}: leftovers removed");
        // And a snapshot works again afterwards.
        assert_eq!(c.ok("server.save", json!({}))["started"], true, "{step}");
        poll_within(Duration::from_secs(10), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
            .unwrap_or_else(|| panic!("{step}: snapshot after recovery"));
    }
}

/// Unmounts the test's tmpfs on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk refuses writes with `unavailable` before they run (log space is
/// reserved ahead): every request is answered within a second, a refused write is not
/// applied (not readable, no event, not there after a restart), reads keep working,
/// /health says 503 degraded, and everything resumes by itself once space is freed.
#[test]
fn disk_full_refuses_writes_and_recovers() {
    for policy in ["always", "everysec"] {
        disk_full(policy);
    }
}

fn disk_full(policy: &str) {
    let dir = TempDir::new("full");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED disk_full_refuses_writes_and_recovers: cannot mount a tmpfs (needs root)");
        eprintln!("SKIPPED disk_full_refuses_writes_and_recovers: cannot mount a tmpfs (needs root)");
        return;
    }
    let _mount = Mount(mnt.clone());
    let data = mnt.join("data");
    let o2 = Opts::new(&data).env("DBX_APPENDFSYNC", policy);
    let s = Dbx::start(&o2);
    let mut a = s.client();
    let mut b = s.client();
    let mut w = s.client();
    a.ok("string.set", json!({"key": "before", "value": "1"}));
    w.ok("key.watch", json!({"keys": ["refused", "big"]}));
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        while std::io::Write::write_all(&mut f, &[7u8; 1]).is_ok() {}
    }
    // Every write gets its answer at once: `unavailable`, and it did not happen.
    a.set_timeout(Duration::from_secs(1));
    let big = "h".repeat(10_000);
    let r = a.call("string.set", json!({"key": "big", "value": big}));
    assert_eq!(r["error"]["code"], "unavailable", "{policy}: {r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("aof-0.log"), "{r}");
    // (Values larger than a page: the reservation is allocated in pages, and a small
    // record may still fit in the last one.)
    let big2 = "r".repeat(10_000);
    for _ in 0..20 {
        let r = b.call("string.set", json!({"key": "refused", "value": big2}));
        assert_eq!(r["error"]["code"], "unavailable", "{policy}: {r}");
    }
    assert_eq!(a.string_value("big"), Value::Null, "a refused write is not applied");
    assert_eq!(b.string_value("refused"), Value::Null);
    assert!(w.next_event(Duration::from_millis(300)).is_none(), "no event for a refused write");
    let r = b.call(
        "batch",
        json!({"operations": [
            {"method": "string.get", "params": {"key": "before"}},
            {"method": "string.set", "params": {"key": "refused", "value": big2}},
        ]}),
    );
    assert_eq!(r["result"]["results"][0]["result"]["value"], "1", "{r}");
    let r = &r["result"]["results"][1];
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    assert_eq!(b.string_value("before"), "1");
    let (st, h) = s.health();
    assert_eq!(st, 503, "{h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["persistence"], "degraded");
    assert!(h["persistence_error"].as_str().unwrap().contains("aof-0.log"), "{h}");
    // Free space: /health recovers and writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let r = poll_within(Duration::from_secs(5), || {
        let r = b.call("string.set", json!({"key": "resumed", "value": "1"}));
        r.get("result").is_some().then_some(r)
    });
    assert!(r.is_some(), "writes resume");
    let ev = w.next_event(Duration::from_secs(1));
    assert!(ev.is_none(), "only the resumed write happened, and nobody watches it: {ev:?}");
    let h = poll_within(Duration::from_secs(3), || {
        let (st, h) = s.health();
        (st == 200).then_some(h)
    });
    assert!(h.is_some(), "/health recovers");
    drop(s);
    let s = Dbx::start(&o2);
    let mut c = s.client();
    assert_eq!(c.string_value("before"), "1");
    assert_eq!(c.string_value("resumed"), "1");
    assert_eq!(c.string_value("refused"), Value::Null);
    assert_eq!(c.string_value("big"), Value::Null);
}

// ---- every data type survives a restart (issue 7 × collections) ----

/// Every live key (via `key.scan`) with its type, full contents and TTL in seconds:
/// `{key: {"type", "value", "ttl"}}`. Sets are sorted (their order is per process).
fn dump(c: &mut common::Client) -> std::collections::BTreeMap<String, Value> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let r = c.ok("key.scan", json!({"cursor": cursor, "count": 1000}));
        keys.extend(r["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()));
        cursor = r["cursor"].as_str().unwrap().to_string();
        if cursor == "0" {
            break;
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for k in keys {
        let kind = c.ok("key.type", json!({ "key": k }))["type"].as_str().unwrap().to_string();
        let v = match kind.as_str() {
            "string" => c.ok("string.get", json!({ "key": k }))["value"].clone(),
            "hash" => c.ok("hash.get", json!({ "key": k }))["fields"].clone(),
            "set" => {
                let mut m: Vec<String> = c.ok("set.members", json!({ "key": k }))["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect();
                m.sort();
                json!(m)
            }
            "zset" => c.ok("zset.range", json!({"key": k, "start": 0, "stop": -1}))["members"].clone(),
            "list" => c.ok("list.range", json!({"key": k, "start": 0, "stop": -1}))["values"].clone(),
            other => panic!("unknown type {other} of {k}"),
        };
        let ttl = c.ok("key.ttl", json!({ "key": k }))["ttl"].clone();
        out.insert(k, json!({"type": kind, "value": v, "ttl": ttl}));
    }
    out
}

/// Same keys, types and contents; TTLs both absent or within 2 s of each other (the
/// deadline is absolute, the seconds left shrink while we restart).
fn assert_same(before: &std::collections::BTreeMap<String, Value>, after: &std::collections::BTreeMap<String, Value>) {
    let (kb, ka): (Vec<_>, Vec<_>) = (before.keys().collect(), after.keys().collect());
    assert_eq!(kb, ka, "key sets differ");
    for (k, b) in before {
        let a = &after[k];
        assert_eq!(a["type"], b["type"], "type of {k}");
        assert_eq!(a["value"], b["value"], "contents of {k}");
        match (b["ttl"].as_i64(), a["ttl"].as_i64()) {
            (None, None) => {}
            (Some(tb), Some(ta)) => assert!(ta <= tb && tb - ta <= 2, "ttl of {k}: {tb} before, {ta} after"),
            (tb, ta) => panic!("ttl of {k}: {tb:?} before, {ta:?} after"),
        }
    }
}

/// Strings, hashes, sets, sorted sets and lists, some with TTLs, one collection that
/// expires before the restart.
fn fill_all_types(c: &mut common::Client, tag: &str) {
    let k = |n: &str| format!("{tag}{n}");
    c.ok("string.set", json!({"key": k("s"), "value": "héllo \"q\""}));
    c.ok("string.set", json!({"key": k("s-ttl"), "value": "v", "ttl": 300}));
    c.ok("string.incr", json!({"key": k("n"), "by": 7}));
    // hashes
    c.ok("hash.set", json!({"key": k("h"), "fields": {"a": "1", "b": "two", "c": 3, "ü": "ß"}}));
    c.ok("hash.set", json!({"key": k("h"), "field": "b", "value": "TWO"}));
    c.ok("hash.incr", json!({"key": k("h"), "field": "a", "by": 41}));
    c.ok("hash.del", json!({"key": k("h"), "field": "c"}));
    c.ok("hash.set", json!({"key": k("h-ttl"), "field": "f", "value": "v"}));
    c.ok("key.expire", json!({"key": k("h-ttl"), "ttl": 200}));
    // sets
    let members: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    c.ok("set.add", json!({"key": k("st"), "members": members}));
    c.ok("set.remove", json!({"key": k("st"), "members": ["m3", "m4", "nope"]}));
    c.ok("set.add", json!({"key": k("st-ttl"), "member": "only"}));
    c.ok("key.expire", json!({"key": k("st-ttl"), "ttl": 250}));
    // sorted sets: infinities, ties ordered by member, incr, remove
    c.ok(
        "zset.add",
        json!({"key": k("z"), "members": [
            {"member": "top", "score": "+inf"},
            {"member": "c", "score": 1},
            {"member": "bottom", "score": "-inf"},
            {"member": "a", "score": 1},
            {"member": "b", "score": 1.0},
            {"member": "neg", "score": -2.5},
            {"member": "gone", "score": 5},
            {"member": "x", "score": 1e300},
        ]}),
    );
    c.ok("zset.incr", json!({"key": k("z"), "member": "neg", "by": 0.25}));
    c.ok("zset.remove", json!({"key": k("z"), "member": "gone"}));
    c.ok("zset.add", json!({"key": k("z-ttl"), "member": "m", "score": 0.1}));
    c.ok("key.expire", json!({"key": k("z-ttl"), "ttl": 400}));
    // lists: both ends, pops at both ends, trim
    c.ok("list.push", json!({"key": k("l"), "values": ["r1", "r2", "r3", 4]}));
    c.ok("list.push", json!({"key": k("l"), "values": ["l1", "l2", "l3"], "side": "left"}));
    c.ok("list.pop", json!({"key": k("l")}));
    c.ok("list.pop", json!({"key": k("l"), "side": "right"}));
    c.ok("list.push", json!({"key": k("l"), "value": "tail"}));
    c.ok("list.push", json!({"key": k("l-ttl"), "values": ["a", "b", "c", "d", "e"]}));
    c.ok("list.trim", json!({"key": k("l-ttl"), "start": 1, "stop": -2}));
    c.ok("key.expire", json!({"key": k("l-ttl"), "ttl": 500}));
    c.ok("key.persist", json!({"key": k("s-ttl")}));
    c.ok("key.expire", json!({"key": k("s-ttl"), "ttl": 300}));
    // A collection whose deadline passes before the restart.
    c.ok("zset.add", json!({"key": k("short"), "member": "m", "score": 1}));
    c.ok("key.expire", json!({"key": k("short"), "ttl": 0.2}));
}

/// The contents `fill_all_types` leaves, checked explicitly (not only before = after).
fn check_all_types(d: &std::collections::BTreeMap<String, Value>, tag: &str) {
    let k = |n: &str| format!("{tag}{n}");
    assert_eq!(d[&k("s")]["value"], "héllo \"q\"");
    assert_eq!(d[&k("n")]["value"], "7");
    assert_eq!(d[&k("h")]["value"], json!({"a": "42", "b": "TWO", "ü": "ß"}));
    assert_eq!(d[&k("st")]["value"].as_array().unwrap().len(), 28);
    let z: Vec<(String, Value)> = d[&k("z")]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["member"].as_str().unwrap().to_string(), p["score"].clone()))
        .collect();
    let names: Vec<&str> = z.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["bottom", "neg", "a", "b", "c", "x", "top"]);
    assert_eq!(z[0].1, "-inf");
    assert_eq!(z[1].1, -2.25);
    assert_eq!(z[6].1, "+inf");
    assert_eq!(d[&k("l")]["value"], json!(["l2", "l1", "r1", "r2", "r3", "tail"]));
    assert_eq!(d[&k("l-ttl")]["value"], json!(["b", "c", "d"]));
    for t in ["s-ttl", "h-ttl", "st-ttl", "z-ttl", "l-ttl"] {
        assert!(d[&k(t)]["ttl"].as_i64().is_some(), "{t} has a ttl: {}", d[&k(t)]);
    }
    for t in ["s", "h", "st", "z", "l"] {
        assert!(d[&k(t)]["ttl"].is_null(), "{t} has no ttl");
    }
    assert!(!d.contains_key(&k("short")), "expired before the restart");
}

#[test]
fn restart_keeps_every_type_after_log_replay() {
    let dir = TempDir::new("types-log");
    let o = Opts::new(&dir.path().join("data"));
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    fill_all_types(&mut c, "");
    std::thread::sleep(Duration::from_millis(300));
    let before = dump(&mut c);
    check_all_types(&before, "");
    let info = c.ok("server.info", json!({}));
    let (rev, epoch) = (info["rev"].as_u64().unwrap(), info["epoch"].clone());
    assert_eq!(s.term().code(), Some(0));

    let mut s = Dbx::start(&o);
    assert!(s.stderr().contains("replayed"), "{}", s.stderr());
    let mut c = s.client();
    assert_eq!(c.hello["epoch"], epoch);
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev, "rev restored exactly");
    let after = dump(&mut c);
    assert_same(&before, &after);
    check_all_types(&after, "");
    // A second restart (SIGKILL this time) replays the same log to the same state.
    s.kill();
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_same(&before, &dump(&mut c));
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev);
}

#[test]
fn restart_keeps_every_type_after_snapshot_and_later_records() {
    let dir = TempDir::new("types-snap");
    let data = dir.path().join("data");
    let o = Opts::new(&data).env("DBX_APPENDFSYNC", "always"); // a SIGKILL then loses nothing acknowledged: same epoch
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    fill_all_types(&mut c, "");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.ok("server.save", json!({}))["started"], true);
    poll_within(Duration::from_secs(20), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
        .expect("snapshot finished");
    let f = files(&data);
    assert!(f.contains(&"snapshot-1.dbx".to_string()) && !f.contains(&"aof-0.log".to_string()), "{f:?}");
    // Later records on top of the snapshot, touching every type again.
    fill_all_types(&mut c, "p-");
    c.ok("hash.set", json!({"key": "h", "field": "late", "value": "1"}));
    c.ok("set.remove", json!({"key": "st", "member": "m0"}));
    c.ok("zset.add", json!({"key": "z", "member": "a", "score": "-inf"}));
    c.ok("list.push", json!({"key": "l", "value": "later", "side": "left"}));
    c.ok("key.del", json!({"key": "n"}));
    c.ok("key.expire", json!({"key": "h", "ttl": 600}));
    c.ok("key.persist", json!({"key": "z-ttl"}));
    std::thread::sleep(Duration::from_millis(300));
    let before = dump(&mut c);
    check_all_types(&before, "p-");
    assert_eq!(before["h"]["value"]["late"], "1");
    assert!(before["h"]["ttl"].as_i64().is_some());
    assert!(before["z-ttl"]["ttl"].is_null());
    assert_eq!(before["z"]["value"][0], json!({"member": "a", "score": "-inf"}));
    assert_eq!(before["z"]["value"][1], json!({"member": "bottom", "score": "-inf"}));
    assert_eq!(before["l"]["value"][0], "later");
    assert!(!before.contains_key("n"));
    let info = c.ok("server.info", json!({}));
    let (rev, epoch) = (info["rev"].as_u64().unwrap(), info["epoch"].clone());
    s.kill();

    let s = Dbx::start(&o);
    let err = s.stderr();
    assert!(err.contains("loaded") && err.contains("snapshot-1.dbx") && err.contains("replayed"), "{err}");
    let mut c = s.client();
    assert_eq!(c.hello["epoch"], epoch);
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev, "rev restored exactly");
    let after = dump(&mut c);
    assert_same(&before, &after);
    check_all_types(&after, "p-");

    // And a snapshot of the restored store loads to the same state again.
    assert_eq!(c.ok("server.save", json!({}))["started"], true);
    poll_within(Duration::from_secs(20), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
        .expect("second snapshot finished");
    drop(c);
    drop(s);
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert!(files(&data).contains(&"snapshot-2.dbx".to_string()));
    assert_same(&before, &dump(&mut c));
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev);
}

fn sorted_members(c: &mut common::Client, key: &str) -> Vec<String> {
    let mut m: Vec<String> = c.ok("set.members", json!({ "key": key }))["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    m.sort();
    m
}

/// `set.pop` picks by the per-process hash seed: the log holds the members it took.
#[test]
fn set_pop_replays_to_the_same_members() {
    let dir = TempDir::new("spop");
    let o = Opts::new(&dir.path().join("data"));
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    let all: Vec<String> = (0..200).map(|i| format!("m{i:03}")).collect();
    c.ok("set.add", json!({"key": "s", "members": all}));
    c.ok("set.add", json!({"key": "small", "members": ["a", "b", "c"]}));
    let mut popped = Vec::new();
    for count in [Value::Null, json!(1), json!(7), json!(40)] {
        let mut p = json!({"key": "s"});
        if !count.is_null() {
            p["count"] = count;
        }
        let r = c.ok("set.pop", p);
        popped.extend(r["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()));
    }
    assert_eq!(popped.len(), 49);
    // Inside a batch too, and a pop that empties (deletes) the set.
    let b = c.ok(
        "batch",
        json!({"operations": [
            {"method": "set.pop", "params": {"key": "s", "count": 3}},
            {"method": "set.pop", "params": {"key": "small", "count": 10}},
        ]}),
    );
    assert_eq!(b["results"][0]["result"]["members"].as_array().unwrap().len(), 3);
    assert_eq!(b["results"][1]["result"]["members"].as_array().unwrap().len(), 3);
    let left = sorted_members(&mut c, "s");
    assert_eq!(left.len(), 148);
    assert!(popped.iter().all(|m| !left.contains(m)));
    s.kill();

    let mut s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(sorted_members(&mut c, "s"), left, "exactly the remaining members");
    assert_eq!(c.ok("key.exists", json!({"key": "small"}))["exists"], false);
    // Pop again in this process (another hash seed), restart once more.
    c.ok("set.pop", json!({"key": "s", "count": 48}));
    let left = sorted_members(&mut c, "s");
    assert_eq!(left.len(), 100);
    s.kill();
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(sorted_members(&mut c, "s"), left);
}

/// A batch is one log record: every operation that changed something is in it, the
/// failing one is not, and a torn copy of the record applies nothing.
#[test]
fn batch_of_mixed_types_is_one_record() {
    let dir = TempDir::new("batch");
    let data = dir.path().join("data");
    let o = Opts::new(&data);
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    let ops = json!({"operations": [
        {"method": "hash.set", "params": {"key": "h", "fields": {"f": "v", "g": "w"}}},
        {"method": "zset.add", "params": {"key": "z", "members": [{"member": "m", "score": "+inf"}, {"member": "n", "score": 2}]}},
        {"method": "list.push", "params": {"key": "l", "values": ["a", "b"]}},
        {"method": "list.push", "params": {"key": "h", "value": "wrong type"}},
        {"method": "set.add", "params": {"key": "s", "members": ["x", "y"]}},
        {"method": "string.set", "params": {"key": "str", "value": "1", "ttl": 100}},
    ]});
    let b = c.ok("batch", ops.clone());
    assert_eq!(b["results"][3]["error"]["code"], "wrong_type", "{b}");
    let before = dump(&mut c);
    assert_eq!(before.len(), 5, "{before:?}");
    let rev = c.ok("server.info", json!({}))["rev"].as_u64().unwrap();
    assert_eq!(s.term().code(), Some(0));
    let log = log_file(&data);
    let whole = std::fs::metadata(&log).unwrap().len();

    let mut s = Dbx::start(&o);
    assert!(s.stderr().contains("replayed 1 records"), "one record: {}", s.stderr());
    let mut c = s.client();
    assert_same(&before, &dump(&mut c));
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev);
    assert_eq!(before["z"]["value"], json!([{"member": "n", "score": 2}, {"member": "m", "score": "+inf"}]));
    s.term();

    // The same record cut short: none of its operations is applied.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), whole);
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(whole - 5).unwrap();
    drop(f);
    // As a crash leaves it: a clean shutdown's log cannot be torn (tests/log_damage.rs).
    std::fs::remove_file(data.join("CLEAN")).unwrap();
    let s = Dbx::start(&o);
    assert!(s.stderr().contains("torn last record"), "{}", s.stderr());
    let mut c = s.client();
    assert!(dump(&mut c).is_empty(), "a torn batch applies nothing");
}

/// Evictions sample at random: they are logged as `key.del`, so the restarted store
/// holds exactly the keys the evicting one did.
#[test]
fn evictions_are_logged_and_replayed() {
    let dir = TempDir::new("evict");
    let o =
        Opts::new(&dir.path().join("data")).env("DBX_MAXMEMORY", "200kb").env("DBX_MAXMEMORY_POLICY", "allkeys-lru");
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    let pad = "x".repeat(500);
    let mut i = 0u64;
    let mut evicted_at = None;
    while i < 20_000 {
        let k = format!("k{i}");
        match i % 5 {
            0 => c.ok("string.set", json!({"key": k, "value": pad})),
            1 => c.ok("hash.set", json!({"key": k, "fields": {"a": pad, "b": "1"}})),
            2 => c.ok("set.add", json!({"key": k, "members": [pad, "m"]})),
            3 => c.ok("zset.add", json!({"key": k, "members": [{"member": pad, "score": i}]})),
            _ => c.ok("list.push", json!({"key": k, "values": [pad, "z"]})),
        };
        // Touch an old key now and then so the LRU order is not just insertion order.
        if i.is_multiple_of(7) {
            c.call("hash.get", json!({"key": format!("k{}", i / 2)}));
        }
        i += 1;
        if evicted_at.is_none() && c.ok("server.info", json!({}))["evicted_keys"].as_u64().unwrap() > 0 {
            evicted_at = Some(i);
        }
        if evicted_at.is_some_and(|e| i >= e + 600) {
            break;
        }
    }
    let info = c.ok("server.info", json!({}));
    let evicted = info["evicted_keys"].as_u64().unwrap();
    assert!(evicted > 500, "evictions happened: {info}");
    let before = dump(&mut c);
    assert!(before.len() < i as usize && !before.is_empty(), "{} keys of {i}", before.len());
    let rev = info["rev"].as_u64().unwrap();
    s.kill();

    let s = Dbx::start(&o);
    let mut c = s.client();
    let after = dump(&mut c);
    assert_eq!(after.len(), before.len());
    assert_same(&before, &after);
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev);
    assert_eq!(c.ok("server.info", json!({}))["evicted_keys"], 0, "replay is not an eviction");
}

/// After a restart the watch backlog is empty: resuming from an older rev is a gap
/// (with the full values), resuming from the current rev an empty replay.
#[test]
fn watch_resume_after_restart() {
    let dir = TempDir::new("watch");
    let o = Opts::new(&dir.path().join("data")).env("DBX_APPENDFSYNC", "always"); // a SIGKILL then loses nothing acknowledged: same epoch
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    c.ok("hash.set", json!({"key": "w:h", "field": "f", "value": "1"}));
    c.ok("zset.add", json!({"key": "w:z", "member": "m", "score": "-inf"}));
    c.ok("list.push", json!({"key": "w:l", "values": ["a", "b"]}));
    c.ok("set.add", json!({"key": "w:s", "members": ["y", "x"]}));
    c.ok("string.set", json!({"key": "w:str", "value": "v"}));
    // A key the active expiry removes before the restart: it must not expire (and take
    // a rev) a second time after it.
    c.ok("hash.set", json!({"key": "w:gone", "field": "f", "value": "1"}));
    c.ok("key.expire", json!({"key": "w:gone", "ttl": 0.1}));
    std::thread::sleep(Duration::from_millis(400));
    let w = c.ok("key.watch", json!({"patterns": ["w:*"]}));
    let (last, epoch) = (w["rev"].as_u64().unwrap(), c.hello["epoch"].clone());
    let fresh_values = w["values"].clone();
    assert_eq!(fresh_values.as_object().unwrap().len(), 5, "{w}");
    s.kill();

    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(c.hello["epoch"], epoch);
    assert_eq!(c.hello["rev"].as_u64().unwrap(), last);
    // since = current rev: an empty replay.
    let r = c.ok("key.watch", json!({"patterns": ["w:*"], "since": last, "epoch": epoch}));
    assert_eq!(r["replay"], json!([]), "{r}");
    assert_eq!(r["rev"].as_u64().unwrap(), last);
    assert!(r.get("gap").is_none(), "{r}");
    // since < current rev: the changes are not in the (new, empty) backlog → gap.
    let r = c.ok("key.watch", json!({"patterns": ["w:*"], "since": last - 1, "epoch": epoch}));
    assert_eq!(r["gap"], true, "{r}");
    assert_eq!(r["epoch"], epoch);
    assert_eq!(r["rev"].as_u64().unwrap(), last);
    assert_eq!(r["values"], fresh_values, "the same values as before the restart");
    // Changes after the restart resume normally.
    c.ok("list.push", json!({"key": "w:l", "value": "c"}));
    let mut d = s.client();
    let r = d.ok("key.watch", json!({"keys": ["w:l"], "since": last, "epoch": epoch}));
    let replay = r["replay"].as_array().unwrap();
    assert_eq!(replay.len(), 1, "{r}");
    assert_eq!(replay[0]["key"], "w:l");
    assert_eq!(replay[0]["rev"].as_u64().unwrap(), last + 1);
}

/// Writes pipelined on two connections share the log records of their loop turn (one
/// `O` frame per turn): a mix of writes, no-op writes, failing writes and reads, with
/// TTLs, replays to the same keys, values, TTLs and rev — after a clean shutdown and
/// after SIGKILL under `always`.
#[test]
fn pipelined_writes_of_a_turn_replay_to_the_same_state() {
    let dir = TempDir::new("turn-frames");
    let o = Opts::new(&dir.path().join("data")).env("DBX_APPENDFSYNC", "always");
    let mut s = Dbx::start(&o);
    let mut a = s.client();
    let mut b = s.client();
    let mut ids = Vec::new();
    for i in 0..300 {
        let c = if i % 3 == 0 { &mut b } else { &mut a };
        let (method, params) = match i % 10 {
            0 => ("string.set", json!({"key": format!("s{}", i % 40), "value": format!("v{i}")})),
            1 => ("string.set", json!({"key": format!("t{}", i % 30), "value": "x", "ttl": 1000})),
            2 => ("string.incr", json!({"key": "n", "by": i})),
            3 => ("string.incr", json!({"key": "n", "by": 0})),
            4 => ("key.del", json!({"key": format!("s{}", (i + 7) % 40)})),
            5 => ("hash.set", json!({"key": "h", "fields": {format!("f{}", i % 17): i}})),
            6 => ("list.push", json!({"key": "l", "values": [i]})),
            7 => ("list.push", json!({"key": "h", "values": ["wrong type"]})),
            8 => ("string.get", json!({"key": "n"})),
            _ => ("string.set", json!({"key": format!("s{}", i % 40), "value": "nx", "nx": true})),
        };
        ids.push((i % 3 == 0, c.write(method, params)));
    }
    a.flush();
    b.flush();
    for (on_b, id) in ids {
        let c = if on_b { &mut b } else { &mut a };
        assert!(c.try_reply(id).is_some(), "reply {id}");
    }
    let before = dump(&mut a);
    let rev = a.ok("server.info", json!({}))["rev"].as_u64().unwrap();
    assert_eq!(s.term().code(), Some(0));

    let mut s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev, "rev restored exactly");
    assert_same(&before, &dump(&mut c));
    // More pipelined writes, then a crash: every acknowledged one is replayed.
    let ids: Vec<u64> = (0..200).map(|i| c.write("string.set", json!({"key": format!("k{i}"), "value": i}))).collect();
    c.flush();
    for id in ids {
        assert!(c.try_reply(id).is_some(), "reply {id}");
    }
    let before = dump(&mut c);
    let rev = c.ok("server.info", json!({}))["rev"].as_u64().unwrap();
    s.kill();
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev, "rev restored exactly after SIGKILL");
    assert_same(&before, &dump(&mut c));
}

/// A plain `string.set` is logged in its short form, `[key,value]` with both as the JSON
/// text that was sent, and replays exactly: escaped keys and values, a number kept as
/// the text written, a value with brackets and commas; any other `string.set` keeps the
/// general form.
#[test]
fn plain_sets_are_logged_short_and_replay_exactly() {
    let dir = TempDir::new("short-sets");
    let data = dir.path().join("data");
    let o = Opts::new(&data).env("DBX_APPENDFSYNC", "always");
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    c.ok("string.set", json!({"key": "plain", "value": "v"}));
    c.send_raw(r#"{"id":9001,"method":"string.set","params":{"key":"we\"ird\\key\n","value":"[1,2]\u00e9"}}"#);
    assert_eq!(c.reply(9001)["result"]["set"], true);
    c.send_raw(r#"{"id":9002,"method":"string.set","params":{"value":1.50,"key":"num"}}"#);
    assert_eq!(c.reply(9002)["result"]["set"], true);
    c.ok("string.set", json!({"key": "ttl", "value": "t", "ttl": 600}));
    let before = dump(&mut c);
    let rev = c.ok("server.info", json!({}))["rev"].as_u64().unwrap();
    s.kill();
    let log = std::fs::read(log_file(&data)).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains(r#"["plain","v"]"#), "short form in the log");
    assert!(text.contains(r#"["num",1.50]"#), "the number as written");
    assert!(text.contains(r#""method":"string.set","params":{"key":"ttl""#), "general form with a ttl");
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_eq!(c.hello["rev"].as_u64().unwrap(), rev);
    assert_same(&before, &dump(&mut c));
    assert_eq!(c.ok("string.get", json!({"key": "num"}))["value"], "1.50");
    assert_eq!(c.ok("string.get", json!({"key": "we\"ird\\key\n"}))["value"], "[1,2]é");
}
