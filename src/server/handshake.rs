//! The HTTP/1.1 side of a connection: parse a request head with httparse, decide what it
//! is (WebSocket upgrade, `/health`, `/metrics`, echo, or a refusal) and build the
//! response bytes. Pure: no I/O, no clock, so it can be unit-tested and fuzzed.

use base64::Engine;
use sha1::{Digest, Sha1};

/// Largest request head we accept; more is `431 headers_too_large`.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A refusal as an HTTP status, a JSON error code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The `Allow` header of a 405 (the methods the path takes).
    pub allow: &'static str,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, code, message: message.into(), allow: "GET" }
    }
}

/// What the head of a request asks for (after routing).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// A valid WebSocket upgrade on the WebSocket path.
    Upgrade(Upgrade),
    /// A valid WebSocket upgrade on the echo path (conformance testing).
    Echo(Upgrade),
    /// `/health`; `head`: a HEAD request (headers of the GET answer, no body).
    Health {
        head: bool,
    },
    Metrics(MetricsRequest),
    Refuse(Refusal),
}

/// A request for `/metrics`, with the credential it carries (checked by the server
/// when credentials are configured and there is no admin port).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MetricsRequest {
    pub head: bool,
    pub api_key: Option<String>,
    pub authorization: Option<String>,
}

/// The parts of a valid upgrade request the server needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upgrade {
    pub accept: String,
    /// The raw request target, for logging after redaction.
    pub target: String,
    pub api_key: Option<String>,
    pub client_id: Option<String>,
    pub authorization: Option<String>,
    pub protocols: Option<String>,
}

/// Paths the router knows.
pub struct Paths<'a> {
    pub ws: Option<&'a str>,
    pub echo: Option<&'a str>,
    /// `/metrics` is served here (false on the client port when DBX_ADMIN_PORT is set).
    pub metrics: bool,
}

/// Result of feeding the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Need more bytes.
    Partial,
    /// A complete head of `len` bytes (anything after it is the first frame).
    Done(Route, usize),
}

/// Parse and route the request head in `buf`. A head over `MAX_HEAD` bytes without its
/// end is refused with 431 as soon as that is known.
pub fn parse(buf: &[u8], paths: &Paths) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                Parse::Done(Route::Refuse(too_large()), buf.len())
            } else {
                Parse::Partial
            }
        }
        Ok(httparse::Status::Complete(len)) => {
            if len > MAX_HEAD {
                return Parse::Done(Route::Refuse(too_large()), len);
            }
            Parse::Done(route(&req, paths), len)
        }
        Err(httparse::Error::TooManyHeaders) => Parse::Done(Route::Refuse(too_large()), buf.len()),
        Err(e) => Parse::Done(
            Route::Refuse(Refusal::new(400, "bad_request", format!("Malformed HTTP request: {e}"))),
            buf.len(),
        ),
    }
}

fn too_large() -> Refusal {
    Refusal::new(431, "headers_too_large", format!("Request head larger than {MAX_HEAD} bytes"))
}

fn header<'a>(req: &'a httparse::Request, name: &str) -> Result<Option<&'a str>, Refusal> {
    let mut found = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(Refusal::new(400, "bad_request", format!("Duplicate header '{name}'")));
            }
            let v = std::str::from_utf8(h.value)
                .map_err(|_| Refusal::new(400, "bad_request", format!("Header '{name}' is not valid text")))?;
            found = Some(v.trim());
        }
    }
    Ok(found)
}

fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn route(req: &httparse::Request, paths: &Paths) -> Route {
    match route_inner(req, paths) {
        Ok(r) => r,
        Err(refusal) => Route::Refuse(refusal),
    }
}

fn route_inner(req: &httparse::Request, paths: &Paths) -> Result<Route, Refusal> {
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    if req.version != Some(1) {
        return Err(Refusal::new(400, "bad_request", "HTTP/1.1 required"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let is_ws = paths.ws == Some(path);
    let is_echo = paths.echo == Some(path);
    let is_metrics = paths.metrics && path == "/metrics";
    if !(is_ws || is_echo || path == "/health" || is_metrics) {
        return Err(Refusal::new(404, "not_found", format!("No such path '{}'", truncate(path, 100))));
    }
    // HEAD only where the answer is a plain document (load balancers probe with it);
    // an upgrade is a GET by definition (RFC 6455 §4.1).
    let head = method == "HEAD" && !(is_ws || is_echo);
    if method != "GET" && !head {
        let (allowed, allow) = if is_ws || is_echo { ("GET", "GET") } else { ("GET or HEAD", "GET, HEAD") };
        let mut r = Refusal::new(
            405,
            "method_not_allowed",
            format!("Method {} not allowed; use {allowed}", truncate(method, 20)),
        );
        r.allow = allow;
        return Err(r);
    }
    if path == "/health" {
        return Ok(Route::Health { head });
    }
    if is_metrics {
        // The same credential sources as the upgrade: `?api_key=` and the
        // Authorization header (a subprotocol makes no sense on a plain GET).
        let mut m = MetricsRequest {
            head,
            authorization: header(req, "Authorization")?.map(str::to_string),
            ..MetricsRequest::default()
        };
        for (name, value) in query_pairs(query) {
            if name == "api_key" {
                m.api_key = Some(value.ok_or_else(|| {
                    Refusal::new(400, "bad_request", "Query parameter 'api_key' is not valid percent-encoding")
                })?);
            }
        }
        return Ok(Route::Metrics(m));
    }
    let upgrade = header(req, "Upgrade")?;
    if !upgrade.is_some_and(|u| has_token(u, "websocket")) {
        return Err(Refusal::new(
            426,
            "upgrade_required",
            "This path speaks WebSocket: send an Upgrade: websocket request",
        ));
    }
    if !header(req, "Connection")?.is_some_and(|c| has_token(c, "upgrade")) {
        return Err(Refusal::new(400, "bad_request", "Header 'Connection' must contain 'Upgrade'"));
    }
    if header(req, "Sec-WebSocket-Version")? != Some("13") {
        return Err(Refusal::new(426, "upgrade_required", "Only WebSocket version 13 is supported"));
    }
    let key = header(req, "Sec-WebSocket-Key")?
        .ok_or_else(|| Refusal::new(400, "bad_request", "Missing header 'Sec-WebSocket-Key'"))?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(Refusal::new(400, "bad_request", "Header 'Sec-WebSocket-Key' must be 16 bytes in base64")),
    }
    let mut up = Upgrade {
        accept: accept_key(key.as_bytes()),
        target: target.to_string(),
        authorization: header(req, "Authorization")?.map(str::to_string),
        protocols: header(req, "Sec-WebSocket-Protocol")?.map(str::to_string),
        ..Upgrade::default()
    };
    if is_echo {
        return Ok(Route::Echo(up));
    }
    for (name, value) in query_pairs(query) {
        let value = value.ok_or_else(|| {
            Refusal::new(
                400,
                "bad_request",
                format!("Query parameter '{}' is not valid percent-encoding", truncate(&name, 40)),
            )
        })?;
        match name.as_str() {
            "api_key" => up.api_key = Some(value),
            "client_id" => {
                if value.is_empty()
                    || value.len() > 128
                    || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
                {
                    return Err(Refusal::new(
                        400,
                        "bad_request",
                        "Query parameter 'client_id' must be 1-128 characters of [A-Za-z0-9._:-]",
                    ));
                }
                up.client_id = Some(value);
            }
            "version" if value != "1.0" => {
                return Err(Refusal::new(
                    400,
                    "unsupported_version",
                    format!("Unsupported API version '{}'; this server speaks 1.0", truncate(&value, 20)),
                ));
            }
            _ => {} // unknown parameters are ignored (PROTOCOL.md §8)
        }
    }
    Ok(Route::Upgrade(up))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Query pairs, percent-decoded (`+` is a space). A value that does not decode to
/// UTF-8 is None.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k).unwrap_or_default(), percent_decode(v))
    })
}

/// Percent-decoded text (`+` is a space); None when an escape is malformed or the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let (bytes, ok) = percent_decode_bytes(s);
    if ok {
        String::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// Percent-decoded bytes (`+` is a space), and whether every escape was well formed
/// (a malformed one is kept as it is).
fn percent_decode_bytes(s: &str) -> (Vec<u8>, bool) {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut ok = true;
    let mut i = 0;
    let hex = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16)).map(|d| d as u8);
    while let Some(&b) = bytes.get(i) {
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                ok &= c != b'%';
                out.push(c);
                i += 1;
            }
        }
    }
    (out, ok)
}

/// The 101 response; `protocol` is the subprotocol we agreed to, if any.
pub fn switching_protocols(accept: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n");
    if let Some(p) = protocol {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(p);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The answer to a HEAD request: the GET answer `full` without its `body_len`-byte body
/// (the headers, Content-Length included, stay those of GET — RFC 9110 §9.3.2).
pub fn without_body(mut full: Vec<u8>, body_len: usize) -> Vec<u8> {
    full.truncate(full.len().saturating_sub(body_len));
    full
}

/// A complete response that closes the connection.
pub fn response(status: u16, content_type: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{extra_headers}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn refusal_body(r: &Refusal) -> Vec<u8> {
    let mut body = Vec::with_capacity(96);
    body.extend_from_slice(b"{\"error\":{\"code\":");
    crate::proto::write_str(&mut body, r.code);
    body.extend_from_slice(b",\"message\":");
    crate::proto::write_str(&mut body, &r.message);
    body.extend_from_slice(b"}}");
    body
}

/// Length of the body `refusal_response` sends (to answer HEAD without it).
pub fn refusal_body_len(r: &Refusal) -> usize {
    refusal_body(r).len()
}

/// A refusal as HTTP with the JSON error body of PROTOCOL.md §1.
pub fn refusal_response(r: &Refusal) -> Vec<u8> {
    let body = refusal_body(r);
    let mut extra = String::new();
    match r.status {
        426 => extra.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"),
        405 => {
            extra.push_str("Allow: ");
            extra.push_str(r.allow);
            extra.push_str("\r\n");
        }
        401 => extra.push_str("WWW-Authenticate: Bearer\r\n"),
        503 => extra.push_str("Retry-After: 1\r\n"),
        _ => {}
    }
    response(r.status, "application/json", &body, &extra)
}

// ---- credentials in the handshake (PROTOCOL.md §6) ----

/// The subprotocol a browser offers next to `bearer.<token>`; the 101 answers it.
pub const SUBPROTOCOL: &str = "dbx.v1";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Query parameters whose values [`redact_query`] hides.
const SECRET_PARAMS: [&str; 5] = ["api_key", "apikey", "token", "access_token", "jwt"];

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Extracts the credential from the handshake: the `api_key` query value
/// (already percent-decoded by the caller), the `Authorization` header value,
/// and the `Sec-WebSocket-Protocol` header value (several headers joined with
/// `,`). Returns `(credential, subprotocol_to_answer)`; the latter is
/// `Some("dbx.v1")` when the client offered `dbx.v1`. Priority: `api_key`, then
/// `Authorization: Bearer`, then the `bearer.<token>` subprotocol. Empty values
/// count as absent.
pub fn extract_credential<'a>(
    api_key: Option<&'a str>,
    authorization: Option<&'a str>,
    protocols: Option<&'a str>,
) -> (Option<&'a str>, Option<&'static str>) {
    let mut answer = None;
    let mut from_protocol = None;
    for p in protocols.unwrap_or("").split(',').map(str::trim) {
        if p == SUBPROTOCOL {
            answer = Some(SUBPROTOCOL);
        } else if let Some(t) = strip_prefix_ignore_case(p, BEARER_PROTOCOL_PREFIX) {
            if from_protocol.is_none() && !t.is_empty() {
                from_protocol = Some(t);
            }
        }
    }
    let credential =
        api_key.filter(|k| !k.is_empty()).or_else(|| authorization.and_then(bearer_token)).or(from_protocol);
    (credential, answer)
}

/// A request target safe to log: the values of `api_key` (and `apikey`,
/// `token`, `access_token`, `jwt`; names compared percent-decoded and
/// case-insensitively) become `REDACTED`.
pub fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let decoded = String::from_utf8_lossy(&percent_decode_bytes(name).0).into_owned();
        if SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(&decoded)) {
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

/// A `Sec-WebSocket-Protocol` value safe to log: `bearer.<token>` entries
/// become `bearer.REDACTED`.
pub fn redact_protocols(value: &str) -> String {
    value
        .split(',')
        .map(|p| {
            let p = p.trim();
            if strip_prefix_ignore_case(p, BEARER_PROTOCOL_PREFIX).is_some() {
                "bearer.REDACTED"
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: Paths = Paths { ws: Some("/ws"), echo: None, metrics: true };

    fn upgrade_req(target: &str, extra: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").into_bytes()
    }

    fn refusal(buf: &[u8]) -> Refusal {
        match parse(buf, &PATHS) {
            Parse::Done(Route::Refuse(r), _) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn rfc_accept_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn upgrade_and_split_reads() {
        let mut buf = upgrade_req("/ws?api_key=a%2Bb&client_id=app-1&version=1.0&other=x", "");
        let full = buf.len();
        buf.extend_from_slice(b"\x81\x85extra");
        for cut in 1..full {
            assert_eq!(parse(&buf[..cut], &PATHS), Parse::Partial, "cut {cut}");
        }
        match parse(&buf, &PATHS) {
            Parse::Done(Route::Upgrade(u), len) => {
                assert_eq!(len, full);
                assert_eq!(u.api_key.as_deref(), Some("a+b"));
                assert_eq!(u.client_id.as_deref(), Some("app-1"));
                assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(refusal(b"POST /ws HTTP/1.1\r\n\r\n").status, 405);
        assert_eq!(refusal(b"GET /nope HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(refusal(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").status, 426);
        assert_eq!(refusal(b"GET /ws HTTP/1.0\r\n\r\n").status, 400);
        assert_eq!(refusal(b"garbage\r\n\r\n").status, 400);
        assert_eq!(refusal(&upgrade_req("/ws?version=2.0", "")).code, "unsupported_version");
        assert_eq!(refusal(&upgrade_req("/ws?client_id=bad%20id", "")).status, 400);
        assert_eq!(refusal(&upgrade_req("/ws?client_id=", "")).status, 400);
        assert_eq!(refusal(&upgrade_req("/ws", "Sec-WebSocket-Key: again\r\n")).status, 400);
        let bad_key = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n";
        assert_eq!(refusal(bad_key).status, 400);
        let v8 = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(refusal(v8).status, 426);
        let mut big = b"GET /ws HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(refusal(&big).status, 431);
        let many: String = (0..100).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(refusal(format!("GET /ws HTTP/1.1\r\n{many}\r\n").as_bytes()).status, 431);
    }

    #[test]
    fn health_and_disabled_ws() {
        assert!(matches!(
            parse(b"GET /health HTTP/1.1\r\n\r\n", &PATHS),
            Parse::Done(Route::Health { head: false }, _)
        ));
        assert!(matches!(
            parse(b"HEAD /health HTTP/1.1\r\n\r\n", &PATHS),
            Parse::Done(Route::Health { head: true }, _)
        ));
        assert_eq!(refusal(b"HEAD /ws HTTP/1.1\r\n\r\n").status, 405);
        match parse(b"HEAD /metrics?api_key=a%2Bb HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n", &PATHS) {
            Parse::Done(Route::Metrics(m), _) => {
                assert!(m.head);
                assert_eq!(m.api_key.as_deref(), Some("a+b"));
                assert_eq!(m.authorization.as_deref(), Some("Bearer t"));
            }
            other => panic!("{other:?}"),
        }
        let admin_elsewhere = Paths { ws: Some("/ws"), echo: None, metrics: false };
        assert!(matches!(
            parse(b"GET /metrics HTTP/1.1\r\n\r\n", &admin_elsewhere),
            Parse::Done(Route::Refuse(Refusal { status: 404, .. }), _)
        ));
        let off = Paths { ws: None, echo: None, metrics: true };
        assert!(matches!(
            parse(&upgrade_req("/ws", ""), &off),
            Parse::Done(Route::Refuse(Refusal { status: 404, .. }), _)
        ));
    }

    #[test]
    fn responses_are_http() {
        let r = refusal_response(&Refusal::new(426, "upgrade_required", "x"));
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13"));
        assert!(text.ends_with("{\"error\":{\"code\":\"upgrade_required\",\"message\":\"x\"}}"));
    }

    #[test]
    fn extract_credential_priority() {
        assert_eq!(
            extract_credential(Some("q"), Some("Bearer h"), Some("dbx.v1, bearer.p")),
            (Some("q"), Some("dbx.v1"))
        );
        assert_eq!(extract_credential(None, Some("Bearer h"), Some("dbx.v1, bearer.p")), (Some("h"), Some("dbx.v1")));
        assert_eq!(extract_credential(None, None, Some("dbx.v1, bearer.p")), (Some("p"), Some("dbx.v1")));
        assert_eq!(extract_credential(Some(""), Some("bearer  h "), None), (Some("h"), None));
        assert_eq!(extract_credential(None, Some("Basic dXNlcjpwYXNz"), None), (None, None));
        assert_eq!(extract_credential(None, Some("Bearer"), None), (None, None));
        assert_eq!(extract_credential(None, Some("Bearer   "), None), (None, None));
        assert_eq!(extract_credential(None, None, Some("dbx.v1")), (None, Some("dbx.v1")));
        assert_eq!(extract_credential(None, None, Some("bearer.abc.def.ghi")), (Some("abc.def.ghi"), None));
        assert_eq!(extract_credential(None, None, Some("Bearer.t,dbx.v1")), (Some("t"), Some("dbx.v1")));
        assert_eq!(extract_credential(None, None, Some("bearer., chat")), (None, None));
        assert_eq!(extract_credential(None, None, Some("DBX.V1")), (None, None));
        assert_eq!(extract_credential(None, None, None), (None, None));
        assert_eq!(extract_credential(None, None, Some("é,bearer")), (None, None));
    }

    #[test]
    fn redact() {
        assert_eq!(redact_query("/ws"), "/ws");
        assert_eq!(redact_query("/ws?api_key=s3cr3t&client_id=c1"), "/ws?api_key=REDACTED&client_id=c1");
        assert_eq!(
            redact_query("/ws?client_id=c1&token=a.b.c&access_token=x&version=1.0"),
            "/ws?client_id=c1&token=REDACTED&access_token=REDACTED&version=1.0"
        );
        assert_eq!(redact_query("/ws?api%5Fkey=s3cr3t"), "/ws?api%5Fkey=REDACTED");
        assert_eq!(redact_query("/ws?API_KEY=s3cr3t"), "/ws?API_KEY=REDACTED");
        assert_eq!(redact_query("/ws?api_key"), "/ws?api_key=REDACTED");
        assert_eq!(redact_query("/ws?a=1&&b=%zz"), "/ws?a=1&&b=%zz");
        assert_eq!(redact_query("/ws?api_key=1&api_key=2"), "/ws?api_key=REDACTED&api_key=REDACTED");
        assert_eq!(redact_protocols("dbx.v1, bearer.abc"), "dbx.v1, bearer.REDACTED");
    }
}
