//! The one parser of operations: a request frame (`parse_incoming`), a `batch`
//! operation and a logged operation on replay (`op`) are all read here, with the
//! validating scanner, into a method and typed `Params`.

use super::params::duplicate_field;
use super::params::{key_text, lend, recycle, scan_fields_into, Fields, SpareFields};
use super::scan::Scanner;
use super::{raw_str, Code, Error, Params, Raw};
use std::borrow::Cow;

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

/// Parse one text frame in a single pass of the scanner: the whole document is
/// validated (nesting bounded by `MAX_DEPTH`, so a 10,000-deep document is an error,
/// not a stack overflow), the envelope's fields picked out and `params` split into its
/// fields on the way. Never panics.
pub fn parse_incoming(text: &str) -> Incoming<'_> {
    parse_incoming_with(text, SpareFields::new())
}

/// `parse_incoming`, the params fields going into the allocation of `spare` (the engine
/// hands back the previous request's, see `params::recycle`).
pub fn parse_incoming_with(text: &str, spare: SpareFields) -> Incoming<'_> {
    let mut fields = lend(spare);
    match super::fast::request(text, &mut fields) {
        Some(incoming) => incoming,
        None => parse_general(text, recycle(fields)),
    }
}

/// `parse_incoming_with` by the general scanner alone: every frame the fast path
/// (`proto::fast`) leaves, and the words of every error.
pub(super) fn parse_general(text: &str, spare: SpareFields) -> Incoming<'_> {
    let mut spare = Some(spare);
    let mut s = Scanner::new(text, MAX_DEPTH);
    if s.next_byte() != Some(b'{') {
        return Incoming::Invalid { id: None, message: "Request must be a JSON object".into() };
    }
    let mut id: Option<Raw> = None;
    let mut method: Option<Raw> = None;
    let mut kind: Option<Raw> = None;
    // Some(None): present but not an object (null counts as `{}`).
    let mut params: Option<Option<Fields>> = None;
    // The text of the params object (written to the log as it is: `Params::write_json`).
    let mut params_json = Raw("{}");
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
                    let start = s.pos();
                    let fields = scan_fields_into(s, spare.take().unwrap_or_default())?;
                    params_json = Raw(s.span(start));
                    Some(fields)
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
        // `1e400` is valid JSON, but most clients read it back as Infinity. A plain
        // integer of up to 300 digits is always finite (f64 reaches 1.8e308), so the
        // usual id skips the float parse (it showed in profiles: every request pays it).
        let small_int = raw.get().len() <= 300 && raw.get().bytes().all(|b| b.is_ascii_digit() || b == b'-');
        if first != b'"' && !small_int && !raw.get().parse::<f64>().is_ok_and(f64::is_finite) {
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
    if let Some(k) = params.as_ref().and_then(|p| p.as_ref()).and_then(|f| duplicate_field(f)) {
        return Incoming::Invalid { id, message: format!("Invalid JSON: duplicate field '{k}' in 'params'") };
    }
    match params {
        None => Incoming::Request(Request { id, method, params: Params::default() }),
        Some(Some(fields)) => {
            Incoming::Request(Request { id, method, params: Params { fields, json: Some(params_json) } })
        }
        Some(None) => Incoming::Invalid { id, message: "'params' must be an object".into() },
    }
}

/// One `{"method":…,"params":…}` operation (inside `batch`, or in the log), its params
/// not yet split.
pub struct Op<'a> {
    pub method: Cow<'a, str>,
    params: Option<Raw<'a>>,
}

impl<'a> Op<'a> {
    /// The operation's params (absent or `null` = `{}`).
    pub fn params(&self) -> Result<Params<'a>, Error> {
        Params::parse(self.params).map_err(|m| Error::new(Code::InvalidRequest, m))
    }
}

/// Read one operation: an object with a string `method` and optional `params`.
pub fn op(raw: Raw<'_>) -> Result<Op<'_>, Error> {
    let bad = |m: &str| Error::new(Code::InvalidRequest, m.to_string());
    let fields = super::object_fields(raw).ok_or_else(|| bad("Each operation must be an object"))?;
    let op = Params::from_fields(fields);
    let method = op.str("method").map_err(|_| bad("Each operation needs a string 'method'"))?;
    Ok(Op { method, params: op.raw("params") })
}

/// A JSON array of operations (one log record); None if `text` is not a valid array.
pub fn ops(text: &str) -> Option<Vec<Raw<'_>>> {
    let raw = Raw::parse(text)?;
    super::array_elements(raw)
}
