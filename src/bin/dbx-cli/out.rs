//! What goes to stdout and stderr: a result as JSON (pretty on a terminal, one line
//! when piped), a bare string with `--raw`, errors as `code: message`.

use serde_json::Value;
use std::io::{self, Write};

#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub pretty: bool,
    pub raw: bool,
}

impl Out {
    /// A command's result.
    pub fn result(&self, v: &Value) {
        let text = match (self.raw, v.get("value")) {
            (true, Some(Value::String(s))) => s.clone(),
            _ if self.pretty => serde_json::to_string_pretty(v).unwrap_or_default(),
            _ => v.to_string(),
        };
        emit(&text);
    }

    /// A streamed message: always one line (JSON lines), whatever stdout is.
    pub fn line(&self, v: &Value) {
        emit(&v.to_string());
    }
}

/// Write one line and flush it (a watcher's reader wants each event as it comes). A
/// reader that went away (`dbx-cli watch k | head -1`) ends the program quietly, as
/// the default SIGPIPE would; Rust ignores SIGPIPE, so the write reports it instead.
pub fn emit(text: &str) {
    let mut o = io::stdout().lock();
    if let Err(e) = writeln!(o, "{text}").and_then(|_| o.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("dbx-cli: stdout: {e}");
        std::process::exit(2);
    }
}

pub fn error(code: &str, message: &str) {
    eprintln!("{code}: {message}");
}
