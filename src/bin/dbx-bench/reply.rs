//! Reading replies: the `id`, `type` and `error` (with its `code`) of a server message.
//!
//! The common shape goes through the server's own validating scanner
//! (`dbx::proto::scan`) in one pass; anything it is not sure about falls back to
//! serde, which decides. The test checks that both paths agree with serde.

use std::borrow::Cow;

use dbx::proto::scan::{Scanner, SyntaxError};
use serde::Deserialize;

#[derive(Deserialize)]
struct ErrBody<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct Reply<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(rename = "type", borrow, default)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<ErrBody<'a>>,
}

/// What the generator needs from a reply: `id`, `type`, and `error` (with its
/// `code`). `error: Some(None)` is an error without a code.
pub(crate) struct ReplyInfo<'a> {
    pub(crate) id: Option<u64>,
    pub(crate) kind: Option<Cow<'a, str>>,
    pub(crate) error: Option<Option<Cow<'a, str>>>,
}

impl<'a> From<Reply<'a>> for ReplyInfo<'a> {
    fn from(r: Reply<'a>) -> ReplyInfo<'a> {
        ReplyInfo { id: r.id, kind: r.kind, error: r.error.map(|e| e.code) }
    }
}

/// Parse a reply. The common shape goes through [`scan_reply`], a single pass that
/// still checks the whole text is valid JSON; anything it is not sure about
/// (escapes, odd `id` values, duplicate keys, deep nesting, ...) goes to serde,
/// which decides exactly as before. `None`: not a valid reply.
pub(crate) fn parse_reply(t: &str) -> Option<ReplyInfo<'_>> {
    match scan_reply(t) {
        Ok(r) => Some(r),
        Err(_) => serde_json::from_str::<Reply>(t).ok().map(ReplyInfo::from),
    }
}

/// The text of a JSON string value without escapes; None for anything else (the
/// caller hands such replies to serde).
fn plain_string(v: &str) -> Option<&str> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Fast path of [`parse_reply`], on the server's own validating scanner
/// (`dbx::proto::scan`, fuzzed against serde_json): a top-level object whose `id` is a
/// non-negative integer or null, `type` a plain string or null, `error` an object
/// (with a plain string or null `code`) or null; every other member is skipped but
/// checked. Any error means "not sure": serde decides.
fn scan_reply(t: &str) -> Result<ReplyInfo<'_>, SyntaxError> {
    let mut r = ReplyInfo { id: None, kind: None, error: None };
    let (mut seen_id, mut seen_type, mut seen_err) = (false, false, false);
    let mut s = Scanner::new(t, dbx::proto::MAX_DEPTH);
    if s.next_byte() != Some(b'{') {
        return Err(s.error_here("not an object"));
    }
    s.object(|k, s| {
        let seen = match (k.escaped, k.inner()) {
            (false, "id") => &mut seen_id,
            (false, "type") => &mut seen_type,
            (false, "error") => &mut seen_err,
            (true, _) => return Err(s.error_here("escaped key")),
            _ => return s.value().map(drop),
        };
        if std::mem::replace(seen, true) {
            return Err(s.error_here("duplicate field"));
        }
        let name = k.inner();
        let v = s.value()?;
        let unsure = || s.error_here("unusual value");
        if v == "null" {
            return Ok(());
        }
        match name {
            "id" => r.id = Some(v.parse::<u64>().map_err(|_| unsure())?),
            "type" => r.kind = Some(Cow::Borrowed(plain_string(v).ok_or_else(unsure)?)),
            _ => {
                if !v.starts_with('{') {
                    return Err(unsure());
                }
                let (mut code, mut seen_code) = (None, false);
                Scanner::new(v, dbx::proto::MAX_DEPTH).object(|k, s| {
                    if k.escaped || k.inner() != "code" {
                        return if k.escaped { Err(s.error_here("escaped key")) } else { s.value().map(drop) };
                    }
                    if std::mem::replace(&mut seen_code, true) {
                        return Err(s.error_here("duplicate code"));
                    }
                    let c = s.value()?;
                    if c != "null" {
                        code = Some(Cow::Borrowed(plain_string(c).ok_or_else(|| s.error_here("unusual code"))?));
                    }
                    Ok(())
                })?;
                r.error = Some(code);
            }
        }
        Ok(())
    })?;
    s.end()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Norm = Option<(Option<u64>, Option<String>, Option<Option<String>>)>;

    fn norm(r: Option<ReplyInfo<'_>>) -> Norm {
        r.map(|r| (r.id, r.kind.map(|k| k.into_owned()), r.error.map(|e| e.map(|c| c.into_owned()))))
    }

    #[test]
    fn replies_parse_like_serde() {
        let cases = [
            r#"{"id":1,"result":{"value":"xxxx"},"timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"id":18446744073709551615,"result":null}"#,
            r#"{"id":18446744073709551616,"result":null}"#,
            r#"{"id":0,"result":[1,2.5,-3e+7,true,false,null,{"a":[]},{}]}"#,
            r#"{"id":7,"error":{"code":"not_found","message":"no such key"},"timestamp":"t"}"#,
            r#"{"id":7,"error":{"message":"no code"}}"#,
            r#"{"id":7,"error":{"code":null}}"#,
            r#"{"id":7,"error":null,"result":1}"#,
            r#"{"id":7,"error":"boom"}"#,
            r#"{"id":7,"error":{"code":5}}"#,
            r#"{"id":7,"error":{"code":"a","code":"b"}}"#,
            r#"{"error":{"code":"rate_limited"}}"#,
            r#"{"type":"event","channel":"c","data":{"p":1}}"#,
            r#"{"type":null,"id":null}"#,
            r#"{"id":null}"#,
            r#"{}"#,
            r#" { "id" : 3 , "result" : "x" } "#,
            r#"{"id":3,"result":"a\"b\u00e9"}"#,
            r#"{"i\u0064":3}"#,
            r#"{"id":"3"}"#,
            r#"{"id":3.0}"#,
            r#"{"id":-3}"#,
            r#"{"id":03}"#,
            r#"{"id":1e2}"#,
            r#"{"id":3,"id":4}"#,
            r#"{"id":3,"type":"x","type":"y"}"#,
            r#"{"id":3,}"#,
            r#"{"id":3} x"#,
            r#"{"id":3,"result":[1,]}"#,
            r#"{"id":3,"result":01}"#,
            r#"{"id":3,"result":1.}"#,
            r#"{"id":3,"result":tru}"#,
            r#"{"id":3,"result":"tab	in string"}"#,
            r#"{"id":3"#,
            r#"[3,"event",null]"#,
            r#"[]"#,
            r#"3"#,
            r#""#,
            r#"{"id":3,"result":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        ];
        for c in cases {
            let want = norm(serde_json::from_str::<Reply>(c).ok().map(ReplyInfo::from));
            assert_eq!(norm(parse_reply(c)), want, "{c}");
        }
        // Every position of a quote, escape, control character or multi-byte
        // character relative to the 8-byte steps of the string scan.
        for n in 0..20 {
            let a = "a".repeat(n);
            for mid in ["\\\"", "\\n", "\u{1}", "\t", "é", "😀", "\u{7f}", "x\"y", ""] {
                for c in [
                    format!(r#"{{"id":1,"result":{{"value":"{a}{mid}{a}"}},"timestamp":"{a}"}}"#),
                    format!(r#"{{"id":1,"error":{{"code":"{a}{mid}","message":"{mid}{a}"}}}}"#),
                    format!(r#"{{"type":"{a}{mid}"}}"#),
                ] {
                    let want = norm(serde_json::from_str::<Reply>(&c).ok().map(ReplyInfo::from));
                    assert_eq!(norm(parse_reply(&c)), want, "{c:?}");
                }
            }
        }
        // The common shapes take the fast path.
        let r = scan_reply(r#"{"id":42,"result":{"value":"x"},"timestamp":"t"}"#).ok().unwrap();
        assert!(r.id == Some(42) && r.kind.is_none() && r.error.is_none());
        let r = scan_reply(r#"{"id":7,"error":{"code":"not_found","message":"m"}}"#).ok().unwrap();
        assert_eq!(r.error, Some(Some(Cow::Borrowed("not_found"))));
    }
}
