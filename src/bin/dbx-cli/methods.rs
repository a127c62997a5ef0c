//! The method table, read from the same file the client libraries are generated from
//! (`clients/methods.json`, compiled in), so `help`, completion and parameter typing
//! cannot drift from the clients.

use std::fmt::Write;
use std::sync::OnceLock;

const TABLE_JSON: &str = include_str!("../../../clients/methods.json");

/// One positional argument of a method: `key:str`, `field?:str`, `key|keys:strs`.
#[derive(Debug, Clone)]
pub struct Arg {
    /// The parameter a single value goes to.
    pub one: String,
    /// The parameter a list (or object) goes to, for `one|many` arguments.
    pub many: Option<String>,
    pub ty: String,
    pub optional: bool,
}

#[derive(Debug, Clone)]
pub struct Method {
    pub name: String,
    pub args: Vec<Arg>,
    /// Optional named parameters and their types.
    pub opts: Vec<(String, String)>,
    pub result: String,
}

impl Method {
    /// The JSON type of parameter `name` in the table's vocabulary (`str`, `int`, `strs` …).
    pub fn param_type(&self, name: &str) -> Option<&str> {
        for a in &self.args {
            if a.one == name {
                // The single-value side of `one|many` is a scalar string.
                return Some(if a.many.is_some() { "str" } else { &a.ty });
            }
            if a.many.as_deref() == Some(name) {
                return Some(&a.ty);
            }
        }
        self.opts.iter().find(|(k, _)| k == name).map(|(_, t)| t.as_str())
    }

    /// Every parameter name, in table order (for completion).
    pub fn param_names(&self) -> Vec<&str> {
        let mut v = Vec::new();
        for a in &self.args {
            v.push(a.one.as_str());
            if let Some(m) = &a.many {
                v.push(m.as_str());
            }
        }
        v.extend(self.opts.iter().map(|(k, _)| k.as_str()));
        v
    }

    /// `string.set key value [ttl=num] [nx=bool] …`
    pub fn synopsis(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            let name = match &a.many {
                Some(m) => format!("{}|{}", a.one, m),
                None => a.one.clone(),
            };
            if a.optional {
                let _ = write!(s, " [{name}]");
            } else {
                let _ = write!(s, " {name}");
            }
        }
        for (k, t) in &self.opts {
            let _ = write!(s, " [{k}={t}]");
        }
        s
    }
}

fn parse_arg(spec: &str) -> Arg {
    let (raw, ty) = spec.split_once(':').unwrap_or((spec, "any"));
    let optional = raw.ends_with('?');
    let raw = raw.trim_end_matches('?');
    let (one, many) = match raw.split_once('|') {
        Some((o, m)) => (o.to_string(), Some(m.to_string())),
        None => (raw.to_string(), None),
    };
    Arg { one, many, ty: ty.to_string(), optional }
}

/// A JSON object's members in file order (serde_json's `Map` sorts them unless the
/// crate-wide `preserve_order` feature is on, which would change the server's maps).
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, T>()? {
                    v.push(e);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(serde::Deserialize)]
struct Def {
    #[serde(default)]
    args: Vec<String>,
    opts: Option<Ordered<String>>,
    #[serde(default)]
    result: String,
}

#[derive(serde::Deserialize)]
struct File {
    methods: Ordered<Def>,
}

fn parse_table(text: &str) -> Result<Vec<Method>, String> {
    let file: File = serde_json::from_str(text).map_err(|e| format!("clients/methods.json: {e}"))?;
    let methods = file.methods.0;
    let mut out = Vec::with_capacity(methods.len() + 1);
    for (name, def) in methods {
        let args = def.args.iter().map(|a| parse_arg(a)).collect();
        let opts = def.opts.map(|o| o.0).unwrap_or_default();
        out.push(Method { name, args, opts, result: def.result });
    }
    // `batch` is an envelope method the client libraries write by hand
    // (batchOperations / batch_operations), so the table leaves it out.
    out.push(Method {
        name: "batch".into(),
        args: vec![Arg { one: "operations".into(), many: None, ty: "ops".into(), optional: false }],
        opts: Vec::new(),
        result: "{ results: ({ result } | { error })[] }".into(),
    });
    Ok(out)
}

/// The table; empty (with a warning) only if the compiled-in file were broken, which
/// a unit test rules out.
pub fn table() -> &'static [Method] {
    static T: OnceLock<Vec<Method>> = OnceLock::new();
    T.get_or_init(|| {
        parse_table(TABLE_JSON).unwrap_or_else(|e| {
            eprintln!("dbx-cli: {e}");
            Vec::new()
        })
    })
}

pub fn find(name: &str) -> Option<&'static Method> {
    table().iter().find(|m| m.name == name)
}

/// Commands of the CLI itself, next to the protocol methods.
pub const CLI_COMMANDS: [(&str, &str); 5] = [
    ("watch", "watch KEY|PATTERN...       stream keyspace events as JSON lines (Ctrl-C stops)"),
    ("subscribe", "subscribe CHANNEL|PATTERN... stream pub/sub events as JSON lines (Ctrl-C stops)"),
    ("help", "help [METHOD]              this list, or one method's parameters"),
    ("quit", "quit                       leave (or Ctrl-D)"),
    ("exit", "exit                       leave (or Ctrl-D)"),
];

/// `help`: every method with its parameters, grouped by namespace.
pub fn help_all() -> String {
    let mut s = String::from(
        "METHOD [PARAMS]: PARAMS is one JSON object, or name=value pairs (a value that parses as JSON\n\
         is JSON, anything else a string); the first arguments may also be given bare, in the order shown.\n\n",
    );
    let mut last_ns = "";
    for m in table() {
        let ns = m.name.split('.').next().unwrap_or("");
        if ns != last_ns && !last_ns.is_empty() {
            s.push('\n');
        }
        last_ns = ns;
        let _ = writeln!(s, "  {}", m.synopsis());
    }
    s.push('\n');
    for (_, line) in CLI_COMMANDS.iter().filter(|(n, _)| *n != "exit") {
        let _ = writeln!(s, "  {line}");
    }
    s
}

/// `help METHOD`: its parameters with their types and the result's shape.
pub fn help_one(name: &str) -> Option<String> {
    if let Some((_, line)) = CLI_COMMANDS.iter().find(|(n, _)| *n == name) {
        return Some(format!("  {line}\n"));
    }
    let m = find(name)?;
    let mut s = format!("  {}\n\n", m.synopsis());
    for a in &m.args {
        let opt = if a.optional { " (optional)" } else { "" };
        match &a.many {
            Some(many) => {
                let _ = writeln!(s, "    {} (str) or {} ({}){opt}", a.one, many, a.ty);
            }
            None => {
                let _ = writeln!(s, "    {} ({}){opt}", a.one, a.ty);
            }
        }
    }
    for (k, t) in &m.opts {
        let _ = writeln!(s, "    {k} ({t}, optional)");
    }
    let _ = writeln!(s, "\n  result: {}", m.result);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_table_parses() {
        let t = parse_table(TABLE_JSON).unwrap();
        assert!(t.len() > 40);
        let set = t.iter().find(|m| m.name == "string.set").unwrap();
        assert_eq!(set.param_type("ttl"), Some("num"));
        assert_eq!(set.param_type("key"), Some("str"));
        let del = t.iter().find(|m| m.name == "key.del").unwrap();
        assert_eq!(del.param_type("key"), Some("str"));
        assert_eq!(del.param_type("keys"), Some("strs"));
        assert!(help_one("string.set").unwrap().contains("ttl (num, optional)"));
    }
}
