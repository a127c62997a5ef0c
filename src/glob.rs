//! Redis-style glob matching, used by `key.scan`'s `match`, pub/sub patterns and the
//! `keys` scope of a JWT.
//!
//! The semantics follow Redis' `stringmatchlen` so that patterns behave the way Redis
//! users expect:
//!
//! * `*` matches any sequence of characters (including none);
//! * `?` matches exactly one character — one Unicode scalar value, not one byte, so
//!   `"?"` matches `"é"`;
//! * `[abc]` matches one of the listed characters, `[a-z]` a range (a reversed range
//!   such as `[z-a]` is accepted, as in Redis), `[^abc]` negates the class;
//!   inside a class `\x` means the literal `x`;
//! * `\x` outside a class matches the literal `x`; a trailing lone `\` matches `\`.
//!
//! Malformed patterns never panic. An unterminated class (`"[abc"`) extends to the end of
//! the pattern, as in Redis; a `]` right after `[` (or `[^`) closes an empty class, which
//! matches nothing (or, negated, any one character).
//!
//! Written by hand rather than taken from a crate because the exact Redis semantics matter
//! (clients port patterns from Redis) and because the matcher must be safe against
//! adversarial patterns: it uses the classic iterative algorithm that remembers only the
//! most recent `*` and backtracks to it, which is O(len(pattern) × len(s)) in the worst
//! case instead of exponential (Redis itself needed a fix for `"a*a*a*a*…b"`). Remembering
//! only the last star is sufficient because every other token consumes exactly one
//! character.

/// Decodes the character starting at byte offset `i` of `s` and returns it with the
/// offset just past it. `None` at the end of `s` (or, defensively, off a char boundary).
fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    s.get(i..)?.chars().next().map(|c| (c, i + c.len_utf8()))
}

/// Matches the single-character class starting right after its `[` (at byte `j`) against
/// `c`. Returns whether `c` is in the class and the offset just past the class.
fn match_class(pattern: &str, mut j: usize, c: char) -> (bool, usize) {
    let mut negate = false;
    if let Some(('^', nj)) = char_at(pattern, j) {
        negate = true;
        j = nj;
    }
    let mut matched = false;
    loop {
        match char_at(pattern, j) {
            // Unterminated class: it extends to the end of the pattern.
            None => break,
            Some((']', nj)) => {
                j = nj;
                break;
            }
            Some(('\\', nj)) => match char_at(pattern, nj) {
                Some((e, nj2)) => {
                    matched |= e == c;
                    j = nj2;
                }
                None => {
                    // A lone trailing backslash stands for itself.
                    matched |= c == '\\';
                    j = nj;
                }
            },
            Some((a, nj)) => {
                // `a-b` is a range unless the `-` is the last thing in the class.
                let range_end = match char_at(pattern, nj) {
                    Some(('-', dash_end)) => match char_at(pattern, dash_end) {
                        Some((b, end)) if b != ']' => Some((b, end)),
                        _ => None,
                    },
                    _ => None,
                };
                match range_end {
                    Some((b, end)) => {
                        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                        matched |= lo <= c && c <= hi;
                        j = end;
                    }
                    None => {
                        matched |= a == c;
                        j = nj;
                    }
                }
            }
        }
    }
    (matched != negate, j)
}

/// Matches the one-character token (anything but `*`) at byte `pi` of `pattern` against
/// `c`. Returns `None` when the token does not match, otherwise the offset just past it.
fn match_token(pattern: &str, pi: usize, c: char) -> Option<usize> {
    let (tok, next) = char_at(pattern, pi)?;
    let (ok, next) = match tok {
        '?' => (true, next),
        '[' => match_class(pattern, next, c),
        '\\' => match char_at(pattern, next) {
            Some((e, after)) => (e == c, after),
            None => (c == '\\', next),
        },
        lit => (lit == c, next),
    };
    ok.then_some(next)
}

/// Whether `s` matches the Redis-style glob `pattern` (see the module docs).
///
/// Never panics and runs in O(len(pattern) × len(s)) time at worst.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let mut pi = 0usize;
    let mut si = 0usize;
    // After a `*`: where the pattern resumes, and where in `s` the current attempt began.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let sc = char_at(s, si);
        match char_at(pattern, pi) {
            Some(('*', mut np)) => {
                while let Some(('*', n2)) = char_at(pattern, np) {
                    np = n2;
                }
                if np >= pattern.len() {
                    // A trailing star matches whatever is left.
                    return true;
                }
                star = Some((np, si));
                pi = np;
                continue;
            }
            Some(_) => {
                let step = sc.and_then(|(c, nsi)| Some((match_token(pattern, pi, c)?, nsi)));
                if let Some((npi, nsi)) = step {
                    pi = npi;
                    si = nsi;
                    continue;
                }
            }
            None => {
                if sc.is_none() {
                    return true;
                }
            }
        }
        // Mismatch: let the most recent star swallow one more character and retry.
        match star {
            Some((sp, ss)) => match char_at(s, ss) {
                Some((_, nss)) => {
                    star = Some((sp, nss));
                    pi = sp;
                    si = nss;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

/// True if `pattern` contains none of `* ? [ \`, i.e. it matches exactly itself and the
/// caller can use an exact lookup instead of a scan.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.bytes().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// The literal text every match of `pattern` must start with (escapes resolved), e.g.
/// `"user:\*:*"` gives `"user:*:"`. Lets a scan over an ordered keyspace start at the
/// prefix and stop once keys no longer begin with it. For a literal pattern this is the
/// whole pattern.
pub fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(e) => out.push(e),
                None => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
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
}
