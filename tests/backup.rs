//! `scripts/backup.sh` against the real binary (issue 17): an online backup taken under
//! write load, restored into a new directory, holds exactly the acknowledged data set —
//! every write acknowledged before the backup began, and for each writer a gap-free
//! prefix of what it sent (nothing that was never written); a restored directory
//! starts a new epoch. Also: the backup needs an admin credential, `--verify` catches a
//! changed byte, and a restore never writes into a non-empty directory.
//!
//! Needs bash and python3 (standard library only), as the script does.

mod common;

use common::{files, Client, Dbx, Opts, TempDir, PROCESS_CLIENT_TIMEOUT};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEYS: &str = "admin-secret:admin,writer-secret:write,reader-secret:read";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/backup.sh");

fn client(port: u16, key: &str) -> Client {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Client::open(addr, &format!("/ws?api_key={key}"), &[], PROCESS_CLIENT_TIMEOUT).expect("ws connect").0
}

/// Run scripts/backup.sh with `args`, pointed at the server on `port` and its data dir.
fn backup_sh(port: u16, api_key: &str, data: &Path, args: &[&Path]) -> Output {
    let out = Command::new("timeout")
        .arg("300")
        .arg("bash")
        .arg(SCRIPT)
        .args(args)
        .env("DBX_URL", format!("ws://127.0.0.1:{port}"))
        .env("DBX_API_KEY", api_key)
        .env("DBX_DATA_DIR", data)
        .env("DBX_BIN", env!("CARGO_BIN_EXE_dbx"))
        .output()
        .expect("run bash scripts/backup.sh (bash and python3 are needed)");
    println!("backup.sh {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One writer: sets `w{t}-{i}` = `v{t}-{i}` for i = 0, 1, … on its own connection,
/// one request in flight. Returns (highest i acknowledged before `began` was set,
/// highest i sent), -1 for none.
fn writer(port: u16, t: usize, stop: Arc<AtomicBool>, began: Arc<AtomicBool>) -> (i64, i64) {
    let mut c = client(port, "writer-secret");
    let (mut acked_before, mut sent) = (-1i64, -1i64);
    for i in 0..10_000_000i64 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let id = c.send("string.set", json!({"key": format!("w{t}-{i}"), "value": format!("v{t}-{i}")}));
        sent = i;
        let r = c.try_reply(id).expect("reply to a write");
        assert_eq!(r["result"]["set"], true, "{r}");
        // Read after the reply arrived: false means the reply came before the backup began.
        if !began.load(Ordering::Acquire) {
            acked_before = i;
        }
    }
    (acked_before, sent)
}

fn mget(c: &mut Client, keys: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let r = c.ok("string.mget", json!({ "keys": chunk }));
        out.extend(r["values"].as_array().expect("values").iter().cloned());
    }
    out
}

fn info_field(backup: &Path, name: &str) -> String {
    let s = std::fs::read_to_string(backup.join("backup.info")).expect("backup.info");
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("{name} in backup.info: {s}"))
}

#[test]
fn backup_under_write_load_restores_exactly_the_acknowledged_data_set() {
    backup_under_load("backup", &[]);
}

/// Automatic snapshots keep starting (the log only has to grow by 5% of the snapshot
/// and 16 KiB), so newer snapshots replace the files while they are being copied: the
/// backup still holds a consistent prefix (or starts its copy again).
#[test]
fn backup_while_automatic_snapshots_replace_files() {
    backup_under_load("backup-churn", &[("DBX_AOF_REWRITE_PERCENTAGE", "5"), ("DBX_AOF_REWRITE_MIN_SIZE", "16kb")]);
}

fn backup_under_load(tag: &str, env: &[(&str, &str)]) {
    let dir = TempDir::new(tag);
    let (data, dest, restored) = (dir.path().join("data"), dir.path().join("backup"), dir.path().join("restored"));
    let o = Opts::new(&data).env("DBX_API_KEYS", KEYS).envs(env);
    let mut s = Dbx::start(&o);
    let mut admin = client(s.port, "admin-secret");
    let epoch = admin.hello["epoch"].clone();
    let pre: serde_json::Map<String, Value> =
        (0..20_000).map(|i| (format!("pre{i}"), json!(format!("p{i}")))).collect();
    admin.ok("string.mset", json!({ "pairs": pre }));

    let stop = Arc::new(AtomicBool::new(false));
    let began = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (port, stop, began) = (s.port, stop.clone(), began.clone());
            std::thread::spawn(move || writer(port, t, stop, began))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    began.store(true, Ordering::Release);
    let out = backup_sh(s.port, "admin-secret", &data, &[&dest]);
    // Writes go on after the copy too: none of them may appear in the backup's prefix
    // out of order.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let ranges: Vec<(i64, i64)> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
    assert!(out.status.success(), "backup failed:\n{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("\"load_check\":\"ok\""), "the backup's load check ran: {report}");
    for (t, (before, sent)) in ranges.iter().enumerate() {
        assert!(*before >= 10, "writer {t} wrote before the backup: {before}");
        assert!(sent > before, "writer {t} kept writing during the backup");
    }
    let mut names = files(&dest);
    names.retain(|n| n != "SHA256SUMS" && n != "backup.info");
    assert!(
        names.iter().any(|n| n.starts_with("snapshot-")) && names.iter().any(|n| n.starts_with("aof-")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "POLICY" || n == "CLEAN" || n == "LOCK"), "{names:?}");
    let rev_at_start: u64 = info_field(&dest, "rev").parse().expect("rev");
    assert_eq!(s.term().code(), Some(0));

    let out = backup_sh(s.port, "", &data, &[Path::new("--restore"), &dest, &restored]);
    assert!(out.status.success(), "restore failed:\n{}", stderr(&out));
    let r = Dbx::start(&Opts::new(&restored).env("DBX_API_KEYS", KEYS));
    let mut c = client(r.port, "admin-secret");
    assert_ne!(c.hello["epoch"], epoch, "a restored backup starts a new epoch:\n{}", r.stderr());
    let rev = c.hello["rev"].as_u64().expect("rev");
    assert!(rev >= rev_at_start, "restored rev {rev} < rev {rev_at_start} when the backup began");

    let pre_keys: Vec<String> = (0..20_000).map(|i| format!("pre{i}")).collect();
    for (i, v) in mget(&mut c, &pre_keys).iter().enumerate() {
        assert_eq!(v, &json!(format!("p{i}")), "pre{i}");
    }
    let mut total = 20_000u64;
    for (t, &(before, sent)) in ranges.iter().enumerate() {
        // Everything sent (and one more, never sent) is probed: the restored keys of a
        // writer must be 0..m with the values written, m covering every write
        // acknowledged before the backup began, and nothing after a missing one.
        let keys: Vec<String> = (0..=sent + 1).map(|i| format!("w{t}-{i}")).collect();
        let got = mget(&mut c, &keys);
        let m = got.iter().position(Value::is_null).unwrap_or(got.len()) as i64;
        assert!(m > before, "writer {t}: only {m} writes restored, {} were acknowledged before the backup", before + 1);
        assert!(m <= sent + 1, "writer {t}: {m} restored but only {} sent", sent + 1);
        for (i, v) in got.iter().enumerate() {
            if (i as i64) < m {
                assert_eq!(v, &json!(format!("v{t}-{i}")), "w{t}-{i}");
            } else {
                assert!(v.is_null(), "writer {t}: w{t}-{i} restored after the missing w{t}-{m}: not a prefix");
            }
        }
        println!("writer {t}: acknowledged before the backup {}, sent {}, restored {m}", before + 1, sent + 1);
        total += m as u64;
    }
    assert_eq!(c.ok("server.dbsize", json!({}))["keys"], total, "no key that was never written");
}

#[test]
fn backup_needs_an_admin_credential_verify_catches_damage_restore_never_overwrites() {
    let dir = TempDir::new("backup-refuse");
    let (data, dest) = (dir.path().join("data"), dir.path().join("backup"));
    let s = Dbx::start(&Opts::new(&data).env("DBX_API_KEYS", KEYS));
    let mut c = client(s.port, "writer-secret");
    for i in 0..100 {
        c.ok("string.set", json!({"key": format!("k{i}"), "value": "v"}));
    }

    // A read-only key may not start a snapshot: nothing is copied.
    let out = backup_sh(s.port, "reader-secret", &data, &[&dest]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("server.save"), "{}", stderr(&out));
    assert!(!files(&dest).iter().any(|f| f.ends_with(".dbx") || f.ends_with(".log")), "{:?}", files(&dest));
    // No credential at all: the handshake is refused.
    let out = backup_sh(s.port, "", &data, &[&dest]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("handshake refused"), "{}", stderr(&out));
    // The wrong data directory is noticed (no snapshot of this server there).
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = backup_sh(s.port, "admin-secret", &other, &[&dir.path().join("b2")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no snapshot in"), "{}", stderr(&out));

    let out = backup_sh(s.port, "admin-secret", &data, &[&dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A second backup never mixes into an earlier one.
    let out = backup_sh(s.port, "admin-secret", &data, &[&dest]);
    assert!(!out.status.success() && stderr(&out).contains("is not empty"), "{}", stderr(&out));
    let out = backup_sh(s.port, "", &data, &[Path::new("--verify"), &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"keys\":100"), "{}", String::from_utf8_lossy(&out.stdout));

    // One changed byte in the log copy: --verify and --restore refuse.
    let log = files(&dest).into_iter().find(|f| f.starts_with("aof-")).expect("a log in the backup");
    let mut bytes = std::fs::read(dest.join(&log)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dest.join(&log), &bytes).unwrap();
    let out = backup_sh(s.port, "", &data, &[Path::new("--verify"), &dest]);
    assert!(!out.status.success() && stderr(&out).contains("checksums do not match"), "{}", stderr(&out));
    let fresh = dir.path().join("fresh");
    let out = backup_sh(s.port, "", &data, &[Path::new("--restore"), &dest, &fresh]);
    assert!(!out.status.success());
    assert!(!files(&fresh).iter().any(|f| f.starts_with("aof-")), "nothing restored from a damaged backup");
    bytes[last] ^= 1;
    std::fs::write(dest.join(&log), &bytes).unwrap();

    // A snapshot finishing between the listing and the copy removes the listed files:
    // the copy starts again and takes the newer snapshot.
    let gen_before = s.health().1["snapshot_generation"].as_u64().expect("a snapshot exists");
    let dest2 = dir.path().join("backup2");
    let out = Command::new("timeout")
        .args(["300", "bash", SCRIPT])
        .arg(&dest2)
        .env("DBX_URL", format!("ws://127.0.0.1:{}", s.port))
        .env("DBX_API_KEY", "admin-secret")
        .env("DBX_DATA_DIR", &data)
        .env("DBX_BIN", env!("CARGO_BIN_EXE_dbx"))
        .env(
            "DBX_BACKUP_TEST_HOOK",
            format!("python3 {}/scripts/dbxws.py save-and-wait 60", env!("CARGO_MANIFEST_DIR")),
        )
        .output()
        .expect("run backup.sh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("starting the copy again (attempt 2)"), "{}", stderr(&out));
    let snap = format!("snapshot-{}.dbx", gen_before + 2);
    assert!(files(&dest2).contains(&snap), "the newer {snap}: {:?}", files(&dest2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"keys\":100"), "{}", String::from_utf8_lossy(&out.stdout));

    // Restoring into the live data directory (not empty) is refused and changes nothing.
    let before: Vec<(String, Vec<u8>)> = files(&data)
        .into_iter()
        .filter(|f| f != "LOCK")
        .map(|f| (f.clone(), std::fs::read(data.join(&f)).unwrap()))
        .collect();
    let out = backup_sh(s.port, "", &data, &[Path::new("--restore"), &dest, &data]);
    assert!(!out.status.success() && stderr(&out).contains("not empty"), "{}", stderr(&out));
    let after: Vec<(String, Vec<u8>)> = files(&data)
        .into_iter()
        .filter(|f| f != "LOCK")
        .map(|f| (f.clone(), std::fs::read(data.join(&f)).unwrap()))
        .collect();
    assert_eq!(before, after, "the data directory is untouched");
}
