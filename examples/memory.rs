//! Memory footprint of the store: loads one data set into a `Store` and compares the
//! store's own estimate (`used_memory`, what `server.info` reports) with the process's
//! real heap growth (glibc `mallinfo2`) and RSS growth. One data set per run, so each
//! starts from a clean heap. Used by `scripts/memory.sh`.
//!
//! cargo run --release --example memory -- <strings|hashes|sets|zsets|lists> [n]
//!
//! strings: n keys of 16 bytes with 32-byte values (default 1,000,000).
//! others:  n/1000 keys holding 1000 elements each (16-byte fields/members/values).

use dbx::store::{Store, Value};

fn heap_bytes() -> usize {
    // SAFETY: mallinfo2 only reads allocator statistics.
    let mi = unsafe { libc::mallinfo2() };
    mi.uordblks + mi.hblkhd
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("strings");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let per = 1000;
    let (heap0, rss0) = (heap_bytes(), rss_bytes());
    let mut st = Store::new();
    let val32 = "v".repeat(32);
    let val16 = "v".repeat(16);
    match mode {
        "strings" => {
            for i in 0..n {
                st.set(&format!("key:{i:012}"), Value::Str(val32.as_str().into()), 0, 0);
            }
        }
        _ => {
            let init: fn() -> Value = match mode {
                "hashes" => Value::new_hash,
                "sets" => Value::new_set,
                "zsets" => Value::new_zset,
                "lists" => Value::new_list,
                _ => {
                    eprintln!("unknown mode {mode}");
                    std::process::exit(2);
                }
            };
            for k in 0..n / per {
                let key = format!("key:{k:012}");
                for i in 0..per {
                    let el = format!("el:{i:013}");
                    st.modify(&key, 0, Some(init), |v| match v {
                        Value::Hash(h) => {
                            h.insert(&el, &val16);
                        }
                        Value::Set(s) => {
                            s.insert(&el);
                        }
                        Value::ZSet(z) => {
                            z.insert(&el, i as f64);
                        }
                        Value::List(l) => l.push_back(&el),
                        Value::Str(_) => {}
                    });
                }
            }
        }
    }
    let (heap, rss) = (heap_bytes() - heap0, rss_bytes().saturating_sub(rss0));
    let used = st.used_memory();
    let keys = st.len();
    println!(
        "{{\"mode\":\"{mode}\",\"keys\":{keys},\"elements\":{n},\"used_memory\":{used},\"heap_growth\":{heap},\"rss_growth\":{rss},\"used_vs_heap\":{:.3},\"heap_per_element\":{:.1}}}",
        used as f64 / heap as f64,
        heap as f64 / n as f64
    );
    std::hint::black_box(&st);
}
