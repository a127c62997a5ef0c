use super::ReplyOrder;

#[test]
fn replies_leave_in_request_order() {
    let mut o = ReplyOrder::default();
    let (a, b, c, d) = (o.issue(), o.issue(), o.issue(), o.issue());
    let mut sent: Vec<Vec<u8>> = Vec::new();
    // c and b complete before a; d has no reply.
    o.complete(c, Some(b"c"), |r| sent.push(r.to_vec()));
    o.complete(d, None, |r| sent.push(r.to_vec()));
    o.complete(b, Some(b"b"), |r| sent.push(r.to_vec()));
    assert!(sent.is_empty());
    assert_eq!(o.parked(), 3);
    o.complete(a, Some(b"a"), |r| sent.push(r.to_vec()));
    assert_eq!(sent, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(o.parked(), 0);
    let e = o.issue();
    o.complete(e, Some(b"e"), |r| sent.push(r.to_vec()));
    assert_eq!(sent.len(), 4);
}

/// `take_turn` says yes exactly when `complete` would send at once, and then the next
/// reply is due; with a reply parked it says no and changes nothing.
#[test]
fn take_turn_is_completes_fast_path() {
    let mut o = ReplyOrder::default();
    let (a, b, c) = (o.issue(), o.issue(), o.issue());
    assert!(!o.take_turn(b), "b is not due");
    assert!(o.take_turn(a));
    let mut sent: Vec<Vec<u8>> = Vec::new();
    o.complete(c, Some(b"c"), |r| sent.push(r.to_vec()));
    assert!(sent.is_empty() && o.parked() == 1);
    assert!(!o.take_turn(b), "c is parked: b goes through complete");
    o.complete(b, Some(b"b"), |r| sent.push(r.to_vec()));
    assert_eq!(sent, vec![b"b".to_vec(), b"c".to_vec()]);
    let d = o.issue();
    assert!(o.take_turn(d));
}
