use super::*;

fn anyone() -> Rc<Identity> {
    Rc::new(Identity::anonymous())
}

#[test]
fn channel_and_pattern_deliveries() {
    let mut h = Hub::new(10, 0);
    h.subscribe(1, &["news"], &["n*"]);
    h.subscribe(2, &["news"], &[]);
    assert_eq!(h.publish("news", "{\"a\":1}"), 3);
    assert_eq!(h.out.len(), 3);
    assert_eq!(h.publish("nope", "1"), 1);
    h.out.clear();
    assert_eq!(h.unsubscribe(1, None, None).len(), 2);
    assert_eq!(h.publish("news", "1"), 1);
    h.remove_conn(2);
    assert_eq!(h.publish("news", "1"), 0);
}

#[test]
fn watch_history_and_gap() {
    let mut h = Hub::new(3, 0);
    h.watch(1, &["a"], &["user:*"], anyone());
    h.changed(Some("a".into()), "string.set", 1, "e", 0);
    h.changed(Some("b".into()), "string.set", 2, "e", 0);
    h.changed(Some("user:1".into()), "hash.set", 3, "e", 0);
    assert_eq!(h.out.len(), 2);
    let r = h.replay(1, &["a"], &["user:*"], &Identity::anonymous()).unwrap();
    assert_eq!(r.len(), 1);
    h.changed(Some("c".into()), "key.del", 4, "e", 0);
    // capacity 3: rev 1 fell out, so since=0 is a gap but since=1 still works
    assert!(h.replay(0, &["a"], &[], &Identity::anonymous()).is_none());
    assert!(h.replay(1, &["a"], &[], &Identity::anonymous()).is_some());
    h.changed(None, "server.flush", 5, "e2", 0);
    assert!(h.replay(4, &["a"], &[], &Identity::anonymous()).is_none());
    assert!(h.replay(5, &["a"], &[], &Identity::anonymous()).unwrap().is_empty());
}
