//! Many requests written before any reply is read: replies come in request order.

mod common;

use common::*;

#[test]
fn two_hundred_pipelined_requests_answer_in_order() {
    let s = start_default();
    let mut c = connect(&s);
    let n = 200;
    for i in 0..n {
        // A mix of writes, reads, errors and ids of both kinds.
        let id = if i % 2 == 0 { json!(i) } else { json!(format!("r{i}")) };
        let req = match i % 4 {
            0 => json!({"id":id,"method":"string.incr","params":{"key":"counter"}}),
            1 => json!({"id":id,"method":"string.get","params":{"key":"counter"}}),
            2 => json!({"id":id,"method":"string.get","params":{"key":"missing"}}),
            _ => json!({"id":id,"method":"server.ping"}),
        };
        c.write_raw(&req.to_string());
    }
    c.flush();
    let mut incrs = 0;
    for i in 0..n {
        let want_id = if i % 2 == 0 { json!(i) } else { json!(format!("r{i}")) };
        let r = c.recv_json();
        assert_eq!(r["id"], want_id, "reply {i} out of order: {r}");
        match i % 4 {
            0 => {
                incrs += 1;
                assert_eq!(r["result"], json!({"value":incrs,"rev":incrs}));
            }
            1 => assert_eq!(r["result"], json!({"value":incrs.to_string(),"ttl":null})),
            2 => assert_eq!(r["error"]["code"], "not_found"),
            _ => assert_eq!(r["result"], json!({"pong":true})),
        }
    }
    // Nothing else is pending: the next call gets its own reply.
    assert_eq!(c.ok("string.get", json!({"key":"counter"}))["value"], "50");
}

#[test]
fn pipelined_requests_in_one_tcp_write() {
    // All frames in a single write: the server must split them itself.
    let s = start_default();
    let mut raw = RawWs::open(s.addr);
    let mut bytes = Vec::new();
    for i in 0..300 {
        bytes.extend(text_frame(&format!(r#"{{"id":{i},"method":"string.incr","params":{{"key":"n"}}}}"#)));
    }
    raw.send(&bytes);
    for i in 0..300u64 {
        let r = raw.read_json();
        assert_eq!(r["id"], i);
        assert_eq!(r["result"], json!({"value":i + 1,"rev":i + 1}));
    }
}

#[test]
fn concurrent_clients_each_see_increasing_revs() {
    let s = start_default();
    let addr = s.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = connect_path(addr, "/ws");
                let mut last = 0;
                for i in 0..50 {
                    let r = c.ok("string.incr", json!({"key":"shared"}));
                    let rev = r["rev"].as_u64().unwrap();
                    assert!(rev > last, "thread {t} op {i}: rev {rev} after {last}");
                    // One incr = one rev, so the counter and the rev move together.
                    assert_eq!(r["value"].as_u64().unwrap(), rev);
                    last = rev;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let mut c = connect(&s);
    assert_eq!(c.ok("string.get", json!({"key":"shared"}))["value"], "400");
    assert_eq!(c.rev(), 400);
}
