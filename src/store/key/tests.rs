use super::*;
use std::hash::BuildHasher;

#[test]
fn size_is_24() {
    assert_eq!(std::mem::size_of::<Key>(), 24);
    assert_eq!(std::mem::size_of::<Option<Key>>(), 24);
}

#[test]
fn round_trips_at_every_length() {
    let s = "é".repeat(20) + "abc";
    for n in 0..=s.len() {
        let Some(p) = s.get(..n) else { continue };
        let k = Key::from(p);
        assert_eq!(&*k, p);
        assert_eq!(k.as_bytes(), p.as_bytes());
        assert_eq!(k.is_inline(), n <= INLINE, "len {n}");
        assert_eq!(k.heap_bytes() == 0, n <= INLINE);
        assert_eq!(k.clone(), k);
        assert_eq!(&*Key::from(Box::<str>::from(p)), p);
    }
}

#[test]
fn hash_and_eq_agree_with_str() {
    let b = hashbrown::DefaultHashBuilder::default();
    for s in ["", "a", "key:000000000001", "a key longer than twenty-two bytes"] {
        let k = Key::from(s);
        assert_eq!(b.hash_one(&k), b.hash_one(s));
        assert!(k == *s);
    }
    let mut m: hashbrown::HashMap<Key, u32> = hashbrown::HashMap::new();
    m.insert(Key::from("short"), 1);
    m.insert(Key::from("a key longer than twenty-two bytes"), 2);
    assert_eq!(m.get("short"), Some(&1));
    assert_eq!(m.get("a key longer than twenty-two bytes"), Some(&2));
    assert_ne!(Key::from("ab"), Key::from("abc"));
}
