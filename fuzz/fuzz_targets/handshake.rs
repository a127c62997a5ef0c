//! The HTTP/1.1 upgrade parser and router (`server::handshake::parse`): arbitrary bytes
//! as a request head. It must never panic, must report a head length within the input,
//! and every refusal must render as an HTTP response.
#![no_main]

use dbx::server::handshake::{self, Parse, Paths, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for paths in [
        Paths { ws: Some("/ws"), echo: Some("/echo"), metrics: true },
        Paths { ws: None, echo: None, metrics: false },
    ] {
        match handshake::parse(data, &paths) {
            Parse::Partial => assert!(data.len() <= handshake::MAX_HEAD),
            Parse::Done(route, len) => {
                assert!(len <= data.len());
                match route {
                    Route::Upgrade(up) | Route::Echo(up) => {
                        assert_eq!(up.accept.len(), 28);
                        let r = handshake::switching_protocols(&up.accept, up.protocols.as_deref());
                        assert!(r.starts_with(b"HTTP/1.1 101 "));
                    }
                    Route::Refuse(r) => {
                        assert!((400..600).contains(&r.status));
                        let bytes = handshake::refusal_response(&r);
                        assert!(bytes.starts_with(b"HTTP/1.1 "));
                    }
                    Route::Health { .. } | Route::Metrics(_) => {}
                }
            }
        }
    }
    // The query decoder on its own (it also sees the raw target).
    if let Ok(text) = std::str::from_utf8(data) {
        for (k, v) in handshake::query_pairs(text) {
            std::hint::black_box((k, v));
        }
    }
});
