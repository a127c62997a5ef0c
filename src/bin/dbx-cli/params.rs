//! Turning typed words into a request: `string.set key=greeting value=hello ttl=60`,
//! `string.set greeting hello ttl=60`, or `string.set '{"key":"greeting","value":"hello"}'`.

use crate::methods::{self, Method};
use serde_json::{Map, Value};

/// Split a typed or piped line into words with the shell's quoting rules, so that
/// `value='hello world'` and `values='["a","b"]'` mean what they mean on the command line.
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    shlex::split(line).ok_or_else(|| "unbalanced quotes".to_string())
}

/// A `name=value` word when the text before the first `=` is a parameter name.
fn as_pair(word: &str) -> Option<(&str, &str)> {
    let (k, v) = word.split_once('=')?;
    let is_name = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    is_name.then_some((k, v))
}

/// A value as typed: JSON when it parses as JSON, otherwise the text as a string.
/// Where the method table says the parameter is a string, text that is not a JSON
/// string stays text (`key=123` is the key "123", not the number 123).
fn value_of(text: &str, ty: Option<&str>) -> Value {
    let parsed = serde_json::from_str::<Value>(text).ok();
    match (ty, parsed) {
        (Some("str") | Some("side"), Some(v @ Value::String(_))) => v,
        (Some("str") | Some("side"), _) => Value::String(text.to_string()),
        (_, Some(v)) => v,
        (_, None) => Value::String(text.to_string()),
    }
}

/// The params object for `method` from the words after it.
pub fn build(method: &str, words: &[String]) -> Result<Value, String> {
    if let [only] = words {
        if only.trim_start().starts_with('{') {
            return match serde_json::from_str::<Value>(only) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err("PARAMS must be a JSON object".into()),
                Err(e) => Err(format!("PARAMS is not valid JSON: {e}")),
            };
        }
    }
    let table: Option<&Method> = methods::find(method);
    let mut params = Map::new();
    let mut next_positional = 0usize;
    for w in words {
        if w.trim_start().starts_with('{') && words.len() > 1 {
            return Err("a JSON object must be the only PARAMS argument".into());
        }
        let (name, value) = match as_pair(w) {
            Some((k, v)) => (k.to_string(), value_of(v, table.and_then(|m| m.param_type(k)))),
            None => {
                let Some(m) = table else {
                    return Err(format!(
                        "'{w}': {method} is not in the method table, so give parameters as name=value"
                    ));
                };
                let Some(arg) = m.args.get(next_positional) else {
                    return Err(format!("'{w}': too many bare arguments for {method} (see `help {method}`)"));
                };
                next_positional += 1;
                match &arg.many {
                    // A list or object goes to the plural parameter, anything else to the single one.
                    Some(many) => match serde_json::from_str::<Value>(w) {
                        Ok(v @ (Value::Array(_) | Value::Object(_))) => (many.clone(), v),
                        _ => (arg.one.clone(), value_of(w, Some("str"))),
                    },
                    None => (arg.one.clone(), value_of(w, Some(arg.ty.as_str()))),
                }
            }
        };
        if params.contains_key(&name) {
            return Err(format!("parameter '{name}' given twice"));
        }
        params.insert(name, value);
    }
    Ok(Value::Object(params))
}

/// Globs go to `patterns`, plain names to `keys` / `channels` (the same characters the
/// server's glob matcher treats as special).
pub fn split_patterns(targets: &[String]) -> (Vec<String>, Vec<String>) {
    targets.iter().cloned().partition(|t| !t.contains(['*', '?', '[']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b(method: &str, line: &str) -> Result<Value, String> {
        build(method, &split_line(line).unwrap())
    }

    #[test]
    fn pairs_are_json_when_they_parse() {
        assert_eq!(
            b("string.set", "key=greeting value=hello ttl=60").unwrap(),
            json!({"key":"greeting","value":"hello","ttl":60})
        );
        assert_eq!(b("list.push", r#"key=l values='["a","b"]'"#).unwrap(), json!({"key":"l","values":["a","b"]}));
        assert_eq!(
            b("string.set", "key=123 value='hello world' nx=true").unwrap(),
            json!({"key":"123","value":"hello world","nx":true})
        );
        assert_eq!(b("x.unknown", "a=1 b=two").unwrap(), json!({"a":1,"b":"two"}));
    }

    #[test]
    fn bare_words_follow_the_table() {
        assert_eq!(
            b("string.set", "greeting hello ttl=60").unwrap(),
            json!({"key":"greeting","value":"hello","ttl":60})
        );
        assert_eq!(b("key.del", "a").unwrap(), json!({"key":"a"}));
        assert_eq!(b("key.del", r#"'["a","b"]'"#).unwrap(), json!({"keys":["a","b"]}));
        assert_eq!(b("list.range", "l 0 -1").unwrap(), json!({"key":"l","start":0,"stop":-1}));
        assert!(b("string.get", "a b").unwrap_err().contains("too many"));
        assert!(b("x.unknown", "a").unwrap_err().contains("name=value"));
    }

    #[test]
    fn a_json_object_alone() {
        assert_eq!(b("string.get", r#"'{"key":"k"}'"#).unwrap(), json!({"key":"k"}));
        assert!(b("string.get", r#"'{"key":'"#).unwrap_err().contains("not valid JSON"));
        assert!(b("string.get", r#"'{"key":"k"}' ttl=1"#).unwrap_err().contains("only"));
        assert!(b("string.get", "key=a key=b").unwrap_err().contains("twice"));
        assert!(split_line("a 'b").is_err());
    }
}
