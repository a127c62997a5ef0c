//! The interactive prompt: rustyline with history in `~/.dbx_cli_history`, completion
//! of method names, CLI commands and a method's parameter names.

use crate::conn::{Conn, Target};
use crate::methods::{self, CLI_COMMANDS};
use crate::out::Out;
use crate::{exec, params, Status};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::path::PathBuf;

struct Complete;

impl Completer for Complete {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = before.get(start..).unwrap_or("");
        let first = before.split_whitespace().next().unwrap_or("");
        let pair = |s: String, tail: &str| Pair { display: s.clone(), replacement: format!("{s}{tail}") };
        let names =
            || methods::table().iter().map(|m| m.name.clone()).chain(CLI_COMMANDS.iter().map(|(n, _)| n.to_string()));
        let found: Vec<Pair> = if start == 0 {
            names().filter(|n| n.starts_with(word)).map(|n| pair(n, " ")).collect()
        } else if first == "help" {
            names().filter(|n| n.starts_with(word)).map(|n| pair(n, "")).collect()
        } else if let Some(m) = methods::find(first) {
            // Parameter names not typed yet, as `name=`.
            m.param_names()
                .into_iter()
                .filter(|p| p.starts_with(word) && !before.contains(&format!(" {p}=")))
                .map(|p| pair(p.to_string(), "="))
                .collect()
        } else {
            Vec::new()
        };
        Ok((start, found))
    }
}

impl Hinter for Complete {
    type Hint = String;
}
impl Highlighter for Complete {}
impl Validator for Complete {}
impl Helper for Complete {}

/// `$HOME/.dbx_cli_history` (no history without a home).
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".dbx_cli_history"))
}

pub fn run(conn: Conn, target: &Target, out: &Out) -> Status {
    let mut ed: Editor<Complete, FileHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => return Status::Transport(format!("terminal: {e}")),
    };
    ed.set_helper(Some(Complete));
    let hist = history_path();
    if let Some(h) = &hist {
        let _ = ed.load_history(h);
    }
    let prompt = format!("{}> ", conn.label);
    let mut conn = Some(conn);
    loop {
        let line = match ed.readline(&prompt) {
            Ok(l) => l,
            // Ctrl-C at the prompt drops the line, as in a shell; Ctrl-D quits.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Status::Transport(format!("terminal: {e}")),
        };
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let _ = ed.add_history_entry(l);
        if let Some(h) = &hist {
            // Saved after every line, so a killed session keeps its history.
            if let Err(e) = ed.save_history(h) {
                eprintln!("(history not saved to {}: {e})", h.display());
            }
        }
        let words = match params::split_line(l) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("usage: {e}");
                continue;
            }
        };
        // An idle prompt does not read the socket: answer the pings and heartbeats
        // that waited, and reconnect if the server closed the connection meanwhile.
        let alive = conn.as_mut().map(|c| c.drain());
        if !matches!(alive, Some(Ok(()))) {
            if let Some(c) = conn.take() {
                c.close();
            }
            match Conn::connect(target) {
                Ok(c) => {
                    if let Some(Err(why)) = alive {
                        eprintln!("(reconnected: {why})");
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    eprintln!("not connected: {e}");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match exec(&words, c, out) {
            Status::Quit => break,
            Status::Transport(e) => {
                eprintln!("connection lost: {e}");
                conn = None;
            }
            _ => {}
        }
    }
    if let Some(c) = conn {
        c.close();
    }
    // Errors were shown as they happened; leaving the prompt is a success.
    Status::Ok
}
