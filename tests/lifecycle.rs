//! Connection lifecycle (issue 3): timers without busy polling, heartbeats and
//! liveness, the handshake deadline, the connection limit and RLIMIT_NOFILE, the
//! per-connection token bucket, backpressure and slow consumers, graceful shutdown.
//!
//! Timing: intervals are 1 s where the contract's own figures are used, deadlines are
//! generous, and every wait polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use dbx::config::Config;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A config for these tests: memory only, anonymous on loopback, short timers.
fn cfg() -> Config {
    let mut c = Config::for_tests();
    c.ws_heartbeat_interval = 30.0;
    c.ws_timeout = 30.0;
    c
}

/// Start `dbx` (optionally under a wrapper such as `prlimit`), memory only, on a free
/// port, and wait (10 s at most) until it accepts connections.
fn spawn(wrapper: &[&str], env: &[(&str, &str)]) -> Dbx {
    Dbx::start(&Opts::memory().wrapper(wrapper).envs(env).start_within(Duration::from_secs(10)))
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

// ---------------------------------------------------------------------------
// 1. The poll timeout comes from the next deadline: an idle server sleeps.

#[test]
fn idle_server_does_not_busy_poll() {
    let mut c = cfg();
    c.ws_heartbeat_interval = 1.0;
    c.ws_timeout = 1.0;
    let srv = TestServer::start(c);
    // One connection keeps heartbeat and liveness timers armed; it answers pings.
    let mut cl = connect_path(srv.addr, "/ws");
    assert_eq!(cl.call("server.ping", json!({}))["result"]["pong"], true);
    let before = srv.cpu_ticks();
    let t0 = Instant::now();
    cl.set_timeout(Duration::from_millis(100));
    while t0.elapsed() < Duration::from_secs(2) {
        let _ = cl.ws.read();
    }
    let used = srv.cpu_ticks() - before;
    // A spinning loop would burn ~2 s (200 ticks); an idle one almost nothing.
    assert!(used * 1000 / ticks_per_sec() < 300, "reactor used {used} ticks in 2 s idle");
    assert_eq!(cl.call("server.ping", json!({}))["result"]["pong"], true);
}

// ---------------------------------------------------------------------------
// 2. Heartbeats, liveness, handshake deadline.

#[test]
fn heartbeats_text_and_ping_each_at_its_own_phase() {
    let mut c = cfg();
    c.ws_heartbeat_interval = 1.0;
    c.ws_timeout = 5.0;
    let srv = TestServer::start(c);
    let t0 = Instant::now();
    let raws: Vec<RawWs> = (0..8).map(|_| RawWs::connect(srv.addr)).collect();
    // Each connection is read on its own thread, all over the same 2.6 s.
    let readers: Vec<_> = raws
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            std::thread::spawn(move || {
                let deadline = t0 + Duration::from_millis(2600);
                let (mut beats, mut pings) = (Vec::new(), 0);
                while let Some((op, payload)) = r.frame(deadline).unwrap() {
                    match op {
                        OP_TEXT => {
                            let v: Value = serde_json::from_slice(&payload).unwrap();
                            if v["type"] == "heartbeat" {
                                assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
                                assert!(v.get("id").is_none());
                                beats.push(t0.elapsed());
                            } else {
                                assert_eq!(v["type"], "hello", "{v}");
                            }
                        }
                        OP_PING => pings += 1,
                        other => panic!("unexpected opcode {other}"),
                    }
                }
                // Heartbeats every second (the first at a random point of the first second).
                assert!(beats.len() >= 2, "conn {i}: {} heartbeats in 2.6 s", beats.len());
                assert_eq!(pings, beats.len(), "conn {i}: one Ping per heartbeat");
                for w in beats.windows(2) {
                    let gap = ms(w[1] - w[0]);
                    assert!((700..=1500).contains(&gap), "conn {i}: heartbeat gap {gap} ms");
                }
                ms(beats[0])
            })
        })
        .collect();
    let first_beat: Vec<u64> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    // Each connection has its own phase: the first beats are not all in one instant.
    let spread = first_beat.iter().max().unwrap() - first_beat.iter().min().unwrap();
    assert!(spread >= 30, "first heartbeats at {first_beat:?} ms: no phase spread");
}

/// A raw client that reads everything and answers nothing is closed with 1001 within
/// 1 s after interval + timeout.
#[test]
fn silent_client_closed_1001_after_interval_plus_timeout() {
    let mut c = cfg();
    c.ws_heartbeat_interval = 1.0;
    c.ws_timeout = 1.0;
    let srv = TestServer::start(c);
    let t0 = Instant::now();
    let mut r = RawWs::connect(srv.addr);
    let deadline = t0 + Duration::from_secs(6);
    let closed_at = loop {
        match r.frame(deadline).unwrap() {
            Some((OP_CLOSE, payload)) => {
                assert_eq!(close_code(&payload), Some(1001), "{payload:?}");
                break t0.elapsed();
            }
            Some(_) => {}
            None => panic!("not closed within 6 s"),
        }
    };
    let at = ms(closed_at);
    assert!(at >= 1950, "closed too early: {at} ms (limit 2000 ms)");
    // Contract: within 1 s after the limit (a little slack for a loaded test machine).
    assert!(at <= 3500, "closed too late: {at} ms (limit 2000 ms)");
}

/// Pongs, unsolicited pongs and client heartbeats all count as activity.
#[test]
fn any_frame_counts_as_activity() {
    let mut c = cfg();
    c.ws_heartbeat_interval = 1.0;
    c.ws_timeout = 1.0;
    let srv = TestServer::start(c);

    // (a) A tungstenite client that only reads: it answers each Ping with a Pong.
    let mut pong_only = connect_path(srv.addr, "/ws");
    // (b) A raw client that sends unsolicited Pong frames, nothing else.
    let mut raw_pong = RawWs::connect(srv.addr);
    // (c) A raw client that sends {"type":"heartbeat"} text, never a pong.
    let mut raw_beat = RawWs::connect(srv.addr);

    let t0 = Instant::now();
    let mut next_send = t0;
    pong_only.set_timeout(Duration::from_millis(50));
    let mut beat_replies = Vec::new();
    while t0.elapsed() < Duration::from_millis(3500) {
        if Instant::now() >= next_send {
            raw_pong.send_frame(OP_PONG, b"");
            raw_beat.send_text(r#"{"type":"heartbeat","timestamp":"2024-01-15T10:30:00Z"}"#);
            next_send += Duration::from_millis(400);
        }
        match pong_only.ws.read() {
            Ok(tungstenite::Message::Close(f)) => panic!("pong-only client closed: {f:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("pong-only client: {e}"),
        }
        let soon = Instant::now() + Duration::from_millis(5);
        for r in [&mut raw_pong, &mut raw_beat] {
            while let Some((op, p)) = r.frame(soon).unwrap() {
                assert_ne!(op, OP_CLOSE, "raw client closed: {:?}", close_code(&p));
                if op == OP_TEXT {
                    let v: Value = serde_json::from_slice(&p).unwrap();
                    if v["type"] != "heartbeat" && v["type"] != "hello" {
                        beat_replies.push(v);
                    }
                }
            }
        }
    }
    // A client heartbeat gets no reply.
    assert!(beat_replies.is_empty(), "replies to client heartbeats: {beat_replies:?}");
    // All three are still open after 3.5 s > interval + timeout.
    assert_eq!(pong_only.call("server.ping", json!({}))["result"]["pong"], true);
    for r in [&mut raw_pong, &mut raw_beat] {
        r.send_text(r#"{"id":7,"method":"server.ping"}"#);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (op, p) = r.frame(deadline).unwrap().expect("no reply");
            assert_ne!(op, OP_CLOSE);
            if op == OP_TEXT {
                let v: Value = serde_json::from_slice(&p).unwrap();
                if v["id"] == 7 {
                    assert_eq!(v["result"]["pong"], true);
                    break;
                }
            }
        }
    }
}

/// A large message trickling in counts as activity before its last byte arrives.
#[test]
fn slowly_arriving_frame_counts_as_activity() {
    let mut c = cfg();
    c.ws_heartbeat_interval = 1.0;
    c.ws_timeout = 1.0;
    let srv = TestServer::start(c);
    let mut r = RawWs::connect(srv.addr);
    let value = "s".repeat(60_000);
    let text = format!(r#"{{"id":9,"method":"string.set","params":{{"key":"slow","value":"{value}"}}}}"#);
    let frame = masked_frame(true, OP_TEXT, text.as_bytes());
    // 3.5 s for one frame (limit 2 s), no pongs, no other frame.
    let pieces = 12;
    let step = frame.len().div_ceil(pieces);
    for chunk in frame.chunks(step) {
        r.sock.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (op, p) = r.frame(deadline).unwrap().expect("no reply");
        assert_ne!(op, OP_CLOSE, "closed while the frame was arriving: {:?}", close_code(&p));
        if op == OP_TEXT && p.starts_with(br#"{"id":9,"#) {
            let v: Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["result"]["set"], true, "{v}");
            break;
        }
    }
}

/// A TCP connection that never completes its HTTP request is dropped after
/// DBX_WS_TIMEOUT — also when it keeps dribbling bytes (slowloris).
#[test]
fn handshake_deadline_drops_silent_and_slowloris() {
    let mut c = cfg();
    c.ws_timeout = 1.0;
    let srv = TestServer::start(c);
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(srv.addr).unwrap();
    let mut slow = TcpStream::connect(srv.addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let head =
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (mut silent_end, mut slow_end) = (None, None);
    let mut i = 0;
    while (silent_end.is_none() || slow_end.is_none()) && t0.elapsed() < Duration::from_secs(5) {
        if slow_end.is_none() && i < head.len() {
            if slow.write_all(&head[i..i + 1]).is_err() {
                slow_end = Some(t0.elapsed());
            }
            i += 1;
        }
        let mut b = [0u8; 64];
        for (s, end) in [(&mut silent, &mut silent_end), (&mut slow, &mut slow_end)] {
            if end.is_none() {
                match s.read(&mut b) {
                    Ok(0) => *end = Some(t0.elapsed()),
                    Ok(n) => panic!("unexpected answer: {:?}", String::from_utf8_lossy(&b[..n])),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => *end = Some(t0.elapsed()),
                }
            }
        }
    }
    for (what, end) in [("silent", silent_end), ("slowloris", slow_end)] {
        let at = ms(end.unwrap_or_else(|| panic!("{what} connection still open after 5 s")));
        assert!((900..=2500).contains(&at), "{what} connection dropped at {at} ms (timeout 1000 ms)");
    }
    // The server is fine.
    let mut cl = connect_path(srv.addr, "/ws");
    assert_eq!(cl.call("server.ping", json!({}))["result"]["pong"], true);
}

// ---------------------------------------------------------------------------
// 3. Connection limit.

#[test]
fn max_connections_refuses_503_and_frees_slot_on_close() {
    let mut c = cfg();
    c.ws_max_connections = 2;
    let srv = TestServer::start(c);
    let mut a = connect_path(srv.addr, "/ws");
    let _b = connect_path(srv.addr, "/ws");
    let (status, body) = http_status(srv.addr, &upgrade_request("/ws", ""));
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded", "{v}");
    assert!(v["error"]["message"].is_string());
    // Health checks are not WebSocket connections: not refused.
    assert_eq!(http_status(srv.addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").0, 200);
    // Closing one frees its slot.
    a.ws.close(None).unwrap();
    let _ = a.read_close(Duration::from_secs(3));
    let mut c3 =
        poll_within(Duration::from_secs(3), || try_connect_path(srv.addr, "/ws").ok()).expect("slot not freed");
    assert_eq!(c3.call("server.info", json!({}))["result"]["connections"], 2);
}

/// The reactor skips the read that could only say WouldBlock after a short read
/// (`Wire`'s `Read`); a FIN that arrives together with the last requests, without a close
/// frame, must still be seen: the requests are answered and the connection is freed.
#[test]
fn requests_then_bare_fin_are_answered_and_the_connection_freed() {
    let srv = TestServer::start(cfg());
    let mut watcher = connect_path(srv.addr, "/ws");
    for round in 0..5 {
        let mut raw = RawWs::open(srv.addr);
        let mut bytes = Vec::new();
        for i in 0..3 {
            bytes.extend(text_frame(&format!(r#"{{"id":{i},"method":"server.ping"}}"#)));
        }
        raw.send(&bytes);
        raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
        for i in 0..3 {
            let r = raw.read_json();
            assert_eq!(r["id"], i, "round {round}: {r}");
            assert_eq!(r["result"]["pong"], true, "round {round}: {r}");
        }
        let _ = read_to_eof(&mut raw.sock);
        let freed = poll_within(Duration::from_secs(3), || {
            (watcher.call("server.info", json!({}))["result"]["connections"] == 1).then_some(())
        });
        assert!(freed.is_some(), "round {round}: the half-closed connection was not freed");
    }
}

// ---------------------------------------------------------------------------
// 4. Token bucket.

fn rate_cfg(per_minute: u32) -> dbx::config::Config {
    let mut c = cfg();
    c.ws_rate_limit = per_minute;
    c
}

#[test]
fn rate_limit_refuses_with_retry_after_and_refills() {
    // 60 per minute = one token per second, burst 60.
    let srv = TestServer::start(rate_cfg(60));
    let mut cl = connect_path(srv.addr, "/ws");
    for i in 0..60 {
        let r = cl.call("server.ping", json!({}));
        assert_eq!(r["result"]["pong"], true, "request {i}: {r}");
    }
    let r = cl.call("server.ping", json!({}));
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    let wait = r["error"]["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&wait), "retry_after_ms {wait}");
    // After waiting as told, the request goes through.
    std::thread::sleep(Duration::from_millis(wait + 50));
    let r = cl.call("server.ping", json!({}));
    assert_eq!(r["result"]["pong"], true, "after waiting retry_after_ms: {r}");
    // Each connection has its own bucket.
    let mut other = connect_path(srv.addr, "/ws");
    assert_eq!(other.call("server.ping", json!({}))["result"]["pong"], true);
}

#[test]
fn rate_limited_batch_is_refused_whole() {
    let srv = TestServer::start(rate_cfg(5));
    let mut cl = connect_path(srv.addr, "/ws");
    for _ in 0..3 {
        assert_eq!(cl.call("server.ping", json!({}))["result"]["pong"], true);
    }
    // Two tokens left; this batch needs three.
    let ops = json!({"operations": [
        {"method": "string.set", "params": {"key": "rl:a", "value": "1"}},
        {"method": "string.set", "params": {"key": "rl:b", "value": "2"}},
        {"method": "server.ping"},
    ]});
    let r = cl.call("batch", ops);
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    assert!(r["error"]["retry_after_ms"].as_u64().unwrap() >= 1);
    // Nothing was executed (checked on another connection: its own bucket).
    let mut other = connect_path(srv.addr, "/ws");
    let got = other.call("string.get", json!({"key": "rl:a"}));
    assert_eq!(got["error"]["code"], "not_found", "{got}");
    // The refused batch took no tokens: a batch of two fits exactly.
    let ops = json!({"operations": [
        {"method": "string.set", "params": {"key": "rl:b", "value": "2"}},
        {"method": "server.ping"},
    ]});
    let r = cl.call("batch", ops);
    assert_eq!(r["result"]["results"][0]["result"]["set"], true, "{r}");
    assert_eq!(cl.call("server.ping", json!({}))["error"]["code"], "rate_limited");
}

#[test]
fn rate_limit_zero_is_off() {
    let srv = TestServer::start(rate_cfg(0));
    let mut cl = connect_path(srv.addr, "/ws");
    let n = 1500u64;
    for i in 0..n {
        cl.ws.write(tungstenite::Message::text(format!(r#"{{"id":{i},"method":"server.ping"}}"#))).unwrap();
    }
    cl.ws.flush().unwrap();
    for i in 0..n {
        let r = cl.reply(i);
        assert_eq!(r["result"]["pong"], true, "{r}");
    }
}

// ---------------------------------------------------------------------------
// 5. Backpressure.

/// A client that pipelines big reads and never reads the replies: the server stops
/// reading it, its memory stays bounded, and other clients are still served.
#[test]
fn pipelining_non_reader_does_not_grow_server_memory() {
    let mut p = spawn(&[], &[("DBX_WS_MAX_OUTBOUND", "1mb"), ("DBX_WS_RATE_LIMIT", "0")]);
    let mut setter = connect_path(p.addr, "/ws");
    let value = "v".repeat(64 * 1024);
    assert_eq!(setter.call("string.set", json!({"key": "big", "value": value}))["result"]["set"], true);
    let rss0 = p.rss_kib();

    let mut hog = RawWs::connect(p.addr);
    hog.sock.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let req = masked_frame(true, OP_TEXT, br#"{"id":1,"method":"string.get","params":{"key":"big"}}"#);
    // 5000 requests would be 320 MiB of replies. Write until the socket is full (the
    // server stopped reading) or all are sent.
    let mut sent = 0;
    let t0 = Instant::now();
    while sent < 5000 && t0.elapsed() < Duration::from_secs(8) {
        match hog.sock.write(&req) {
            Ok(n) if n == req.len() => sent += 1,
            Ok(_) => break, // partial: the send buffer is full
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    // Let the server process whatever it is going to process.
    std::thread::sleep(Duration::from_millis(1000));
    let rss1 = p.rss_kib();
    let grown = rss1.saturating_sub(rss0);
    assert!(grown < 64 * 1024, "server RSS grew by {grown} KiB ({rss0} → {rss1}) after {sent} pipelined gets");
    // Others are still served while the hog is paused.
    assert_eq!(setter.call("server.ping", json!({}))["result"]["pong"], true);
    // The hog is paused, not cut: it reads its first replies, in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < 50 {
        let (op, payload) = hog.frame(deadline).unwrap().expect("no reply to the hog");
        if op == OP_TEXT && payload.starts_with(br#"{"id":1,"result""#) {
            got += 1;
        }
    }
    assert!(!p.stderr().contains("slow consumer"), "hog was cut off");
    drop(hog);
    p.kill();
}

/// A subscriber that stops reading while events pile up past twice
/// DBX_WS_MAX_OUTBOUND is closed with 1008, and the server logs why.
#[test]
fn slow_subscriber_cut_off_with_1008() {
    let mut p = spawn(&[], &[("DBX_WS_MAX_OUTBOUND", "64kb"), ("DBX_WS_RATE_LIMIT", "0")]);
    let mut sub = RawWs::connect(p.addr);
    sub.send_text(r#"{"id":1,"method":"pubsub.subscribe","params":{"channels":["firehose"]}}"#);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (op, payload) = sub.frame(deadline).unwrap().expect("no subscribe reply");
        if op == OP_TEXT && payload.starts_with(br#"{"id":1,"#) {
            break;
        }
    }
    // Now the subscriber stops reading. Publish far more than the socket buffers hold.
    let mut publ = connect_path(p.addr, "/ws");
    let data = "d".repeat(64 * 1024);
    let mut cut = false;
    for i in 0..400u64 {
        let r = publ.call("pubsub.publish", json!({"channel": "firehose", "data": data}));
        if r["result"]["receivers"] == 0 {
            cut = true;
            break;
        }
        assert!(r.get("error").is_none(), "publish {i}: {r}");
    }
    assert!(cut, "subscriber still receiving after 25 MiB of unread events");
    let log = poll_within(Duration::from_secs(3), || {
        let l = p.stderr();
        l.contains("DBX_WS_MAX_OUTBOUND").then_some(l)
    });
    assert!(log.is_some(), "no log line for the cut: {}", p.stderr());
    // What the subscriber reads ends with a 1008 close frame.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut code = None;
    while let Ok(Some((op, payload))) = sub.frame(deadline) {
        if op == OP_CLOSE {
            code = close_code(&payload);
            break;
        }
    }
    assert_eq!(code, Some(1008), "the cut subscriber saw no 1008 close frame");
    p.kill();
}

// ---------------------------------------------------------------------------
// 6. Graceful shutdown.

fn shutdown_on(sig: i32) {
    let mut p = spawn(&[], &[]);
    let mut a = connect_path(p.addr, "/ws");
    let mut b = connect_path(p.addr, "/ws");
    assert_eq!(a.call("server.ping", json!({}))["result"]["pong"], true);
    p.signal(sig);
    for cl in [&mut a, &mut b] {
        let f = cl.read_close(Duration::from_secs(5)).expect("close frame");
        assert_eq!(u16::from(f.code), 1001);
        assert_eq!(f.reason.as_str(), "server shutting down");
    }
    let st = p.wait_exit(Duration::from_secs(5)).expect("dbx did not exit within 5 s");
    assert_eq!(st.code(), Some(0), "exit status {st}; log: {}", p.stderr());
    // It no longer accepts.
    assert!(TcpStream::connect(p.addr).is_err());
}

#[test]
fn sigterm_closes_every_connection_1001_and_exits_0() {
    shutdown_on(libc::SIGTERM);
}

#[test]
fn sigint_closes_every_connection_1001_and_exits_0() {
    shutdown_on(libc::SIGINT);
}

/// A client that never answers the close handshake does not hold the exit up.
#[test]
fn shutdown_is_bounded_by_unresponsive_clients() {
    let mut p = spawn(&[], &[]);
    let _mute = RawWs::connect(p.addr);
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let st = p.wait_exit(Duration::from_secs(8)).expect("dbx did not exit");
    assert_eq!(st.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(6), "exit took {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------
// 3b. File descriptors: the limit is raised and logged; EMFILE does not spin.

#[test]
fn emfile_pauses_accepting_without_spinning() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit (util-linux) not installed: skipped");
        return;
    }
    let p = spawn(&["prlimit", "--nofile=64", "--"], &[("DBX_WS_MAX_CONNECTIONS", "1000")]);
    assert!(p.stderr().contains("open files limit 64"), "limit not logged: {}", p.stderr());
    let mut a = connect_path(p.addr, "/ws");
    // 100 more connections than the process may have descriptors for.
    let extra: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(p.addr).unwrap()).collect();
    let logged = poll_within(Duration::from_secs(3), || p.stderr().contains("accept failed").then_some(()));
    assert!(logged.is_some(), "EMFILE never hit: {}", p.stderr());
    let before = p.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = p.cpu_ticks() - before;
    assert!(used * 1000 / ticks_per_sec() < 500, "server used {used} ticks in 2 s at EMFILE");
    // Existing connections are still served.
    assert_eq!(a.call("server.ping", json!({}))["result"]["pong"], true);
    // Once descriptors are free again, new connections are accepted.
    drop(extra);
    let mut c =
        poll_within(Duration::from_secs(5), || try_connect_path(p.addr, "/ws").ok()).expect("no accept after EMFILE");
    assert_eq!(c.call("server.ping", json!({}))["result"]["pong"], true);
}

#[test]
fn open_files_limit_is_logged_at_start() {
    let p = spawn(&[], &[]);
    assert!(p.stderr().contains("open files limit"), "{}", p.stderr());
}
