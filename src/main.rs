//! The `dbx` binary: flags and environment → `Config` → bind → run.

use dbx::config::Config;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's whole message — the variable or flag, the possible values, the
            // similar-flag tip — and exit status 2 (PROTOCOL.md §8).
            let text = e.to_string();
            eprint!("dbx: {}", text.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    dbx::logging::init(cfg.log.filter(), cfg.log_format);
    match dbx::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(dbx::RunError::Config(e)) => {
            eprintln!("dbx: {e}");
            ExitCode::from(2)
        }
        Err(dbx::RunError::Runtime(e)) => {
            eprintln!("dbx: {e}");
            ExitCode::from(1)
        }
    }
}
