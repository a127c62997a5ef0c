use super::*;
use std::time::{Duration, Instant};

#[test]
fn literals() {
    assert!(glob_match("", ""));
    assert!(!glob_match("", "a"));
    assert!(!glob_match("a", ""));
    assert!(glob_match("hello", "hello"));
    assert!(!glob_match("hello", "hell"));
    assert!(!glob_match("hell", "hello"));
    assert!(!glob_match("Hello", "hello"), "matching is case-sensitive");
}

#[test]
fn star() {
    assert!(glob_match("*", ""));
    assert!(glob_match("*", "anything"));
    assert!(glob_match("**", "x"));
    assert!(glob_match("user:*", "user:"));
    assert!(glob_match("user:*", "user:42"));
    assert!(!glob_match("user:*", "users:42"));
    assert!(glob_match("*:name", "user:1:name"));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(glob_match("a*b*c", "abc"));
    assert!(!glob_match("a*b*c", "aXXbYY"));
    assert!(glob_match("a*b", "abab"));
    assert!(glob_match("*a", "aaa"));
    assert!(!glob_match("*a", "aab"));
    assert!(glob_match("a**b", "ab"));
    assert!(glob_match("*x*", "abxcd"));
    assert!(!glob_match("*x*", "abcd"));
}

#[test]
fn question_mark() {
    assert!(glob_match("h?llo", "hello"));
    assert!(glob_match("h?llo", "hallo"));
    assert!(!glob_match("h?llo", "hllo"));
    assert!(!glob_match("?", ""));
    assert!(glob_match("??", "ab"));
    assert!(!glob_match("??", "abc"));
    assert!(glob_match("*?", "a"));
    assert!(!glob_match("*?", ""));
}

#[test]
fn classes() {
    assert!(glob_match("h[ae]llo", "hello"));
    assert!(glob_match("h[ae]llo", "hallo"));
    assert!(!glob_match("h[ae]llo", "hillo"));
    assert!(glob_match("h[^e]llo", "hallo"));
    assert!(!glob_match("h[^e]llo", "hello"));
    assert!(glob_match("h[a-b]llo", "hbllo"));
    assert!(!glob_match("h[a-b]llo", "hcllo"));
    assert!(glob_match("[z-a]", "m"), "reversed ranges are swapped like Redis");
    assert!(glob_match("[0-9][0-9]", "42"));
    assert!(!glob_match("[0-9]", "x"));
    assert!(glob_match("[a-cx-z]", "y"));
    assert!(glob_match("[a-]", "-"), "a trailing dash is literal");
    assert!(glob_match("[a-]", "a"));
    assert!(!glob_match("[a-]", "b"));
    assert!(glob_match("[\\]]", "]"), "escaped ] inside a class");
    assert!(glob_match("[\\-a]", "-"));
    assert!(glob_match("[*?]", "*"));
    assert!(!glob_match("[*?]", "x"));
    assert!(glob_match("k[0-9]*", "k1abc"));
}

#[test]
fn escapes() {
    assert!(glob_match("\\*", "*"));
    assert!(!glob_match("\\*", "a"));
    assert!(glob_match("\\?", "?"));
    assert!(!glob_match("\\?", "a"));
    assert!(glob_match("\\[a]", "[a]"));
    assert!(glob_match("a\\\\b", "a\\b"));
    assert!(glob_match("\\a", "a"), "escaping an ordinary char is harmless");
    assert!(glob_match("ab\\", "ab\\"), "trailing backslash is literal");
    assert!(!glob_match("ab\\", "ab"));
    assert!(glob_match("*\\*", "star*"));
}

#[test]
fn malformed_classes_do_not_panic() {
    // Unterminated class extends to the end of the pattern.
    assert!(glob_match("[abc", "b"));
    assert!(!glob_match("[abc", "d"));
    assert!(!glob_match("[", "a"), "empty unterminated class matches nothing");
    assert!(!glob_match("[", ""));
    assert!(glob_match("[^", "a"), "negated empty class matches any one char");
    assert!(!glob_match("[]", "a"));
    assert!(!glob_match("[]", ""));
    assert!(glob_match("[^]", "a"));
    assert!(!glob_match("[]]", "]"), "`[]` is an empty class, as in Redis");
    assert!(glob_match("[a-", "a"));
    assert!(glob_match("[a-", "-"));
    assert!(glob_match("[\\", "\\"));
    assert!(!glob_match("[\\", "a"));
    assert!(!glob_match("x[", "x"));
    assert!(!glob_match("x[", "xa"));
    // Exhaustive smoke test over short patterns made of special characters.
    let alphabet = ['*', '?', '[', ']', '^', '-', '\\', 'a', 'é'];
    let subjects = ["", "a", "]", "-", "\\", "aé", "é]a-", "^^"];
    let mut pat = String::new();
    for a in alphabet {
        for b in alphabet {
            for c in alphabet {
                pat.clear();
                pat.push(a);
                pat.push(b);
                pat.push(c);
                for s in subjects {
                    let _ = glob_match(&pat, s);
                    let _ = literal_prefix(&pat);
                }
            }
        }
    }
}

#[test]
fn unicode() {
    assert!(glob_match("?", "é"));
    assert!(glob_match("?", "日"));
    assert!(glob_match("?", "😀"));
    assert!(!glob_match("??", "é"), "one char, not two bytes");
    assert!(glob_match("caf?", "café"));
    assert!(glob_match("*é", "café"));
    assert!(glob_match("[é]", "é"));
    assert!(glob_match("[à-ü]", "é"));
    assert!(!glob_match("[^é]", "é"));
    assert!(glob_match("[^é]", "e"));
    assert!(glob_match("日本*", "日本語"));
    assert!(glob_match("\\日", "日"));
    assert!(!glob_match("日本", "日"));
    assert!(glob_match("*😀*", "a😀b"));
}

#[test]
fn adversarial_patterns_are_fast() {
    let long_a = "a".repeat(20_000);
    let start = Instant::now();
    assert!(!glob_match("a*a*a*a*a*a*a*a*a*a*b", &long_a));
    assert!(!glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", &long_a));
    assert!(!glob_match("*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?[b]", &long_a));
    assert!(glob_match("a*a*a*a*a*a*a*a*a*a*a", &long_a));
    let long_pat = "a*".repeat(2_000) + "b";
    assert!(!glob_match(&long_pat, &long_a));
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn literal_detection() {
    assert!(is_literal(""));
    assert!(is_literal("user:42"));
    assert!(is_literal("a]b^c-d"));
    assert!(is_literal("日本"));
    assert!(!is_literal("user:*"));
    assert!(!is_literal("a?"));
    assert!(!is_literal("[a]"));
    assert!(!is_literal("a\\b"));
    // A literal pattern matches exactly itself.
    for p in ["", "user:42", "a]b", "日本"] {
        assert!(glob_match(p, p));
        assert!(!glob_match(p, &format!("{p}x")));
    }
}

#[test]
fn prefixes() {
    assert_eq!(literal_prefix("user:*"), "user:");
    assert_eq!(literal_prefix("user:\\*:*"), "user:*:");
    assert_eq!(literal_prefix("*"), "");
    assert_eq!(literal_prefix("a?b"), "a");
    assert_eq!(literal_prefix("ab[c]"), "ab");
    assert_eq!(literal_prefix("plain"), "plain");
    assert_eq!(literal_prefix("tail\\"), "tail\\");
    // Every match starts with the prefix.
    let pat = "us\\*er:[0-9]*";
    let s = "us*er:7abc";
    assert!(glob_match(pat, s));
    assert!(s.starts_with(&literal_prefix(pat)));
}

/// Reference matcher: plain exponential recursion, for cross-checking on tiny inputs.
fn reference(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|k| reference(&p[1..], &s[k..])),
        Some(_) => {
            let (Some(&c), Some(rest)) = (s.first(), s.get(1..)) else {
                return false;
            };
            let pat: String = p.iter().collect();
            match match_token(&pat, 0, c) {
                Some(next) => {
                    let consumed = pat[..next].chars().count();
                    reference(&p[consumed..], rest)
                }
                None => false,
            }
        }
    }
}

#[test]
fn agrees_with_naive_recursion() {
    let alphabet = ['*', '?', 'a', 'b', '[', ']', '\\'];
    let subjects = ["", "a", "b", "ab", "ba", "aab", "abab", "[", "]", "\\", "a]"];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 6) as usize;
        let mut x = seed >> 8;
        let pat: Vec<char> = (0..len)
            .map(|_| {
                let c = alphabet[(x % alphabet.len() as u64) as usize];
                x /= alphabet.len() as u64;
                c
            })
            .collect();
        let pat_s: String = pat.iter().collect();
        for s in subjects {
            let sv: Vec<char> = s.chars().collect();
            assert_eq!(glob_match(&pat_s, s), reference(&pat, &sv), "pattern {pat_s:?} subject {s:?}");
        }
    }
}
