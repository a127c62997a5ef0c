use super::*;

fn ok(t: &str) -> bool {
    validate(t, 128).is_ok()
}

#[test]
fn accepts_what_serde_json_accepts() {
    let cases = [
        "0",
        "-0",
        "1.5",
        "-1.5e10",
        "1E+2",
        "1e-2",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "\"a\"",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"a\u{1}\"",
        "\"\u{7f}\"",
        "[]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":1}",
        " \t\n\r[ true , false , null ] ",
        "tru",
        "nul",
        "nulll",
        "[1]]",
        "{\"a\":[{\"b\":\"c\"}]}",
        "\"é😀\"",
        "",
        "  ",
    ];
    for c in cases {
        // serde_json's RawValue is the reference: it skips values the way we do.
        let reference = serde_json::from_str::<&serde_json::value::RawValue>(c).is_ok();
        assert_eq!(ok(c), reference, "{c:?}");
    }
}

#[test]
fn plain_run_matches_the_byte_loop() {
    let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len());
    // Every special byte at every position of strings up to 40 bytes (two 16-byte
    // chunks, an 8-byte one and a tail), over
    // backgrounds of ASCII, high bytes and bytes just above/below the thresholds.
    for bg in [b'a', 0xC3, 0x7F, 0x20, 0x21, 0x5D, 0x5B, 0x23, 0xFF, 0x80] {
        for len in 0..40 {
            let base = vec![bg; len];
            assert_eq!(plain_run(&base), naive(&base));
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1F, 0x0A, 0x01] {
                    let mut s = base.clone();
                    s[at] = special;
                    assert_eq!(plain_run(&s), naive(&s), "{s:?}");
                    if at + 1 < len {
                        s[at + 1] = b'"';
                        assert_eq!(plain_run(&s), naive(&s), "{s:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn depth_is_bounded() {
    let at = format!("{}{}", "[".repeat(128), "]".repeat(128));
    assert!(ok(&at));
    let over = format!("{}{}", "[".repeat(129), "]".repeat(129));
    assert_eq!(validate(&over, 128).unwrap_err().what, "nested too deep");
    let deep = "[".repeat(100_000);
    assert!(!ok(&deep));
}

#[test]
fn strings_report_escapes() {
    let mut s = Scanner::new(r#""plain" "a\nb""#, 8);
    let t = s.string().unwrap();
    assert!(!t.escaped);
    assert_eq!(t.inner(), "plain");
    s.skip_ws();
    let t = s.string().unwrap();
    assert!(t.escaped);
    assert_eq!(t.quoted, r#""a\nb""#);
}

#[test]
fn errors_say_where() {
    let e = validate("{\"a\":}", 8).unwrap_err();
    assert_eq!(e, SyntaxError { at: 5, what: "expected a value" });
    assert_eq!(e.to_string(), "expected a value at byte 5");
}

#[test]
fn has_backslash_matches_the_byte_loop() {
    // A backslash (or none) at every position of strings up to 40 bytes (two 16-byte
    // chunks, an 8-byte one and a tail), over
    // backgrounds next to it in value and with the high bit set.
    for bg in [b'a', 0x5B, 0x5D, 0x5C ^ 0x80, 0xDC, 0xFF, 0x00, b'"'] {
        for len in 0..40 {
            let base = vec![bg; len];
            assert!(!has_backslash(&base), "{base:?}");
            for at in 0..len {
                let mut s = base.clone();
                s[at] = b'\\';
                assert!(has_backslash(&s), "{s:?}");
            }
        }
    }
}
