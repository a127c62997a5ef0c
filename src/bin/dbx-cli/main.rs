//! dbx-cli: the command-line client of DBX, as redis-cli is Redis's.
//!
//! ```text
//! dbx-cli [-u URL] [--api-key KEY | --token JWT] [--ca FILE | --insecure] METHOD [PARAMS]
//! dbx-cli [...] watch KEY|PATTERN...          stream keyspace events as JSON lines
//! dbx-cli [...] subscribe CHANNEL|PATTERN...  stream pub/sub events as JSON lines
//! dbx-cli [...]                               interactive prompt (commands from stdin when piped)
//! ```
//!
//! Modules: `params` (words → a params object, typed by the method table), `methods`
//! (the table, compiled in from clients/methods.json: help and completion), `conn`
//! (one blocking WebSocket, `tls` for wss://), `stream` (watch/subscribe), `repl` (the
//! prompt), `out` (stdout/stderr formats).
//!
//! Crates beyond the server's: rustyline for the prompt (line editing, history file,
//! completion: what redis-cli gets from linenoise, and what a hand-written raw-mode
//! editor would take hundreds of lines to get half right), shlex for splitting typed or
//! piped lines with the shell's quoting rules (`value='hello world'`), rustls with the
//! ring provider for wss:// (the TLS stack the server uses) and rustls-native-certs for
//! the system's CA store when no `--ca` is given.
//!
//! Exit status: 0 success; 1 the server answered an error (or, reading commands from
//! stdin, any command failed); 2 usage errors, connection or handshake failures.

mod conn;
mod methods;
mod out;
mod params;
mod repl;
mod stream;

use clap::Parser;
use conn::{Conn, Reply, Target};
use dbx::tls_client::Trust;
use out::Out;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use stream::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "dbx-cli",
    version,
    about = "Command-line client for the DBX WebSocket data store",
    after_help = "PARAMS: one JSON object, or name=value pairs (a value that parses as JSON is JSON:\n\
                  ttl=60 is a number, values='[\"a\",\"b\"]' an array; anything else is a string),\n\
                  and the method's first parameters may be given bare in table order:\n\
                  \n  dbx-cli string.set key=greeting value=hello ttl=60\n  dbx-cli string.get greeting --raw\n\
                  \n`dbx-cli help` lists the methods, `dbx-cli help METHOD` one method's parameters.\n\
                  Exit status: 0 ok, 1 the server answered an error, 2 usage, connection or handshake failure."
)]
struct Cli {
    /// Server URL (ws:// or wss://)
    #[arg(short = 'u', long = "url", env = "DBX_URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// API key (sent as `Authorization: Bearer`)
    #[arg(long, env = "DBX_API_KEY", hide_env_values = true, conflicts_with = "token")]
    api_key: Option<String>,
    /// JWT (sent as `Authorization: Bearer`)
    #[arg(long, env = "DBX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust only the CA certificates in this PEM file (wss://)
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (wss://; encrypts without authenticating the server)
    #[arg(long)]
    insecure: bool,
    /// Print a string `value` result bare, without JSON quoting
    #[arg(long)]
    raw: bool,
    /// Seconds to wait for the connection and for each reply
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    timeout: f64,
    /// METHOD [PARAMS], `watch KEY|PATTERN...`, `subscribe CHANNEL|PATTERN...` or `help [METHOD]`
    #[arg(value_name = "COMMAND", allow_negative_numbers = true)]
    command: Vec<String>,
}

/// How one command ended.
pub enum Status {
    Ok,
    /// The server answered an error (printed).
    Failed,
    /// The command was not understood (printed); nothing was sent.
    Usage,
    /// The connection failed.
    Transport(String),
    Quit,
}

/// Run one command given as words (the same for arguments, piped lines and the prompt).
pub fn exec(words: &[String], conn: &mut Conn, out: &Out) -> Status {
    let Some((first, rest)) = words.split_first() else { return Status::Ok };
    if let Some(st) = local(first, rest) {
        return st;
    }
    if let Some(kind) = Kind::from_word(first) {
        return match stream::run(conn, kind, rest, out) {
            Ok(true) => Status::Ok,
            Ok(false) => Status::Failed,
            Err(e) if e.starts_with("usage:") => {
                eprintln!("{e}");
                Status::Usage
            }
            Err(e) => Status::Transport(e),
        };
    }
    let params = match params::build(first, rest) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("usage: {e}");
            return Status::Usage;
        }
    };
    match conn.call(first, &params) {
        Ok(Reply::Ok(v)) => {
            out.result(&v);
            Status::Ok
        }
        Ok(Reply::Err { code, message }) => {
            out::error(&code, &message);
            Status::Failed
        }
        Err(e) => Status::Transport(e),
    }
}

/// Commands that need no server: `help`, `quit`.
fn local(first: &str, rest: &[String]) -> Option<Status> {
    match first {
        "help" => Some(match rest.first() {
            None => {
                out::emit(methods::help_all().trim_end());
                Status::Ok
            }
            Some(m) => match methods::help_one(m) {
                Some(h) => {
                    out::emit(h.trim_end());
                    Status::Ok
                }
                None => {
                    eprintln!("no method {m:?} (`help` lists them)");
                    Status::Usage
                }
            },
        }),
        "quit" | "exit" => Some(Status::Quit),
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let trust = match (&cli.ca, cli.insecure) {
        (Some(f), _) => Trust::CaFile(f.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::System,
    };
    if !(cli.timeout.is_finite() && cli.timeout > 0.0 && cli.timeout <= 86_400.0) {
        eprintln!("dbx-cli: --timeout must be between 0 and 86400 seconds");
        return ExitCode::from(2);
    }
    let target = Target {
        url: cli.url.clone(),
        credential: cli.token.clone().or(cli.api_key.clone()),
        trust,
        timeout: Duration::from_secs_f64(cli.timeout),
    };
    let out = Out { pretty: std::io::stdout().is_terminal(), raw: cli.raw };

    // `help` and `quit` answer without a server.
    if let Some((first, rest)) = cli.command.split_first() {
        if let Some(st) = local(first, rest) {
            return code(&st);
        }
    }
    let interactive = cli.command.is_empty() && std::io::stdin().is_terminal();
    let mut conn = match Conn::connect(&target) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dbx-cli: {e}");
            return ExitCode::from(2);
        }
    };
    let status = if interactive {
        repl::run(conn, &target, &out)
    } else if cli.command.is_empty() {
        let st = from_stdin(&mut conn, &out);
        conn.close();
        st
    } else {
        let st = exec(&cli.command, &mut conn, &out);
        if let Status::Transport(e) = &st {
            eprintln!("dbx-cli: {e}");
        }
        conn.close();
        st
    };
    code(&status)
}

fn code(st: &Status) -> ExitCode {
    ExitCode::from(match st {
        Status::Ok | Status::Quit => 0,
        Status::Failed => 1,
        Status::Usage | Status::Transport(_) => 2,
    })
}

/// Commands from a pipe or file, one a line (blank lines and `#` comments skipped):
/// one reply line per command; the exit status is 1 if any command failed, 2 if the
/// connection failed (the remaining lines are not run).
fn from_stdin(conn: &mut Conn, out: &Out) -> Status {
    let mut failed = false;
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Status::Transport(format!("stdin: {e}")),
        };
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let words = match params::split_line(l) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("usage: {e}: {l}");
                failed = true;
                continue;
            }
        };
        match exec(&words, conn, out) {
            Status::Ok => {}
            Status::Failed | Status::Usage => failed = true,
            Status::Quit => break,
            Status::Transport(e) => {
                eprintln!("dbx-cli: {e}");
                return Status::Transport(e);
            }
        }
    }
    if failed {
        Status::Failed
    } else {
        Status::Ok
    }
}
