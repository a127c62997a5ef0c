use super::*;

fn req(text: &str) -> Request<'_> {
    match parse_incoming(text) {
        Incoming::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn envelope() {
    let r = req(r#"{"id":"msg_1","method":"string.get","params":{"key":"my-key"},"timestamp":"x"}"#);
    assert_eq!(r.id.map(|i| i.get()), Some("\"msg_1\""));
    assert_eq!(r.method, "string.get");
    assert_eq!(r.params.str("key").unwrap(), "my-key");
    let r = req(r#"{"method":"server.ping","params":null}"#);
    assert!(r.id.is_none());
    let r = req(r#"{"id":7,"method":"x","params":{"k\u0065y":"v\n"}}"#);
    assert_eq!(r.params.str("key").unwrap(), "v\n");
}

#[test]
fn invalid() {
    for bad in [
        "",
        "[]",
        "[1,2]",
        "42",
        "\"s\"",
        "{",
        "{\"method\":5}",
        "{\"params\":{}}",
        "{\"method\":\"a\",\"params\":[]}",
        "{\"id\":{},\"method\":\"a\"}",
    ] {
        assert!(matches!(parse_incoming(bad), Incoming::Invalid { .. }), "{bad}");
    }
    // Found by fuzzing (envelope target): an id with a lone surrogate escape was
    // echoed into replies that strict JSON parsers cannot read.
    for bad_id in [r#"{"id":"a\ud800b","method":"server.ping"}"#, r#"{"id":"\udc00","method":"x"}"#] {
        match parse_incoming(bad_id) {
            Incoming::Invalid { id, .. } => assert!(id.is_none(), "{bad_id}"),
            other => panic!("{bad_id}: {other:?}"),
        }
    }
    assert!(matches!(parse_incoming(r#"{"id":"a\u00e9\ud83d\ude00","method":"m"}"#), Incoming::Request(_)));
    let deep = "[".repeat(10_000);
    let text = format!("{{\"method\":\"a\",\"params\":{{\"x\":{deep}}}}}");
    assert!(matches!(parse_incoming(&text), Incoming::Invalid { .. }));
    assert!(matches!(parse_incoming(r#"{"type":"heartbeat","timestamp":"x"}"#), Incoming::Heartbeat));
}

#[test]
fn deep_but_well_formed_documents_are_invalid() {
    // Balanced nesting in skipped places (params values, ignored fields).
    let arr = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for text in [
        format!(r#"{{"id":1,"method":"a","params":{{"x":{arr}}}}}"#),
        format!(r#"{{"id":1,"method":"a","extra":{arr}}}"#),
        format!(r#"{{"id":1,"method":"a","params":{{"x":{}1{}}}}}"#, r#"{"a":"#.repeat(200), "}".repeat(200)),
    ] {
        assert!(matches!(parse_incoming(&text), Incoming::Invalid { .. }), "{}", &text[..40]);
    }
    // At the limit: fine. Brackets inside strings do not count.
    let ok = format!(r#"{{"method":"a","params":{{"x":{}{}}}}}"#, "[".repeat(MAX_DEPTH - 2), "]".repeat(MAX_DEPTH - 2));
    assert!(matches!(parse_incoming(&ok), Incoming::Request(_)));
    let over =
        format!(r#"{{"method":"a","params":{{"x":{}{}}}}}"#, "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
    assert!(matches!(parse_incoming(&over), Incoming::Invalid { .. }));
    let strs = format!(r#"{{"method":"a","params":{{"x":"{}\"[{{"}}}}"#, "[{".repeat(1000));
    assert!(matches!(parse_incoming(&strs), Incoming::Request(_)), "{strs}");
}

#[test]
fn params_types() {
    let r = req(r#"{"method":"m","params":{"n":5,"f":1.5,"b":true,"v":42,"l":["a","b"],"s":"x","neg":-1}}"#);
    let p = &r.params;
    assert_eq!(p.opt_i64("n").unwrap(), Some(5));
    assert_eq!(p.opt_f64("f").unwrap(), Some(1.5));
    assert!(p.opt_bool("b").unwrap());
    assert_eq!(p.value("v").unwrap(), "42");
    assert_eq!(p.str_list("l").unwrap().len(), 2);
    let e = p.str("n").unwrap_err();
    assert_eq!(e.code, Code::InvalidParams);
    assert!(e.message.contains("'n'"));
    assert!(p.str("missing").unwrap_err().message.contains("'missing'"));
    assert!(p.opt_usize("neg").is_err());
    assert!(p.opt_i64("f").is_err());
}

#[test]
fn writer() {
    let mut buf = b"{".to_vec();
    Json::fields(&mut buf, true)
        .str("a", "x\"y")
        .opt_i64("t", None)
        .arr("l", |a| {
            a.str("p");
            a.opt_str(None);
        })
        .f64("inf", f64::INFINITY);
    buf.push(b'}');
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(v["a"], "x\"y");
    assert_eq!(v["l"][1], serde_json::Value::Null);
    assert_eq!(v["inf"], "+inf");
}

#[test]
fn timestamps() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_705_314_600_123), "2024-01-15T10:30:00.123Z");
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
}

#[test]
fn params_past_the_inline_fields_keep_their_order_and_duplicates_are_found() {
    let r = req(r#"{"method":"m","params":{"a":1,"b":"2","c":[3],"d":{},"e":5,"f":"six"}}"#);
    assert_eq!(r.params.names().collect::<Vec<_>>(), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(r.params.i64("e").unwrap(), 5);
    assert_eq!(r.params.str("f").unwrap(), "six");
    let mut buf = Vec::new();
    r.params.write_json(&mut buf);
    assert_eq!(String::from_utf8(buf).unwrap(), r#"{"a":1,"b":"2","c":[3],"d":{},"e":5,"f":"six"}"#);
    // A duplicate on either side of the inline limit, or across it.
    for text in [
        r#"{"method":"m","params":{"a":1,"a":2}}"#,
        r#"{"method":"m","params":{"a":1,"b":2,"c":3,"d":4,"e":5,"e":6}}"#,
        r#"{"method":"m","params":{"a":1,"b":2,"c":3,"d":4,"e":5,"b":6}}"#,
    ] {
        match parse_incoming(text) {
            Incoming::Invalid { message, .. } => assert!(message.contains("duplicate field"), "{text}: {message}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn params_are_written_back_as_the_request_sent_them_and_read_back_the_same() {
    let text = "{\"method\":\"m\",\"params\": { \"k\\u0065y\" : \"a\\nb\" ,\"n\":[1, 2] } }";
    let r = req(text);
    let mut buf = Vec::new();
    r.params.write_json(&mut buf);
    let logged = String::from_utf8(buf).unwrap();
    assert_eq!(logged, "{ \"k\\u0065y\" : \"a\\nb\" ,\"n\":[1, 2] }");
    // What replay reads from it is what the request held.
    let back = Params::parse(Raw::parse(&logged)).unwrap();
    assert_eq!(back.names().collect::<Vec<_>>(), ["key", "n"]);
    assert_eq!(back.str("key").unwrap(), "a\nb");
    assert_eq!(back.raw("n").unwrap().get(), "[1, 2]");
    // No params, or null: an empty object.
    for text in [r#"{"method":"m"}"#, r#"{"method":"m","params":null}"#] {
        let mut buf = Vec::new();
        req(text).params.write_json(&mut buf);
        assert_eq!(buf, b"{}");
    }
}

/// `pick` finds what `raw` finds, name by name: absent, `null`, present, and a name
/// given twice in hand-built fields (the first one counts, in both).
#[test]
fn pick_agrees_with_raw() {
    use super::Raw;
    let fields = vec![
        ("key".into(), Raw("\"k\"")),
        ("ttl".into(), Raw("null")),
        ("nx".into(), Raw("true")),
        ("nx".into(), Raw("false")),
        ("value".into(), Raw("12")),
    ];
    let p = Params::from_fields(fields);
    let names = ["key", "value", "ttl", "nx", "xx", "get"];
    let got = p.pick(names);
    for (name, g) in names.iter().zip(got) {
        assert_eq!(g, p.raw(name), "{name}");
    }
    assert_eq!(got[3], Some(Raw("true")));
}

/// The params vector of one request is parsed into by the next (`recycle`): same
/// allocation, same results.
#[test]
fn params_vector_is_reused() {
    use super::{parse_incoming_with, recycle, SpareFields};
    let mut spare = SpareFields::new();
    let mut seen = None;
    for i in 0..3 {
        let text = format!(r#"{{"id":{i},"method":"string.set","params":{{"key":"k{i}","value":"v"}}}}"#);
        let Incoming::Request(r) = parse_incoming_with(&text, spare) else { panic!("{text}") };
        assert_eq!(r.params.str("key").unwrap(), format!("k{i}"));
        assert_eq!(r.params.str("value").unwrap(), "v");
        let fields = r.params.into_fields();
        let at = fields.as_ptr() as usize;
        spare = recycle(fields);
        assert!(spare.is_empty() && spare.capacity() >= 2);
        if let Some(p) = seen {
            assert_eq!(p, at, "request {i} parsed into the same allocation");
        }
        seen = Some(at);
    }
}

/// `duplicate_field` names what `first_duplicate` names, for short and long lists.
#[test]
fn duplicate_field_agrees_with_first_duplicate() {
    use super::params::duplicate_field;
    use super::Raw;
    for names in [&[][..], &["a"], &["a", "b"], &["a", "a"], &["a", "b", "a"], &["a", "b", "b", "a"], &["x", "y", "z"]]
    {
        let fields: Vec<_> = names.iter().map(|n| (std::borrow::Cow::Borrowed(*n), Raw("1"))).collect();
        assert_eq!(duplicate_field(&fields), first_duplicate(names.iter().copied()), "{names:?}");
    }
}

/// Whenever the fast path (`fast::request`) reads a frame, the general parser reads
/// the same request from it: checked on the common shapes (which the fast path must
/// take) and on random mutations of them, which cross every way out of the fast path
/// (escapes, whitespace, `null`, duplicates, nesting, bad numbers, truncation).
#[test]
fn fast_path_agrees_with_the_general_parser() {
    use super::fast;
    use super::request::parse_general;
    let seeds = [
        r#"{"id":12346,"method":"string.set","params":{"key":"key:00004243","value":"0123456789abcdef0123456789abcdef"}}"#,
        r#"{"id":"msg_1","method":"string.get","params":{"key":"my-key"},"timestamp":"2024-01-15T10:30:00.123Z"}"#,
        r#"{ "id": 7, "method": "string.set", "params": { "key": "k", "value": 42, "ttl": 1.5e3, "nx": true } }"#,
        r#"{"id":-1,"method":"hash.set","params":{"key":"h","fields":{"a":"1","b":[1,{"c":null}]}}}"#,
        r#"{"method":"server.ping"}"#,
        r#"{"id":0,"method":"zset.add","params":{"key":"z","members":[{"member":"m","score":-0.5}],"xx":false}}"#,
        r#"{"id":3,"method":"string.set","params":{}}"#,
        "{\"id\":9,\"method\":\"string.set\",\"params\":{\"key\":\"caf\u{e9}\",\"value\":\"\u{1f600}\"}}",
    ];
    for seed in seeds {
        let mut fields = Vec::new();
        let fast = fast::request(seed, &mut fields).unwrap_or_else(|| panic!("the fast path leaves {seed}"));
        assert_eq!(format!("{fast:?}"), format!("{:?}", parse_general(seed, SpareFields::new())), "{seed}");
    }
    // Frames the fast path must leave to the general parser.
    for other in [
        r#"{"type":"heartbeat"}"#,
        r#"{"id":1,"method":"m","type":"a","type":"b"}"#,
        r#"{"id":1,"method":"m","params":{"k\u0065y":"v"}}"#,
        r#"{"id":1,"method":"m","params":{"key":"a\nb"}}"#,
        r#"{"id":null,"method":"m"}"#,
        r#"{"id":1.5,"method":"m"}"#,
        r#"{"id":1,"method":"m","params":null}"#,
        r#"{"id":1,"id":2,"method":"m"}"#,
        r#"{"id":1,"method":"m","params":{"a":1,"a":2}}"#,
        r#"{"id":1,"method":"m"} x"#,
        r#"{"id":1,"method":"m""#,
    ] {
        assert!(fast::request(other, &mut Vec::new()).is_none(), "{other}");
    }
    // Bytes that matter to JSON, and a multi-byte character (inserted whole).
    let alphabet: Vec<String> = [
        "\"", "\\", "{", "}", "[", "]", ":", ",", " ", "\n", "\t", "0", "1", "-", "+", ".", "e", "E", "n", "u", "l",
        "t", "r", "f", "a", "s", "\u{1}", "\u{e9}", "id", "method", "params", "type", "null", "\\u0041", "\\ud800",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let (mut taken, mut total) = (0, 0);
    for seed in seeds {
        for _ in 0..4000 {
            let mut text = seed.to_string();
            for _ in 0..1 + next(3) {
                // Cut only at character boundaries, so the text stays a `str`.
                let mut at = next(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let piece = &alphabet[next(alphabet.len())];
                match next(3) {
                    0 => text.insert_str(at, piece),
                    1 => {
                        let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                        text.replace_range(at..end, "");
                    }
                    _ => {
                        let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                        text.replace_range(at..end, piece);
                    }
                }
            }
            total += 1;
            let mut fields = Vec::new();
            if let Some(fast) = fast::request(&text, &mut fields) {
                taken += 1;
                let general = parse_general(&text, SpareFields::new());
                assert_eq!(format!("{fast:?}"), format!("{general:?}"), "{text}");
            }
        }
    }
    // The mutations must exercise both sides: many frames still taken, many left.
    assert!(taken > total / 10 && taken < total * 9 / 10, "fast path took {taken} of {total}");
}
