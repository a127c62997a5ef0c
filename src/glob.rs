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
mod tests;
