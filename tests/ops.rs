//! Operations: `/metrics` parses strictly as Prometheus text, `/health`, and the systemd
//! readiness protocol (READY=1 / STOPPING=1 on a datagram socket passed as NOTIFY_SOCKET).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(port: u16, extra: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbx"));
    cmd.env_clear()
        .env("DBX_PORT", port.to_string())
        .env("DBX_PERSIST", "false")
        .env("DBX_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn wait_http(port: u16, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = http_get(port, path) {
            return r;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A strict reader of the Prometheus text format (0.0.4): every sample belongs to a
/// family declared by `# TYPE` before it, names and labels are well-formed, values
/// parse, and histograms have cumulative buckets ending in +Inf = _count.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples = HashMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad HELP name {name}");
            assert!(helped.insert(name.to_string()), "duplicate HELP {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "bad type {kind}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "duplicate TYPE {name}");
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name in {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("labels in braces");
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').expect("label k=v");
                assert!(valid_name(k), "bad label name {k}");
                assert!(v.starts_with('"') && v.ends_with('"') && v.len() >= 2, "label value must be quoted: {line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample {name} has no TYPE before it");
        samples.insert(series.to_string(), v);
    }
    // Histogram invariants.
    for (fam, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&format!("{fam}_bucket{{le=\""))?.strip_suffix("\"}")?;
                Some((if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{fam} buckets not cumulative");
        let inf = buckets.last().expect("+Inf bucket");
        assert!(inf.0.is_infinite());
        assert_eq!(Some(&inf.1), samples.get(&format!("{fam}_count")), "{fam}: +Inf != _count");
    }
    samples
}

#[test]
fn metrics_parse_strictly_and_count_requests() {
    let port = free_port();
    let data = std::env::temp_dir().join(format!("dbx-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let _p = spawn(port, &[("DBX_PERSIST", "true"), ("DBX_DATA_DIR", data.to_str().unwrap())]);
    wait_http(port, "/health");
    // Some traffic: a request, an error, a refusal.
    let (mut ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/ws")).unwrap();
    ws.read().unwrap(); // hello
    ws.send(tungstenite::Message::text(r#"{"id":1,"method":"string.set","params":{"key":"k","value":"v"}}"#)).unwrap();
    ws.read().unwrap();
    ws.send(tungstenite::Message::text(r#"{"id":2,"method":"string.get","params":{"key":"missing"}}"#)).unwrap();
    ws.read().unwrap();
    http_get(port, "/nope");
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let m = parse_prometheus(&body);
    assert_eq!(m["dbx_connections"], 1.0);
    assert_eq!(m["dbx_keys"], 1.0);
    assert_eq!(m["dbx_requests_total{method=\"string.set\"}"], 1.0);
    assert_eq!(m["dbx_errors_total{code=\"not_found\"}"], 1.0);
    assert_eq!(m["dbx_connections_refused_total{reason=\"not_found\"}"], 1.0);
    assert!(m["dbx_request_duration_seconds_count"] >= 2.0);
    assert!(m["dbx_received_bytes_total"] > 0.0);
    assert!(m.contains_key("dbx_build_info{version=\"0.1.0\"}"));
    // Persistence state (log size, snapshot, fsync lag under the default everysec).
    assert_eq!(m["dbx_persistence_enabled"], 1.0);
    assert_eq!(m["dbx_persistence_degraded"], 0.0);
    assert!(m["dbx_aof_bytes_since_snapshot"] > 0.0);
    assert!(m.contains_key("dbx_fsync_lag_seconds"));
    drop(_p);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn health_reports_state() {
    let port = free_port();
    let _p = spawn(port, &[]);
    let (status, body) = wait_http(port, "/health");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    for field in ["version", "uptime_s", "connections", "keys", "persistence"] {
        assert!(v.get(field).is_some(), "health lacks {field}: {body}");
    }
}

#[test]
fn systemd_ready_and_stopping_arrive_on_notify_socket() {
    let dir = std::env::temp_dir().join(format!("dbx-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = free_port();
    let mut p = spawn(port, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    // READY means listening: the port answers right away.
    assert_eq!(http_get(port, "/health").map(|r| r.0), Some(200));
    unsafe {
        libc::kill(p.0.id() as i32, libc::SIGTERM);
    }
    let n = sock.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = p.0.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
