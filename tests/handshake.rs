//! The HTTP side over raw TCP (§1, §8): refusals with status and JSON body, /health,
//! split and glued handshakes, disabled and custom paths, the handshake timeout.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Assert a refusal: status, `{"error":{"code","message"}}` body, JSON content type.
#[track_caller]
fn assert_refusal(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.header("Content-Type").is_some_and(|t| t.starts_with("application/json")), "{r:?}");
    let v = r.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "body is exactly {{\"error\":..}}: {v}");
    assert_eq!(v["error"].as_object().map(|o| o.len()), Some(2), "{v}");
    assert_error(&v["error"], code);
    assert_eq!(r.header("Content-Length").and_then(|l| l.parse::<usize>().ok()), Some(r.body.len()), "{r:?}");
}

fn req(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

fn upgrade_headers(key: Option<&str>) -> String {
    let mut h = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".to_string();
    if let Some(k) = key {
        h.push_str(&format!("Sec-WebSocket-Key: {k}\r\n"));
    }
    h
}

#[test]
fn bad_upgrade_requests_are_400() {
    let s = start_default();
    // Bad key (not 16 bytes of base64), missing key, bad base64.
    for key in [Some("c2hvcnQ="), None, Some("!!!not-base64!!!"), Some("")] {
        let r = http(s.addr, &req("/ws", &upgrade_headers(key)));
        assert_refusal(&r, 400, "bad_request");
    }
    // Connection header without Upgrade.
    let r = http(
        s.addr,
        &req("/ws", &format!("Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n")),
    );
    assert_refusal(&r, 400, "bad_request");
    // HTTP/1.0.
    let r = http(s.addr, format!("GET /ws HTTP/1.0\r\nHost: x\r\n{}\r\n", upgrade_headers(Some(KEY))).as_bytes());
    assert_refusal(&r, 400, "bad_request");
    // Bad client_id values.
    for q in [
        "client_id=bad%20id",
        "client_id=",
        "client_id=a/b",
        &format!("client_id={}", "a".repeat(129)),
        "client_id=%ZZ",
    ] {
        let r = http(s.addr, &req(&format!("/ws?{q}"), &upgrade_headers(Some(KEY))));
        assert_refusal(&r, 400, "bad_request");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("client_id"), "{q}: {r:?}");
    }
    // Malformed request lines.
    for line in [
        "GET\r\n\r\n",
        "GET /ws\r\n\r\n",
        "GET /ws HTTP/1.1 extra\r\n\r\n",
        "G@T /ws HTTP/1.1\r\n\r\n",
        "GET /ws FTP/1.1\r\n\r\n",
    ] {
        let r = http(s.addr, line.as_bytes());
        assert_refusal(&r, 400, "bad_request");
    }
    // A duplicated Sec-WebSocket-Key.
    let r = http(s.addr, &req("/ws", &format!("{}Sec-WebSocket-Key: {KEY}\r\n", upgrade_headers(Some(KEY)))));
    assert_refusal(&r, 400, "bad_request");
}

#[test]
fn good_client_id_and_unknown_params_are_accepted() {
    let s = start_default();
    let id = "a".repeat(128);
    let c = connect_path(s.addr, &format!("/ws?client_id={id}&version=1.0&foo=bar"));
    assert_eq!(c.hello["type"], "hello");
    let c = connect_path(s.addr, "/ws?client_id=App-1.2_x:y");
    assert_eq!(c.hello["type"], "hello");
}

#[test]
fn unsupported_version_is_400() {
    let s = start_default();
    for v in ["2.0", "1", "", "1.1"] {
        let r = http(s.addr, &req(&format!("/ws?version={v}"), &upgrade_headers(Some(KEY))));
        assert_refusal(&r, 400, "unsupported_version");
    }
}

#[test]
fn unknown_path_is_404() {
    let s = start_default();
    for target in ["/", "/nope", "/ws/", "/wss", "/health/x", "/WS"] {
        let r = http(s.addr, &req(target, &upgrade_headers(Some(KEY))));
        assert_refusal(&r, 404, "not_found");
    }
    // Also for other methods on unknown paths.
    let r = http(s.addr, b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_refusal(&r, 404, "not_found");
}

#[test]
fn non_get_is_405() {
    let s = start_default();
    for (method, path) in [
        ("POST", "/ws"),
        ("POST", "/health"),
        ("PUT", "/ws"),
        ("DELETE", "/health"),
        ("HEAD", "/ws"),
        ("POST", "/metrics"),
    ] {
        let r = http(s.addr, format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes());
        assert_refusal(&r, 405, "method_not_allowed");
        // HEAD is answered on /health and /metrics (issue 17), never on the WebSocket path.
        let allow = if path == "/ws" { "GET" } else { "GET, HEAD" };
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn plain_get_on_ws_path_is_426() {
    let s = start_default();
    let r = http(s.addr, &req("/ws", ""));
    assert_refusal(&r, 426, "upgrade_required");
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
    // A WebSocket version other than 13 as well.
    let r = http(
        s.addr,
        &req(
            "/ws",
            &format!(
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n"
            ),
        ),
    );
    assert_refusal(&r, 426, "upgrade_required");
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn oversized_head_is_431() {
    let s = start_default();
    // One huge header, head > 16 KiB.
    let big = format!("X-Big: {}\r\n", "a".repeat(17 * 1024));
    let r = http(s.addr, &req("/ws", &format!("{}{big}", upgrade_headers(Some(KEY)))));
    assert_refusal(&r, 431, "headers_too_large");
    // Many medium headers, head > 16 KiB in total.
    let many: String = (0..40).map(|i| format!("X-H{i}: {}\r\n", "b".repeat(500))).collect();
    let r = http(s.addr, &req("/ws", &many));
    assert_refusal(&r, 431, "headers_too_large");
    // A head that never ends and keeps growing past 16 KiB.
    let mut endless = b"GET /ws HTTP/1.1\r\nX-Long: ".to_vec();
    endless.extend(std::iter::repeat_n(b'z', 20 * 1024));
    let r = http(s.addr, &endless);
    assert_refusal(&r, 431, "headers_too_large");
}

#[test]
fn too_many_headers_is_refused() {
    let s = start_default();
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = http(s.addr, &req("/ws", &format!("{}{many}", upgrade_headers(Some(KEY)))));
    assert_refusal(&r, 431, "headers_too_large");
}

#[test]
fn head_just_under_16k_is_accepted() {
    let s = start_default();
    let base = upgrade_request("/ws", "");
    let pad = 16 * 1024 - base.len() - "X-Pad: \r\n".len();
    let request = upgrade_request("/ws", &format!("X-Pad: {}\r\n", "p".repeat(pad)));
    assert_eq!(request.len(), 16 * 1024);
    let mut ws = RawWs::open_with(s.addr, request.as_bytes());
    ws.send(&text_frame(r#"{"id":1,"method":"server.ping"}"#));
    assert_eq!(ws.read_json()["result"], json!({"pong":true}));
}

#[test]
fn health() {
    let s = start_default();
    let r = http(s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("Content-Type").is_some_and(|t| t.starts_with("application/json")));
    let v = r.json();
    assert_eq!(v["status"], "ok");
    // Query strings are fine, and the connection count is visible.
    let _c = connect(&s);
    let v = http(s.addr, b"GET /health?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["connections"], 1);
}

#[test]
fn metrics_is_prometheus_text() {
    let s = start_default();
    let r = http(s.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")), "{r:?}");
    assert!(r.body.contains("# TYPE "), "{}", r.body);
}

#[test]
fn successful_upgrade_response() {
    let s = start_default();
    let mut sock = raw_tcp(s.addr);
    sock.write_all(upgrade_request("/ws?client_id=test&api_key=ignored", "").as_bytes()).unwrap();
    let mut ws = RawWs::finish(sock);
    assert_eq!(ws.hello["version"], "1.0");
    ws.send(&text_frame(r#"{"id":1,"method":"server.ping"}"#));
    assert_eq!(ws.read_json()["result"], json!({"pong":true}));
}

#[test]
fn handshake_split_into_one_byte_writes() {
    let s = start_default();
    let mut sock = raw_tcp(s.addr);
    for b in upgrade_request("/ws", "").as_bytes() {
        sock.write_all(std::slice::from_ref(b)).unwrap();
        sock.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut ws = RawWs::finish(sock);
    // The first frame split into single bytes too.
    for b in text_frame(r#"{"id":"x","method":"server.ping"}"#) {
        ws.send(&[b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = ws.read_json();
    assert_eq!(r["id"], "x");
    assert_eq!(r["result"], json!({"pong":true}));
}

#[test]
fn first_frames_glued_to_the_handshake_are_answered() {
    let s = start_default();
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.extend(text_frame(r#"{"id":1,"method":"string.set","params":{"key":"k","value":"v"}}"#));
    bytes.extend(text_frame(r#"{"id":2,"method":"string.get","params":{"key":"k"}}"#));
    // One write: head and frames together. The server must not wait for more input.
    let mut ws = RawWs::open_with(s.addr, &bytes);
    let r1 = ws.read_json();
    assert_eq!(r1["id"], 1);
    assert_eq!(r1["result"], json!({"set":true,"rev":1}));
    let r2 = ws.read_json();
    assert_eq!(r2["id"], 2);
    assert_eq!(r2["result"], json!({"value":"v","ttl":null}));
}

#[test]
fn half_a_frame_glued_to_the_handshake() {
    let s = start_default();
    let frame = text_frame(r#"{"id":1,"method":"server.ping"}"#);
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.extend_from_slice(&frame[..5]);
    let mut ws = RawWs::open_with(s.addr, &bytes);
    std::thread::sleep(Duration::from_millis(20));
    ws.send(&frame[5..]);
    assert_eq!(ws.read_json()["result"], json!({"pong":true}));
}

#[test]
fn ws_disabled_answers_404() {
    let s = start(|c| c.ws_enabled = false);
    let r = http(s.addr, upgrade_request("/ws", "").as_bytes());
    assert_refusal(&r, 404, "not_found");
    // /health still works.
    assert_eq!(http(s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
}

#[test]
fn custom_ws_path() {
    let s = start(|c| c.ws_path = "/api/v1/socket".into());
    let mut c = connect_path(s.addr, "/api/v1/socket");
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
    let r = http(s.addr, upgrade_request("/ws", "").as_bytes());
    assert_refusal(&r, 404, "not_found");
    let r = http(s.addr, &req("/api/v1/socket", ""));
    assert_refusal(&r, 426, "upgrade_required");
}

#[test]
fn slowloris_is_cut_off_after_ws_timeout() {
    let s = start(|c| c.ws_timeout = 1.0);
    let mut sock = raw_tcp(s.addr);
    let request = upgrade_request("/ws", "");
    sock.write_all(&request.as_bytes()[..request.len() / 2]).unwrap();
    // The server closes the socket (EOF or reset) without an answer; the read timeout
    // (5 s) is the deadline.
    let got = read_to_eof(&mut sock);
    assert!(got.is_empty() || !String::from_utf8_lossy(&got).contains("101"), "{got:?}");
    // A connection that sends nothing at all is cut off too.
    let mut idle = raw_tcp(s.addr);
    let got = read_to_eof(&mut idle);
    assert!(!String::from_utf8_lossy(&got).contains("101"));
    // And the server still serves.
    let mut c = connect(&s);
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

#[test]
fn handshake_timeout_does_not_apply_after_upgrade() {
    let s = start(|c| c.ws_timeout = 0.3);
    let mut c = connect(&s);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

#[test]
fn connection_limit_is_503_overloaded() {
    let s = start(|c| c.ws_max_connections = 2);
    let _a = connect(&s);
    let b = connect(&s);
    let r = http(s.addr, upgrade_request("/ws", "").as_bytes());
    assert_refusal(&r, 503, "overloaded");
    // HTTP endpoints do not count.
    assert_eq!(http(s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    drop(b);
    let mut c = poll_until(Duration::from_secs(5), "a free connection slot", || try_connect_path(s.addr, "/ws").ok());
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}
