//! Memory accounting: what an allocation really costs under glibc malloc, shared by
//! keys, values and the keyspace (`key` and `value` both use it; neither imports the
//! other for it).

/// Heap bytes of an allocation of `n` bytes under glibc malloc: payload plus the
/// 8-byte chunk header, rounded to 16 bytes, at least 32 — so the estimate follows
/// real RSS growth rather than payload length.
pub fn alloc_mem(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16).max(2) * 16
    }
}

/// Heap bytes of a boxed string.
pub fn str_mem(s: &str) -> usize {
    alloc_mem(s.len())
}

/// Heap bytes of a hashbrown table with `cap` usable slots of `entry` bytes each:
/// buckets are a power of two loaded to at most 7/8, one control byte per bucket plus
/// a 16-byte group tail, all in one allocation.
pub fn table_mem(cap: usize, entry: usize) -> usize {
    if cap == 0 {
        return 0;
    }
    let buckets = if cap < 8 { (cap + 1).next_power_of_two() } else { (cap * 8 / 7).next_power_of_two() };
    alloc_mem(buckets * (entry + 1) + 16)
}
