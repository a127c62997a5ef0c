//! Typed access to a request's parameters, and `Raw`, the text of a JSON value the
//! scanner has validated. Errors name the parameter.

use super::scan::{self, Scanner, StrToken};
use super::{write_str, Error, Result, MAX_DEPTH};
use std::borrow::Cow;

/// The text of one JSON value that the scanner has found valid (strings keep their
/// quotes and escapes). Only this module makes one, so holding a `Raw` means the text
/// is JSON: it can be copied verbatim into a reply, the log or an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw<'a>(pub(super) &'a str);

impl<'a> Raw<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }

    /// `text` as one JSON value (surrounding whitespace dropped); None if it is not
    /// one, or nests deeper than `MAX_DEPTH`.
    pub fn parse(text: &'a str) -> Option<Raw<'a>> {
        scan::validate(text, MAX_DEPTH).ok().map(|()| Raw(text.trim_matches([' ', '\t', '\n', '\r'])))
    }
}

/// A key or string token as text: borrowed when it holds no escape. Escapes are rare,
/// so serde_json decodes them; it refuses a lone surrogate, which has no text.
/// Inlined: it runs for every key and string of a request (seven for a `string.set`),
/// and the common case is a borrow; the decoding is out of line.
#[inline]
pub(super) fn token_text(t: StrToken<'_>) -> Option<Cow<'_, str>> {
    if t.escaped {
        decode_escaped(t.quoted)
    } else {
        Some(Cow::Borrowed(t.inner()))
    }
}

#[cold]
#[inline(never)]
fn decode_escaped(quoted: &str) -> Option<Cow<'_, str>> {
    serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
}

#[inline]
pub(super) fn key_text<'a>(t: StrToken<'a>, s: &Scanner<'a>) -> scan::Scan<Cow<'a, str>> {
    token_text(t).ok_or_else(|| s.error_here("key is not a valid string (lone surrogate escape)"))
}

/// An object's fields in document order: (name, raw value).
pub type Fields<'a> = Vec<(Cow<'a, str>, Raw<'a>)>;

/// An empty field list kept from one request to the next (`recycle`, `lend`): the
/// params vector was the one allocation (and free) of a plain request.
pub type SpareFields = Vec<(Cow<'static, str>, Raw<'static>)>;

/// A spare list holding more fields than this is not kept (a request with a large
/// params object must not pin its memory for good).
const SPARE_MAX: usize = 16;

/// Empty `fields` and keep its allocation, no longer tied to the text it borrowed from.
/// Without `unsafe`: an empty vector collected in place into the same element type
/// (lifetimes aside) keeps its buffer; were the standard library ever to stop doing
/// that, this would allocate again, never misbehave. (`filter_map` because it changes
/// the element type's lifetime, which `filter` cannot.)
#[allow(clippy::unnecessary_filter_map)]
pub fn recycle(mut fields: Fields<'_>) -> SpareFields {
    if fields.capacity() > SPARE_MAX {
        return SpareFields::new();
    }
    fields.clear();
    fields.into_iter().filter_map(|_| None).collect()
}

/// A spare list, empty, ready to borrow from a new text (see `recycle`).
#[allow(clippy::unnecessary_filter_map)]
pub(super) fn lend<'a>(spare: SpareFields) -> Fields<'a> {
    spare.into_iter().filter_map(|_| None).collect()
}

/// The fields of the object at the scanner's position, each value validated and kept
/// as raw text.
pub(super) fn scan_fields<'a>(s: &mut Scanner<'a>) -> scan::Scan<Fields<'a>> {
    scan_fields_into(s, SpareFields::new())
}

/// `scan_fields` into the allocation of `spare`.
pub(super) fn scan_fields_into<'a>(s: &mut Scanner<'a>, spare: SpareFields) -> scan::Scan<Fields<'a>> {
    let mut fields = lend(spare);
    fields.reserve(4);
    s.object(|k, s| {
        let name = key_text(k, s)?;
        fields.push((name, Raw(s.value()?)));
        Ok(())
    })?;
    Ok(fields)
}

/// A JSON string as text, borrowed when it holds no escapes. None if not a string (or
/// a string with a lone surrogate escape, which no text can hold).
#[inline]
pub fn raw_str(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    let s = raw.get();
    // A scanned string token is `"…"` (`strip_*` with an ASCII char slices without the
    // char-boundary checks of a range).
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    // The scanner has validated the string, so it holds an escape exactly when it holds
    // a backslash: one test per byte instead of the scanner's three (quote, backslash,
    // control character).
    if !scan::has_backslash(inner.as_bytes()) {
        return Some(Cow::Borrowed(inner));
    }
    token_text(StrToken { quoted: s, escaped: true })
}

/// The first name that occurs twice, if any. Objects in requests are small (a pairwise
/// check) except maps such as `pairs` (a hash set past a few dozen names).
pub fn first_duplicate<'x>(names: impl Iterator<Item = &'x str> + Clone) -> Option<&'x str> {
    let n = names.clone().count();
    if n <= 32 {
        // Compared in place: every request with params comes through here, and a
        // vector of the names seen would cost it an allocation.
        return names.clone().enumerate().find(|&(i, k)| names.clone().take(i).any(|p| p == k)).map(|(_, k)| k);
    }
    let mut seen = hashbrown::HashSet::with_capacity(n);
    names.into_iter().find(|&k| !seen.insert(k))
}

/// `first_duplicate` of a field list's names, with the lists of requests — one or two
/// fields — answered without the general walk (which counts the names first).
pub fn duplicate_field<'x>(fields: &'x [(Cow<'_, str>, Raw<'_>)]) -> Option<&'x str> {
    match fields {
        [] | [_] => None,
        [(a, _), (b, _)] => (a == b).then_some(&**a),
        _ => first_duplicate(fields.iter().map(|(k, _)| &**k)),
    }
}

/// The `params` object as a flat list of (name, raw value): parsing it costs one small
/// vector, and each command reads just the fields it wants, typed, on demand.
#[derive(Debug, Default)]
pub struct Params<'a> {
    pub(super) fields: Vec<(Cow<'a, str>, Raw<'a>)>,
    /// The object's own text, when it was parsed from one: `write_json` copies it
    /// instead of writing the fields back out.
    pub(super) json: Option<Raw<'a>>,
}

/// A JSON object's fields as (key, raw value) pairs; None if `raw` is not an object.
pub fn object_fields(raw: Raw<'_>) -> Option<Vec<(Cow<'_, str>, Raw<'_>)>> {
    if !raw.get().starts_with('{') {
        return None;
    }
    scan_fields(&mut Scanner::new(raw.get(), MAX_DEPTH)).ok()
}

/// A JSON array's elements; None if `raw` is not an array.
pub fn array_elements(raw: Raw<'_>) -> Option<Vec<Raw<'_>>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    let mut out = Vec::new();
    Scanner::new(raw.get(), MAX_DEPTH)
        .array(|s| {
            out.push(Raw(s.value()?));
            Ok(())
        })
        .ok()?;
    Some(out)
}

impl<'a> Params<'a> {
    /// `None` and `null` are `{}`; anything but an object is an error message.
    pub fn parse(raw: Option<Raw<'a>>) -> std::result::Result<Params<'a>, String> {
        let Some(raw) = raw else {
            return Ok(Params::default());
        };
        if raw.get() == "null" {
            return Ok(Params::default());
        }
        match object_fields(raw) {
            Some(fields) => match duplicate_field(&fields) {
                Some(k) => Err(format!("Invalid JSON: duplicate field '{k}' in 'params'")),
                None => Ok(Params { fields, json: Some(raw) }),
            },
            None => Err("'params' must be an object".into()),
        }
    }

    pub fn from_fields(fields: Vec<(Cow<'a, str>, Raw<'a>)>) -> Params<'a> {
        Params { fields, json: None }
    }

    /// The fields, given back (to `recycle` them).
    pub fn into_fields(self) -> Fields<'a> {
        self.fields
    }

    /// The parameter names, in document order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| &**k)
    }

    /// The parameters back as a JSON object (values copied verbatim): how the
    /// append-only log records an operation (see `persist`).
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        // The text the request came with is that object already (validated, no
        // duplicate names): copying it saves re-escaping every name, on every logged
        // write under persistence. It may differ from the rebuilt form only in
        // whitespace and in how names are escaped, which replay reads the same.
        if let Some(raw) = self.json {
            buf.extend_from_slice(raw.get().as_bytes());
            return;
        }
        buf.push(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(buf, k);
            buf.push(b':');
            buf.extend_from_slice(v.get().as_bytes());
        }
        buf.push(b'}');
    }

    /// The raw value of a parameter; `null` counts as absent.
    pub fn raw(&self, name: &str) -> Option<Raw<'a>> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v).filter(|v| v.get() != "null")
    }

    /// The raw values of several parameters in one pass over the fields, as `raw` gives
    /// each (`null` counts as absent). For a command that reads many optional
    /// parameters on a hot path: `string.set` asked for six one by one, each a pass
    /// with a `memcmp` per field. Inlined so the names are constants where it is called
    /// and each comparison compiles to a length test and a load or two.
    #[inline(always)]
    pub fn pick<const N: usize>(&self, names: [&str; N]) -> [Option<Raw<'a>>; N] {
        let mut found = [None; N];
        // Backwards, so that the first field of a name is the one kept, as in `raw`
        // (names are unique in parsed params anyway: duplicates are refused).
        for (k, v) in self.fields.iter().rev() {
            for (name, slot) in names.iter().zip(found.iter_mut()) {
                if k.len() == name.len() && k.as_bytes() == name.as_bytes() {
                    *slot = (v.get() != "null").then_some(*v);
                    break;
                }
            }
        }
        found
    }

    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    #[cold]
    fn missing(name: &str) -> Error {
        Error::invalid_params(format!("Missing parameter '{name}'"))
    }

    #[cold]
    fn wrong(name: &str, what: &str) -> Error {
        Error::invalid_params(format!("Parameter '{name}' must be {what}"))
    }

    /// A required string parameter (keys, fields, members, channels …).
    pub fn str(&self, name: &str) -> Result<Cow<'a, str>> {
        Self::str_of(name, self.raw(name))
    }

    /// `str` of a value found by `pick`.
    pub fn str_of(name: &str, raw: Option<Raw<'a>>) -> Result<Cow<'a, str>> {
        let raw = raw.ok_or_else(|| Self::missing(name))?;
        raw_str(raw).ok_or_else(|| Self::wrong(name, "a string"))
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<Cow<'a, str>>> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => raw_str(raw).map(Some).ok_or_else(|| Self::wrong(name, "a string")),
        }
    }

    /// A stored value: a JSON string, or a number stored as its decimal text.
    pub fn value(&self, name: &str) -> Result<Cow<'a, str>> {
        Self::value_of(name, self.raw(name))
    }

    /// `value` of a value found by `pick`.
    pub fn value_of(name: &str, raw: Option<Raw<'a>>) -> Result<Cow<'a, str>> {
        let raw = raw.ok_or_else(|| Self::missing(name))?;
        value_text(raw).ok_or_else(|| Self::wrong(name, "a string or a number"))
    }

    pub fn opt_bool(&self, name: &str) -> Result<bool> {
        Self::opt_bool_of(name, self.raw(name))
    }

    /// `opt_bool` of a value found by `pick`.
    pub fn opt_bool_of(name: &str, raw: Option<Raw<'_>>) -> Result<bool> {
        match raw.map(|r| r.get()) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(_) => Err(Self::wrong(name, "a boolean")),
        }
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => Self::parse_i64(name, raw).map(Some),
        }
    }

    /// Out of line: the lookups above are inlined where commands call them, the number
    /// parsing need not be.
    #[inline(never)]
    fn parse_i64(name: &str, raw: Raw<'_>) -> Result<i64> {
        serde_json::from_str::<i64>(raw.get()).map_err(|_| Self::wrong(name, "an integer (64-bit)"))
    }

    pub fn i64(&self, name: &str) -> Result<i64> {
        self.opt_i64(name)?.ok_or_else(|| Self::missing(name))
    }

    /// A non-negative integer that fits in usize.
    pub fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<u64>(raw.get())
                .ok()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| Self::wrong(name, "a non-negative integer")),
        }
    }

    /// A finite number.
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        Self::opt_f64_of(name, self.raw(name))
    }

    /// `opt_f64` of a value found by `pick`.
    pub fn opt_f64_of(name: &str, raw: Option<Raw<'_>>) -> Result<Option<f64>> {
        match raw {
            None => Ok(None),
            Some(raw) => Self::parse_f64(name, raw).map(Some),
        }
    }

    #[inline(never)]
    fn parse_f64(name: &str, raw: Raw<'_>) -> Result<f64> {
        match serde_json::from_str::<f64>(raw.get()) {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(Self::wrong(name, "a number")),
        }
    }

    /// A list of strings (`keys`, `fields`, `members` …). Empty lists are refused: every
    /// multi-key method needs at least one.
    pub fn str_list(&self, name: &str) -> Result<Vec<Cow<'a, str>>> {
        let raw = self.raw(name).ok_or_else(|| Self::missing(name))?;
        let list = array_elements(raw).ok_or_else(|| Self::wrong(name, "an array of strings"))?;
        if list.is_empty() {
            return Err(Self::wrong(name, "a non-empty array"));
        }
        list.into_iter().map(|r| raw_str(r).ok_or_else(|| Self::wrong(name, "an array of strings"))).collect()
    }

    /// Like `str_list`, but values may be strings or numbers.
    pub fn value_list(&self, name: &str) -> Result<Vec<Cow<'a, str>>> {
        let raw = self.raw(name).ok_or_else(|| Self::missing(name))?;
        let list = array_elements(raw).ok_or_else(|| Self::wrong(name, "an array of strings"))?;
        if list.is_empty() {
            return Err(Self::wrong(name, "a non-empty array"));
        }
        list.into_iter()
            .map(|r| value_text(r).ok_or_else(|| Self::wrong(name, "an array of strings or numbers")))
            .collect()
    }

    /// One name or a list: `key` or `keys`, `member` or `members` … (`single` wins).
    pub fn one_or_many(&self, single: &str, many: &str) -> Result<Vec<Cow<'a, str>>> {
        if self.has(single) {
            return Ok(vec![self.str(single)?]);
        }
        if self.has(many) {
            return self.str_list(many);
        }
        Err(Error::invalid_params(format!("Missing parameter '{single}' or '{many}'")))
    }

    /// An object parameter as (name, raw value) pairs. A name given twice is refused
    /// (`{"pairs":{"a":"1","a":"2"}}`: which value was meant?).
    pub fn object(&self, name: &str) -> Result<Vec<(Cow<'a, str>, Raw<'a>)>> {
        let raw = self.raw(name).ok_or_else(|| Self::missing(name))?;
        let fields = object_fields(raw).ok_or_else(|| Self::wrong(name, "an object"))?;
        if let Some(k) = first_duplicate(fields.iter().map(|(k, _)| &**k)) {
            return Err(Error::invalid_params(format!("Parameter '{name}' names '{k}' twice")));
        }
        Ok(fields)
    }

    /// An array parameter as raw elements.
    pub fn array(&self, name: &str) -> Result<Vec<Raw<'a>>> {
        let raw = self.raw(name).ok_or_else(|| Self::missing(name))?;
        array_elements(raw).ok_or_else(|| Self::wrong(name, "an array"))
    }
}

/// A stored value from JSON: a string as is, a number as its decimal text.
pub fn value_text(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    let s = raw.get();
    match s.as_bytes().first() {
        Some(b'"') => raw_str(raw),
        Some(b'-' | b'0'..=b'9') => Some(Cow::Borrowed(s)),
        _ => None,
    }
}
