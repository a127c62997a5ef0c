use super::*;

#[test]
fn counters_follow_contents() {
    let mut h = HashValue::default();
    assert_eq!(h.insert("f", "v"), (true, true));
    assert_eq!(h.insert("f", "v"), (false, false));
    assert_eq!(h.insert("f", "a longer value than before, 40 bytes.."), (false, true));
    assert!(h.remove("f"));
    assert_eq!(h.strings, 0);
    let mut s = SetValue::default();
    assert!(s.insert("a") && s.insert("b") && !s.insert("a"));
    assert_eq!(s.pop(5).len(), 2);
    assert_eq!(s.strings, 0);
    // Lists: src/store/list/tests.rs.
}
