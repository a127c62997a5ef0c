//! The Redis Functions library `src/backend/dbx.lua` against the embedded store: the
//! same operations, at the same clock, run through a real `redis-server` (on a free
//! loopback port, in a temp dir) and through the embedded engine (`policy::execute`
//! on a `Store`) must give the same results and errors byte for byte, the same revs,
//! and the same changes (the library's `__dbx:changes` stream against the embedded
//! `Outcome` changes and expiries). Results whose order is a hash order (set members,
//! hash fields) are compared sorted.
//!
//! Needs `redis-server` (7.0+) on PATH; without it every test fails saying so (CI
//! installs it: `.ci/run`).
mod common;
use common::{free_port, TempDir};
use dbx::backend::decode_entry;
use dbx::cmd::{Ctx, Outcome, ServerFacts};
use dbx::engine::policy;
use dbx::proto::{envelope, Json, Params, Raw};
use dbx::store::{Gone, Store};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIB: &str = include_str!("../src/backend/dbx.lua");
const BACKLOG: &str = "100000";

// ---------------------------------------------------------------------------------------
// A redis-server child and a minimal RESP client.

#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Arr(Option<Vec<Resp>>),
}

/// Every string in a reply, depth first.
fn flat(r: &Resp) -> Vec<String> {
    match r {
        Resp::Arr(Some(items)) => items.iter().flat_map(flat).collect(),
        Resp::Bulk(Some(b)) => vec![String::from_utf8_lossy(b).into_owned()],
        _ => Vec::new(),
    }
}

impl Resp {
    fn text(&self) -> String {
        match self {
            Resp::Bulk(Some(b)) => String::from_utf8(b.clone()).expect("utf-8 reply"),
            Resp::Simple(s) => s.clone(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Resp::Int(n) => *n,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }
}

struct Redis {
    child: Child,
    _dir: TempDir,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test, saying why, when Redis is missing: a skipped test would check nothing.
fn require_redis() {
    let ok = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "redis-server not found on PATH: these tests need Redis 7+ (apt-get install redis-server; .ci/run does)"
    );
}

impl Redis {
    fn start() -> Redis {
        let dir = TempDir::new("redis-lua");
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let start = Instant::now();
            let mut child = Some(child);
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let w = s.try_clone().unwrap();
                    let mut r = Redis { child: child.take().unwrap(), _dir: dir, r: BufReader::new(s), w };
                    r.load();
                    return r;
                }
                if let Some(Ok(Some(_))) = child.as_mut().map(|c| c.try_wait()) {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        panic!("redis-server did not start");
    }

    fn load(&mut self) {
        let r = self.cmd(&[b"FUNCTION", b"LOAD", b"REPLACE", LIB.as_bytes()]);
        assert_eq!(r, Resp::Bulk(Some(b"dbx".to_vec())), "FUNCTION LOAD");
        let r = self.cmd(&[b"FCALL", b"dbx_init", b"0", BACKLOG.as_bytes()]);
        assert!(r.text().starts_with("{\"rev\":0,\"epoch\":\""), "{r:?}");
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Resp {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).unwrap();
        self.read()
    }

    fn cmds(&mut self, args: &[&str]) -> Resp {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&v)
    }

    fn read(&mut self) -> Resp {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let line = line.trim_end_matches("\r\n");
        let (t, rest) = line.split_at(1);
        match t {
            "+" => Resp::Simple(rest.to_string()),
            "-" => Resp::Err(rest.to_string()),
            ":" => Resp::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Resp::Bulk(None);
                }
                let mut b = vec![0; n as usize + 2];
                self.r.read_exact(&mut b).unwrap();
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Resp::Arr(None);
                }
                Resp::Arr(Some((0..n).map(|_| self.read()).collect()))
            }
            _ => panic!("bad RESP line {line:?}"),
        }
    }

    /// `dbx_exec` with these operations; returns the reply parsed.
    fn exec(&mut self, now: u64, ops: &str) -> Value {
        let r =
            self.cmd(&[b"FCALL", b"dbx_exec", b"0", now.to_string().as_bytes(), BACKLOG.as_bytes(), ops.as_bytes()]);
        serde_json::from_str(&r.text()).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {r:?}"))
    }

    /// One operation as the gateway sends a single request, through `dbx_run`: a plain
    /// `string.set` in its compact form (`S`, key, value), anything else as one JSON op.
    /// Returns (the result element's exact text, rev after).
    fn exec1(&mut self, now: u64, method: &str, params: &str) -> (String, u64) {
        let (rev, mut elems) = self.run(now, &[(method.to_string(), params.to_string())]);
        (elems.remove(0), rev)
    }

    /// Several operations as one gateway loop turn sends them: one `dbx_run`, plain
    /// `string.set`s in their compact form. Returns (rev after, each result element's
    /// text).
    fn run(&mut self, now: u64, ops: &[(String, String)]) -> (u64, Vec<String>) {
        let (now, backlog) = (now.to_string(), BACKLOG.to_string());
        let mut owned: Vec<Vec<u8>> =
            vec![b"FCALL".to_vec(), b"dbx_run".to_vec(), b"0".to_vec(), now.into(), backlog.into()];
        // consecutive plain sets as one run: `P count key value …`
        let mut run: Option<usize> = None; // where the open run's count is
        for (method, params) in ops {
            match compact_set(method, params) {
                Some((k, v)) => {
                    let at = *run.get_or_insert_with(|| {
                        owned.extend([b"P".to_vec(), b"0".to_vec()]);
                        owned.len() - 1
                    });
                    let count: usize = String::from_utf8_lossy(&owned[at]).parse().unwrap();
                    owned[at] = (count + 1).to_string().into_bytes();
                    owned.extend([k.into_bytes(), v.into_bytes()]);
                }
                None => {
                    run = None;
                    owned.push(format!("{{\"method\":{},\"params\":{params}}}", json!(method)).into_bytes());
                }
            }
        }
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let r = self.cmd(&args);
        let Resp::Arr(Some(items)) = &r else { panic!("dbx_run answered {r:?}") };
        assert_eq!(items.len(), ops.len() + 2, "dbx_run: rev, epoch and one element per op: {r:?}");
        let Resp::Int(rev) = items[0] else { panic!("dbx_run's rev: {r:?}") };
        assert_eq!(items[1].text(), self.cmds(&["GET", "__dbx:epoch"]).text(), "dbx_run's epoch");
        (rev as u64, items[2..].iter().map(run_element).collect())
    }

    /// The change stream after `after` (an entry id), one element per change, read as
    /// the gateway's follower reads it: (rev, the entry's id seq, key, event).
    fn changes_after(&mut self, after: &str) -> Vec<(u64, u64, String, String)> {
        self.entries_after(after)
            .into_iter()
            .flat_map(|(_, seq, ch)| ch.into_iter().map(move |(r, k, e)| (r, seq, k, e)))
            .collect()
    }

    /// The stream's entries after `after`: (id, seq, changes (rev, key, event)).
    fn entries_after(&mut self, after: &str) -> Vec<Entry> {
        let r = self.cmds(&["XRANGE", "__dbx:changes", &format!("({after}"), "+"]);
        let Resp::Arr(Some(entries)) = r else { panic!("XRANGE: {r:?}") };
        entries
            .into_iter()
            .map(|e| {
                let Resp::Arr(Some(parts)) = e else { panic!("entry") };
                let id = parts[0].text();
                let Resp::Arr(Some(f)) = &parts[1] else { panic!("fields") };
                let fields: Vec<String> = f.iter().map(|x| x.text()).collect();
                assert_eq!(fields[0], "t", "an entry starts with its time: {fields:?}");
                let decoded = decode_entry(&id, fields.chunks(2).map(|p| (p[0].as_str(), p[1].as_str())));
                assert!(!decoded.changes.is_empty(), "an entry holds changes: {fields:?}");
                let ch = decoded.changes.iter().map(|c| (c.rev, c.key.to_string(), c.event.to_string())).collect();
                (id.clone(), decoded.seq, ch)
            })
            .collect()
    }
}

/// A `string.set` with only `key` and `value`: what the gateway sends in compact form.
fn compact_set(method: &str, params: &str) -> Option<(String, String)> {
    let p = Params::parse(Raw::parse(params)).ok().filter(|p| method == "string.set" && p.names().count() == 2)?;
    Some((p.str("key").ok()?.into_owned(), p.value("value").ok()?.into_owned()))
}

/// One element of `dbx_run`'s reply as the batch element text the embedded engine
/// writes: JSON text as it is, a plain set's bare rev written out as the gateway does.
fn run_element(r: &Resp) -> String {
    match r {
        Resp::Int(rev) => {
            let mut b = b"{\"result\":{".to_vec();
            dbx::backend::set_result(&mut Json::fields(&mut b, true), *rev as u64);
            b.extend_from_slice(b"}}");
            String::from_utf8(b).unwrap()
        }
        other => other.text(),
    }
}

/// A stream entry: (id, seq, its changes (rev, key, event)).
type Entry = (String, u64, Vec<(u64, String, String)>);

// ---------------------------------------------------------------------------------------
// The embedded engine, one operation at a time.

struct Embedded {
    store: Store,
    facts: ServerFacts,
    fx: Outcome,
}

impl Embedded {
    fn new() -> Embedded {
        Embedded {
            store: Store::new(),
            facts: ServerFacts { max_batch: 1000, ..Default::default() },
            fx: Outcome::default(),
        }
    }

    /// (the batch element `{"result":…}`/`{"error":…}`, rev after, changes (rev, key, event)).
    fn run(&mut self, now: u64, method: &str, params: &str) -> (String, u64, Vec<(u64, String, String)>) {
        let params = Params::parse(Raw::parse(params)).expect("params object");
        self.fx.reset(true);
        let mut ctx = Ctx::new(&mut self.store, now, &self.facts);
        let mut buf = Vec::new();
        let fx = &mut self.fx;
        envelope::batch_element(&mut buf, |out| policy::execute(&mut ctx, fx, None, method, &params, out));
        let mut changes: Vec<(u64, String, String)> = self
            .store
            .take_gone()
            .into_iter()
            .filter(|(_, why, _)| *why == Gone::Expired)
            .map(|(k, _, rev)| (rev, k.to_string(), "expired".to_string()))
            .collect();
        changes.extend(
            self.fx.changes.iter().map(|c| (c.rev, c.key.as_deref().unwrap_or("").to_string(), c.event.to_string())),
        );
        changes.sort_by_key(|c| c.0);
        (String::from_utf8(buf).unwrap(), self.store.rev(), changes)
    }
}

/// Methods whose results list members in a hash order: compared sorted.
const UNORDERED: [&str; 7] =
    ["set.members", "set.inter", "set.union", "set.diff", "set.pop", "hash.keys", "hash.values"];

fn normalize(method: &str, element: &str) -> Value {
    let mut v: Value = serde_json::from_str(element).unwrap_or_else(|e| panic!("not JSON ({e}): {element}"));
    if UNORDERED.contains(&method) {
        if let Some(obj) = v.get_mut("result").and_then(|r| r.as_object_mut()) {
            for (_, field) in obj.iter_mut() {
                if let Some(a) = field.as_array_mut() {
                    a.sort_by_key(|x| x.to_string());
                }
            }
        }
    }
    v
}

/// Both sides, one operation after another, compared as they go.
struct Pair {
    redis: Redis,
    emb: Embedded,
    now: u64,
    last_id: String,
    checked: usize,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Pair {
    fn new() -> Pair {
        Pair {
            redis: Redis::start(),
            emb: Embedded::new(),
            now: now_ms() + 3_600_000,
            last_id: "0-0".into(),
            checked: 0,
        }
    }

    /// Run one operation on both sides and compare; returns the Lua side's element.
    fn op(&mut self, method: &str, params: Value) -> Value {
        self.op_text(method, &params.to_string())
    }

    fn op_text(&mut self, method: &str, params: &str) -> Value {
        let (lua, lua_rev) = self.redis.exec1(self.now, method, params);
        let (emb, emb_rev, emb_changes) = self.emb.run(self.now, method, params);
        let what = format!("{method} {}", params.chars().take(200).collect::<String>());
        if UNORDERED.contains(&method) || method == "hash.get" {
            assert_eq!(normalize(method, &lua), normalize(method, &emb), "{what}");
        } else {
            assert_eq!(lua, emb, "{what}");
        }
        assert_eq!(lua_rev, emb_rev, "rev after {what}");
        let lua_changes = self.redis.changes_after(&self.last_id);
        if let Some(last) = lua_changes.last() {
            self.last_id = format!("{}-{}", last.0, last.1);
        }
        let lua_changes: Vec<(u64, String, String)> =
            lua_changes.into_iter().map(|(rev, _, k, e)| (rev, k, e)).collect();
        assert_eq!(lua_changes, emb_changes, "changes of {what}");
        self.checked += 1;
        normalize(method, &lua)
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
    }
}

// ---------------------------------------------------------------------------------------

#[test]
fn strings_and_keys_match_the_embedded_store() {
    require_redis();
    let mut p = Pair::new();
    p.op("string.get", json!({"key": "a"}));
    p.op("string.set", json!({"key": "a", "value": "hello"}));
    p.op("string.set", json!({"key": "a", "value": "hello"})); // same value: still a write
    p.op("string.get", json!({"key": "a"}));
    p.op("string.set", json!({"key": "a", "value": "x", "nx": true}));
    p.op("string.set", json!({"key": "b", "value": "x", "xx": true}));
    p.op("string.set", json!({"key": "a", "value": "y", "get": true}));
    p.op("string.set", json!({"key": "new", "value": "y", "get": true, "nx": true}));
    p.op("string.set", json!({"key": "a", "value": "z", "nx": true, "xx": true}));
    p.op("string.set", json!({"key": "a", "value": "z", "ttl": 0}));
    p.op("string.set", json!({"key": "a", "value": "z", "ttl": -1.5}));
    p.op("string.set", json!({"key": "a", "value": "z", "ttl": "10"}));
    p.op("string.set", json!({"key": "a", "value": true}));
    p.op("string.set", json!({"key": 5, "value": "v"}));
    p.op("string.set", json!({"value": "v"}));
    p.op("string.set", json!({"key": "a", "value": "v", "nx": 1}));
    p.op_text("string.set", r#"{"key":"num","value":1.50}"#);
    p.op_text("string.set", r#"{"key":"num2","value":-0.0e10}"#);
    p.op("string.get", json!({"key": "num"}));
    p.op("string.get", json!({"key": "num2"}));
    p.op("string.set", json!({"key": "t", "value": "v", "ttl": 2.5}));
    p.op("string.get", json!({"key": "t"}));
    p.op("key.ttl", json!({"key": "t"}));
    p.op("string.set", json!({"key": "t2", "value": "v", "ttl": 0.0001}));
    p.op("key.ttl", json!({"key": "t2"}));
    p.op("string.mget", json!({"keys": ["a", "zz", "t", "num"]}));
    p.op("string.mget", json!({"keys": []}));
    p.op("string.mget", json!({"keys": "a"}));
    p.op("string.mset", json!({"pairs": {"m1": "1", "m2": 2, "m3": "three"}}));
    p.op_text("string.mset", r#"{"pairs":{"m1":"1","m1":"2"}}"#);
    p.op("string.mset", json!({"pairs": {}}));
    p.op("string.mset", json!({"pairs": {"m1": null}}));
    p.op("string.mset", json!({"pairs": []}));
    // incr / decr
    p.op("string.incr", json!({"key": "n"}));
    p.op("string.incr", json!({"key": "n", "by": 41}));
    p.op("string.incr", json!({"key": "n", "by": 0}));
    p.op("string.decr", json!({"key": "n", "by": 2}));
    p.op("string.decr", json!({"key": "n"}));
    p.op("string.incr", json!({"key": "a"}));
    p.op("string.incr", json!({"key": "n", "by": 1.5}));
    p.op_text("string.incr", r#"{"key":"n","by":1e3}"#);
    p.op("string.incr", json!({"key": "big", "by": 9007199254740993_i64}));
    p.op("string.incr", json!({"key": "big", "by": 9007199254740993_i64}));
    p.op("string.incr", json!({"key": "big", "by": i64::MAX}));
    p.op("string.set", json!({"key": "max", "value": i64::MAX.to_string()}));
    p.op("string.incr", json!({"key": "max"}));
    p.op("string.decr", json!({"key": "max", "by": i64::MIN}));
    p.op_text("string.incr", r#"{"key":"n","by":9223372036854775808}"#);
    p.op("string.set", json!({"key": "odd", "value": "+007"}));
    p.op("string.incr", json!({"key": "odd", "by": 0}));
    p.op("string.get", json!({"key": "odd"}));
    p.op("string.set", json!({"key": "odd", "value": "-0"}));
    p.op("string.incr", json!({"key": "odd", "by": 3}));
    p.op("string.set", json!({"key": "sp", "value": " 1"}));
    p.op("string.incr", json!({"key": "sp"}));
    p.op("string.set", json!({"key": "ti", "value": "5", "ttl": 100}));
    p.op("string.incr", json!({"key": "ti"}));
    p.op("key.ttl", json!({"key": "ti"}));
    // append / strlen
    p.op("string.append", json!({"key": "ap", "value": ""}));
    p.op("string.append", json!({"key": "ap", "value": ""}));
    p.op("string.append", json!({"key": "ap", "value": "ab"}));
    p.op("string.append", json!({"key": "ap", "value": ""}));
    p.op("string.append", json!({"key": "ap", "value": 12}));
    p.op("string.strlen", json!({"key": "ap"}));
    p.op("string.strlen", json!({"key": "none"}));
    // keys
    p.op("key.del", json!({"key": "ap"}));
    p.op("key.del", json!({"keys": ["m1", "m2", "m1", "zz"]}));
    p.op("key.del", json!({"keys": []}));
    p.op("key.del", json!({}));
    p.op("key.exists", json!({"key": "m3"}));
    p.op("key.exists", json!({"keys": ["m3", "m3", "zz"]}));
    p.op("key.type", json!({"key": "m3"}));
    p.op("key.type", json!({"key": "zz"}));
    p.op("key.expire", json!({"key": "m3", "ttl": 30}));
    p.op("key.ttl", json!({"key": "m3"}));
    p.op("key.expire", json!({"key": "zz", "ttl": 30}));
    p.op("key.expire", json!({"key": "m3"}));
    p.op("key.expire", json!({"key": "m3", "ttl": "1"}));
    p.op("key.persist", json!({"key": "m3"}));
    p.op("key.persist", json!({"key": "m3"}));
    p.op("key.ttl", json!({"key": "m3"}));
    p.op("key.ttl", json!({"key": "zz"}));
    p.op("key.expire", json!({"key": "m3", "ttl": 0}));
    p.op("key.exists", json!({"key": "m3"}));
    // rename keeps the TTL
    p.op("string.set", json!({"key": "r1", "value": "1", "ttl": 50}));
    p.op("string.set", json!({"key": "r2", "value": "2", "ttl": 70}));
    p.op("key.rename", json!({"key": "r1", "new_key": "r2", "nx": true}));
    p.op("key.rename", json!({"key": "r1", "new_key": "r1"}));
    p.op("key.rename", json!({"key": "r1", "new_key": "r1", "nx": true}));
    p.op("key.rename", json!({"key": "r1", "new_key": "r2"}));
    p.op("key.ttl", json!({"key": "r2"}));
    p.op("key.rename", json!({"key": "r1", "new_key": "r3"}));
    p.op("key.rename", json!({"key": "r2", "new_key": "r3"}));
    p.op("key.exists", json!({"keys": ["r1", "r2", "r3"]}));
    // TTLs past 2^53 ms are exact; past 2^64 ms they saturate, as the embedded u64
    p.op("string.set", json!({"key": "far", "value": "v", "ttl": 1_000_000_000_000_000u64}));
    p.op("string.get", json!({"key": "far"}));
    p.op("string.set", json!({"key": "far2", "value": "v", "ttl": 9_007_199_254_740u64}));
    p.op("key.ttl", json!({"key": "far2"}));
    p.op("string.set", json!({"key": "farthest", "value": "v", "ttl": 1e300}));
    p.op("key.ttl", json!({"key": "farthest"}));
    p.op("key.expire", json!({"key": "far2", "ttl": 1e300}));
    p.op("key.ttl", json!({"key": "far2"}));
    p.op("key.expire", json!({"key": "far2", "ttl": 18_446_744_073_709_551.0}));
    p.op("key.ttl", json!({"key": "far2"}));
    p.op("key.rename", json!({"key": "far", "new_key": "far3"}));
    p.op("key.ttl", json!({"key": "far3"}));
    p.op("string.incr", json!({"key": "far3"}));
    p.op("string.get", json!({"key": "far3"}));
    p.op("key.persist", json!({"key": "far3"}));
    p.op("key.ttl", json!({"key": "far3"}));
    p.op("string.set", json!({"key": "far2", "value": "w", "ttl": 10}));
    p.op("key.ttl", json!({"key": "far2"}));
    p.op("key.del", json!({"key": "farthest"}));
    assert_eq!(p.redis.cmds(&["EXISTS", "__dbx:deadlines:exact"]).int(), 0, "exact deadlines cleaned up");
    // expiry, lazily, before the operation touches the key
    p.op("string.set", json!({"key": "e1", "value": "v", "ttl": 1}));
    p.op("string.set", json!({"key": "e2", "value": "v", "ttl": 1}));
    p.op("string.set", json!({"key": "e3", "value": "v", "ttl": 1}));
    p.advance(1000);
    p.op("string.get", json!({"key": "e1"}));
    p.op("string.set", json!({"key": "e2", "value": "again"}));
    p.op("key.ttl", json!({"key": "e2"}));
    p.op("key.del", json!({"key": "e3"}));
    p.op("key.ttl", json!({"key": "r3"}));
    p.advance(100_000);
    p.op("key.exists", json!({"key": "r3"}));
    // the reserved prefix: refused (the embedded store has no such rule, so check alone)
    let (e, _) = p.redis.exec1(p.now, "string.set", r#"{"key":"__dbx:rev","value":"1"}"#);
    assert!(e.contains("\"code\":\"invalid_params\""), "{e}");
    let (e, _) = p.redis.exec1(p.now, "string.mset", r#"{"pairs":{"ok":"1","__dbx:lib":"2"}}"#);
    assert!(e.contains("\"code\":\"invalid_params\""), "{e}");
    let (e, _) = p.redis.exec1(p.now, "key.rename", r#"{"key":"e2","new_key":"__dbx:x"}"#);
    assert!(e.contains("\"code\":\"invalid_params\""), "{e}");
    p.op("string.get", json!({"key": "e2"}));
    // unknown method
    p.op("string.nope", json!({}));
    assert!(p.checked > 100);
}

#[test]
fn collections_match_the_embedded_store() {
    require_redis();
    let mut p = Pair::new();
    // hashes
    p.op("hash.set", json!({"key": "h", "field": "a", "value": "1"}));
    p.op("hash.set", json!({"key": "h", "field": "a", "value": "1"}));
    p.op("hash.set", json!({"key": "h", "fields": {"a": "1", "b": 2, "c": "x"}}));
    p.op("hash.set", json!({"key": "h", "fields": {}}));
    p.op("hash.set", json!({"key": "h", "fields": {"a": null}}));
    p.op("hash.set", json!({"key": "h", "field": "a"}));
    p.op("hash.set", json!({"key": "h"}));
    p.op_text("hash.set", r#"{"key":"h","fields":{"a":"1","a":"2"}}"#);
    p.op("hash.get", json!({"key": "h", "field": "a"}));
    p.op("hash.get", json!({"key": "h", "field": "zz"}));
    p.op("hash.get", json!({"key": "nh", "field": "zz"}));
    p.op("hash.get", json!({"key": "h"}));
    p.op("hash.get", json!({"key": "nh"}));
    p.op("hash.mget", json!({"key": "h", "fields": ["a", "zz", "c"]}));
    p.op("hash.mget", json!({"key": "nh", "fields": ["a"]}));
    p.op("hash.exists", json!({"key": "h", "field": "b"}));
    p.op("hash.exists", json!({"key": "h", "field": "q"}));
    p.op("hash.len", json!({"key": "h"}));
    p.op("hash.keys", json!({"key": "h"}));
    p.op("hash.values", json!({"key": "h"}));
    p.op("hash.incr", json!({"key": "h", "field": "b"}));
    p.op("hash.incr", json!({"key": "h", "field": "b", "by": 0}));
    p.op("hash.incr", json!({"key": "h", "field": "new", "by": 0}));
    p.op("hash.incr", json!({"key": "h", "field": "c"}));
    p.op("hash.incr", json!({"key": "h", "field": "b", "by": i64::MAX}));
    p.op("hash.incr", json!({"key": "h2", "field": "f", "by": -5}));
    p.op("hash.del", json!({"key": "h", "fields": ["a", "a", "zz"]}));
    p.op("hash.del", json!({"key": "h", "field": "zz"}));
    p.op("hash.del", json!({"key": "nh", "field": "zz"}));
    p.op("hash.del", json!({"key": "h2", "field": "f"}));
    p.op("key.exists", json!({"key": "h2"}));
    p.op("hash.set", json!({"key": "th", "field": "f", "value": "v"}));
    p.op("key.expire", json!({"key": "th", "ttl": 5}));
    p.op("hash.set", json!({"key": "th", "field": "g", "value": "v"}));
    p.op("key.ttl", json!({"key": "th"}));
    p.op("hash.del", json!({"key": "th", "fields": ["f", "g"]}));
    p.op("key.ttl", json!({"key": "th"}));
    // wrong types both ways
    p.op("string.set", json!({"key": "s", "value": "v"}));
    for (m, params) in [
        ("hash.get", json!({"key": "s"})),
        ("hash.set", json!({"key": "s", "field": "a", "value": "1"})),
        ("hash.len", json!({"key": "s"})),
        ("hash.incr", json!({"key": "s", "field": "a"})),
        ("hash.del", json!({"key": "s", "field": "a"})),
        ("hash.mget", json!({"key": "s", "fields": ["a"]})),
        ("hash.exists", json!({"key": "s", "field": "a"})),
        ("hash.keys", json!({"key": "s"})),
        ("hash.values", json!({"key": "s"})),
        ("set.add", json!({"key": "s", "member": "a"})),
        ("set.remove", json!({"key": "s", "member": "a"})),
        ("set.members", json!({"key": "s"})),
        ("set.contains", json!({"key": "s", "member": "a"})),
        ("set.card", json!({"key": "s"})),
        ("set.pop", json!({"key": "s"})),
        ("set.inter", json!({"keys": ["nope", "s"]})),
        ("zset.add", json!({"key": "s", "member": "a", "score": 1})),
        ("zset.score", json!({"key": "s", "member": "a"})),
        ("zset.incr", json!({"key": "s", "member": "a", "by": 1})),
        ("zset.remove", json!({"key": "s", "member": "a"})),
        ("zset.rank", json!({"key": "s", "member": "a"})),
        ("zset.range", json!({"key": "s", "start": 0, "stop": -1})),
        ("zset.range_by_score", json!({"key": "s", "min": 0, "max": 1})),
        ("zset.card", json!({"key": "s"})),
        ("list.push", json!({"key": "s", "value": "a"})),
        ("list.pop", json!({"key": "s"})),
        ("list.range", json!({"key": "s", "start": 0, "stop": -1})),
        ("list.len", json!({"key": "s"})),
        ("list.index", json!({"key": "s", "index": 0})),
        ("list.trim", json!({"key": "s", "start": 0, "stop": 1})),
        ("string.get", json!({"key": "h"})),
        ("string.append", json!({"key": "h", "value": "x"})),
        ("string.incr", json!({"key": "h"})),
        ("string.strlen", json!({"key": "h"})),
        ("string.set", json!({"key": "h", "value": "x", "get": true})),
    ] {
        p.op(m, params);
    }
    p.op("string.mget", json!({"keys": ["s", "h"]}));
    p.op("string.set", json!({"key": "h", "value": "now a string"}));
    // sets
    p.op("set.add", json!({"key": "S", "members": ["a", "b", "c", "a"]}));
    p.op("set.add", json!({"key": "S", "member": "a"}));
    p.op("set.add", json!({"key": "S", "members": []}));
    p.op("set.add", json!({"key": "S", "members": [1]}));
    p.op("set.add", json!({"key": "T", "members": ["b", "c", "d"]}));
    p.op("set.members", json!({"key": "S"}));
    p.op("set.members", json!({"key": "nope"}));
    p.op("set.contains", json!({"key": "S", "member": "b"}));
    p.op("set.contains", json!({"key": "S", "member": "q"}));
    p.op("set.card", json!({"key": "S"}));
    p.op("set.inter", json!({"keys": ["S", "T"]}));
    p.op("set.inter", json!({"keys": ["S", "nope"]}));
    p.op("set.union", json!({"keys": ["S", "T", "nope"]}));
    p.op("set.diff", json!({"keys": ["S", "T"]}));
    p.op("set.diff", json!({"keys": ["nope", "T"]}));
    p.op("set.remove", json!({"key": "S", "members": ["a", "zz"]}));
    p.op("set.remove", json!({"key": "S", "member": "zz"}));
    // more keys than one Redis call from Lua can take
    let many: Vec<String> = (0..2500).map(|i| format!("many{i}")).collect();
    for (i, k) in many.iter().enumerate() {
        p.op("set.add", json!({"key": k, "members": ["a", format!("x{i}"), format!("y{}", i % 7)]}));
    }
    p.op("set.union", json!({"keys": many}));
    p.op("set.inter", json!({"keys": many}));
    p.op("set.diff", json!({"keys": many}));
    let mut two = vec!["many0".to_string(), "many7".to_string()];
    two.extend(many.iter().skip(1).take(1500).cloned());
    p.op("set.inter", json!({"keys": two}));
    let mut rev_many = many.clone();
    rev_many.reverse();
    rev_many.push("nope".into());
    p.op("set.diff", json!({"keys": rev_many}));
    p.op("string.mget", json!({"keys": many}));
    p.op("key.exists", json!({"keys": many}));
    p.op("hash.mget", json!({"key": "h", "fields": many}));
    p.op("set.remove", json!({"key": "many1", "members": many}));
    p.op("list.push", json!({"key": "longlist", "values": many}));
    p.op("list.len", json!({"key": "longlist"}));
    p.op("key.del", json!({"keys": many}));
    p.op("set.pop", json!({"key": "S", "count": 0}));
    p.op("set.pop", json!({"key": "S", "count": 5}));
    p.op("set.pop", json!({"key": "S"}));
    p.op("set.pop", json!({"key": "S", "count": -1}));
    p.op("set.add", json!({"key": "one", "member": "x"}));
    p.op("set.pop", json!({"key": "one"}));
    p.op("key.exists", json!({"keys": ["S", "one"]}));
    // sorted sets, and how their scores print
    p.op("zset.add", json!({"key": "z", "member": "a", "score": 1}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": 1}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": 2}));
    p.op("zset.add", json!({"key": "z", "members": [{"member": "b", "score": 0.5}, {"member": "c", "score": "-inf"}, {"member": "d", "score": "+inf"}]}));
    p.op("zset.add", json!({"key": "z", "members": [{"member": "b", "score": 0.5}, {"member": "b", "score": 0.75}]}));
    p.op("zset.add", json!({"key": "z", "members": []}));
    p.op("zset.add", json!({"key": "z", "members": [{"member": "b"}]}));
    p.op("zset.add", json!({"key": "z", "members": [{"score": 1}]}));
    p.op("zset.add", json!({"key": "z", "members": ["b"]}));
    p.op("zset.add", json!({"key": "z", "member": "a"}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": "nan"}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": "abc"}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": " 3 "}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": "Infinity"}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": "0x10"}));
    p.op("zset.add", json!({"key": "z", "member": "a", "score": "1e400"}));
    p.op_text("zset.add", r#"{"key":"z","member":"a","score":1e400}"#);
    p.op("zset.add", json!({"key": "z"}));
    for (i, s) in [
        "0.1",
        "0.5",
        "1e15",
        "1e16",
        "123456789012345678",
        "1.5e-7",
        "0.0001",
        "0.00001",
        "1e-5",
        "1e-6",
        "-0.0",
        "-2.5",
        "3.141592653589793",
        "1e21",
        "1e100",
        "9007199254740993",
        "999999999999999",
        "2e-308",
        "5e-324",
        "1.7976931348623157e308",
        "100.25",
        "12345.678",
        "-1e15",
        "0.3",
        "1e-7",
        "123e-20",
        "1e22",
        "33.333333333333336",
    ]
    .iter()
    .enumerate()
    {
        p.op_text("zset.add", &format!(r#"{{"key":"scores","member":"m{i}","score":{s}}}"#));
        p.op("zset.score", json!({"key": "scores", "member": format!("m{i}")}));
    }
    p.op("zset.range", json!({"key": "scores", "start": 0, "stop": -1}));
    p.op("zset.range", json!({"key": "scores", "start": 0, "stop": -1, "rev": true}));
    p.op("zset.score", json!({"key": "z", "member": "zz"}));
    p.op("zset.score", json!({"key": "nope", "member": "zz"}));
    p.op("zset.incr", json!({"key": "z", "member": "a", "by": 1.5}));
    p.op("zset.incr", json!({"key": "z", "member": "a", "by": 0}));
    p.op("zset.incr", json!({"key": "z", "member": "new", "by": "-inf"}));
    p.op("zset.incr", json!({"key": "z", "member": "d", "by": "-inf"}));
    p.op("zset.incr", json!({"key": "z", "member": "d", "by": 1}));
    p.op("zset.incr", json!({"key": "z2", "member": "q", "by": 0.1}));
    p.op("zset.incr", json!({"key": "z2", "member": "q", "by": 0.2}));
    p.op("zset.incr", json!({"key": "z2", "member": "q"}));
    p.op("zset.rank", json!({"key": "z", "member": "a"}));
    p.op("zset.rank", json!({"key": "z", "member": "a", "rev": true}));
    p.op("zset.rank", json!({"key": "z", "member": "zz"}));
    p.op("zset.rank", json!({"key": "nope", "member": "zz"}));
    for (a, b) in [(0, -1), (1, 2), (-2, -1), (5, 1), (0, 100), (-100, 100), (3, 3), (i64::MIN, i64::MAX)] {
        p.op("zset.range", json!({"key": "z", "start": a, "stop": b}));
        p.op("zset.range", json!({"key": "z", "start": a, "stop": b, "rev": true}));
        p.op("list.range", json!({"key": "nope", "start": a, "stop": b}));
    }
    p.op("zset.range", json!({"key": "z", "start": 0}));
    p.op("zset.range", json!({"key": "z", "start": 0, "stop": 1.5}));
    for (min, max) in [
        (json!(0), json!(10)),
        (json!("-inf"), json!("+inf")),
        (json!("(0.5"), json!(3.5)),
        (json!("(0.5"), json!("(3.5")),
        (json!(" 1"), json!("2 ")),
        (json!("( 1"), json!("5")),
        (json!(5), json!(1)),
        (json!("x"), json!(1)),
        (json!("(inf"), json!("+inf")),
    ] {
        p.op("zset.range_by_score", json!({"key": "z", "min": min, "max": max}));
        p.op("zset.range_by_score", json!({"key": "z", "min": min, "max": max, "rev": true}));
        p.op("zset.range_by_score", json!({"key": "z", "min": min, "max": max, "offset": 1, "limit": 2}));
        p.op("zset.range_by_score", json!({"key": "z", "min": min, "max": max, "offset": 1, "rev": true}));
        p.op("zset.range_by_score", json!({"key": "z", "min": min, "max": max, "limit": 0}));
    }
    p.op("zset.range_by_score", json!({"key": "z", "min": 0, "max": 10, "limit": -1}));
    p.op("zset.card", json!({"key": "z"}));
    p.op("zset.remove", json!({"key": "z", "members": ["a", "zz", "a"]}));
    p.op("zset.remove", json!({"key": "z", "member": "zz"}));
    p.op("zset.remove", json!({"key": "z2", "member": "q"}));
    p.op("key.exists", json!({"key": "z2"}));
    // lists
    p.op("list.push", json!({"key": "l", "value": "a"}));
    p.op("list.push", json!({"key": "l", "values": ["b", 3, "d"]}));
    p.op("list.push", json!({"key": "l", "values": ["x", "y"], "side": "left"}));
    p.op("list.push", json!({"key": "l", "values": []}));
    p.op("list.push", json!({"key": "l", "values": [true]}));
    p.op("list.push", json!({"key": "l", "value": "a", "side": "up"}));
    p.op("list.push", json!({"key": "l"}));
    p.op("list.range", json!({"key": "l", "start": 0, "stop": -1}));
    p.op("list.len", json!({"key": "l"}));
    for i in [0, 1, -1, -6, -7, 6, 100, i64::MIN, i64::MAX] {
        p.op("list.index", json!({"key": "l", "index": i}));
    }
    p.op("list.index", json!({"key": "nope", "index": 0}));
    p.op("list.pop", json!({"key": "l"}));
    p.op("list.pop", json!({"key": "l", "side": "right", "count": 2}));
    p.op("list.pop", json!({"key": "l", "count": 0}));
    p.op("list.pop", json!({"key": "nope"}));
    p.op("list.trim", json!({"key": "l", "start": 0, "stop": -1}));
    p.op("list.trim", json!({"key": "l", "start": 1, "stop": 1}));
    p.op("list.range", json!({"key": "l", "start": 0, "stop": -1}));
    p.op("list.trim", json!({"key": "l", "start": 5, "stop": 1}));
    p.op("key.exists", json!({"key": "l"}));
    p.op("list.trim", json!({"key": "nope", "start": 0, "stop": 1}));
    p.op("list.push", json!({"key": "l2", "values": ["a", "b"]}));
    p.op("list.pop", json!({"key": "l2", "count": 5}));
    p.op("key.type", json!({"key": "l2"}));
    // everything expires the same way
    for (k, m, params) in [
        ("xh", "hash.set", json!({"key": "xh", "field": "f", "value": "v"})),
        ("xs", "set.add", json!({"key": "xs", "member": "m"})),
        ("xz", "zset.add", json!({"key": "xz", "member": "m", "score": 1})),
        ("xl", "list.push", json!({"key": "xl", "value": "v"})),
    ] {
        p.op(m, params);
        p.op("key.expire", json!({"key": k, "ttl": 1}));
    }
    p.advance(1500);
    p.op("hash.len", json!({"key": "xh"}));
    p.op("set.union", json!({"keys": ["xs", "S"]}));
    p.op("zset.add", json!({"key": "xz", "member": "m", "score": 1}));
    p.op("list.pop", json!({"key": "xl"}));
    p.op("server.dbsize", json!({}));
    assert!(p.checked > 250);
}

#[test]
fn binary_safe_keys_and_values() {
    require_redis();
    let mut p = Pair::new();
    let odd = "cr\r lf\n nul\u{0} tab\t quote\" back\\ slash/ del\u{7f} é ☃ 😀 \u{1}\u{1f}";
    p.op("string.set", json!({"key": odd, "value": odd}));
    p.op("string.get", json!({"key": odd}));
    p.op("hash.set", json!({"key": "hb", "fields": {odd: odd, "plain": "\r\n"}}));
    p.op("hash.get", json!({"key": "hb", "field": odd}));
    p.op("hash.get", json!({"key": "hb"}));
    p.op("set.add", json!({"key": "sb", "members": [odd, "\u{0}", ""]}));
    p.op("set.members", json!({"key": "sb"}));
    p.op("list.push", json!({"key": "lb", "values": [odd, "", "\u{0}\u{0}"]}));
    p.op("list.range", json!({"key": "lb", "start": 0, "stop": -1}));
    p.op("zset.add", json!({"key": "zb", "member": odd, "score": 1}));
    p.op("zset.range", json!({"key": "zb", "start": 0, "stop": -1}));
    p.op("key.scan", json!({"match": "cr*", "count": 1000}));
    // escapes spelled in every way JSON allows, a surrogate pair, and a lone surrogate
    p.op_text("string.set", r#"{"key":"esc","value":"\u0000\u001F\b\f\n\r\t\/\"\\\u00e9\ud83d\ude00"}"#);
    p.op("string.get", json!({"key": "esc"}));
    p.op_text("string.set", r#"{"key":"lone","value":"\ud800x"}"#);
    p.op_text("string.set", r#"{"key":"lone","value":"\udc00"}"#);
    p.op("key.exists", json!({"key": "lone"}));
    // 1 MiB values, stored and returned byte for byte
    let big: String = (0..(1 << 20)).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    p.op("string.set", json!({"key": "big", "value": big}));
    let got = p.op("string.get", json!({"key": "big"}));
    assert_eq!(got["result"]["value"].as_str().unwrap().len(), 1 << 20);
    let mut mixed = "\r\n\u{0}é".repeat(1 << 16);
    mixed.push('"');
    p.op("list.push", json!({"key": "bigl", "value": mixed}));
    let got = p.op("list.index", json!({"key": "bigl", "index": 0}));
    assert_eq!(got["result"]["value"].as_str().unwrap(), mixed);
    p.op("string.append", json!({"key": "big", "value": big}));
    p.op("string.strlen", json!({"key": "big"}));
}

#[test]
fn batches_are_one_call_and_errors_do_not_stop_them() {
    require_redis();
    let mut r = Redis::start();
    let now = now_ms();
    let v = r.exec(
        now,
        r#"[{"method":"string.set","params":{"key":"a","value":"1"}},
            {"method":"string.incr","params":{"key":"a","by":"x"}},
            {"method":"hash.set","params":{"key":"a","field":"f","value":"v"}},
            {"method":"string.mset","params":{"pairs":{"x":"1","y":"2","z":"3"}}},
            {"method":"server.ping"},
            {"method":"server.time","params":null},
            {"method":"batch","params":{"operations":[]}},
            {"method":"nope"},
            {"method":"string.get","params":{"key":"a"}}]"#,
    );
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 9);
    assert_eq!(res[0], json!({"result": {"set": true, "rev": 1}}));
    assert_eq!(res[1]["error"]["code"], "invalid_params");
    assert_eq!(res[2]["error"]["code"], "wrong_type");
    assert_eq!(res[3], json!({"result": {"set": 3, "rev": 2}}));
    assert_eq!(res[4], json!({"result": {"pong": true}}));
    assert_eq!(res[5], json!({"result": {"unix_ms": now}}));
    assert_eq!(res[6]["error"]["code"], "invalid_request");
    assert_eq!(res[7]["error"]["code"], "method_not_found");
    assert_eq!(res[8]["result"]["value"], "1");
    assert_eq!(v["rev"], 2);
    // one stream entry for the call, id 2-1 (its last change's rev); one rev shared by
    // the three changes of the mset
    let entries = r.entries_after("0-0");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, "2-1");
    let ch = r.changes_after("0-0");
    assert_eq!(
        ch,
        vec![
            (1, 1, "a".into(), "string.set".into()),
            (2, 1, "x".into(), "string.mset".into()),
            (2, 1, "y".into(), "string.mset".into()),
            (2, 1, "z".into(), "string.mset".into()),
        ]
    );
    // a malformed ops_json is the gateway's bug: a RESP error, nothing done
    let e = r.cmd(&[b"FCALL", b"dbx_exec", b"0", b"1", b"10", b"{\"not\":\"an array\"}"]);
    assert!(matches!(&e, Resp::Err(m) if m.contains("dbx: ops_json")), "{e:?}");
    let e = r.cmd(&[b"FCALL", b"dbx_exec", b"0", b"x", b"10", b"[]"]);
    assert!(matches!(&e, Resp::Err(m) if m.contains("now_ms")), "{e:?}");
}

#[test]
fn expire_due_records_each_expiry_once_with_its_rev() {
    require_redis();
    let mut p = Pair::new();
    for i in 0..30 {
        p.op("string.set", json!({"key": format!("k{i}"), "value": "v", "ttl": 1 + (i % 3)}));
    }
    p.op("string.set", json!({"key": "keep", "value": "v"}));
    p.advance(2000); // k0, k3, … (1 s) and k1, k4, … (2 s) are due
    let start_rev = p.emb.store.rev();
    // the embedded active expiry vs dbx_expire_due, in two rounds of at most 15
    let mut total = 0;
    for _ in 0..3 {
        let n = p.emb.store.expire_cycle(p.now, 15);
        let r = p.redis.cmds(&["FCALL", "dbx_expire_due", "0", &p.now.to_string(), "15", BACKLOG]).int();
        assert_eq!(r as usize, n);
        total += n;
    }
    assert_eq!(total, 20);
    // each expiry once, with consecutive revs, in deadline order
    let ch = p.redis.changes_after(&p.last_id);
    assert_eq!(ch.len(), 20);
    for (i, c) in ch.iter().enumerate() {
        assert_eq!((c.0, c.1, c.3.as_str()), (start_rev + 1 + i as u64, 1, "expired"));
    }
    let mut gone: Vec<String> = p.emb.store.take_gone().into_iter().map(|(k, _, _)| k.to_string()).collect();
    let mut lua: Vec<String> = ch.iter().map(|c| c.2.clone()).collect();
    gone.sort();
    lua.sort();
    assert_eq!(gone, lua);
    p.last_id = format!("{}-1", ch.last().unwrap().0);
    // nothing left due: idempotent
    let r = p.redis.cmds(&["FCALL", "dbx_expire_due", "0", &p.now.to_string(), "100", BACKLOG]).int();
    assert_eq!(r, 0);
    assert_eq!(p.redis.cmds(&["ZCARD", "__dbx:deadlines"]).int(), 10);
    p.op("server.dbsize", json!({}));
    p.op("key.ttl", json!({"key": "k2"}));
    // a key Redis already dropped (its native PEXPIREAT passed by Redis's clock) is
    // still recorded as expired, once
    p.redis.cmds(&["PEXPIRE", "k2", "1"]);
    std::thread::sleep(Duration::from_millis(5));
    let v = p.redis.exec(p.now, r#"[{"method":"key.exists","params":{"key":"k2"}}]"#);
    assert_eq!(v["results"][0]["result"]["exists"], false);
    let ch = p.redis.changes_after(&p.last_id);
    assert_eq!(ch.len(), 1);
    assert_eq!((ch[0].2.as_str(), ch[0].3.as_str()), ("k2", "expired"));
}

#[test]
fn flush_scan_watch_read_info_and_init() {
    require_redis();
    let mut p = Pair::new();
    for i in 0..50 {
        p.op("string.set", json!({"key": format!("s{i}"), "value": "v"}));
    }
    p.op("hash.set", json!({"key": "h", "fields": {"b": "2", "a": "1"}}));
    p.op("set.add", json!({"key": "st", "members": ["z", "y", "x"]}));
    p.op("zset.add", json!({"key": "z", "members": [{"member": "b", "score": 2.5}, {"member": "a", "score": 1e16}]}));
    p.op("list.push", json!({"key": "l", "values": ["1", "2"]}));
    p.op("string.set", json!({"key": "t", "value": "v", "ttl": 1}));
    p.op("server.dbsize", json!({}));
    // key.scan: every key once over a full scan, never a __dbx: key
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (e, _) = p.redis.exec1(p.now, "key.scan", &json!({"cursor": cursor, "count": 7}).to_string());
        let v: Value = serde_json::from_str(&e).unwrap();
        for k in v["result"]["keys"].as_array().unwrap() {
            seen.push(k.as_str().unwrap().to_string());
        }
        cursor = v["result"]["cursor"].as_str().unwrap().to_string();
        if cursor == "0" {
            break;
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 55, "{seen:?}");
    assert!(seen.iter().all(|k| !k.starts_with("__dbx:")));
    // A cursor the library did not issue (its check digits do not match) is done, as a
    // cursor past the embedded table is (the embedded table here is far smaller than
    // these); the other parameters are still checked, as embedded checks them whatever
    // the cursor. "1" is too short to carry a check: done through Redis (not compared,
    // slot 1 is inside the embedded table).
    for c in ["99999999", "12345", "18446744073709551615"] {
        p.op("key.scan", json!({"cursor": c}));
        p.op("key.scan", json!({"cursor": c, "type": "stream"}));
    }
    let (e, _) = p.redis.exec1(p.now, "key.scan", r#"{"cursor":"1"}"#);
    assert_eq!(e, r#"{"result":{"cursor":"0","keys":[]}}"#);
    // Leading zeros are allowed, as embedded: "000" is the start.
    let (e, _) = p.redis.exec1(p.now, "key.scan", r#"{"cursor":"000","count":1000}"#);
    let v: Value = serde_json::from_str(&e).unwrap();
    assert_eq!(v["result"]["keys"].as_array().unwrap().len(), 55, "{e}");
    let (e, _) = p.redis.exec1(p.now, "key.scan", r#"{"type":"zset","count":1000}"#);
    assert_eq!(e, r#"{"result":{"cursor":"0","keys":["z"]}}"#);
    let (e, _) = p.redis.exec1(p.now, "key.scan", r#"{"match":"__dbx:*","count":1000}"#);
    assert_eq!(e, r#"{"result":{"cursor":"0","keys":[]}}"#);
    p.op("key.scan", json!({"cursor": "abc"}));
    p.op("key.scan", json!({"type": "stream"}));
    p.op("key.scan", json!({"count": -1}));
    // watch_read: values read with the rev, key.watch's shapes, a due key missing
    let rev = p.emb.store.rev();
    let w = p
        .redis
        .cmds(&["FCALL", "dbx_watch_read", "0", &(p.now + 1000).to_string(), r#"["h","st","z","l","s1","t","nope"]"#])
        .text();
    let v: Value = serde_json::from_str(&w).unwrap();
    assert_eq!(v["rev"], rev);
    assert_eq!(
        v["values"],
        json!({
            "h": {"type": "hash", "value": {"a": "1", "b": "2"}},
            "st": {"type": "set", "value": ["x", "y", "z"]},
            "z": {"type": "zset", "value": [{"member": "b", "score": 2.5}, {"member": "a", "score": 1e16}]},
            "l": {"type": "list", "value": ["1", "2"]},
            "s1": {"type": "string", "value": "v"},
        })
    );
    assert!(w.contains(r#""st":{"type":"set","value":["x","y","z"]}"#), "{w}");
    assert!(w.contains(r#"{"member":"a","score":1e+16}"#), "{w}");
    let w = p
        .redis
        .cmds(&["FCALL_RO", "dbx_watch_read", "0", &p.now.to_string(), r#"{"keys":["h"],"patterns":["s1*","t"]}"#])
        .text();
    let v: Value = serde_json::from_str(&w).unwrap();
    let mut names: Vec<&String> = v["values"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["h", "s1", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "t"]);
    // info
    let info: Value = serde_json::from_str(&p.redis.cmds(&["FCALL_RO", "dbx_info", "0"]).text()).unwrap();
    assert_eq!(info["rev"], rev);
    assert_eq!(info["keys"], 55);
    assert_eq!(info["lib"], "4");
    assert!(info["used_memory"].as_u64().is_some_and(|m| m > 0), "{info}");
    assert_eq!(info["maxmemory"], 0);
    assert_eq!(info["maxmemory_policy"], "noeviction");
    let epoch = info["epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch.len(), 16);
    assert!(epoch.bytes().all(|b| b.is_ascii_hexdigit()));
    // flush: one rev, a new epoch, the history and the library kept
    let before = p.redis.changes_after("0-0").len();
    p.op("server.flush", json!({}));
    p.op("server.dbsize", json!({}));
    p.op("server.flush", json!({}));
    let info: Value = serde_json::from_str(&p.redis.cmds(&["FCALL", "dbx_info", "0"]).text()).unwrap();
    assert_ne!(info["epoch"], epoch);
    assert_eq!(info["keys"], 0);
    assert_eq!(p.redis.changes_after("0-0").len(), before + 2);
    assert_eq!(p.redis.cmds(&["GET", "__dbx:lib"]).text(), "4");
    assert_eq!(p.redis.cmds(&["EXISTS", "__dbx:deadlines"]).int(), 0);
    // init: idempotent; a rev behind the stream (a failover to a lagging replica that
    // kept an older rev key) is raised to the stream's last rev with a new epoch
    let rev = p.emb.store.rev();
    let i1 = p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG]).text();
    assert_eq!(i1, format!(r#"{{"rev":{rev},"epoch":{}}}"#, info["epoch"]));
    p.redis.cmds(&["SET", "__dbx:rev", "1"]);
    let i2: Value = serde_json::from_str(&p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG]).text()).unwrap();
    assert_eq!(i2["rev"], rev + 1);
    assert_ne!(i2["epoch"], info["epoch"]);
    let last = p.redis.changes_after(&format!("{rev}-9"));
    assert_eq!(last, vec![(rev + 1, 1, String::new(), "epoch".to_string())]);
    let ep = p.redis.cmds(&["XRANGE", "__dbx:changes", &format!("{}-1", rev + 1), "+"]);
    let ep = flat(&ep);
    assert!(ep.windows(2).any(|w| w[0] == "ep" && w[1] == i2["epoch"].as_str().unwrap()), "{ep:?}");
    // a gateway delivered rev+5, the new primary is behind: new epoch, rev raised past
    // it, whatever epoch the gateway names; not behind: nothing changes
    let e2 = i2["epoch"].as_str().unwrap().to_string();
    let i3: Value =
        serde_json::from_str(&p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG, &(rev + 1).to_string(), &e2]).text())
            .unwrap();
    assert_eq!((i3["rev"].as_u64(), i3["epoch"].as_str()), (Some(rev + 1), Some(e2.as_str())));
    let i4: Value = serde_json::from_str(
        &p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG, &(rev + 5).to_string(), "0000000000000000"]).text(),
    )
    .unwrap();
    assert_eq!(i4["rev"], rev + 6);
    assert_ne!(i4["epoch"], i2["epoch"]);
    assert_eq!(
        p.redis.changes_after(&format!("{}-1", rev + 1)),
        vec![(rev + 6, 1, String::new(), "epoch".to_string())]
    );
    // the flush changes carry their new epoch too
    let flushes = p.redis.cmds(&["XRANGE", "__dbx:changes", "-", "+"]);
    assert_eq!(flat(&flushes).iter().filter(|f| *f == "ep").count(), 4, "ep fields: 2 flushes + 2 epochs");
    // a fresh database: rev 0 and an epoch
    p.redis.cmds(&["FLUSHALL"]);
    let i5: Value = serde_json::from_str(&p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG]).text()).unwrap();
    assert_eq!(i5["rev"], 0);
    assert_eq!(p.redis.cmds(&["GET", "__dbx:rev"]).text(), "0");
    // a Redis that lost everything (restarted without its data) while a gateway had
    // delivered rev 40: the revs continue past 40 in a new epoch, announced in the stream
    p.redis.cmds(&["FLUSHALL"]);
    let i6: Value =
        serde_json::from_str(&p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG, "40", "x"]).text()).unwrap();
    assert_eq!(i6["rev"], 41);
    assert_eq!(p.redis.changes_after("0-0"), vec![(41, 1, String::new(), "epoch".to_string())]);
    // The last entry a gateway read must still be there as it read it (id, t, k, e): a
    // lost tail whose revs another gateway's writes reused is not "behind" by revs.
    p.redis.cmds(&["FLUSHALL"]);
    let i7: Value = serde_json::from_str(&p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG]).text()).unwrap();
    let e7 = i7["epoch"].as_str().unwrap().to_string();
    for k in ["a", "b", "c"] {
        p.redis.exec1(p.now, "string.set", &json!({"key": k, "value": "v"}).to_string());
    }
    let init_after = |p: &mut Pair, id: &str, t: &str, k: &str| -> Value {
        let r = p.redis.cmds(&["FCALL", "dbx_init", "0", BACKLOG, "2", &e7, id, t, k, "string.set"]).text();
        serde_json::from_str(&r).unwrap()
    };
    let t = p.now.to_string();
    // as read: nothing changes
    let same = init_after(&mut p, "2-1", &t, "b");
    assert_eq!((same["rev"].as_u64(), same["epoch"].as_str()), (Some(3), Some(e7.as_str())));
    // revs 2 and 3 lost in a failover, rev 2 reused by another gateway's write
    // (a replica that never had them: the stream rebuilt with rev 1's entry only)
    p.redis.cmds(&["DEL", "__dbx:changes"]);
    p.redis.cmds(&["XADD", "__dbx:changes", "1-1", "k", "a", "e", "string.set", "t", &t]);
    p.redis.cmds(&["SET", "__dbx:rev", "1"]);
    p.redis.exec1(p.now, "string.set", r#"{"key":"other","value":"v"}"#);
    let lost = init_after(&mut p, "2-1", &t, "b");
    assert_eq!(lost["rev"], 3);
    assert_ne!(lost["epoch"].as_str(), Some(e7.as_str()));
    assert_eq!(p.redis.changes_after("2-1"), vec![(3, 1, String::new(), "epoch".to_string())]);
    // an entry older than the stream's oldest was trimmed, not lost: nothing changes
    let e8 = lost["epoch"].as_str().unwrap().to_string();
    let trimmed = init_after(&mut p, "0-5", &t, "zz");
    assert_eq!((trimmed["rev"].as_u64(), trimmed["epoch"].as_str()), (Some(3), Some(e8.as_str())));
    // watch values sort in byte order, whatever the locale Redis runs with
    p.redis.exec(p.now, r#"[{"method":"set.add","params":{"key":"o","members":["b","B","a","é","_","ab"]}},{"method":"hash.set","params":{"key":"oh","fields":{"é":"1","Z":"2","a":"3"}}}]"#);
    let w = p.redis.cmds(&["FCALL_RO", "dbx_watch_read", "0", &p.now.to_string(), r#"["o","oh"]"#]).text();
    assert!(w.contains(r#""o":{"type":"set","value":["B","_","a","ab","b","é"]}"#), "{w}");
    assert!(w.contains(r#""oh":{"type":"hash","value":{"Z":"2","a":"3","é":"1"}}"#), "{w}");
}

#[test]
fn the_change_stream_is_capped_and_oom_is_redis_s_error() {
    require_redis();
    let mut r = Redis::start();
    let now = now_ms();
    for i in 0..300 {
        let ops = format!(r#"[{{"method":"string.set","params":{{"key":"k{i}","value":"v"}}}}]"#);
        r.cmd(&[b"FCALL", b"dbx_exec", b"0", now.to_string().as_bytes(), b"100", ops.as_bytes()]);
    }
    let len = r.cmds(&["XLEN", "__dbx:changes"]).int();
    assert!((100..300).contains(&len), "XLEN {len}");
    // over maxmemory: dbx_exec is refused whole by Redis (-OOM, the gateway's `oom`);
    // dbx_exec_allow_oom still serves reads and deletes
    r.cmds(&["CONFIG", "SET", "maxmemory", "1"]);
    let ops = r#"[{"method":"string.set","params":{"key":"x","value":"v"}}]"#;
    let e = r.cmds(&["FCALL", "dbx_exec", "0", &now.to_string(), "100", ops]);
    assert!(matches!(&e, Resp::Err(m) if m.starts_with("OOM")), "{e:?}");
    let ops = r#"[{"method":"string.get","params":{"key":"k1"}},{"method":"key.del","params":{"key":"k2"}}]"#;
    let v: Value =
        serde_json::from_str(&r.cmds(&["FCALL", "dbx_exec_allow_oom", "0", &now.to_string(), "100", ops]).text())
            .unwrap();
    assert_eq!(v["results"][0]["result"]["value"], "v");
    assert_eq!(v["results"][1]["result"]["deleted"], 1);
    r.cmds(&["CONFIG", "SET", "maxmemory", "0"]);
}

/// Random operations: every accepted parameter name of a method present half of the time,
/// mostly with a value of the type it takes, sometimes with any JSON value (edge numbers,
/// wrong types, empty containers); keys from a few names holding every type.
struct Fuzz {
    methods: Vec<(String, Vec<String>)>,
    seed: u64,
}

const ANY_VALUES: [&str; 43] = [
    r#""k1""#,
    r#""k2""#,
    r#""k3""#,
    r#""a""#,
    r#""""#,
    r#""3""#,
    r#""-2""#,
    r#""+inf""#,
    r#""-inf""#,
    r#""(1""#,
    r#""nan""#,
    r#""left""#,
    r#""right""#,
    r#""x y""#,
    "0",
    "1",
    "-1",
    "2",
    "7",
    "1.5",
    "-0.5",
    "1e3",
    "1e400",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "true",
    "false",
    "null",
    "[]",
    r#"["k1"]"#,
    r#"["k1","k2","k3"]"#,
    r#"["a","b"]"#,
    "[1]",
    "[true]",
    "{}",
    r#"{"a":"1"}"#,
    r#"{"k1":"v","k2":2}"#,
    r#"{"a":null}"#,
    r#"{"member":"a","score":1}"#,
    r#"[{"member":"a","score":2},{"member":"b","score":"-inf"}]"#,
    r#"[{"member":"a"}]"#,
    r#"["a",{"member":"b","score":1}]"#,
];

impl Fuzz {
    fn new(default_seed: u64) -> Fuzz {
        let table: Value = serde_json::from_str(include_str!("../clients/methods.json")).unwrap();
        let mut methods = Vec::new();
        for (m, def) in table["methods"].as_object().unwrap() {
            // set.pop picks at random and key.scan cursors are Redis's; the others are
            // answered by the gateway (or flush everything)
            let skip =
                ["set.pop", "key.scan", "server.flush", "server.info", "server.save", "key.watch", "key.unwatch"];
            if skip.contains(&m.as_str()) || m.starts_with("pubsub.") || m.starts_with("auth.") {
                continue;
            }
            let mut names = Vec::new();
            for a in def["args"].as_array().into_iter().flatten() {
                let spec = a.as_str().unwrap().split(':').next().unwrap().trim_end_matches('?');
                names.extend(spec.split('|').map(str::to_string));
            }
            for o in def["opts"].as_object().into_iter().flatten() {
                names.push(o.0.clone());
            }
            methods.push((m.clone(), names));
        }
        let seed = std::env::var("DBX_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seed);
        Fuzz { methods, seed }
    }

    fn next(&mut self, n: usize) -> usize {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % n as u64) as usize
    }

    /// (method, params text)
    fn op(&mut self) -> (String, String) {
        let i = self.next(self.methods.len());
        let (m, names) = self.methods[i].clone();
        let mut fields = Vec::new();
        for name in &names {
            if self.next(2) == 0 {
                continue;
            }
            let typed: &[&str] = match name.as_str() {
                "key" | "new_key" => &[r#""k1""#, r#""k2""#, r#""k3""#, r#""a""#, r#""x y""#, r#""new""#],
                "value" => &[r#""v""#, r#""5""#, "12", "-3", "1.50", r#""""#],
                "field" | "member" => &[r#""a""#, r#""b""#, r#""c""#],
                "ttl" => &["1", "0.5", "100", "0", "-1", "2.5"],
                "by" => &["1", "-1", "0", "5", "9223372036854775807"],
                "score" => &["1", "2.5", r#""+inf""#, "-3", "0.1"],
                "min" | "max" => &["0", "1", r#""(1""#, r#""-inf""#, r#""+inf""#, "2.5"],
                "start" | "stop" | "index" => &["0", "1", "-1", "2", "-2", "100"],
                "count" | "offset" | "limit" => &["0", "1", "2", "10"],
                "side" => &[r#""left""#, r#""right""#],
                "nx" | "xx" | "get" | "rev" => &["true", "false"],
                "keys" => &[r#"["k1"]"#, r#"["k1","k2"]"#, r#"["x y","a","zz"]"#, r#"["k3","new"]"#],
                "members" | "fields" | "values" => {
                    &[r#"["a","b"]"#, r#"["c"]"#, r#"[{"member":"a","score":3}]"#, r#"{"a":"1","c":"2"}"#]
                }
                "pairs" => &[r#"{"k1":"v","new":"2"}"#, r#"{"a":"x"}"#],
                _ => &[],
            };
            let v = if !typed.is_empty() && self.next(4) > 0 {
                typed[self.next(typed.len())]
            } else {
                ANY_VALUES[self.next(ANY_VALUES.len())]
            };
            fields.push(format!("{}:{v}", json!(name)));
        }
        (m, format!("{{{}}}", fields.join(",")))
    }
}

fn seed_data(p: &mut Pair) {
    for (m, params) in [
        ("string.set", json!({"key": "k1", "value": "5"})),
        ("hash.set", json!({"key": "k2", "fields": {"a": "1", "b": "x"}})),
        ("zset.add", json!({"key": "k3", "members": [{"member": "a", "score": 1}, {"member": "b", "score": 2}]})),
        ("list.push", json!({"key": "a", "values": ["1", "2", "3"]})),
        ("set.add", json!({"key": "x y", "members": ["a", "b"]})),
    ] {
        p.op(m, params);
    }
}

/// Random operations one at a time: the library and the embedded store must agree on
/// every result and error (whichever parameter is wrong first), rev and change.
/// `DBX_FUZZ_SEED=n` runs another sequence.
#[test]
fn random_operations_match_the_embedded_store() {
    require_redis();
    let mut f = Fuzz::new(0x9E37_79B9_7F4A_7C15);
    let mut p = Pair::new();
    seed_data(&mut p);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..4000 {
        let (m, params) = f.op();
        let r = p.op_text(&m, &params);
        let code = r.get("error").map_or("ok".to_string(), |e| e["code"].as_str().unwrap().to_string());
        *outcomes.entry(code).or_insert(0) += 1;
        if round % 100 == 99 {
            p.advance(700); // let short TTLs pass now and then
        }
    }
    println!("outcomes: {outcomes:?}");
    // the mix is broad: successes and each kind of refusal
    for code in ["ok", "invalid_params", "not_found", "wrong_type"] {
        assert!(outcomes.get(code).is_some_and(|n| *n > 5), "{code}: {outcomes:?}");
    }
}

/// The same in batches of 1 to 8 operations, each batch one `dbx_exec` call: the state a
/// call keeps between its operations (deadlines seen, rev, changes) must not drift from
/// the embedded store running them one after the other.
#[test]
fn random_batches_match_the_embedded_store() {
    require_redis();
    let mut f = Fuzz::new(0x2545_F491_4F6C_DD1D);
    let mut p = Pair::new();
    seed_data(&mut p);
    for round in 0..600 {
        let n = 1 + f.next(8);
        let ops: Vec<(String, String)> = (0..n).map(|_| f.op()).collect();
        let text: Vec<String> =
            ops.iter().map(|(m, params)| format!("{{\"method\":{},\"params\":{params}}}", json!(m))).collect();
        let ops_json = format!("[{}]", text.join(","));
        // Odd rounds as one dbx_exec (a batch), even ones as one dbx_run (a gateway's
        // loop turn: plain sets in their compact form, answered by their rev).
        let (rev, results) = if round % 2 == 1 {
            let r = p.redis.cmd(&[
                b"FCALL",
                b"dbx_exec",
                b"0",
                p.now.to_string().as_bytes(),
                BACKLOG.as_bytes(),
                ops_json.as_bytes(),
            ]);
            #[derive(serde::Deserialize)]
            struct Reply<'a> {
                rev: u64,
                #[serde(borrow)]
                results: Vec<&'a serde_json::value::RawValue>,
            }
            let body = r.text();
            let reply: Reply = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            (reply.rev, reply.results.iter().map(|x| x.get().to_string()).collect::<Vec<_>>())
        } else {
            p.redis.run(p.now, &ops)
        };
        assert_eq!(results.len(), n);
        let mut emb_changes = Vec::new();
        for (i, (m, params)) in ops.iter().enumerate() {
            let (emb, _, changes) = p.emb.run(p.now, m, params);
            emb_changes.extend(changes);
            let lua = results[i].as_str();
            let what = format!("op {i} of {ops_json} (round {round})");
            if UNORDERED.contains(&m.as_str()) || m == "hash.get" {
                assert_eq!(normalize(m, lua), normalize(m, &emb), "{what}");
            } else {
                assert_eq!(lua, emb, "{what}");
            }
        }
        assert_eq!(rev, p.emb.store.rev(), "rev after {ops_json}");
        let lua_changes = p.redis.changes_after(&p.last_id);
        if let Some(last) = lua_changes.last() {
            p.last_id = format!("{}-{}", last.0, last.1);
        }
        let lua_changes: Vec<(u64, String, String)> =
            lua_changes.into_iter().map(|(rev, _, k, e)| (rev, k, e)).collect();
        assert_eq!(lua_changes, emb_changes, "changes of {ops_json}");
        if round % 20 == 19 {
            p.advance(700);
        }
    }
}

/// The change stream's layout (library version 4, docs/BACKEND.md section 3): one entry
/// per call whatever its number of changes, id = the rev of its last change; an
/// operation too large for one entry continues in entries of its own (seq 2, 3 …); and
/// a call that fails half way still records what it did.
#[test]
fn one_stream_entry_per_call_and_large_operations_split() {
    require_redis();
    let mut p = Pair::new();
    // 200 plain sets and a JSON op in one dbx_run: one entry, every change with its rev
    let mut ops: Vec<(String, String)> = (0..200)
        .map(|i| ("string.set".to_string(), json!({"key": format!("k{i}"), "value": "v"}).to_string()))
        .collect();
    ops.insert(100, ("hash.set".into(), json!({"key": "h", "fields": {"a": "1", "b": "2"}}).to_string()));
    let (rev, results) = p.redis.run(p.now, &ops);
    assert_eq!(rev, 201);
    assert_eq!(results[0], r#"{"result":{"set":true,"rev":1}}"#);
    assert_eq!(results[100], r#"{"result":{"created":2,"rev":101}}"#);
    assert_eq!(results[200], r#"{"result":{"set":true,"rev":201}}"#);
    let entries = p.redis.entries_after("0-0");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "201-1");
    let ch = &entries[0].2;
    assert_eq!(ch.len(), 201);
    assert!(ch.iter().enumerate().all(|(i, c)| c.0 == i as u64 + 1), "revs 1..201 in order");
    assert_eq!(ch[100], (101, "h".to_string(), "hash.set".to_string()));
    assert_eq!(ch[101], (102, "k100".to_string(), "string.set".to_string()));
    // a mset of 5,000 keys (10,000 fields): its changes go into entries of their own,
    // ids 202-1, 202-2, … and the set after it starts a new entry
    let pairs: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("m{i:05}"), json!("x"))).collect();
    let big = vec![
        ("string.set".to_string(), json!({"key": "before", "value": "v"}).to_string()),
        ("string.mset".to_string(), json!({"pairs": pairs}).to_string()),
        ("string.set".to_string(), json!({"key": "after", "value": "v"}).to_string()),
    ];
    let (rev, _) = p.redis.run(p.now, &big);
    assert_eq!(rev, 204);
    let entries = p.redis.entries_after("201-1");
    let ids: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let sizes: Vec<usize> = entries.iter().map(|e| e.2.len()).collect();
    assert_eq!(ids, ["203-1", "203-2", "204-1"], "the mset continues in an entry of its own: {sizes:?}");
    assert_eq!(entries[1].1, 2);
    let all: Vec<(u64, String, String)> = entries.iter().flat_map(|e| e.2.clone()).collect();
    assert_eq!(all.len(), 5002);
    assert_eq!(all[0], (202, "before".to_string(), "string.set".to_string()));
    assert!(all[1..5001].iter().all(|c| c.0 == 203 && c.2 == "string.mset"));
    let mut keys: Vec<&str> = all[1..5001].iter().map(|c| c.1.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 5000, "every key of the mset once");
    assert_eq!(all[5001], (204, "after".to_string(), "string.set".to_string()));
    // a call that fails half way (here: a malformed compact set, the gateway's bug)
    // answers a RESP error, and the sets before it are recorded with their revs
    let now = p.now.to_string();
    let e = p.redis.cmd(&[
        b"FCALL",
        b"dbx_run",
        b"0",
        now.as_bytes(),
        BACKLOG.as_bytes(),
        b"P",
        b"1",
        b"g1",
        b"v",
        b"P",
        b"1",
        b"g2",
    ]);
    assert!(matches!(e, Resp::Err(_)), "{e:?}");
    assert_eq!(p.redis.cmds(&["GET", "__dbx:rev"]).text(), "205");
    assert_eq!(p.redis.changes_after("204-1"), vec![(205, 1, "g1".to_string(), "string.set".to_string())]);
    // the next call goes on from there
    let (rev, _) = p.redis.run(p.now, &[("string.set".into(), json!({"key": "g3", "value": "v"}).to_string())]);
    assert_eq!(rev, 206);
    // a run naming a reserved key (the gateway refuses them first; a guard): each set on
    // its own, the reserved one refused, nothing of DBX's touched
    let (rev, results) = p.redis.run(
        p.now,
        &[
            ("string.set".into(), json!({"key": "r1", "value": "v"}).to_string()),
            ("string.set".into(), json!({"key": "__dbx:rev", "value": "0"}).to_string()),
            ("string.set".into(), json!({"key": "r2", "value": "v"}).to_string()),
        ],
    );
    assert_eq!(rev, 208);
    assert_eq!(results[0], r#"{"result":{"set":true,"rev":207}}"#);
    assert!(results[1].contains(r#""code":"invalid_params""#), "{}", results[1]);
    assert_eq!(results[2], r#"{"result":{"set":true,"rev":208}}"#);
    assert_eq!(p.redis.cmds(&["GET", "__dbx:rev"]).text(), "208");
    // with a TTL in the database, a run's sets drop the deadlines of the keys they set
    p.redis.run(p.now, &[("string.set".into(), json!({"key": "r1", "value": "v", "ttl": 100}).to_string())]);
    assert!(p.redis.cmds(&["PTTL", "r1"]).int() > 0);
    p.redis.run(
        p.now,
        &[
            ("string.set".into(), json!({"key": "r1", "value": "w"}).to_string()),
            ("string.set".into(), json!({"key": "r3", "value": "w"}).to_string()),
        ],
    );
    assert_eq!(p.redis.cmds(&["PTTL", "r1"]).int(), -1);
    assert_eq!(p.redis.cmds(&["EXISTS", "__dbx:deadlines"]).int(), 0);
    assert_eq!(p.redis.cmds(&["GET", "r1"]).text(), "w");
}

/// Entries written by library versions 1–3 (one change, `k e t`, rev from the id) are
/// still read: a stream written before an upgrade is followed to its end.
#[test]
fn entries_of_earlier_library_versions_are_read() {
    let old = decode_entry("41-2", [("k", "a"), ("e", "string.mset"), ("t", "17")].into_iter());
    assert_eq!(old.seq, 2);
    assert!(old.continues);
    assert_eq!(old.changes.len(), 1);
    let c = &old.changes[0];
    assert_eq!((c.rev, c.key, c.event, c.at, c.epoch), (41, "a", "string.mset", 17, None));
    assert_eq!(old.last, ["17", "a", "string.mset"]);
    let flush = decode_entry("7-1", [("k", ""), ("e", "server.flush"), ("t", "5"), ("ep", "00ff")].into_iter());
    assert_eq!(flush.changes[0].epoch, Some("00ff"));
    // version 4: revs from the id back (`k` one more than the change before, `m` the
    // same), events named once, the epoch on its change only
    let new = decode_entry(
        "13-1",
        [
            ("t", "9"),
            ("e", "string.set"),
            ("k", "a"),
            ("k", "b"),
            ("e", "server.flush"),
            ("ep", "01"),
            ("k", ""),
            ("e", "string.mset"),
            ("k", "x"),
            ("m", "y"),
            ("e", "expired"),
            ("k", "c"),
        ]
        .into_iter(),
    );
    let got: Vec<(u64, &str, &str, Option<&str>)> =
        new.changes.iter().map(|c| (c.rev, c.key, c.event, c.epoch)).collect();
    assert_eq!(
        got,
        [
            (9, "a", "string.set", None),
            (10, "b", "string.set", None),
            (11, "", "server.flush", Some("01")),
            (12, "x", "string.mset", None),
            (12, "y", "string.mset", None),
            (13, "c", "expired", None)
        ]
    );
    assert!(!new.continues);
    assert_eq!(new.last, ["9", "c", "expired"]);
}
