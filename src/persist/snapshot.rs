//! Writing a snapshot: the whole store as `snapshot-N.dbx.tmp`, fsynced. Runs in the
//! forked child (the copy-on-write image of the store at the fork), so it must not
//! take locks another thread of the parent could have held at the fork: no logging,
//! no stdout; it reports through its exit status.

use super::format::{self, SNAP_MAGIC};
use crate::store::Store;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Entries are framed one by one but written through a 1 MiB buffer.
const BUF: usize = 1 << 20;

/// Write the store to `tmp` and fsync it. `crash_mid`: abort halfway (test hook).
pub fn write(tmp: &Path, gen: u64, store: &Store, epoch: &str, now_ms: u64, crash_mid: bool) -> io::Result<()> {
    let file = File::create(tmp)?;
    let mut w = BufWriter::with_capacity(BUF, file);
    let mut b = Vec::with_capacity(64 * 1024);
    b.extend_from_slice(SNAP_MAGIC);
    format::header(&mut b, gen, store.rev(), now_ms, epoch);
    let half = store.len() / 2;
    let mut n = 0u64;
    for it in store.iter() {
        let at = format::begin_frame(&mut b);
        b.push(format::K_ENTRY);
        format::put_u64(&mut b, it.expires_at);
        format::put_str(&mut b, &it.key);
        format::encode_value(&it.value, &mut b);
        format::end_frame(&mut b, at);
        n += 1;
        if b.len() >= 60 * 1024 {
            w.write_all(&b)?;
            b.clear();
        }
        if crash_mid && n as usize == half {
            w.write_all(&b)?;
            w.flush()?;
            std::process::abort();
        }
    }
    let at = format::begin_frame(&mut b);
    b.push(format::K_END);
    format::put_u64(&mut b, n);
    format::end_frame(&mut b, at);
    w.write_all(&b)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}
