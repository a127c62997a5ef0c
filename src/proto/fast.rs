//! The common request read in one tight pass, before the general parser.
//!
//! Why: at 16 requests in flight the general parser (`request::parse_general`, built on
//! the validating `Scanner` with its closures and precise errors) was ~2,100 of the
//! server's ~4,760 instructions per `string.set`, for a 100-byte frame. Most frames
//! have one shape: an object with `id`, `method` and a flat `params` object, keys and
//! strings without escapes. This reader handles that shape with inlined byte loops
//! and gives up (None) on anything else: an escape, `null` where it wants a value,
//! `type`, a duplicate, a syntax error. The general parser then reads the frame from
//! the start and is the only one that words errors. So the two never disagree about
//! what a frame means: whenever this returns a request, the general parser returns the
//! same one (`proto::tests::fast_path_agrees_with_the_general_parser` checks this on
//! random mutations of requests; nested params values are read by the `Scanner`
//! itself).

use super::params::{duplicate_field, Fields};
use super::request::{Incoming, Request, MAX_DEPTH};
use super::scan::{plain_run, Scanner};
use super::{Params, Raw};
use std::borrow::Cow;

/// The longest integer id taken here: the general parser reads up to 300 digits
/// without a float parse (longer ones may not be finite).
const MAX_ID_DIGITS: usize = 300;

/// The request in `text`, its params fields pushed into `fields` (empty on entry), or
/// None when the general parser must read it.
pub(super) fn request<'a>(text: &'a str, fields: &mut Fields<'a>) -> Option<Incoming<'a>> {
    let mut c = Cursor { text, rest: text.as_bytes() };
    c.eat(b'{')?;
    let mut id = None;
    let mut method = None;
    let mut params = None;
    loop {
        if c.ws()? != b'"' {
            return None;
        }
        let key = c.plain_bytes()?;
        c.eat(b':')?;
        c.ws()?;
        match key {
            b"id" if id.is_none() => id = Some(c.id()?),
            b"method" if method.is_none() => {
                if c.byte()? != b'"' {
                    return None;
                }
                method = Some(c.plain_str()?);
            }
            b"params" if params.is_none() => params = Some(c.params(fields)?),
            // Another envelope field is skipped, as the general parser does; `type`
            // (a heartbeat) and duplicates are the general parser's.
            b"id" | b"method" | b"params" | b"type" => return None,
            _ => {
                c.value()?;
            }
        }
        match c.ws()? {
            b',' => c.bump(),
            b'}' => {
                c.bump();
                break;
            }
            _ => return None,
        }
    }
    if c.ws().is_some() {
        return None;
    }
    let method = Cow::Borrowed(method?);
    let params = match params {
        Some(json) => {
            if duplicate_field(fields).is_some() {
                return None;
            }
            Params { fields: std::mem::take(fields), json: Some(Raw(json)) }
        }
        None => Params::default(),
    };
    Some(Incoming::Request(Request { id: id.map(Raw), method, params }))
}

struct Cursor<'a> {
    text: &'a str,
    /// The unread part of `text`, as bytes: reading from the front of a slice lets the
    /// compiler drop most bounds checks that `text[pos]` would pay.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// The offset of the next unread byte.
    #[inline(always)]
    fn pos(&self) -> usize {
        self.text.len() - self.rest.len()
    }

    #[inline(always)]
    fn byte(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    #[inline(always)]
    fn bump(&mut self) {
        if let [_, tail @ ..] = self.rest {
            self.rest = tail;
        }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    #[inline(always)]
    fn ws(&mut self) -> Option<u8> {
        // Frames from most clients have no whitespace at all: one compare decides.
        match self.byte()? {
            b if b > b' ' => Some(b),
            _ => self.ws_run(),
        }
    }

    #[inline(never)]
    fn ws_run(&mut self) -> Option<u8> {
        while let [b' ' | b'\t' | b'\n' | b'\r', tail @ ..] = self.rest {
            self.rest = tail;
        }
        self.byte()
    }

    #[inline(always)]
    fn eat(&mut self, b: u8) -> Option<()> {
        if self.ws()? != b {
            return None;
        }
        self.bump();
        Some(())
    }

    #[inline(always)]
    fn text_from(&self, start: usize) -> Option<&'a str> {
        self.text.get(start..self.pos())
    }

    /// A string without escapes starting at its `"`: the bytes between the quotes.
    #[inline(always)]
    fn plain_bytes(&mut self) -> Option<&'a [u8]> {
        let inner = self.rest.get(1..)?;
        let n = plain_run(inner);
        match inner.get(n..) {
            Some([b'"', tail @ ..]) => {
                self.rest = tail;
                inner.get(..n)
            }
            _ => None,
        }
    }

    /// `plain_bytes` as text.
    #[inline(always)]
    fn plain_str(&mut self) -> Option<&'a str> {
        let start = self.pos() + 1;
        let n = self.plain_bytes()?.len();
        self.text.get(start..start + n)
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let before = self.rest.len();
        while let [b'0'..=b'9', tail @ ..] = self.rest {
            self.rest = tail;
        }
        before - self.rest.len()
    }

    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`, as the scanner reads numbers; whether
    /// it is an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<bool> {
        if self.byte() == Some(b'-') {
            self.bump();
        }
        match self.byte()? {
            b'0' => self.bump(),
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let mut integer = true;
        if self.byte() == Some(b'.') {
            self.bump();
            if self.digits() == 0 {
                return None;
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.byte() {
            self.bump();
            if let Some(b'+' | b'-') = self.byte() {
                self.bump();
            }
            if self.digits() == 0 {
                return None;
            }
            integer = false;
        }
        Some(integer)
    }

    #[inline(always)]
    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(w)?;
        Some(())
    }

    /// An object or array inside `params`, read by the general scanner (two levels
    /// deep already: the envelope and `params`). The value of another envelope field is
    /// one level up, so it is counted one deeper than the general parser counts it: a
    /// value at the very limit fails here and the general parser reads the frame again.
    #[inline(never)]
    fn nested(&mut self) -> Option<()> {
        let mut s = Scanner::resume(self.text, self.pos(), 2, MAX_DEPTH);
        s.value().ok()?;
        self.rest = self.text.as_bytes().get(s.pos()..)?;
        Some(())
    }

    /// One value at the cursor (whitespace skipped); its text.
    #[inline(always)]
    fn value(&mut self) -> Option<&'a str> {
        let start = self.pos();
        match self.byte()? {
            b'"' => {
                self.plain_bytes()?;
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            b't' => self.word(b"true")?,
            b'f' => self.word(b"false")?,
            b'n' => self.word(b"null")?,
            b'{' | b'[' => self.nested()?,
            _ => return None,
        }
        self.text_from(start)
    }

    /// The id: an integer (as the general parser takes without a float parse) or a
    /// string without escapes. Its text.
    #[inline(always)]
    fn id(&mut self) -> Option<&'a str> {
        let start = self.pos();
        match self.byte()? {
            b'"' => {
                self.plain_bytes()?;
            }
            b'-' | b'0'..=b'9' => {
                if !self.number()? || self.pos() - start > MAX_ID_DIGITS {
                    return None;
                }
            }
            _ => return None,
        }
        self.text_from(start)
    }

    /// The `params` object at the cursor: its fields pushed into `fields`; its text.
    #[inline(always)]
    fn params(&mut self, fields: &mut Fields<'a>) -> Option<&'a str> {
        let start = self.pos();
        self.eat(b'{')?;
        if self.ws()? == b'}' {
            self.bump();
            return self.text_from(start);
        }
        loop {
            if self.ws()? != b'"' {
                return None;
            }
            let name = self.plain_str()?;
            self.eat(b':')?;
            self.ws()?;
            let v = self.value()?;
            fields.push((Cow::Borrowed(name), Raw(v)));
            match self.ws()? {
                b',' => self.bump(),
                b'}' => {
                    self.bump();
                    return self.text_from(start);
                }
                _ => return None,
            }
        }
    }
}
