use super::*;

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

#[test]
fn set_get_remove() {
    let mut st = Store::new();
    assert!(st.set("a", s("1"), 0, 0).is_none());
    assert!(st.set("a", s("2"), 0, 0).is_some());
    assert_eq!(st.len(), 1);
    assert!(matches!(st.get("a", 0).map(|i| &i.value), Some(Value::Str(v)) if &**v == "2"));
    assert!(st.remove("a", 0).is_some());
    assert!(st.get("a", 0).is_none());
    assert_eq!(st.used, 0);
}

#[test]
fn lazy_and_active_expiry() {
    let mut st = Store::new();
    st.set("a", s("1"), 1000, 0);
    st.set("b", s("1"), 2000, 0);
    st.set("c", s("1"), 0, 0);
    assert_eq!(st.ttl_ms("a", 400), Some(Some(600)));
    assert_eq!(st.ttl_ms("c", 400), Some(None));
    assert!(st.get("a", 1000).is_none(), "expired at its deadline");
    assert_eq!(st.take_gone().len(), 1);
    assert_eq!(st.next_expiry(), Some(1000));
    assert_eq!(st.expire_cycle(1999, 10), 0);
    assert_eq!(st.expire_cycle(2000, 10), 1);
    let gone = st.take_gone();
    assert_eq!(&*gone[0].0, "b");
    assert_eq!(gone[0].1, Gone::Expired);
    assert_eq!(st.len(), 1);
    assert_eq!(st.expired_total, 2);
}

#[test]
fn ttl_overwrite_leaves_no_false_expiry() {
    let mut st = Store::new();
    st.set("a", s("1"), 1000, 0);
    st.set_expiry("a", 5000, 0);
    assert_eq!(st.expire_cycle(1500, 10), 0);
    assert!(st.contains("a", 1500));
    st.set("a", s("2"), 0, 0);
    assert_eq!(st.expire_cycle(6000, 10), 0);
    assert!(st.contains("a", 6000));
}

#[test]
fn rename_keeps_ttl() {
    let mut st = Store::new();
    st.set("a", s("1"), 5000, 0);
    st.set("b", s("2"), 0, 0);
    assert_eq!(st.rename("a", "b", true, 0), Some(false));
    assert_eq!(st.rename("a", "b", false, 0), Some(true));
    assert_eq!(st.ttl_ms("b", 0), Some(Some(5000)));
    assert_eq!(st.rename("zz", "b", false, 0), None);
    assert_eq!(st.len(), 1);
}

#[test]
fn scan_sees_stable_keys_under_churn() {
    let mut st = Store::new();
    for i in 0..1000 {
        st.set(&format!("stable{i}"), s("x"), 0, 0);
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0;
    let mut round = 0;
    loop {
        cursor = st.scan(cursor, 37, 0, |it| {
            seen.insert(it.key.to_string());
        });
        // churn: add and remove other keys between calls
        for j in 0..20 {
            st.set(&format!("tmp{round}-{j}"), s("y"), 0, 0);
        }
        for j in 0..10 {
            st.remove(&format!("tmp{round}-{j}"), 0);
        }
        round += 1;
        if cursor == 0 {
            break;
        }
    }
    for i in 0..1000 {
        assert!(seen.contains(&format!("stable{i}")), "stable{i} missed");
    }
}

#[test]
fn eviction_prefers_old_keys() {
    let mut st = Store::new();
    for i in 0..100 {
        st.set(&format!("old{i}"), s("x"), 0, 0);
    }
    for i in 0..100 {
        st.set(&format!("new{i}"), s("x"), 0, 100_000);
    }
    let mut rng = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..50 {
        assert!(st.evict_one(5, &mut rng));
    }
    let new_left = (0..100).filter(|i| st.contains(&format!("new{i}"), 100_000)).count();
    assert!(new_left > 80, "sampling LRU should mostly evict old keys, new left {new_left}");
    assert_eq!(st.evicted_total, 50);
    assert_eq!(st.take_gone().len(), 50);
}

#[test]
fn slot_size() {
    // 24-byte inline key + 24-byte value + expiry + lru; the Option is free (niche).
    assert_eq!(std::mem::size_of::<Option<Item>>(), 64);
}

#[test]
fn rev_counts() {
    let mut st = Store::new();
    assert_eq!(st.bump_rev(), 1);
    st.set_rev(10);
    st.set_rev(5);
    assert_eq!(st.rev(), 10);
}

#[test]
fn set_str_overwrites_in_place_with_the_same_accounting_as_set() {
    let (mut a, mut b) = (Store::new(), Store::new());
    let steps: [(&str, &str, u64); 6] = [
        ("k", "0123456789abcdef", 0),
        ("k", "fedcba9876543210", 0), // same length: in place
        ("k", "é-short", 5000),       // other length, TTL set
        ("k", "ü-short", 0),          // same byte length, TTL removed
        ("h", "x", 0),
        ("k", "", 0),
    ];
    for (key, value, exp) in steps {
        a.set_str(key, value, exp, 0);
        b.set(key, s(value), exp, 0);
        assert_eq!(a.used, b.used, "{key}={value}");
        assert_eq!(a.with_ttl, b.with_ttl);
        assert!(matches!(a.get(key, 0).map(|i| &i.value), Some(Value::Str(v)) if &**v == value));
        assert_eq!(a.ttl_ms(key, 0), b.ttl_ms(key, 0));
    }
    // The same length reuses the allocation.
    let ptr = |st: &mut Store| match st.get("k", 0).map(|i| &i.value) {
        Some(Value::Str(v)) => Some(v.as_ptr() as usize),
        _ => None,
    };
    a.set_str("k", "same-length-1", 0, 0);
    let before = ptr(&mut a);
    a.set_str("k", "same-length-2", 0, 0);
    assert_eq!(ptr(&mut a), before);
    b.set("k", s("same-length-2"), 0, 0);
    // A key of another type is replaced by the string, as `set` does.
    for st in [&mut a, &mut b] {
        let mut h = HashValue::default();
        h.insert("field", "a value longer than the inline limit");
        st.set("h", Value::Hash(Box::new(h)), 0, 0);
    }
    a.set_str("h", "x", 0, 0);
    b.set("h", s("x"), 0, 0);
    assert!(matches!(a.get("h", 0).map(|i| &i.value), Some(Value::Str(v)) if &**v == "x"));
    assert_eq!(a.used, b.used);
    // An expired key is not overwritten: it is gone, and the new one has no TTL.
    a.set_str("t", "aaaa", 10, 0);
    a.set_str("t", "bbbb", 0, 20);
    assert_eq!(a.ttl_ms("t", 20), Some(None));
    assert_eq!(a.take_gone().len(), 1);
}
