//! The server's own read path (`conn::In`): plain text frames are read from the
//! connection's buffer by the server, every other frame is handed to tungstenite whole.
//! These cases mix both kinds in one TCP write and split frames across writes, so each
//! hand-over between the two (and back) is crossed, and check that replies keep request
//! order and that protocol errors keep their close codes.

mod common;

use common::*;
use std::time::Duration;

/// A request frame for `server.ping` with id `id`.
fn ping_req(id: &str) -> Vec<u8> {
    text_frame(&format!(r#"{{"id":"{id}","method":"server.ping"}}"#))
}

/// The next `n` replies (heartbeats skipped) and, separately, pong payloads seen.
fn replies(ws: &mut RawWs, n: usize) -> (Vec<Value>, Vec<Vec<u8>>) {
    let (mut out, mut pongs) = (Vec::new(), Vec::new());
    while out.len() < n {
        let f = ws.read_frame().expect("frame");
        match f.opcode {
            OP_PONG => pongs.push(f.payload),
            OP_TEXT => {
                let v = f.json();
                if v["type"] == "heartbeat" && v.get("id").is_none() {
                    continue;
                }
                out.push(v);
            }
            _ => panic!("unexpected {f:?}"),
        }
    }
    (out, pongs)
}

#[test]
fn mixed_frames_in_one_write_keep_request_order() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    let big = "v".repeat(10_000); // larger than the read buffer: tungstenite reads it
    let mut bytes = ping_req("a");
    bytes.extend(frame(OP_PING, b"p1", true, true, 0));
    let frag = r#"{"id":"frag","method":"string.set","params":{"key":"f","value":"é"}}"#.as_bytes();
    let cut = frag.iter().position(|&b| b == 0xc3).unwrap() + 1;
    bytes.extend(frame(OP_TEXT, &frag[..cut], true, false, 0));
    bytes.extend(frame(OP_PING, b"p2", true, true, 0)); // inside the fragmented message
    bytes.extend(frame(OP_CONT, &frag[cut..], true, true, 0));
    bytes.extend(ping_req("b"));
    bytes.extend(frame(OP_BINARY, b"\x00\x01", true, true, 0));
    bytes
        .extend(text_frame(&format!(r#"{{"id":"big","method":"string.set","params":{{"key":"g","value":"{big}"}}}}"#)));
    bytes.extend(ping_req("c"));
    bytes.extend(text_frame(r#"{"id":"get","method":"string.get","params":{"key":"g"}}"#));
    bytes.extend(text_frame(r#"{"id":"getf","method":"string.get","params":{"key":"f"}}"#));
    ws.send(&bytes);
    let (r, mut pongs) = replies(&mut ws, 8);
    let ids: Vec<&Value> = r.iter().map(|v| &v["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!("a"),
            &json!("frag"),
            &json!("b"),
            &Value::Null,
            &json!("big"),
            &json!("c"),
            &json!("get"),
            &json!("getf")
        ]
    );
    assert_eq!(r[3]["error"]["code"], "invalid_request");
    assert_eq!(r[6]["result"]["value"], json!(big));
    assert_eq!(r[7]["result"]["value"], "é");
    ws.send(&ping_req("d"));
    let (r, more) = replies(&mut ws, 1);
    assert_eq!(r[0]["id"], "d");
    pongs.extend(more);
    assert_eq!(pongs, [b"p1".to_vec(), b"p2".to_vec()]);
}

#[test]
fn frames_split_across_writes_are_reassembled() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    let one = text_frame(r#"{"id":"one","method":"string.set","params":{"key":"k","value":"日本語"}}"#);
    let two = ping_req("two");
    let three = frame(
        OP_TEXT,
        &vec![b' '; 300].into_iter().chain(*br#"{"id":"three","method":"server.ping"}"#).collect::<Vec<u8>>(),
        true,
        true,
        0,
    );
    let mut all = one.clone();
    all.extend(&two);
    all.extend(&three);
    // Cut inside the first header, inside its mask, inside the payload (mid-character),
    // and between the frames.
    let multi = one.iter().position(|&b| b == 0xe6).unwrap_or(20);
    let cuts = [1, 2, 5, multi + 1, one.len() + 3, one.len() + two.len() + 100];
    let mut from = 0;
    for &cut in &cuts {
        ws.send(&all[from..cut]);
        std::thread::sleep(Duration::from_millis(30));
        from = cut;
    }
    ws.send(&all[from..]);
    let (r, _) = replies(&mut ws, 3);
    assert_eq!(r[0]["id"], "one");
    assert_eq!(r[0]["result"]["set"], true);
    assert_eq!(r[1]["id"], "two");
    assert_eq!(r[2]["id"], "three");
}

#[test]
fn bad_utf8_between_good_frames_closes_1007_after_earlier_replies() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    let mut bytes = ping_req("before");
    bytes.extend(frame(OP_TEXT, b"{\"id\":\"bad\",\"method\":\"\xed\xa0\x80\"}", true, true, 0));
    bytes.extend(ping_req("after"));
    ws.send(&bytes);
    let (r, _) = replies(&mut ws, 1);
    assert_eq!(r[0]["id"], "before");
    assert_eq!(ws.read_close_code(), 1007);
    // Same as the last frame of a batch.
    let mut ws = RawWs::open(s.addr);
    let mut bytes = ping_req("before");
    bytes.extend(frame(OP_TEXT, b"\"\xff\"", true, true, 0));
    ws.send(&bytes);
    let (r, _) = replies(&mut ws, 1);
    assert_eq!(r[0]["id"], "before");
    assert_eq!(ws.read_close_code(), 1007);
    let mut c = connect(&s);
    assert_eq!(c.ok("server.ping", json!({})), json!({"pong":true}));
}

#[test]
fn size_limit_and_protocol_errors_after_good_frames() {
    let s = start(|c| c.max_message_size = 200);
    let prefix = r#"{"id":"lim","method":"server.ping","pad":""#;
    let at = format!("{prefix}{}\"}}", "x".repeat(200 - prefix.len() - 2));
    assert_eq!(at.len(), 200);
    let over = format!("{prefix}{}\"}}", "x".repeat(201 - prefix.len() - 2));
    // At the limit in a batch: answered; one byte over: 1009 after the earlier replies.
    let mut ws = RawWs::open(s.addr);
    let mut bytes = text_frame(&at);
    bytes.extend(ping_req("next"));
    bytes.extend(text_frame(&over));
    bytes.extend(ping_req("never"));
    ws.send(&bytes);
    let (r, _) = replies(&mut ws, 2);
    assert_eq!(r[0]["id"], "lim");
    assert_eq!(r[1]["id"], "next");
    assert_eq!(ws.read_close_code(), 1009);
    // Unmasked and reserved-bit text frames after a good one: 1002.
    for bad in [frame(OP_TEXT, b"{}", false, true, 0), frame(OP_TEXT, b"{}", true, true, 4)] {
        let mut ws = RawWs::open(s.addr);
        let mut bytes = ping_req("first");
        bytes.extend(bad);
        ws.send(&bytes);
        let (r, _) = replies(&mut ws, 1);
        assert_eq!(r[0]["id"], "first");
        assert_eq!(ws.read_close_code(), 1002);
    }
    // A continuation with no message started, after a good frame: 1002.
    let mut ws = RawWs::open(s.addr);
    let mut bytes = ping_req("first");
    bytes.extend(frame(OP_CONT, b"{}", true, true, 0));
    ws.send(&bytes);
    let (r, _) = replies(&mut ws, 1);
    assert_eq!(r[0]["id"], "first");
    assert_eq!(ws.read_close_code(), 1002);
}

#[test]
fn close_in_a_batch_stops_execution_of_later_frames() {
    let s = start_default();
    let mut ws = RawWs::open(s.addr);
    let mut bytes = text_frame(r#"{"id":"s","method":"string.set","params":{"key":"x","value":"1"}}"#);
    bytes.extend(close_frame(1000, "bye"));
    bytes.extend(text_frame(r#"{"id":"t","method":"string.set","params":{"key":"x","value":"2"}}"#));
    ws.send(&bytes);
    let (r, _) = replies(&mut ws, 1);
    assert_eq!(r[0]["id"], "s");
    assert_eq!(ws.read_close_code(), 1000);
    let mut c = connect(&s);
    assert_eq!(c.ok("string.get", json!({"key":"x"}))["value"], "1");
}

#[test]
fn echo_path_echoes_text_and_binary_in_order() {
    let s = TestServer::with(|cfg| {
        cfg.persist = false;
        cfg.ws_rate_limit = 0;
        cfg.echo_path = Some("/echo".into());
    });
    let mut ws = RawWs::open_path(s.addr, "/echo");
    let big = vec![b'z'; 9000];
    let mut bytes = text_frame("one");
    bytes.extend(frame(OP_BINARY, b"\x00two", true, true, 0));
    bytes.extend(frame(OP_TEXT, b"thr", true, false, 0));
    bytes.extend(frame(OP_CONT, b"ee", true, true, 0));
    bytes.extend(frame(OP_TEXT, &big, true, true, 0));
    bytes.extend(text_frame("five"));
    ws.send(&bytes);
    let mut got = Vec::new();
    while got.len() < 5 {
        let f = ws.read_frame().expect("frame");
        got.push((f.opcode, f.payload));
    }
    assert_eq!(
        got,
        [
            (OP_TEXT, b"one".to_vec()),
            (OP_BINARY, b"\x00two".to_vec()),
            (OP_TEXT, b"three".to_vec()),
            (OP_TEXT, big),
            (OP_TEXT, b"five".to_vec())
        ]
    );
}
