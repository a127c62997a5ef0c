//! Log damage and what start-up makes of it (issue 17): a torn tail is only ever the
//! end of a crashed run's log; a damaged length anywhere is damage (refuse, name file
//! and offset); a clean shutdown's log cannot be torn; the "were writes lost?" decision
//! follows the policy the crashed run used, not the new run's.

mod common;

use common::{files, Dbx, Opts, TempDir};
use dbx::persist::{format, load};
use dbx::store::Value as Stored;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn log_file(data: &Path) -> PathBuf {
    let name = files(data).into_iter().rfind(|f| f.starts_with("aof-")).expect("a log file");
    data.join(name)
}

/// Write `n` keys `k{i}` = `v{i}`, 64 in flight (the requests of a loop turn share a
/// record, so this makes many records of a few requests each).
fn write_keys(c: &mut common::Client, n: usize) {
    let mut i = 0;
    while i < n {
        let ids: Vec<u64> = (i..(i + 64).min(n))
            .map(|j| c.send("string.set", json!({"key": format!("k{j}"), "value": format!("v{j}")})))
            .collect();
        for id in ids {
            assert_eq!(c.try_reply(id).expect("reply")["result"]["set"], true);
        }
        i += 64;
    }
}

/// A real log of 5,000 acknowledged writes from the real server, left by a crash.
fn crashed_log(tag: &str, n: usize) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let data = dir.path().join("data");
    let mut s = Dbx::start(&Opts::new(&data).env("DBX_APPENDFSYNC", "always"));
    let mut c = s.client();
    write_keys(&mut c, n);
    s.kill();
    (dir, data)
}

/// Single-bit flips across the middle of a real log, hundreds of trials: every start
/// either refuses (naming the file and offset) or serves every acknowledged key.
/// Version 1 of the format cut the log at about one flip in 130 (a damaged length
/// looked like a torn tail) and lost half the data set.
#[test]
fn random_bit_flips_in_the_middle_never_lose_acknowledged_writes() {
    const KEYS: usize = 5_000;
    let (dir, data) = crashed_log("flips", KEYS);
    let log = log_file(&data);
    let bytes = std::fs::read(&log).unwrap();
    let trial_dir = dir.path().join("trial");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut refused, mut served) = (0, 0);
    for trial in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Anywhere between 10% and 90% of the file.
        let pos = bytes.len() / 10 + (seed % (bytes.len() as u64 * 8 / 10)) as usize;
        let bit = (seed >> 40) % 8;
        let mut damaged = bytes.clone();
        damaged[pos] ^= 1 << bit;
        let _ = std::fs::remove_dir_all(&trial_dir);
        std::fs::create_dir_all(&trial_dir).unwrap();
        std::fs::write(trial_dir.join(log.file_name().unwrap()), &damaged).unwrap();
        // As after a crash (no CLEAN marker): the case where a torn tail is allowed.
        match load::load(&trial_dir, false, false) {
            Err(e) => {
                assert!(e.contains("aof-0.log") && e.contains("byte offset"), "trial {trial}: {e}");
                refused += 1;
            }
            Ok(mut l) => {
                for i in 0..KEYS {
                    let k = format!("k{i}");
                    let v = l.store.get(&k, 0).map(|it| match &it.value {
                        Stored::Str(s) => s.to_string(),
                        _ => String::new(),
                    });
                    assert_eq!(v, Some(format!("v{i}")), "trial {trial} (byte {pos} bit {bit}): {k} lost");
                }
                served += 1;
            }
        }
        // Nothing was cut on disk either.
        let after = std::fs::read(trial_dir.join(log.file_name().unwrap())).unwrap();
        assert_eq!(after.len(), damaged.len(), "trial {trial}: the log was cut");
    }
    println!("400 single-bit flips: {refused} refused to start, {served} served every key");
}

/// The same through the real binary, a few times: it refuses with exit status 1 and
/// the file and offset, and leaves the log as it was.
#[test]
fn a_damaged_length_in_the_middle_refuses_to_start() {
    let (_dir, data) = crashed_log("lenflip", 500);
    let log = log_file(&data);
    let bytes = std::fs::read(&log).unwrap();
    // Walk the frames to the one in the middle and flip a bit of its length.
    let mut at = 8usize;
    let mut starts = Vec::new();
    while at + format::FRAME_HEADER <= bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += format::FRAME_HEADER + len;
    }
    assert_eq!(at, bytes.len(), "the frames cover the log");
    for (n, bit) in [(starts.len() / 2, 20), (starts.len() / 3, 3), (starts.len() - 1, 9)] {
        let mut damaged = bytes.clone();
        damaged[starts[n] + bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&log, &damaged).unwrap();
        let mut s = Dbx::spawn(&Opts::new(&data));
        let st = s.wait_exit(Duration::from_secs(20)).expect("must refuse to start");
        assert_eq!(st.code(), Some(1));
        let err = s.stderr();
        assert!(err.contains("aof-0.log") && err.contains(&format!("byte offset {}", starts[n])), "{err}");
        assert!(err.contains("damaged frame header"), "{err}");
        assert_eq!(std::fs::read(&log).unwrap(), damaged, "nothing cut");
    }
}

/// A genuine torn tail — the first bytes of a record, as a crash leaves it — is cut
/// back with a warning after a crash, but is damage after a clean shutdown.
#[test]
fn a_torn_tail_is_cut_after_a_crash_and_refused_after_a_clean_shutdown() {
    let (dir, data) = crashed_log("torn2", 20);
    let log = log_file(&data);
    let good = std::fs::metadata(&log).unwrap().len();
    let mut rec = Vec::new();
    let at = format::begin_frame(&mut rec);
    rec.push(format::K_REV);
    rec.extend_from_slice(&[1u8; 100]);
    format::end_frame(&mut rec, at);
    let torn = &rec[..format::FRAME_HEADER + 30];
    let append = |log: &Path| {
        let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        std::io::Write::write_all(&mut f, torn).unwrap();
    };
    append(&log);
    let mut s = Dbx::start(&Opts::new(&data));
    let err = s.stderr();
    assert!(err.contains("torn last record") && err.contains(&format!("offset {good}")), "{err}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), good, "cut back");
    let mut c = s.client();
    assert_eq!(c.string_value("k19"), "v19");
    let epoch = c.ok("server.info", json!({}))["epoch"].clone();
    assert_eq!(s.term().code(), Some(0));

    // After a clean shutdown (CLEAN marker), the same tail is damage.
    assert!(files(&data).contains(&"CLEAN".to_string()));
    let good = std::fs::metadata(&log).unwrap().len();
    append(&log);
    let mut s = Dbx::spawn(&Opts::new(&data));
    let st = s.wait_exit(Duration::from_secs(20)).expect("must refuse to start");
    assert_eq!(st.code(), Some(1));
    let err = s.stderr();
    assert!(err.contains(&format!("byte offset {good}")) && err.contains("--aof-truncate-corrupt"), "{err}");
    // The operator's way out: cut it, and a new epoch says history may be missing.
    let s = Dbx::start(&Opts::new(&data).arg("--aof-truncate-corrupt"));
    assert!(s.stderr().contains("starting a new epoch"), "{}", s.stderr());
    let mut c = s.client();
    assert_eq!(c.string_value("k19"), "v19");
    assert_ne!(c.ok("server.info", json!({}))["epoch"], epoch);
    drop(dir);
}

fn epoch_and_rev(c: &mut common::Client) -> (Value, u64) {
    let info = c.ok("server.info", json!({}));
    (info["epoch"].clone(), info["rev"].as_u64().unwrap())
}

/// Whether a crash may have lost acknowledged writes depends on the policy of the run
/// that crashed: `everysec` crashed then restarted with `always` gets a new epoch;
/// `always` crashed then restarted with `everysec` keeps it.
#[test]
fn the_crashed_runs_policy_decides_the_epoch() {
    let dir = TempDir::new("policy");
    let data = dir.path().join("data");
    for (first, then, keeps) in [("everysec", "always", false), ("always", "everysec", true)] {
        let _ = std::fs::remove_dir_all(&data);
        let mut s = Dbx::start(&Opts::new(&data).env("DBX_APPENDFSYNC", first));
        let mut c = s.client();
        write_keys(&mut c, 10);
        let (epoch, rev) = epoch_and_rev(&mut c);
        assert_eq!(std::fs::read_to_string(data.join("POLICY")).unwrap().trim(), first);
        s.kill();
        let s = Dbx::start(&Opts::new(&data).env("DBX_APPENDFSYNC", then));
        let mut c = s.client();
        let (epoch2, rev2) = epoch_and_rev(&mut c);
        assert_eq!(rev2, rev, "{first} → {then}");
        assert_eq!(epoch2 == epoch, keeps, "{first} → {then}: {epoch} vs {epoch2}\n{}", s.stderr());
        assert_eq!(std::fs::read_to_string(data.join("POLICY")).unwrap().trim(), then);
    }
}
