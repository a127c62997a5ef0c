//! The request envelope and the typed parameter accessors (`proto::parse_incoming`,
//! every `Params` method, `raw_str`, `value_text`, `object_fields`): arbitrary UTF-8 as
//! the text of a frame (tungstenite hands the server only valid UTF-8). Nothing may
//! panic; a parameter error must name a code the protocol knows; and the hand-written
//! JSON scanner must agree with serde_json on what is JSON.
#![no_main]

use dbx::proto::{self, Code, Incoming, Params};
use libfuzzer_sys::fuzz_target;

/// Names every accessor is tried with, besides the ones present in the request.
const NAMES: &[&str] = &[
    "key",
    "keys",
    "value",
    "values",
    "member",
    "members",
    "field",
    "fields",
    "ttl",
    "count",
    "by",
    "score",
    "min",
    "max",
    "start",
    "stop",
    "operations",
    "pairs",
    "cursor",
    "match",
    "nx",
    "rev",
    "",
];

fn exercise(p: &Params, name: &str) {
    let _ = p.raw(name);
    let _ = p.has(name);
    let results = [
        p.str(name).err(),
        p.opt_str(name).err(),
        p.value(name).err(),
        p.opt_bool(name).err(),
        p.opt_i64(name).err(),
        p.i64(name).err(),
        p.opt_usize(name).err(),
        p.opt_f64(name).err(),
        p.str_list(name).err(),
        p.value_list(name).err(),
        p.one_or_many(name, "keys").err(),
        p.one_or_many("key", name).err(),
        p.object(name).err(),
        p.array(name).err(),
    ];
    for e in results.into_iter().flatten() {
        assert!(Code::ALL.contains(&e.code));
        let mut buf = Vec::new();
        proto::write_error(&mut buf, &e);
        assert!(serde_json::from_slice::<serde_json::Value>(&buf).is_ok());
    }
    if let Some(raw) = p.raw(name) {
        let _ = proto::raw_str(raw);
        let _ = proto::value_text(raw);
        if let Some(fields) = proto::object_fields(raw) {
            let inner = Params::from_fields(fields);
            for n in NAMES.iter().take(4) {
                let _ = inner.str(n);
                let _ = inner.value(n);
            }
        }
    }
}

/// The id is echoed verbatim into the reply: a string any strict JSON parser reads
/// back (no lone surrogates), or a JSON number (grammar checked by the envelope scan;
/// its magnitude is the client's business, e.g. 1e400).
fn check_id(raw: &str) {
    if raw.starts_with('"') {
        if let Err(e) = serde_json::from_str::<String>(raw) {
            panic!("id {raw} is echoed but is not a readable JSON string: {e}");
        }
    } else {
        assert!(raw.starts_with('-') || raw.starts_with(|c: char| c.is_ascii_digit()), "id {raw}");
    }
}

/// Differential check of our JSON scanner against serde_json: a document serde_json
/// refuses is refused as JSON by us too, and one it accepts is refused only for a reason
/// the envelope adds (nesting depth, a duplicate envelope field, a field name holding a
/// lone surrogate escape, which has no text).
fn check_against_serde(text: &str, outcome: &Incoming) {
    let serde_ok = serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok();
    let message = match outcome {
        Incoming::Invalid { message, .. } => message.as_str(),
        _ => "",
    };
    let invalid_json = message.starts_with("Invalid JSON");
    if !serde_ok {
        assert!(invalid_json || message == "Request must be a JSON object", "{text:?} accepted as JSON: {message}");
    } else if invalid_json {
        assert!(
            ["nested too deep", "duplicate field", "lone surrogate"].iter().any(|w| message.contains(w)),
            "{text:?} refused as JSON though it is: {message}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let outcome = proto::parse_incoming(text);
    check_against_serde(text, &outcome);
    match outcome {
        Incoming::Request(req) => {
            if let Some(id) = req.id {
                check_id(id.get());
            }
            for name in NAMES {
                exercise(&req.params, name);
            }
            // Every name the request actually carries (duplicates included).
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(text) {
                if let Some(serde_json::Value::Object(params)) = m.get("params") {
                    for name in params.keys() {
                        exercise(&req.params, name);
                    }
                }
            }
        }
        Incoming::Heartbeat => {}
        Incoming::Invalid { id, message } => {
            assert!(!message.is_empty());
            if let Some(id) = id {
                check_id(id.get());
            }
        }
    }
});
