//! Configuration errors at start (issue 17): clap's whole message — the variable, the
//! possible values, the similar-flag tip — and exit status 2.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbx"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DBX_") {
            c.env_remove(k);
        }
    }
    let out = c.args(args).envs(env.iter().copied()).env("DBX_PERSIST", "false").output().expect("run dbx");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_value_lists_the_possible_values() {
    let (code, err) = run(&["--appendfsync", "sometimes"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.starts_with("dbx: invalid value 'sometimes' for '--appendfsync <DBX_APPENDFSYNC>'"), "{err}");
    assert!(err.contains("[possible values: always, everysec, no]"), "{err}");
    let (code, err) = run(&[], &[("DBX_LOG", "loud")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("DBX_LOG") && err.contains("possible values"), "{err}");
}

#[test]
fn a_misspelt_flag_gets_the_similar_flag_tip() {
    let (code, err) = run(&["--prot", "9000"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unexpected argument '--prot'") && err.contains("a similar argument exists: '--port'"),
        "{err}"
    );
}

#[test]
fn zero_max_connections_is_refused_at_start() {
    for (args, env) in
        [(&["--ws-max-connections", "0"][..], &[][..]), (&[][..], &[("DBX_WS_MAX_CONNECTIONS", "0")][..])]
    {
        let (code, err) = run(args, env);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("DBX_WS_MAX_CONNECTIONS") && err.contains("at least 1"), "{err}");
    }
}
