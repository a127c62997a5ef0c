use super::*;
use crate::auth::Identity;

#[test]
fn redis_errors_map_to_codes() {
    assert_eq!(redis_error("OOM command not allowed when used memory > 'maxmemory'.").code, Code::Oom);
    assert_eq!(redis_error("READONLY You can't write against a read only replica.").code, Code::Unavailable);
    assert_eq!(redis_error("LOADING Redis is loading the dataset in memory").code, Code::Unavailable);
    assert_eq!(redis_error("ERR Function not found").code, Code::Internal);
    assert_eq!(redis_error("").code, Code::Internal);
}

#[test]
fn evicting_policies() {
    for p in ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl"] {
        assert!(evicts(p), "{p}");
    }
    assert!(!evicts("noeviction"));
}

#[test]
fn single_replies_from_library_elements() {
    let ok = String::from_utf8(single_reply(Some("7"), r#"{"result":{"value":"v"}}"#, "T")).unwrap();
    assert_eq!(ok, r#"{"id":7,"result":{"value":"v"},"timestamp":"T"}"#);
    let err = String::from_utf8(single_reply(None, r#"{"error":{"code":"wrong_type","message":"m"}}"#, "T")).unwrap();
    assert!(err.contains(r#""code":"wrong_type""#), "{err}");
    let bad = String::from_utf8(single_reply(None, "not json", "T")).unwrap();
    assert!(bad.contains(r#""code":"internal""#), "{bad}");
    let unknown = String::from_utf8(single_reply(None, r#"{"error":{"code":"nope","message":"m"}}"#, "T")).unwrap();
    assert!(unknown.contains(r#""code":"internal""#), "{unknown}");
}

#[test]
fn scan_results_are_cut_to_the_scope() {
    let mut id = Identity::anonymous();
    id.key_globs = Some(vec!["user:*".into()]);
    let out = scan_in_scope(r#"{"result":{"cursor":"0","keys":["user:1","other","user:2"]}}"#, &id);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"]["keys"], serde_json::json!(["user:1", "user:2"]));
    assert_eq!(scan_in_scope("garbage", &id), "garbage");
}

#[test]
fn tokens_do_not_collide() {
    assert!(Gateway::is_token(TOKEN_BASE) && Gateway::is_token(SENTINEL));
    assert!(!Gateway::is_token(usize::MAX - 1) && !Gateway::is_token(1 << 40));
    const { assert!(TOKEN_END < usize::MAX - 4) };
}
