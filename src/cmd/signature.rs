//! The parameter names each method accepts. They come from `clients/methods.json`, the
//! one method table that both clients and `dbx-cli` are generated from, so a parameter
//! the clients do not know cannot exist on the server either (and a test checks that
//! the table names exactly the server's methods).
//!
//! A request naming a parameter its method does not take is refused with
//! `invalid_params` before it runs: `{"tll":60}` on `string.set` is a typo that used to
//! be ignored silently, leaving a key without its TTL.

use crate::proto::{Error, Params, Result};
use hashbrown::HashMap;
use std::sync::OnceLock;

/// The method table, compiled in.
pub const METHODS_JSON: &str = include_str!("../../clients/methods.json");

type Table = HashMap<String, Vec<String>>;

/// Method → accepted parameter names, parsed once. Each `args` entry is
/// `name[?]:type` or `one|many[?]:type` (both names accepted); `opts` are named.
fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| parse(METHODS_JSON).unwrap_or_default())
}

/// Parse the method table (None if it is not the expected shape; a unit test makes
/// sure the compiled-in one is).
pub fn parse(text: &str) -> Option<Table> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut t = Table::new();
    for (method, def) in doc.get("methods")?.as_object()? {
        let mut names = Vec::new();
        for spec in def.get("args").and_then(|a| a.as_array()).map_or(&[][..], |a| a.as_slice()) {
            let name = spec.as_str()?.split(':').next()?.trim_end_matches('?');
            names.extend(name.split('|').map(str::to_string));
        }
        if let Some(opts) = def.get("opts").and_then(|o| o.as_object()) {
            names.extend(opts.keys().cloned());
        }
        t.insert(method.clone(), names);
    }
    Some(t)
}

/// The parameter names `method` accepts (None: not in the table).
pub fn accepted(method: &str) -> Option<&'static [String]> {
    table().get(method).map(Vec::as_slice)
}

/// Refuse a parameter that `method` does not take, suggesting the nearest known name.
pub fn check(method: &str, params: &Params) -> Result<()> {
    check_accepted(method, accepted(method), params)
}

/// `check` with the accepted names already found (the dispatcher has them from the
/// command table entry: no second lookup by name per request).
pub fn check_accepted(method: &str, known: Option<&[String]>, params: &Params) -> Result<()> {
    let Some(known) = known else {
        return Ok(());
    };
    for name in params.names() {
        if !known.iter().any(|k| k == name) {
            let hint = nearest(name, known).map_or(String::new(), |k| format!(" (did you mean '{k}'?)"));
            let list = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(Error::invalid_params(format!(
                "Unknown parameter '{name}' for {method}{hint}; it takes: {list}"
            )));
        }
    }
    Ok(())
}

/// The known name closest to `name` by edit distance, if close enough to be a typo.
fn nearest<'k>(name: &str, known: &'k [String]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < k.len().max(name.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions: `tll`
/// for `ttl` is one edit).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().take(64).collect(), b.chars().take(64).collect());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    let at = |i: usize, j: usize| i * w + j;
    for i in 0..=a.len() {
        if let Some(x) = d.get_mut(at(i, 0)) {
            *x = i;
        }
    }
    for j in 0..=b.len() {
        if let Some(x) = d.get_mut(at(0, j)) {
            *x = j;
        }
    }
    let get = |d: &[usize], i, j| d.get(at(i, j)).copied().unwrap_or(usize::MAX / 2);
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a.get(i - 1) != b.get(j - 1));
            let mut v = (get(&d, i - 1, j) + 1).min(get(&d, i, j - 1) + 1).min(get(&d, i - 1, j - 1) + cost);
            if i > 1 && j > 1 && a.get(i - 1) == b.get(j - 2) && a.get(i - 2) == b.get(j - 1) {
                v = v.min(get(&d, i - 2, j - 2) + 1);
            }
            if let Some(x) = d.get_mut(at(i, j)) {
                *x = v;
            }
        }
    }
    get(&d, a.len(), b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_exactly_the_servers_methods() {
        let t = parse(METHODS_JSON).expect("clients/methods.json parses");
        let mut ours: Vec<_> = super::super::method_names().into_iter().filter(|m| *m != "batch").collect();
        ours.sort_unstable();
        let mut theirs: Vec<_> = t.keys().map(String::as_str).collect();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
        assert_eq!(accepted("string.set").unwrap(), ["key", "value", "get", "nx", "ttl", "xx"]);
        assert_eq!(accepted("key.del").unwrap(), ["key", "keys"]);
    }

    #[test]
    fn typos_get_a_suggestion() {
        let known: Vec<String> = ["key", "value", "ttl", "nx", "xx", "get"].map(String::from).to_vec();
        assert_eq!(nearest("tll", &known), Some("ttl"));
        assert_eq!(nearest("vaule", &known), Some("value"));
        assert_eq!(nearest("zzzzzz", &known), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
