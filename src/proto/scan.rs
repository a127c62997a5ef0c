//! A validating JSON scanner that hands back spans of the input instead of values.
//!
//! Why not serde_json: a request is read once to find `id`, `method` and the fields of
//! `params`, and each field is typed later by the command that wants it. serde_json
//! did that through `RawValue` and visitor plumbing that cost about a fifth of the
//! server's CPU at 16 requests in flight; this scanner does the same single pass with
//! no allocation but the field list.
//!
//! It accepts exactly RFC 8259 JSON, as serde_json does when it skips a value: strings
//! without raw control characters, escapes `\" \\ \/ \b \f \n \r \t \uXXXX` (a lone
//! surrogate passes the scan, as in serde_json's `RawValue`; turning such a string into
//! text fails later, in `raw_str`), numbers `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`,
//! `true`, `false`, `null`, and whitespace ` \t\n\r`. Nesting is bounded by the
//! caller's depth limit, counted from the outermost bracket, so the recursion is too.
//! The differential fuzz target `envelope` checks it against serde_json.

use std::fmt;

/// Where and why a document is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the offending character (or of the end of input).
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

pub type Scan<T> = Result<T, SyntaxError>;

/// A JSON string token: its text with the quotes, and whether it holds an escape
/// (without one, the text between the quotes is the string itself).
#[derive(Clone, Copy, Debug)]
pub struct StrToken<'a> {
    pub quoted: &'a str,
    pub escaped: bool,
}

impl<'a> StrToken<'a> {
    /// The text between the quotes.
    #[inline]
    pub fn inner(&self) -> &'a str {
        self.quoted.get(1..self.quoted.len().saturating_sub(1)).unwrap_or("")
    }
}

pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    max_depth: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str, max_depth: usize) -> Scanner<'a> {
        Scanner { text, pos: 0, depth: 0, max_depth }
    }

    /// A scanner at `pos` of `text`, inside `depth` containers already (for a reader
    /// that scans the outer levels itself: `proto::fast`).
    pub(super) fn resume(text: &'a str, pos: usize, depth: usize, max_depth: usize) -> Scanner<'a> {
        Scanner { text, pos, depth, max_depth }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn err<T>(&self, what: &'static str) -> Scan<T> {
        Err(self.error_here(what))
    }

    /// An error at the current position (for callers that find a document valid JSON
    /// but not what they accept, e.g. a duplicate field).
    pub fn error_here(&self, what: &'static str) -> SyntaxError {
        SyntaxError { at: self.pos, what }
    }

    /// The current offset in the text (for `span`).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The text from `start` to the current position.
    #[inline]
    pub fn span(&self, start: usize) -> &'a str {
        self.text.get(start..self.pos).unwrap_or("")
    }

    #[inline(always)]
    pub fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// After the document: only whitespace may follow.
    pub fn end(&mut self) -> Scan<()> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => self.err("trailing characters"),
        }
    }

    /// The next non-whitespace byte, not consumed.
    #[inline(always)]
    pub fn next_byte(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek()
    }

    #[inline(always)]
    fn eat(&mut self, b: u8, what: &'static str) -> Scan<()> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else if self.peek().is_none() {
            self.err("unexpected end of input")
        } else {
            self.err(what)
        }
    }

    /// One value of any type; returns its text.
    #[inline(always)]
    pub fn value(&mut self) -> Scan<&'a str> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            // Nested containers out of line: requests carry scalars mostly, and a
            // `value` without the container code inlined is a smaller function.
            Some(b'{') => self.skip_object()?,
            Some(b'[') => self.skip_array()?,
            Some(b't') => self.literal("true")?,
            Some(b'f') => self.literal("false")?,
            Some(b'n') => self.literal("null")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return self.err("expected a value"),
            None => return self.err("unexpected end of input"),
        }
        Ok(self.span(start))
    }

    #[inline(never)]
    fn skip_object(&mut self) -> Scan<()> {
        self.object(|_, s| s.value().map(drop))
    }

    #[inline(never)]
    fn skip_array(&mut self) -> Scan<()> {
        self.array(|s| s.value().map(drop))
    }

    fn literal(&mut self, word: &'static str) -> Scan<()> {
        if self.text.as_bytes().get(self.pos..self.pos + word.len()) == Some(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Scan<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return self.err("invalid number (leading zero)");
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.err("invalid number (no digit after '.')");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number (no digit in exponent)");
            }
        }
        Ok(())
    }

    /// A string starting at the current `"`. The common string — plain characters up
    /// to the closing quote — is read inline; anything else (an escape, an error) by
    /// `string_rest`. As one function this cost ~14 instructions of register saving
    /// per string, more than scanning a short key.
    #[inline(always)]
    pub fn string(&mut self) -> Scan<StrToken<'a>> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        if bytes.get(start) == Some(&b'"') {
            let end = start + 1 + plain_run(bytes.get(start + 1..).unwrap_or_default());
            if bytes.get(end) == Some(&b'"') {
                self.pos = end + 1;
                return Ok(StrToken { quoted: self.span(start), escaped: false });
            }
        }
        self.string_rest(start)
    }

    /// `string` from its start at `start`, the whole way (escapes, errors).
    #[inline(never)]
    fn string_rest(&mut self, start: usize) -> Scan<StrToken<'a>> {
        self.pos = start;
        if self.peek() != Some(b'"') {
            return self.err("expected a string");
        }
        self.pos += 1;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            // The common run of plain characters first (the input is valid UTF-8
            // already, so multi-byte sequences need no checking here).
            self.pos += plain_run(bytes.get(self.pos..).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(StrToken { quoted: self.span(start), escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    Some(h) if h.is_ascii_hexdigit() => self.pos += 1,
                                    _ => return self.err("invalid \\u escape"),
                                }
                            }
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(_) => return self.err("control character in string"),
                None => return self.err("unterminated string"),
            }
        }
    }

    fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return self.err("nested too deep");
        }
        Ok(())
    }

    /// An object starting at the current `{`: `field` is called with each key and must
    /// consume the value that follows the `:`.
    pub fn object<F: FnMut(StrToken<'a>, &mut Scanner<'a>) -> Scan<()>>(&mut self, mut field: F) -> Scan<()> {
        self.container(b'{', b'}', "expected an object", "expected ',' or '}'", |s| {
            s.skip_ws();
            match s.peek() {
                Some(b'"') => {}
                None => return s.err("unexpected end of input"),
                Some(_) => return s.err("expected a key"),
            }
            let key = s.string()?;
            s.eat(b':', "expected ':'")?;
            field(key, s)
        })
    }

    /// An array starting at the current `[`: `elem` must consume one element.
    pub fn array<F: FnMut(&mut Scanner<'a>) -> Scan<()>>(&mut self, elem: F) -> Scan<()> {
        self.container(b'[', b']', "expected an array", "expected ',' or ']'", elem)
    }

    /// `open`, items separated by commas, `close` (objects and arrays alike); `item`
    /// consumes one item.
    fn container<F: FnMut(&mut Scanner<'a>) -> Scan<()>>(
        &mut self,
        open: u8,
        close: u8,
        expected: &'static str,
        separator: &'static str,
        mut item: F,
    ) -> Scan<()> {
        self.skip_ws();
        if self.peek() != Some(open) {
            return self.err(expected);
        }
        self.enter()?;
        self.pos += 1;
        if self.next_byte() != Some(close) {
            loop {
                item(self)?;
                match self.next_byte() {
                    Some(b',') => self.pos += 1,
                    Some(c) if c == close => break,
                    Some(_) => return self.err(separator),
                    None => return self.err("unexpected end of input"),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }
}

/// How many leading bytes of `b` may stand in a JSON string as they are: up to the
/// first `"`, `\\` or control character. Sixteen bytes at a time with SSE2 (part of
/// every x86-64 CPU), eight at a time (SWAR) for the rest and on other targets, because
/// string scanning is most of the work of reading a request and of writing a reply. Always inlined: as a call, saving registers and
/// loading the constants cost more than scanning a short key.
#[inline(always)]
pub fn plain_run(b: &[u8]) -> usize {
    let mut i = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = b.get(i..i + 16) {
        let hits = sse2::flags(chunk, true);
        if hits != 0 {
            return i + hits.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let x = u64::from_le_bytes(chunk);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A byte is flagged when it is zero after the xor (haszero) or below 0x20
        // (hasless). Borrows can only flag bytes above a true match, so the lowest
        // flag is exact.
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether `b` holds a backslash, sixteen or eight bytes at a time (as `plain_run`).
#[inline]
pub fn has_backslash(b: &[u8]) -> bool {
    let mut rest = b;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let (Some(chunk), Some(tail)) = (rest.get(..16), rest.get(16..)) {
        if sse2::flags(chunk, false) != 0 {
            return true;
        }
        rest = tail;
    }
    let mut chunks = rest.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(c) = <[u8; 8]>::try_from(chunk) else { break };
        let x = u64::from_le_bytes(c) ^ (ONES * u64::from(b'\\'));
        // haszero: exact as a yes/no answer (a borrow needs a true zero below it).
        if x.wrapping_sub(ONES) & !x & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&b'\\')
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };

    /// One bit per byte of a 16-byte `chunk` (shorter: no bits): set for a backslash,
    /// and with `string` also for a `"` or a control character.
    #[inline(always)]
    pub(super) fn flags(chunk: &[u8], string: bool) -> u32 {
        let (Some(lo), Some(hi)) = (half(chunk.get(..8)), half(chunk.get(8..16))) else { return 0 };
        // SAFETY: `flags_sse2` needs SSE2, and this module is only compiled where the
        // target has it (every x86-64 CPU does). It takes integers: no pointer, no
        // memory access the compiler does not check.
        unsafe { flags_sse2(lo, hi, string) }
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn flags_sse2(lo: i64, hi: i64, string: bool) -> u32 {
        let x = _mm_set_epi64x(hi, lo);
        let mut hits = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        if string {
            let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
            // x <= 0x1f (unsigned) exactly when max(x, 0x1f) == 0x1f.
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(x, low), low);
            hits = _mm_or_si128(hits, _mm_or_si128(quote, control));
        }
        _mm_movemask_epi8(hits) as u32
    }

    #[inline(always)]
    fn half(b: Option<&[u8]>) -> Option<i64> {
        Some(i64::from_le_bytes(b?.try_into().ok()?))
    }
}

/// Whether `text` is exactly one JSON value (with surrounding whitespace) nested no
/// deeper than `max_depth`.
pub fn validate(text: &str, max_depth: usize) -> Scan<()> {
    let mut s = Scanner::new(text, max_depth);
    s.value()?;
    s.end()
}

#[cfg(test)]
mod tests;
