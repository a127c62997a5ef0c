//! Requests executed against a real store: the input is UTF-8 text, one JSON request
//! per line, run in order on a fresh `Store` (with a `Hub`, so watches and pub/sub run
//! too), the clock advancing 250 ms per request so TTLs expire. Goes through
//! `proto::parse_incoming` and `engine::policy::execute` exactly as the reactor does. Nothing may
//! panic, a successful reply must be valid JSON, and an error must carry a known code.
#![no_main]

use dbx::cmd::{Ctx, Outcome, ServerFacts};
use dbx::engine::policy;
use dbx::proto::{Code, Incoming, Json};
use dbx::pubsub::Hub;
use dbx::store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut store = Store::new();
    let mut hub = Hub::new(64, 0);
    let facts = ServerFacts { version: "fuzz", epoch: "0".into(), max_batch: 16, ..ServerFacts::default() };
    let mut now_ms = 1_700_000_000_000u64;
    let mut buf = Vec::with_capacity(1024);
    for line in text.lines().take(64) {
        let Incoming::Request(req) = dbx::proto::parse_incoming(line) else { continue };
        now_ms += 250;
        store.expire_cycle(now_ms, 100);
        buf.clear();
        buf.push(b'{');
        let mut ctx = Ctx::new(&mut store, now_ms, &facts);
        ctx.hub = Some(&mut hub);
        ctx.conn = 1;
        let mut fx = Outcome::default();
        fx.reset(true);
        let res = policy::execute(&mut ctx, &mut fx, None, &req.method, &req.params, &mut Json::fields(&mut buf, true));
        drop(ctx);
        match res {
            Ok(()) => {
                buf.push(b'}');
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&buf) {
                    panic!("{}: reply is not JSON ({e}): {}", req.method, String::from_utf8_lossy(&buf));
                }
            }
            Err(e) => assert!(Code::ALL.contains(&e.code)),
        }
        let _ = store.take_gone();
        hub.out.clear();
    }
});
