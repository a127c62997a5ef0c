//! Length-field damage in the append-only log (issue 17): a valid log of `n` records
//! built from the input, then one XOR mask applied to the length (or length checksum)
//! of one record — in the middle or the last one. Start-up after a crash (the case in
//! which a torn tail may be cut) must refuse with the file and offset; it must never
//! load with records silently missing, and must never cut the file.
#![no_main]

use dbx::persist::{format, load};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dbx-fuzz-aoflen-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let [n, which, field, m0, m1, m2, m3, rest @ ..] = data else { return };
    let n = usize::from(*n % 32) + 1;
    let mask = u32::from_le_bytes([*m0, *m1, *m2, *m3]);
    if mask == 0 {
        return;
    }
    let mut log = format::AOF_MAGIC.to_vec();
    format::header(&mut log, 0, 0, 0, "e");
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(log.len());
        let at = format::begin_frame(&mut log);
        log.push(format::K_REV);
        format::put_u64(&mut log, i as u64 + 1);
        format::put_u64(&mut log, 0);
        // Some records carry extra bytes from the input, so lengths vary.
        let extra = rest.get(i % rest.len().max(1)).copied().unwrap_or(0) as usize;
        log.extend(std::iter::repeat_n(b'x', extra));
        format::end_frame(&mut log, at);
    }
    let at = starts[usize::from(*which) % n];
    // field 0: the length, 1: its checksum.
    let off = at + 4 * usize::from(*field % 2);
    for (i, b) in mask.to_le_bytes().iter().enumerate() {
        log[off + i] ^= b;
    }
    let dir = dir();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let path = dir.join("aof-0.log");
    std::fs::write(&path, &log).expect("write");
    match load::load(dir, false, false) {
        Err(e) => assert!(e.contains(&format!("byte offset {at}")), "{e}"),
        Ok(l) => panic!("a damaged length loaded as {} records of {n}", l.records),
    }
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), log.len() as u64, "the log was cut");
});
