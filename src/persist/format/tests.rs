use super::*;

#[test]
fn value_round_trip() {
    let mut h = Value::new_hash();
    if let Value::Hash(x) = &mut h {
        x.insert("f", "v");
    }
    let mut s = Value::new_set();
    if let Value::Set(x) = &mut s {
        x.insert("m");
    }
    let mut l = Value::new_list();
    if let Value::List(x) = &mut l {
        x.push_back("a");
        x.push_back("b");
    }
    let mut z = Value::new_zset();
    if let Value::ZSet(x) = &mut z {
        x.insert("m", 1.5);
        x.insert("n", f64::NEG_INFINITY);
    }
    for v in [Value::Str("héllo".into()), h, s, l, z] {
        let mut b = Vec::new();
        encode_value(&v, &mut b);
        let back = decode_value(&mut Cursor::new(&b)).unwrap();
        let mut b2 = Vec::new();
        encode_value(&back, &mut b2);
        assert_eq!(b, b2);
        assert_eq!(back.kind(), v.kind());
    }
}

fn read_all(p: &std::path::Path, bytes: &[u8], magic: &[u8; 8]) -> (usize, Next) {
    std::fs::write(p, bytes).unwrap();
    let mut r = FrameReader::open(File::open(p).unwrap(), magic).unwrap().unwrap();
    let mut n = 0;
    loop {
        match r.next_frame().unwrap() {
            Next::Frame(_) => n += 1,
            other => return (n, other),
        }
    }
}

#[test]
fn frames_detect_torn_and_corrupt() {
    let dir = std::env::temp_dir().join(format!("dbx-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("f");
    let mut b = AOF_MAGIC.to_vec();
    for i in 0..3u64 {
        let at = begin_frame(&mut b);
        b.push(K_REV);
        put_u64(&mut b, i);
        end_frame(&mut b, at);
    }
    const F: u64 = 21; // 12-byte header + 9-byte payload
    let full = b.clone();
    let read_all = |bytes: &[u8]| read_all(&p, bytes, AOF_MAGIC);
    assert_eq!(read_all(&full), (3, Next::Eof));
    // torn: the last frame cut short
    assert_eq!(read_all(&full[..full.len() - 3]), (2, Next::Torn { offset: 8 + 2 * F }));
    // torn: the last header cut short
    assert_eq!(read_all(&full[..(8 + 2 * F + 5) as usize]), (2, Next::Torn { offset: 8 + 2 * F }));
    // torn: zero-filled tail
    let mut z = full.clone();
    z.extend_from_slice(&[0u8; 100]);
    assert_eq!(read_all(&z), (3, Next::Torn { offset: 8 + 3 * F }));
    // corrupt in the middle
    let mut c = full.clone();
    c[(8 + F + 14) as usize] ^= 0xff;
    assert!(matches!(read_all(&c), (1, Next::Corrupt { offset: 29, .. })));
    // a damaged last payload is torn
    let mut c = full.clone();
    let n = c.len();
    c[n - 2] ^= 0xff;
    assert_eq!(read_all(&c), (2, Next::Torn { offset: 8 + 2 * F }));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every single-bit flip of any frame's length — the middle frames and the last
/// one — is damage, never a torn tail (v1 cut everything after such a frame).
#[test]
fn a_damaged_length_is_never_a_torn_tail() {
    let dir = std::env::temp_dir().join(format!("dbx-fmt-len-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("f");
    let mut b = AOF_MAGIC.to_vec();
    let mut starts = Vec::new();
    for i in 0..5u64 {
        starts.push(b.len());
        let at = begin_frame(&mut b);
        b.push(K_OPS);
        put_u64(&mut b, i);
        b.extend_from_slice(b"[{\"method\":\"string.set\",\"params\":{\"key\":\"k\",\"value\":\"v\"}}]");
        end_frame(&mut b, at);
    }
    for (i, &at) in starts.iter().enumerate() {
        for bit in 0..32 {
            let mut c = b.clone();
            c[at + bit / 8] ^= 1 << (bit % 8);
            let (n, next) = read_all(&p, &c, AOF_MAGIC);
            assert_eq!(n, i, "frame {i} bit {bit}");
            assert!(matches!(next, Next::Corrupt { .. }), "frame {i} bit {bit}: {next:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// v1 files (no length checksum) are still read; a length in the middle that runs
/// past the end is recognised as damage by the valid frames after it.
#[test]
fn v1_files_load_and_a_damaged_middle_length_is_damage() {
    let dir = std::env::temp_dir().join(format!("dbx-fmt-v1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("f");
    let mut b = AOF_MAGIC_V1.to_vec();
    for i in 0..4u64 {
        let at = b.len();
        b.extend_from_slice(&[0u8; 8]);
        b.push(K_REV);
        put_u64(&mut b, i);
        let len = (b.len() - at - 8) as u32;
        let mut h = crc32fast::Hasher::new();
        h.update(&len.to_le_bytes());
        h.update(&b[at + 8..]);
        let crc = h.finalize();
        b[at..at + 4].copy_from_slice(&len.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    }
    assert_eq!(read_all(&p, &b, AOF_MAGIC), (4, Next::Eof));
    let mut c = b.clone();
    c[8 + 17 + 2] ^= 0x10; // the second frame's length now runs past the end
    assert!(matches!(read_all(&p, &c, AOF_MAGIC), (1, Next::Corrupt { offset: 25, .. })));
    // A genuinely torn v1 tail is still torn.
    assert_eq!(read_all(&p, &b[..b.len() - 4], AOF_MAGIC), (3, Next::Torn { offset: 8 + 3 * 17 }));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `end_frame` computes both checksums in one pass (the state after the length is
/// `lcrc`, continued over the payload is `crc`): the same values as the definition,
/// CRC-32 of `len` and CRC-32 of `len‖payload`, for short and long payloads.
#[test]
fn frame_checksums_match_their_definition() {
    for n in [1usize, 3, 15, 16, 17, 63, 64, 100, 127, 128, 129, 1000, 5000] {
        let payload: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
        let mut b = vec![0xaa; 5];
        let at = begin_frame(&mut b);
        b.extend_from_slice(&payload);
        end_frame(&mut b, at);
        let len = (n as u32).to_le_bytes();
        let mut whole = len.to_vec();
        whole.extend_from_slice(&payload);
        assert_eq!(&b[..5], &[0xaa; 5]);
        assert_eq!(&b[at..at + 4], &len, "len {n}");
        assert_eq!(&b[at + 4..at + 8], &crc32fast::hash(&len).to_le_bytes(), "lcrc {n}");
        assert_eq!(&b[at + 8..at + 12], &crc32fast::hash(&whole).to_le_bytes(), "crc {n}");
    }
}
