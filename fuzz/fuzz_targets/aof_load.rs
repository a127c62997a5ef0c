//! The append-only log and snapshot loader (`persist::load::load`): arbitrary bytes as
//! a data directory's only file must load or be refused with an error naming file and
//! offset — never a panic, never an allocation sized by a length field beyond the file.
//! The first input byte picks the file (log or snapshot), whether the right magic is
//! prepended (to get past the header check quickly) and whether `--aof-truncate-corrupt`
//! is on, and (bit 3) whether the last run shut down cleanly.
#![no_main]

use dbx::persist::{format, load};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dbx-fuzz-aof-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let (mode, body) = data.split_first().unwrap_or((&0, &[]));
    let snapshot = mode & 1 == 1;
    let mut file = Vec::with_capacity(body.len() + 8);
    if mode & 2 == 2 {
        file.extend_from_slice(if snapshot { format::SNAP_MAGIC } else { format::AOF_MAGIC });
    }
    file.extend_from_slice(body);
    let name = if snapshot { "snapshot-1.dbx" } else { "aof-1.log" };
    std::fs::write(dir.join(name), &file).expect("write");
    let _ = load::load(dir, mode & 4 == 4, mode & 8 == 8);
});
