//! Malformed input at every layer. After each case, a NEW connection must still be
//! served (`server.ping`), and where the contract says so the same connection too.

mod common;

use common::*;
use std::io::Write;

/// A new connection is served.
#[track_caller]
fn still_serving(s: &TestServer) {
    let mut c = connect(s);
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

/// The same raw connection still answers.
#[track_caller]
fn raw_still_open(ws: &mut RawWs) {
    ws.send(&text_frame(r#"{"id":"alive","method":"server.ping"}"#));
    let r = ws.read_json();
    assert_eq!(r["id"], "alive");
    assert_eq!(r["result"], json!({"pong":true}));
}

#[test]
fn garbage_instead_of_http() {
    // A short handshake timeout: input that is still a valid prefix of a request is
    // closed without an answer when it runs out.
    let s = start(|c| c.ws_timeout = 1.0);
    let cases: Vec<(Vec<u8>, Option<u16>)> = vec![
        (b"\x00\x01\x02\x03\xff\xfe\r\n\r\n".to_vec(), Some(400)),
        ((0..=255u8).cycle().take(3000).collect(), Some(400)),
        (b"SSH-2.0-OpenSSH_9.0\r\n".to_vec(), Some(400)),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), Some(400)), // TLS ClientHello
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(), Some(400)),             // header without colon
        (b"GET /ws HTTP/1.1\r\nHo\x01st: x\r\n\r\n".to_vec(), Some(400)),
        // Leading empty lines may precede a request line (RFC 9112 §2.2): still partial.
        (b"\r\n\r\n".to_vec(), None),
    ];
    for (bytes, status) in cases {
        let resp = raw_http(s.addr, &bytes);
        match status {
            Some(st) => {
                let r = parse_http(&resp);
                assert_eq!(r.status, st, "{bytes:?} → {resp:?}");
                assert_error(&r.json()["error"], "bad_request");
            }
            None => assert_eq!(resp, "", "{bytes:?}"),
        }
        still_serving(&s);
    }
}

#[test]
fn oversized_headers() {
    let s = start_default();
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.truncate(bytes.len() - 2);
    bytes.extend(format!("X-Huge: {}\r\n\r\n", "h".repeat(64 * 1024)).into_bytes());
    let r = http(s.addr, &bytes);
    assert_eq!(r.status, 431);
    still_serving(&s);
}

#[test]
fn peer_vanishes_mid_handshake() {
    let s = start_default();
    {
        let mut sock = raw_tcp(s.addr);
        sock.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
    } // dropped: EOF in the middle of the head
    still_serving(&s);
}

#[test]
fn bad_json_keeps_the_connection() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    for text in ["{", "}", "{\"id\":1,", "nul", "{\"id\":1 \"method\":\"x\"}", "\u{0}", "", "   ", "{'id':1}"] {
        ws.send(&text_frame(text));
        let r = ws.read_json();
        assert_eq!(r["id"], json!(null), "{text:?} → {r}");
        assert_error(&r["error"], "invalid_request");
        raw_still_open(&mut ws);
    }
    still_serving(&s);
}

/// A 10,000-deep JSON document is `invalid_request` wherever the nesting is (also in
/// parts of the request the method does not read), and the connection stays open.
#[test]
fn deeply_nested_json_is_invalid_request() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    let depth = 10_000;
    let arr = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let obj = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let cases = [
        // In a parameter the method reads.
        format!(r#"{{"id":1,"method":"string.get","params":{{"key":{arr}}}}}"#),
        format!(r#"{{"id":1,"method":"string.set","params":{{"key":"k","value":{obj}}}}}"#),
        // In a parameter the method ignores.
        format!(r#"{{"id":1,"method":"server.ping","params":{{"x":{arr}}}}}"#),
        // In an unknown top-level field.
        format!(r#"{{"id":1,"method":"server.ping","extra":{obj}}}"#),
        format!(r#"{{"id":1,"method":"server.ping","timestamp":{arr}}}"#),
        // Inside a batch operation.
        format!(
            r#"{{"id":1,"method":"batch","params":{{"operations":[{{"method":"server.ping","params":{{"x":{arr}}}}}]}}}}"#
        ),
        // The whole document.
        obj.clone(),
        "[".repeat(depth),
    ];
    for text in &cases {
        ws.send(&text_frame(text));
        let r = ws.read_json();
        assert!(r["id"] == json!(1) || r["id"].is_null(), "{r}");
        assert!(r.get("result").is_none(), "{}… → {r}", &text[..60.min(text.len())]);
        assert_error(&r["error"], "invalid_request");
        raw_still_open(&mut ws);
    }
    // Moderate nesting is fine.
    // (In a parameter that takes any JSON: unknown parameters are refused.)
    let ok = format!(
        r#"{{"id":1,"method":"pubsub.publish","params":{{"channel":"c","data":{}{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    ws.send(&text_frame(&ok));
    assert_eq!(ws.read_json()["result"], json!({"receivers":0}));
    // Brackets inside strings do not count as nesting.
    let key = "[{".repeat(5000);
    ws.send(&text_frame(&json!({"id":2,"method":"string.set","params":{"key":key,"value":"]}\"[{"}}).to_string()));
    assert_eq!(ws.read_json()["result"], json!({"set":true,"rev":1}));
    still_serving(&s);
}

#[test]
fn invalid_utf8_text_frame_closes_1007() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_TEXT, b"{\"id\":1,\"method\":\"\xff\xfe\"}", true, true, 0));
    assert_eq!(ws.read_close_code(), 1007);
    still_serving(&s);
}

#[test]
fn invalid_utf8_across_fragments_closes_1007() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    // "é" is C3 A9; cut after C3 and continue with an invalid byte.
    ws.send(&frame(OP_TEXT, b"{\"a\":\"\xc3", true, false, 0));
    ws.send(&frame(OP_CONT, b"\x28\"}", true, true, 0));
    assert_eq!(ws.read_close_code(), 1007);
    still_serving(&s);
}

#[test]
fn fragmented_text_message_is_reassembled() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    let text = r#"{"id":"frag","method":"string.set","params":{"key":"é","value":"日本"}}"#.as_bytes();
    // Split inside a multi-byte character, with a ping in between.
    let cut = text.iter().position(|&b| b == 0xc3).unwrap() + 1;
    ws.send(&frame(OP_TEXT, &text[..cut], true, false, 0));
    ws.send(&frame(OP_PING, b"mid", true, true, 0));
    ws.send(&frame(OP_CONT, &text[cut..], true, true, 0));
    let mut got_pong = false;
    let reply = loop {
        let f = ws.read_frame().expect("frame");
        match f.opcode {
            OP_PONG => {
                assert_eq!(f.payload, b"mid");
                got_pong = true;
            }
            OP_TEXT => {
                let v = f.json();
                if v["type"] == "heartbeat" {
                    continue;
                }
                break v;
            }
            _ => panic!("{f:?}"),
        }
    };
    assert_eq!(reply["id"], "frag");
    assert_eq!(reply["result"], json!({"set":true,"rev":1}));
    if !got_pong {
        let f = ws.read_frame().expect("pong");
        assert_eq!(f.opcode, OP_PONG);
        assert_eq!(f.payload, b"mid");
    }
    still_serving(&s);
}

#[test]
fn binary_frame_is_invalid_request_and_connection_stays() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_BINARY, br#"{"id":1,"method":"server.ping"}"#, true, true, 0));
    let r = ws.read_json();
    assert_eq!(r["id"], json!(null), "{r}");
    assert!(r.get("result").is_none());
    assert_error(&r["error"], "invalid_request");
    assert_rfc3339_utc(&r["timestamp"]);
    raw_still_open(&mut ws);
    // Via tungstenite too.
    let mut c = connect(&s);
    c.ws.send(tungstenite::Message::binary(vec![1u8, 2, 3])).unwrap();
    let r = c.recv_json();
    assert_eq!(r["id"], json!(null));
    assert_eq!(r["error"]["code"], "invalid_request");
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

#[test]
fn message_over_max_size_closes_1009() {
    let s = start(|c| c.max_message_size = 1024);
    // Exactly at the limit is fine (the reply is invalid_request or not_found, the
    // point is that the connection stays).
    let mut ws = RawWs::open(s.addr);
    assert_eq!(ws.hello["max_message_size"], 1024);
    let prefix = r#"{"id":1,"method":"string.get","params":{"key":""#;
    let suffix = r#""}}"#;
    let key = "k".repeat(1024 - prefix.len() - suffix.len());
    let at_limit = format!("{prefix}{key}{suffix}");
    assert_eq!(at_limit.len(), 1024);
    ws.send(&text_frame(&at_limit));
    assert_eq!(ws.read_json()["error"]["code"], "not_found");
    // One byte more in one frame: close 1009.
    let over = format!("{prefix}{key}k{suffix}");
    ws.send(&text_frame(&over));
    assert_eq!(ws.read_close_code(), 1009);
    still_serving(&s);
    // Over the limit across fragments (each fragment small).
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_TEXT, &[b' '; 300], true, false, 0));
    for _ in 0..3 {
        ws.send(&frame(OP_CONT, &[b' '; 300], true, false, 0));
    }
    ws.send(&frame(OP_CONT, b"{}", true, true, 0));
    assert_eq!(ws.read_close_code(), 1009);
    still_serving(&s);
    // A huge announced length (without the bytes) is refused too.
    let mut ws = RawWs::open(s.addr);
    let mut hdr = vec![0x81u8, 0x80 | 127];
    hdr.extend_from_slice(&(1u64 << 40).to_be_bytes());
    hdr.extend_from_slice(&[1, 2, 3, 4]);
    ws.send(&hdr);
    assert_eq!(ws.read_close_code(), 1009);
    still_serving(&s);
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_TEXT, br#"{"id":1,"method":"server.ping"}"#, false, true, 0));
    assert_eq!(ws.read_close_code(), 1002);
    still_serving(&s);
}

#[test]
fn reserved_bits_close_1002() {
    let s = start_default();
    for rsv in [1u8, 2, 4, 7] {
        let mut ws = RawWs::open(s.addr);
        ws.send(&frame(OP_TEXT, br#"{"id":1,"method":"server.ping"}"#, true, true, rsv));
        assert_eq!(ws.read_close_code(), 1002, "rsv {rsv}");
        still_serving(&s);
    }
}

#[test]
fn reserved_opcodes_and_bad_control_frames_close_1002() {
    let s = start_default();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("opcode 3", frame(0x3, b"x", true, true, 0)),
        ("opcode 0xB", frame(0xB, b"x", true, true, 0)),
        ("continuation without a start", frame(OP_CONT, b"x", true, true, 0)),
        ("fragmented ping", frame(OP_PING, b"x", true, false, 0)),
        ("ping over 125 bytes", frame(OP_PING, &[b'p'; 126], true, true, 0)),
    ];
    for (what, bytes) in cases {
        let mut ws = RawWs::open(s.addr);
        ws.send(&bytes);
        assert_eq!(ws.read_close_code(), 1002, "{what}");
        still_serving(&s);
    }
    // A new text frame while a fragmented message is open.
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_TEXT, b"{", true, false, 0));
    ws.send(&frame(OP_TEXT, b"}", true, true, 0));
    assert_eq!(ws.read_close_code(), 1002);
    still_serving(&s);
}

#[test]
fn ping_gets_pong() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_PING, b"hello?", true, true, 0));
    let f = loop {
        let f = ws.read_frame().expect("pong");
        if f.opcode != OP_TEXT {
            break f;
        }
    };
    assert_eq!(f.opcode, OP_PONG);
    assert_eq!(f.payload, b"hello?");
    assert!(!f.masked);
    // An unsolicited pong is ignored.
    ws.send(&frame(OP_PONG, b"", true, true, 0));
    raw_still_open(&mut ws);
}

#[test]
fn close_handshake_completes() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    ws.send(&close_frame(1000, "bye"));
    assert_eq!(ws.read_close_code(), 1000);
    // Then the server ends the TCP connection.
    ws.expect_eof();
    still_serving(&s);
    // Through tungstenite as well: close, then the peer's close arrives.
    let mut c = connect(&s);
    c.ws.close(None).unwrap();
    loop {
        match c.ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error after close: {e}"),
        }
    }
    // And the server's connection count drops back.
    let mut d = connect(&s);
    poll_until(std::time::Duration::from_secs(5), "connections back to 1", || {
        (d.ok("server.info", json!({}))["connections"] == 1).then_some(())
    });
}

#[test]
fn invalid_close_code_closes_1002() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    // 1005 must not be sent on the wire; a 1-byte close payload is malformed.
    ws.send(&frame(OP_CLOSE, &1005u16.to_be_bytes(), true, true, 0));
    assert_eq!(ws.read_close_code(), 1002);
    let mut ws = RawWs::open(s.addr);
    ws.send(&frame(OP_CLOSE, &[3], true, true, 0));
    assert_eq!(ws.read_close_code(), 1002);
    still_serving(&s);
}

#[test]
fn abrupt_disconnect_mid_frame() {
    let s = start_default();
    {
        let mut ws = RawWs::open(s.addr);
        let f = text_frame(r#"{"id":1,"method":"server.ping"}"#);
        ws.send(&f[..7]);
    }
    still_serving(&s);
    let mut c = connect(&s);
    poll_until(std::time::Duration::from_secs(5), "the dropped connection to be freed", || {
        (c.ok("server.info", json!({}))["connections"] == 1).then_some(())
    });
}
