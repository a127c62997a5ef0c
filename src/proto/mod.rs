//! The JSON envelope (PROTOCOL.md §2, §3): parsing a request without building a
//! `serde_json::Value` tree, typed parameter access whose errors name the parameter,
//! and a small writer that appends replies straight into a reused byte buffer.
//! No store, no socket.

pub mod scan;

use scan::{Scanner, StrToken};
use std::borrow::Cow;

/// Error codes of PROTOCOL.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    NotFound,
    WrongType,
    NotInteger,
    Forbidden,
    RateLimited,
    Oom,
    Unavailable,
    Unauthorized,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::MethodNotFound => "method_not_found",
            Code::InvalidParams => "invalid_params",
            Code::NotFound => "not_found",
            Code::WrongType => "wrong_type",
            Code::NotInteger => "not_integer",
            Code::Forbidden => "forbidden",
            Code::RateLimited => "rate_limited",
            Code::Oom => "oom",
            Code::Unavailable => "unavailable",
            Code::Unauthorized => "unauthorized",
            Code::Internal => "internal",
        }
    }

    pub const ALL: [Code; 12] = [
        Code::InvalidRequest,
        Code::MethodNotFound,
        Code::InvalidParams,
        Code::NotFound,
        Code::WrongType,
        Code::NotInteger,
        Code::Forbidden,
        Code::RateLimited,
        Code::Oom,
        Code::Unavailable,
        Code::Unauthorized,
        Code::Internal,
    ];
}

/// A request-level error: a code, a human message, and for `rate_limited` the time
/// until enough tokens are back.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub code: Code,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), retry_after_ms: None }
    }
    pub fn invalid_params(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidParams, message)
    }
    pub fn wrong_type() -> Error {
        Error::new(Code::WrongType, "Operation against a key holding the wrong kind of value")
    }
    pub fn key_not_found(key: &str) -> Error {
        Error::new(Code::NotFound, format!("Key '{key}' not found"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The text of one JSON value that the scanner has found valid (strings keep their
/// quotes and escapes). Only this module makes one, so holding a `Raw` means the text
/// is JSON: it can be copied verbatim into a reply, the log or an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

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

/// One request, borrowed from the frame's text.
#[derive(Debug)]
pub struct Request<'a> {
    /// The raw JSON of `id` (string or number), echoed back verbatim; None → `null`.
    pub id: Option<Raw<'a>>,
    pub method: Cow<'a, str>,
    pub params: Params<'a>,
}

/// What a text frame turned out to be.
#[derive(Debug)]
pub enum Incoming<'a> {
    Request(Request<'a>),
    /// `{"type":"heartbeat"}` from the client: activity, no reply.
    Heartbeat,
    /// Not a valid request; answer `invalid_request` with whatever id could be read.
    Invalid {
        id: Option<Raw<'a>>,
        message: String,
    },
}

/// Deepest nesting of arrays and objects accepted in a request, counted from the
/// envelope's own braces (serde_json's recursion limit, which the contract grew up with).
pub const MAX_DEPTH: usize = 128;

/// A key or string token as text: borrowed when it holds no escape. Escapes are rare,
/// so serde_json decodes them; it refuses a lone surrogate, which has no text.
fn token_text(t: StrToken<'_>) -> Option<Cow<'_, str>> {
    if t.escaped {
        serde_json::from_str::<String>(t.quoted).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(t.inner()))
    }
}

fn key_text<'a>(t: StrToken<'a>, s: &Scanner<'a>) -> scan::Scan<Cow<'a, str>> {
    token_text(t).ok_or_else(|| s.error_here("key is not a valid string (lone surrogate escape)"))
}

/// An object's fields in document order: (name, raw value).
pub type Fields<'a> = Vec<(Cow<'a, str>, Raw<'a>)>;

/// The fields of the object at the scanner's position, each value validated and kept
/// as raw text.
fn scan_fields<'a>(s: &mut Scanner<'a>) -> scan::Scan<Fields<'a>> {
    let mut fields = Vec::with_capacity(4);
    s.object(|k, s| {
        let name = key_text(k, s)?;
        fields.push((name, Raw(s.value()?)));
        Ok(())
    })?;
    Ok(fields)
}

/// Parse one text frame in a single pass of the scanner: the whole document is
/// validated (nesting bounded by `MAX_DEPTH`, so a 10,000-deep document is an error,
/// not a stack overflow), the envelope's fields picked out and `params` split into its
/// fields on the way. Never panics.
pub fn parse_incoming(text: &str) -> Incoming<'_> {
    let mut s = Scanner::new(text, MAX_DEPTH);
    if s.next_byte() != Some(b'{') {
        return Incoming::Invalid { id: None, message: "Request must be a JSON object".into() };
    }
    let mut id: Option<Raw> = None;
    let mut method: Option<Raw> = None;
    let mut kind: Option<Raw> = None;
    // Some(None): present but not an object (null counts as `{}`).
    let mut params: Option<Option<Fields>> = None;
    let scanned = s.object(|k, s| {
        let slot = match &*key_text(k, s)? {
            "id" => &mut id,
            "method" => &mut method,
            "type" => &mut kind,
            "params" => {
                if params.is_some() {
                    return Err(s.error_here("duplicate field 'params'"));
                }
                params = Some(if s.next_byte() == Some(b'{') {
                    Some(scan_fields(s)?)
                } else {
                    let v = s.value()?;
                    (v == "null").then(Vec::new)
                });
                return Ok(());
            }
            _ => return s.value().map(drop),
        };
        if slot.is_some() {
            return Err(s.error_here("duplicate field"));
        }
        *slot = Some(Raw(s.value()?));
        Ok(())
    });
    if let Err(e) = scanned.and_then(|()| s.end()) {
        return Incoming::Invalid { id: None, message: format!("Invalid JSON: {e}") };
    }
    let id = id.filter(|r| r.get() != "null");
    if let Some(raw) = id {
        let first = raw.get().as_bytes().first().copied().unwrap_or(b'n');
        if !(first == b'"' || first == b'-' || first.is_ascii_digit()) {
            return Incoming::Invalid { id: None, message: "'id' must be a string or a number".into() };
        }
        // The id is echoed verbatim, so it must be a string every JSON parser reads back:
        // the scan lets an escaped lone surrogate ("\ud800") through, which strict
        // parsers (serde_json among them) refuse, making the whole reply unreadable.
        if first == b'"' && raw_str(raw).is_none() {
            return Incoming::Invalid { id: None, message: "'id' is not a valid JSON string".into() };
        }
        // `1e400` is valid JSON, but most clients read it back as Infinity.
        if first != b'"' && !raw.get().parse::<f64>().is_ok_and(f64::is_finite) {
            return Incoming::Invalid { id: None, message: "'id' must be a finite number".into() };
        }
    }
    let method = match method {
        Some(m) => match raw_str(m) {
            Some(s) => s,
            None => return Incoming::Invalid { id, message: "'method' must be a string".into() },
        },
        None => {
            if kind.and_then(raw_str).as_deref() == Some("heartbeat") {
                return Incoming::Heartbeat;
            }
            return Incoming::Invalid { id, message: "Missing 'method'".into() };
        }
    };
    // Refused like a duplicate envelope field (which value was meant?), with the id.
    if let Some(k) = params.as_ref().and_then(|p| p.as_ref()).and_then(|f| first_duplicate(f.iter().map(|(k, _)| &**k)))
    {
        return Incoming::Invalid { id, message: format!("Invalid JSON: duplicate field '{k}' in 'params'") };
    }
    match params {
        None => Incoming::Request(Request { id, method, params: Params::default() }),
        Some(Some(fields)) => Incoming::Request(Request { id, method, params: Params { fields } }),
        Some(None) => Incoming::Invalid { id, message: "'params' must be an object".into() },
    }
}

/// A JSON string as text, borrowed when it holds no escapes. None if not a string (or
/// a string with a lone surrogate escape, which no text can hold).
pub fn raw_str(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    let s = raw.get();
    if !s.starts_with('"') {
        return None;
    }
    // A scanned string ends at its closing quote, so a plain run that reaches the
    // last byte means no escape.
    let escaped = scan::plain_run(s.as_bytes().get(1..).unwrap_or_default()) + 2 < s.len();
    token_text(StrToken { quoted: s, escaped })
}

/// The first name that occurs twice, if any. Objects in requests are small (a pairwise
/// check) except maps such as `pairs` (a hash set past a few dozen names).
pub fn first_duplicate<'x>(names: impl Iterator<Item = &'x str> + Clone) -> Option<&'x str> {
    let n = names.clone().count();
    if n <= 32 {
        let mut seen: Vec<&str> = Vec::with_capacity(n);
        for k in names {
            if seen.contains(&k) {
                return Some(k);
            }
            seen.push(k);
        }
        return None;
    }
    let mut seen = hashbrown::HashSet::with_capacity(n);
    names.into_iter().find(|&k| !seen.insert(k))
}

/// The `params` object as a flat list of (name, raw value): parsing it costs one small
/// vector, and each command reads just the fields it wants, typed, on demand.
#[derive(Debug, Default)]
pub struct Params<'a> {
    fields: Vec<(Cow<'a, str>, Raw<'a>)>,
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
            Some(fields) => match first_duplicate(fields.iter().map(|(k, _)| &**k)) {
                Some(k) => Err(format!("Invalid JSON: duplicate field '{k}' in 'params'")),
                None => Ok(Params { fields }),
            },
            None => Err("'params' must be an object".into()),
        }
    }

    pub fn from_fields(fields: Vec<(Cow<'a, str>, Raw<'a>)>) -> Params<'a> {
        Params { fields }
    }

    /// The parameter names, in document order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| &**k)
    }

    /// The parameters back as a JSON object (values copied verbatim): how the
    /// append-only log records an operation (see `persist`).
    pub fn write_json(&self, buf: &mut Vec<u8>) {
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

    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    fn missing(name: &str) -> Error {
        Error::invalid_params(format!("Missing parameter '{name}'"))
    }

    fn wrong(name: &str, what: &str) -> Error {
        Error::invalid_params(format!("Parameter '{name}' must be {what}"))
    }

    /// A required string parameter (keys, fields, members, channels …).
    pub fn str(&self, name: &str) -> Result<Cow<'a, str>> {
        let raw = self.raw(name).ok_or_else(|| Self::missing(name))?;
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
        let raw = self.raw(name).ok_or_else(|| Self::missing(name))?;
        value_text(raw).ok_or_else(|| Self::wrong(name, "a string or a number"))
    }

    pub fn opt_bool(&self, name: &str) -> Result<bool> {
        match self.raw(name).map(|r| r.get()) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(_) => Err(Self::wrong(name, "a boolean")),
        }
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => {
                serde_json::from_str::<i64>(raw.get()).map(Some).map_err(|_| Self::wrong(name, "an integer (64-bit)"))
            }
        }
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
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<f64>(raw.get()) {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(Self::wrong(name, "a number")),
            },
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

/// Appends JSON into a byte buffer. Keys are static identifiers written as they are;
/// string values are escaped by serde_json. Used for every reply and event so that
/// nothing builds a `Value` tree on the hot path.
pub struct Json<'b> {
    pub buf: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Json<'b> {
    /// Continue an object whose `{` is already written (and that may have fields).
    pub fn fields(buf: &'b mut Vec<u8>, first: bool) -> Json<'b> {
        Json { buf, first }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        write_str(self.buf, v);
        self
    }
    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        match v {
            Some(v) => write_str(self.buf, v),
            None => self.buf.extend_from_slice(b"null"),
        }
        self
    }
    pub fn i64(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k);
        write_i64(self.buf, v);
        self
    }
    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        write_u64(self.buf, v);
        self
    }
    pub fn opt_i64(&mut self, k: &str, v: Option<i64>) -> &mut Self {
        self.key(k);
        match v {
            Some(v) => write_i64(self.buf, v),
            None => self.buf.extend_from_slice(b"null"),
        }
        self
    }
    pub fn f64(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        write_f64(self.buf, v);
        self
    }
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(if v { b"true" } else { b"false" });
        self
    }
    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(b"null");
        self
    }
    /// Already-serialized JSON.
    pub fn raw(&mut self, k: &str, json: &[u8]) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(json);
        self
    }
    /// A nested object.
    pub fn obj(&mut self, k: &str, f: impl FnOnce(&mut Json)) -> &mut Self {
        self.key(k);
        self.buf.push(b'{');
        f(&mut Json { buf: self.buf, first: true });
        self.buf.push(b'}');
        self
    }
    /// A nested array; the closure writes elements through `Arr`.
    pub fn arr(&mut self, k: &str, f: impl FnOnce(&mut Arr)) -> &mut Self {
        self.key(k);
        self.buf.push(b'[');
        f(&mut Arr { buf: self.buf, first: true });
        self.buf.push(b']');
        self
    }
    /// An object field whose key is data (hash fields, watch values): escaped.
    pub fn dyn_key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        write_str(self.buf, k);
        self.buf.push(b':');
        self.buf
    }
}

/// Elements of a JSON array.
pub struct Arr<'b> {
    pub buf: &'b mut Vec<u8>,
    first: bool,
}

impl Arr<'_> {
    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }
    pub fn str(&mut self, v: &str) {
        self.sep();
        write_str(self.buf, v);
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        self.sep();
        match v {
            Some(v) => write_str(self.buf, v),
            None => self.buf.extend_from_slice(b"null"),
        }
    }
    pub fn raw(&mut self, json: &[u8]) {
        self.sep();
        self.buf.extend_from_slice(json);
    }
    pub fn obj(&mut self, f: impl FnOnce(&mut Json)) {
        self.sep();
        self.buf.push(b'{');
        f(&mut Json { buf: self.buf, first: true });
        self.buf.push(b'}');
    }
    /// Start an element written by hand (the caller appends valid JSON to `buf`).
    pub fn elem(&mut self) -> &mut Vec<u8> {
        self.sep();
        self.buf
    }
}

pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Fast path: nothing to escape (the common case for keys and short values).
    if scan::plain_run(s.as_bytes()) == s.len() {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // serde_json writes into a Vec infallibly.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

pub fn write_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

pub fn write_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// JSON has no infinities: ±inf scores are written as the strings "+inf" / "-inf",
/// the same spelling `zset.range_by_score` accepts as bounds.
pub fn write_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        // Whole numbers print without ".0" (30, not 30.0), as JavaScript would.
        write_i64(buf, v as i64);
    } else if v.is_finite() {
        let _ = serde_json::to_writer(&mut *buf, &v);
    } else if v > 0.0 {
        buf.extend_from_slice(b"\"+inf\"");
    } else {
        buf.extend_from_slice(b"\"-inf\"");
    }
}

/// Write the error object `{"code":..,"message":..[,"retry_after_ms":..]}`.
pub fn write_error(buf: &mut Vec<u8>, e: &Error) {
    buf.push(b'{');
    let mut j = Json::fields(buf, true);
    j.str("code", e.code.as_str()).str("message", &e.message);
    if let Some(ms) = e.retry_after_ms {
        j.u64("retry_after_ms", ms);
    }
    buf.push(b'}');
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-01-15T10:30:00.123Z`, from unix ms.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Howard Hinnant's days → civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
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
        let ok =
            format!(r#"{{"method":"a","params":{{"x":{}{}}}}}"#, "[".repeat(MAX_DEPTH - 2), "]".repeat(MAX_DEPTH - 2));
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
}
