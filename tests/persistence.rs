//! Durability against the real binary (issue 7): restart, SIGKILL under load with
//! `always`, torn tail, mid-file corruption, snapshots while writes continue, a crash
//! at every snapshot step, and a full disk.

mod support_persist;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support_persist::{files, wait_for, Dbx, Opts, TempDir};

fn value(c: &mut support_persist::Client, key: &str) -> Value {
    let r = c.call("string.get", json!({ "key": key }));
    if r.get("error").is_some() {
        Value::Null
    } else {
        r["result"]["value"].clone()
    }
}

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
    assert_eq!(value(&mut c, "plain"), "héllo \"quoted\"");
    assert_eq!(value(&mut c, "n"), "42");
    assert_eq!(value(&mut c, "m1"), "az");
    assert_eq!(value(&mut c, "m2"), Value::Null);
    assert_eq!(value(&mut c, "short"), Value::Null);
    assert_eq!(value(&mut c, "gone"), Value::Null);
    assert_eq!(value(&mut c, "renamed"), "x");
    assert_eq!(value(&mut c, "b2"), "2");
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
    assert_eq!(value(&mut c, "plain"), Value::Null);
    assert_eq!(value(&mut c, "post-flush"), "1");

    // A crash under `everysec` may have lost acknowledged writes of its last moments:
    // the next start begins a new epoch so resuming watchers resync (data on disk stays).
    drop(c);
    let mut s = s;
    s.kill();
    let s = Dbx::start(&o);
    let mut c = s.client();
    assert_ne!(c.hello["epoch"], epoch2, "unclean shutdown under everysec starts a new epoch");
    assert_eq!(value(&mut c, "post-flush"), "1");
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
            let mut c = support_persist::Client::connect(port);
            c.set_timeout(Duration::from_secs(2));
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (k, v) = (format!("k{t}-{i}"), format!("v{i}"));
                let id = c.send("string.set", json!({"key": k, "value": v, "ttl": 3600}));
                match c.reply(id) {
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

#[test]
fn torn_tail_is_cut_back_with_a_warning() {
    let dir = TempDir::new("torn");
    let data = dir.path().join("data");
    let o = Opts::new(&data);
    let mut s = Dbx::start(&o);
    let mut c = s.client();
    for i in 0..20 {
        c.ok("string.set", json!({"key": format!("k{i}"), "value": "v"}));
    }
    s.term();
    let log = log_file(&data);
    let good = std::fs::metadata(&log).unwrap().len();
    // A record whose write was cut short: a header promising 100 bytes, 10 present.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, &[100, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]).unwrap();
    drop(f);
    let s = Dbx::start(&o);
    let err = s.stderr();
    assert!(err.contains("torn last record"), "{err}");
    assert!(err.contains(&format!("offset {good}")), "{err}");
    assert!(err.contains("aof-0.log"), "{err}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), good, "cut back");
    let mut c = s.client();
    assert_eq!(value(&mut c, "k19"), "v");
    c.ok("string.set", json!({"key": "after", "value": "1"}));
}

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
    assert_eq!(value(&mut c, "k00"), "v", "records before the damage are kept");
    assert_eq!(value(&mut c, "k49"), Value::Null, "records after it are gone");
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
                    let mut c = support_persist::Client::connect(port);
                    c.set_timeout(Duration::from_secs(2));
                    for i in 0..10_000_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let k = format!("{tag}{t}-{i}");
                        let id = c.send("string.set", json!({"key": k, "value": "v"}));
                        match c.reply(id) {
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

fn check_all(c: &mut support_persist::Client, keys: &[String]) {
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
    assert_eq!(c.reply(a).unwrap()["result"]["started"], true);
    assert_eq!(c.reply(b).unwrap()["result"]["started"], false);
    let done = wait_for(Duration::from_secs(20), || {
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
    assert_eq!(value(&mut c, "pre19999"), "v");
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
    let f = wait_for(Duration::from_secs(10), || {
        let f = files(&data);
        f.iter().any(|n| n.starts_with("snapshot-")).then_some(f)
    })
    .expect("a snapshot after 64 KiB of log");
    assert!(f.iter().any(|n| n.ends_with(".dbx")), "{f:?}");
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
        wait_for(Duration::from_secs(10), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
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
            assert_eq!(c.reply(id).unwrap()["result"]["started"], true);
            wait_for(Duration::from_secs(10), || (s.health().1["last_snapshot"]["ok"] == false).then_some(()))
                .expect("failed snapshot reported");
            c.ok("string.set", json!({"key": "d", "value": "v"}));
            s.kill();
        } else {
            let _ = c.reply(id);
            let st = s.wait_crash(Duration::from_secs(10));
            assert!(!st.success(), "{step}: {st}");
        }
        let s = Dbx::start(&o);
        let mut c = s.client();
        for p in ["a", "b", "c"] {
            for i in [0, 199] {
                assert_eq!(value(&mut c, &format!("{p}{i}")), "v", "{step}: {p}{i}");
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
        wait_for(Duration::from_secs(10), || (s.health().1["last_snapshot"]["ok"] == true).then_some(()))
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

/// A full disk refuses writes with `unavailable` (reads keep working, /health says
/// 503 degraded), holds the reply of a write that is not on disk (`always`), and
/// everything resumes by itself once space is freed.
#[test]
fn disk_full_refuses_writes_and_recovers() {
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
    let o2 = Opts::new(&data).env("DBX_APPENDFSYNC", "always");
    let s = Dbx::start(&o2);
    let mut a = s.client();
    let mut b = s.client();
    a.ok("string.set", json!({"key": "before", "value": "1"}));
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        let _ = std::io::Write::write_all(&mut f, &[7u8; 512]);
        while std::io::Write::write_all(&mut f, &[7u8; 1]).is_ok() {}
    }
    // This write runs but cannot be logged: its reply waits (always = on disk). (The
    // value is larger than a page: tmpfs has room left in the log's last page.)
    let big = "h".repeat(10_000);
    let held = a.send("string.set", json!({"key": "held", "value": big}));
    a.set_timeout(Duration::from_millis(500));
    assert!(a.reply(held).is_none(), "reply of a write not on disk must wait");
    // Other writes are refused, reads work, /health says so.
    let r = b.call("string.set", json!({"key": "refused", "value": "1"}));
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    let r = b.call(
        "batch",
        json!({"operations": [
            {"method": "string.get", "params": {"key": "before"}},
            {"method": "string.set", "params": {"key": "refused", "value": "1"}},
        ]}),
    );
    assert_eq!(r["result"]["results"][0]["result"]["value"], "1", "{r}");
    let r = &r["result"]["results"][1];
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    assert_eq!(value(&mut b, "before"), "1");
    let (st, h) = s.health();
    assert_eq!(st, 503, "{h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["persistence"], "degraded");
    assert!(h["persistence_error"].as_str().unwrap().contains("aof-0.log"), "{h}");
    // Free space: the held reply arrives, writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    a.set_timeout(Duration::from_secs(5));
    let r = a.reply(held).expect("held reply after the disk recovered");
    assert_eq!(r["result"]["set"], true);
    let r = wait_for(Duration::from_secs(5), || {
        let r = b.call("string.set", json!({"key": "resumed", "value": "1"}));
        r.get("result").is_some().then_some(r)
    });
    assert!(r.is_some(), "writes resume");
    let (st, h) = s.health();
    assert_eq!(st, 200, "{h}");
    drop(s);
    let s = Dbx::start(&o2);
    let mut c = s.client();
    assert_eq!(value(&mut c, "held"), big.as_str());
    assert_eq!(value(&mut c, "resumed"), "1");
    assert_eq!(value(&mut c, "refused"), Value::Null);
}
