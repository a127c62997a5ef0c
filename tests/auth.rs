//! End-to-end tests of authentication and permissions (PROTOCOL.md §6, §8; issue 4):
//! credentials from the query, the Authorization header and the subprotocol list,
//! HTTP 401 refusals, API-key roles, JWTs (HS256, RS256, ES256, EdDSA) and their
//! claims, key scopes, expiry with close code 4001, `auth.refresh`, protected mode,
//! and that no credential reaches a log line.

mod common;

use common::*;
use dbx::config::Config;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A config with no credential, memory only; tests set the auth fields.
fn config() -> Config {
    Config::for_tests()
}

const API_KEYS: &str = "rk-read-1111:read,wk-write-2222:write,ak-admin-3333:admin,bare-admin-4444,p%ss+w/rd=:write";
const ADMIN_KEY: &str = "ak-admin-3333";

/// API keys with every role (see [`API_KEYS`]).
fn keys_server() -> TestServer {
    let mut cfg = config();
    cfg.api_keys = Some(API_KEYS.into());
    TestServer::start(cfg)
}

/// HS256 JWTs with [`SECRET`], plus the admin API key for checking the store.
fn hs_server() -> TestServer {
    hs_server_with(|_| {})
}

fn hs_server_with(f: impl FnOnce(&mut dbx::config::Config)) -> TestServer {
    let mut cfg = config();
    cfg.jwt_secret = Some(SECRET.into());
    cfg.api_keys = Some(format!("{ADMIN_KEY}:admin"));
    f(&mut cfg);
    TestServer::start(cfg)
}

/// A server verifying JWTs with one public key fixture.
fn pem_server(public_pem: &str) -> TestServer {
    let mut cfg = config();
    cfg.jwt_public_key = Some(fixture_path(public_pem));
    TestServer::start(cfg)
}

fn exists(c: &mut Client, key: &str) -> bool {
    c.ok("key.exists", json!({"key": key}))["exists"].as_bool().expect("exists is a bool")
}

fn get(c: &mut Client, key: &str) -> Option<String> {
    let v = c.call("string.get", json!({"key": key}));
    if let Some(r) = v.get("result") {
        return Some(r["value"].as_str().expect("string value").to_string());
    }
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    None
}

/// Waits for the close of a connection whose credential expires at `exp` (+ leeway):
/// it must be close code 4001, not before `exp`, and within a few seconds after.
fn assert_closed_4001_after(c: &mut Client, exp_plus_leeway: u64) {
    let wait = exp_plus_leeway.saturating_sub(now_s()) + 5;
    let ended = c.wait_close(Instant::now() + Duration::from_secs(wait));
    assert_eq!(ended, Ended::Close(4001), "expected close code 4001");
    assert!(now_s() + 1 >= exp_plus_leeway, "closed before the credential expired ({} < {exp_plus_leeway})", now_s());
}

// ---------------------------------------------------------------------------------
// Where the credential comes from
// ---------------------------------------------------------------------------------

#[test]
fn api_key_from_query_header_and_subprotocol() {
    let s = keys_server();

    let mut q = s.client_key(ADMIN_KEY);
    assert_eq!(q.ok("server.flush", json!({}))["flushed"], 0);

    let mut h = s.client_bearer(ADMIN_KEY);
    assert!(h.alive());
    // The query value is percent-decoded before the comparison.
    let mut pct = s.client_query("api_key=p%25ss%2Bw%2Frd%3D");
    pct.ok("string.set", json!({"key": "p", "value": "1"}));
    assert_eq!(pct.err_code("server.flush", json!({})), "forbidden");
    // Unencoded, `%ss` is not percent-encoding: a bad request, not a match.
    assert_eq!(raw_upgrade(s.addr, "api_key=p%ss+w/rd=", &[]).status, 400);
    // The role comes with the key, wherever it is passed.
    let mut r = s.client_bearer("rk-read-1111");
    assert_eq!(r.err_code("string.set", json!({"key": "a", "value": "1"})), "forbidden");

    let (mut p, resp) =
        Client::connect_full(s.addr, "", &[("Sec-WebSocket-Protocol", &format!("dbx.v1, bearer.{ADMIN_KEY}"))])
            .expect("subprotocol credential accepted");
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()),
        Some("dbx.v1"),
        "the 101 answers the dbx.v1 subprotocol"
    );
    assert!(p.alive());
}

#[test]
fn jwt_from_query_header_and_subprotocol() {
    let s = hs_server();
    let token = hs(claims("alice", json!({})));

    let mut q = s.client_key(&token);
    assert!(q.alive());
    let mut h = s.client_bearer(&token);
    assert!(h.alive());
    // `Bearer` is case-insensitive (RFC 6750 / 7235 auth schemes).
    let mut h2 = Client::connect(s.addr, "", &[("Authorization", &format!("bearer {token}"))]).unwrap();
    assert!(h2.alive());

    let (mut p, resp) =
        Client::connect_full(s.addr, "", &[("Sec-WebSocket-Protocol", &format!("dbx.v1, bearer.{token}"))])
            .expect("subprotocol token accepted");
    assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("dbx.v1"));
    // The token never comes back in the answer.
    for (name, value) in resp.headers() {
        assert!(!value.to_str().unwrap_or("").contains(&token), "{name} echoes the token");
    }
    assert!(p.alive());
}

#[test]
fn refusals_are_401_json_before_any_upgrade() {
    let s = hs_server();
    let good = hs(claims("alice", json!({})));
    let bad = hs_with("not-the-secret", claims("alice", json!({})));

    // No credential at all.
    raw_upgrade(s.addr, "", &[]).assert_unauthorized();
    // Wrong API key, in each place.
    raw_upgrade(s.addr, "api_key=nope-0000", &[]).assert_unauthorized();
    raw_upgrade(s.addr, "", &[("Authorization", "Bearer nope-0000")]).assert_unauthorized();
    raw_upgrade(s.addr, "", &[("Sec-WebSocket-Protocol", "dbx.v1, bearer.nope-0000")]).assert_unauthorized();
    // Bad token, in each place.
    raw_upgrade(s.addr, &format!("api_key={bad}"), &[]).assert_unauthorized();
    raw_upgrade(s.addr, "", &[("Authorization", &format!("Bearer {bad}"))]).assert_unauthorized();
    raw_upgrade(s.addr, "", &[("Sec-WebSocket-Protocol", &format!("dbx.v1, bearer.{bad}"))]).assert_unauthorized();
    // Another auth scheme is no credential.
    raw_upgrade(s.addr, "", &[("Authorization", &format!("Basic {good}"))]).assert_unauthorized();
    // The subprotocol alone is no credential.
    raw_upgrade(s.addr, "", &[("Sec-WebSocket-Protocol", "dbx.v1")]).assert_unauthorized();
    // An empty api_key is absent.
    raw_upgrade(s.addr, "api_key=", &[]).assert_unauthorized();

    // The refusal body never echoes the credential.
    let a = raw_upgrade(s.addr, &format!("api_key={bad}"), &[]);
    assert!(!a.body.contains(&bad));

    // A WebSocket client sees an HTTP error, not a socket.
    match Client::connect(s.addr, "api_key=nope-0000", &[]) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        Err(e) => panic!("expected an HTTP 401, got {e}"),
        Ok(_) => panic!("expected an HTTP 401, got a WebSocket"),
    }

    // The server is still fine, and a good credential still works.
    let mut c = s.client_key(&good);
    assert!(c.alive());
}

#[test]
fn anonymous_on_loopback_is_admin() {
    let s = TestServer::start(config());
    let mut c = s.client_query("");
    c.ok("string.set", json!({"key": "k", "value": "v"}));
    assert_eq!(c.ok("server.flush", json!({}))["flushed"], 1);
    // Without configured credentials an api_key is not checked.
    let mut c2 = s.client_query("api_key=anything");
    assert!(c2.alive());
}

// ---------------------------------------------------------------------------------
// API keys and roles
// ---------------------------------------------------------------------------------

#[test]
fn api_key_roles_read_write_admin_and_bare() {
    let s = keys_server();
    let mut admin = s.client_key(ADMIN_KEY);
    admin.ok("string.set", json!({"key": "k", "value": "original"}));

    // read: may read, may not write; the refused write changes nothing.
    let mut r = s.client_key("rk-read-1111");
    assert_eq!(r.ok("string.get", json!({"key": "k"}))["value"], "original");
    assert_eq!(r.ok("key.exists", json!({"key": "k"}))["exists"], true);
    assert!(r.ok("key.scan", json!({"cursor": "0"}))["keys"].is_array());
    assert_eq!(r.ok("server.dbsize", json!({}))["keys"], 1);
    for (method, params) in [
        ("string.set", json!({"key": "k", "value": "changed"})),
        ("string.append", json!({"key": "k", "value": "x"})),
        ("string.mset", json!({"pairs": {"k": "changed", "k2": "new"}})),
        ("key.del", json!({"key": "k"})),
        ("key.expire", json!({"key": "k", "ttl": 1})),
        ("key.rename", json!({"key": "k", "new_key": "k3"})),
        ("server.flush", json!({})),
    ] {
        assert_eq!(r.err_code(method, params), "forbidden", "read role calling {method}");
    }
    // Through a batch too.
    let b = r.ok(
        "batch",
        json!({"operations": [
            {"method": "string.get", "params": {"key": "k"}},
            {"method": "string.set", "params": {"key": "k", "value": "changed"}},
            {"method": "key.del", "params": {"key": "k"}},
        ]}),
    );
    assert_eq!(b["results"][0]["result"]["value"], "original", "{b}");
    assert_eq!(b["results"][1]["error"]["code"], "forbidden", "{b}");
    assert_eq!(b["results"][2]["error"]["code"], "forbidden", "{b}");
    assert_eq!(get(&mut admin, "k").as_deref(), Some("original"));
    assert!(!exists(&mut admin, "k2"));
    assert!(!exists(&mut admin, "k3"));
    assert_eq!(admin.ok("key.ttl", json!({"key": "k"}))["ttl"], Value::Null);

    // write: all data methods, but not the admin ones.
    let mut w = s.client_key("wk-write-2222");
    w.ok("string.set", json!({"key": "w", "value": "1"}));
    w.ok("string.incr", json!({"key": "w"}));
    w.ok("key.del", json!({"key": "w"}));
    assert_eq!(w.err_code("server.flush", json!({})), "forbidden");
    assert_eq!(get(&mut admin, "k").as_deref(), Some("original"));

    // admin and a bare key (= admin) may flush.
    let mut bare = s.client_key("bare-admin-4444");
    assert_eq!(bare.ok("server.flush", json!({}))["flushed"], 1);
    assert!(!exists(&mut admin, "k"));
    admin.ok("string.set", json!({"key": "k", "value": "v"}));
    assert_eq!(admin.ok("server.flush", json!({}))["flushed"], 1);
}

// ---------------------------------------------------------------------------------
// JWT validation
// ---------------------------------------------------------------------------------

#[test]
fn hs256_valid_expired_nbf_wrong_secret_none_missing_exp() {
    let s = hs_server();
    let now = now_s();

    let mut ok = s.client_key(&hs(json!({"sub": "a", "exp": now + 600})));
    assert!(ok.alive());
    // nbf in the past and iat are fine.
    let mut ok2 = s.client_key(&hs(json!({"sub": "a", "exp": now + 600, "nbf": now - 10, "iat": now - 10})));
    assert!(ok2.alive());
    // Without a subject too.
    let mut ok3 = s.client_key(&hs(json!({"exp": now + 600})));
    assert!(ok3.alive());

    for (what, token) in [
        ("expired", hs(json!({"sub": "a", "exp": now - 30}))),
        ("expired just now", hs(json!({"sub": "a", "exp": now}))),
        ("not yet valid", hs(json!({"sub": "a", "exp": now + 600, "nbf": now + 60}))),
        ("wrong secret", hs_with("another-secret-entirely", json!({"sub": "a", "exp": now + 600}))),
        ("alg none", alg_none(json!({"sub": "a", "exp": now + 600}))),
        ("missing exp", hs(json!({"sub": "a"}))),
        ("exp not a number", hs(json!({"sub": "a", "exp": "tomorrow"}))),
        ("unknown role", hs(claims("a", json!({"role": "root"})))),
        ("keys not a list", hs(claims("a", json!({"keys": "user:*"})))),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let a = raw_upgrade(s.addr, &format!("api_key={token}"), &[]);
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.assert_unauthorized();
        let b = raw_upgrade(s.addr, "", &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(b.status, 401, "{what} (header): {b:?}");
    }
}

#[test]
fn leeway_accepts_slightly_expired_and_early_tokens() {
    let s = hs_server_with(|c| c.jwt_leeway = 30);
    let now = now_s();
    let mut a = s.client_key(&hs(json!({"sub": "a", "exp": now - 10})));
    assert!(a.alive());
    let mut b = s.client_key(&hs(json!({"sub": "a", "exp": now + 600, "nbf": now + 10})));
    assert!(b.alive());
    raw_upgrade(s.addr, &format!("api_key={}", hs(json!({"sub": "a", "exp": now - 60}))), &[]).assert_unauthorized();
    raw_upgrade(s.addr, &format!("api_key={}", hs(json!({"sub": "a", "exp": now + 600, "nbf": now + 60}))), &[])
        .assert_unauthorized();

    // Without leeway the same tokens are refused.
    let strict = hs_server();
    raw_upgrade(strict.addr, &format!("api_key={}", hs(json!({"sub": "a", "exp": now - 10}))), &[])
        .assert_unauthorized();
    raw_upgrade(strict.addr, &format!("api_key={}", hs(json!({"sub": "a", "exp": now + 600, "nbf": now + 10}))), &[])
        .assert_unauthorized();
}

#[test]
fn leeway_also_delays_the_4001_close() {
    // exp already passed, but within the leeway: accepted, closed at exp + leeway.
    let leeway = 3;
    let s = hs_server_with(|c| c.jwt_leeway = leeway);
    let exp = now_s() - 1;
    let mut c = s.client_key(&hs(json!({"sub": "a", "exp": exp})));
    assert!(c.alive());
    assert_closed_4001_after(&mut c, exp + leeway);
}

#[test]
fn issuer_and_audience() {
    let s = hs_server_with(|c| {
        c.jwt_issuer = Some("https://issuer.example".into());
        c.jwt_audience = Some("dbx-api".into());
    });
    let iss = "https://issuer.example";
    let mut ok = s.client_key(&hs(claims("a", json!({"iss": iss, "aud": "dbx-api"}))));
    assert!(ok.alive());
    let mut arr = s.client_key(&hs(claims("a", json!({"iss": iss, "aud": ["other-api", "dbx-api"]}))));
    assert!(arr.alive(), "aud may be an array containing the audience");

    for (what, extra) in [
        ("wrong iss", json!({"iss": "https://evil.example", "aud": "dbx-api"})),
        ("wrong aud", json!({"iss": iss, "aud": "other-api"})),
        ("aud array without it", json!({"iss": iss, "aud": ["a", "b"]})),
        ("missing iss", json!({"aud": "dbx-api"})),
        ("missing aud", json!({"iss": iss})),
    ] {
        let a = raw_upgrade(s.addr, &format!("api_key={}", hs(claims("a", extra))), &[]);
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.assert_unauthorized();
    }

    // Without a configured issuer/audience, those claims are not checked.
    let plain = hs_server();
    let mut c = plain.client_key(&hs(claims("a", json!({"iss": "https://whoever.example", "aud": "whatever"}))));
    assert!(c.alive());
}

#[test]
fn rs256_public_key() {
    let s = pem_server("rsa_public.pem");
    let mut ok = s.client_key(&rs(claims("a", json!({}))));
    assert!(ok.alive());
    let mut ok_header = s.client_bearer(&rs(claims("a", json!({"role": "admin"}))));
    assert_eq!(ok_header.ok("server.flush", json!({}))["flushed"], 0);

    // The RSA public key PEM text as an HMAC secret: the classic HS/RS confusion.
    let public_pem = String::from_utf8(fixture("rsa_public.pem")).unwrap();
    let confused = hs_with(&public_pem, claims("a", json!({"role": "admin"})));
    for (what, token) in [
        ("wrong key", rs_with("rsa_other_private.pem", claims("a", json!({})))),
        ("HS256 signed with the public key", confused),
        ("alg none", alg_none(claims("a", json!({})))),
        ("ES256", es(claims("a", json!({})))),
        ("EdDSA", ed(claims("a", json!({})))),
        ("expired", rs(json!({"sub": "a", "exp": now_s() - 30}))),
        ("missing exp", rs(json!({"sub": "a"}))),
    ] {
        let a = raw_upgrade(s.addr, &format!("api_key={token}"), &[]);
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.assert_unauthorized();
    }
}

#[test]
fn es256_public_key() {
    let s = pem_server("ec_public.pem");
    let mut ok = s.client_key(&es(claims("a", json!({}))));
    assert!(ok.alive());
    let public_pem = String::from_utf8(fixture("ec_public.pem")).unwrap();
    for (what, token) in [
        ("RS256", rs(claims("a", json!({})))),
        ("EdDSA", ed(claims("a", json!({})))),
        ("HS256 with the public key", hs_with(&public_pem, claims("a", json!({})))),
        ("alg none", alg_none(claims("a", json!({})))),
        ("expired", es(json!({"sub": "a", "exp": now_s() - 30}))),
    ] {
        let a = raw_upgrade(s.addr, &format!("api_key={token}"), &[]);
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.assert_unauthorized();
    }
}

#[test]
fn eddsa_public_key() {
    let s = pem_server("ed25519_public.pem");
    let mut ok = s.client_key(&ed(claims("a", json!({}))));
    assert!(ok.alive());
    let public_pem = String::from_utf8(fixture("ed25519_public.pem")).unwrap();
    for (what, token) in [
        ("RS256", rs(claims("a", json!({})))),
        ("ES256", es(claims("a", json!({})))),
        ("HS256 with the public key", hs_with(&public_pem, claims("a", json!({})))),
        ("alg none", alg_none(claims("a", json!({})))),
        ("expired", ed(json!({"sub": "a", "exp": now_s() - 30}))),
    ] {
        let a = raw_upgrade(s.addr, &format!("api_key={token}"), &[]);
        assert_eq!(a.status, 401, "{what}: {a:?}");
        a.assert_unauthorized();
    }
}

// ---------------------------------------------------------------------------------
// JWT roles
// ---------------------------------------------------------------------------------

#[test]
fn jwt_roles_and_default_write() {
    let s = hs_server();
    let mut admin = s.client_key(ADMIN_KEY);
    admin.ok("string.set", json!({"key": "k", "value": "original"}));

    let mut r = s.client_key(&hs(claims("reader", json!({"role": "read"}))));
    assert_eq!(r.ok("string.get", json!({"key": "k"}))["value"], "original");
    assert_eq!(r.ok("string.mget", json!({"keys": ["k", "x"]}))["values"], json!(["original", null]));
    assert_eq!(r.err_code("string.set", json!({"key": "k", "value": "changed"})), "forbidden");
    assert_eq!(r.err_code("key.del", json!({"key": "k"})), "forbidden");
    assert_eq!(r.err_code("string.set", json!({"key": "new", "value": "1"})), "forbidden");
    assert_eq!(get(&mut admin, "k").as_deref(), Some("original"));
    assert!(!exists(&mut admin, "new"));

    // No role claim: write.
    let mut w = s.client_key(&hs(claims("writer", json!({}))));
    w.ok("string.set", json!({"key": "k", "value": "by-writer"}));
    assert_eq!(w.err_code("server.flush", json!({})), "forbidden");
    assert_eq!(get(&mut admin, "k").as_deref(), Some("by-writer"));

    let mut a = s.client_key(&hs(claims("boss", json!({"role": "admin"}))));
    assert_eq!(a.ok("server.flush", json!({}))["flushed"], 1);
}

// ---------------------------------------------------------------------------------
// Key scopes
// ---------------------------------------------------------------------------------

fn scoped_token() -> String {
    hs(claims("scoped", json!({"role": "admin", "keys": ["user:1:*", "shared"]})))
}

/// A server with some keys inside and outside the scope `user:1:*`, `shared`.
fn scoped_setup() -> (TestServer, Client, Client) {
    let s = hs_server();
    let mut admin = s.client_key(ADMIN_KEY);
    admin.ok("string.mset", json!({"pairs": {"user:1:a": "a", "user:2:a": "other", "shared": "s", "outside": "o"}}));
    let scoped = s.client_key(&scoped_token());
    (s, admin, scoped)
}

#[test]
fn key_scope_single_key_methods() {
    let (_s, mut admin, mut c) = scoped_setup();
    assert_eq!(c.ok("string.get", json!({"key": "user:1:a"}))["value"], "a");
    assert_eq!(c.ok("string.get", json!({"key": "shared"}))["value"], "s");
    c.ok("string.set", json!({"key": "user:1:new", "value": "n"}));

    assert_eq!(c.err_code("string.set", json!({"key": "user:2:a", "value": "x"})), "forbidden");
    assert_eq!(c.err_code("string.set", json!({"key": "evil", "value": "x"})), "forbidden");
    assert_eq!(c.err_code("string.get", json!({"key": "outside"})), "forbidden");
    assert_eq!(c.err_code("key.exists", json!({"key": "outside"})), "forbidden");
    assert_eq!(c.err_code("key.del", json!({"key": "outside"})), "forbidden");
    assert_eq!(c.err_code("key.expire", json!({"key": "outside", "ttl": 1})), "forbidden");
    assert_eq!(c.err_code("string.incr", json!({"key": "counter"})), "forbidden");

    assert_eq!(get(&mut admin, "user:2:a").as_deref(), Some("other"));
    assert_eq!(get(&mut admin, "outside").as_deref(), Some("o"));
    assert!(!exists(&mut admin, "evil"));
    assert!(!exists(&mut admin, "counter"));
    assert_eq!(admin.ok("key.ttl", json!({"key": "outside"}))["ttl"], Value::Null);
    assert_eq!(get(&mut admin, "user:1:new").as_deref(), Some("n"));
}

#[test]
fn key_scope_multi_key_methods() {
    let (_s, mut admin, mut c) = scoped_setup();
    // Inside the scope, multi-key methods work.
    assert_eq!(c.ok("string.mget", json!({"keys": ["user:1:a", "shared"]}))["values"], json!(["a", "s"]));
    // One key outside refuses the whole call.
    assert_eq!(c.err_code("string.mget", json!({"keys": ["user:1:a", "outside"]})), "forbidden");
    assert_eq!(c.err_code("key.exists", json!({"keys": ["user:1:a", "outside"]})), "forbidden");
    assert_eq!(c.err_code("key.del", json!({"keys": ["user:1:a", "outside"]})), "forbidden");
    assert_eq!(c.err_code("string.mset", json!({"pairs": {"user:1:b": "b", "evil": "e"}})), "forbidden");
    assert_eq!(c.err_code("key.rename", json!({"key": "user:1:a", "new_key": "evil"})), "forbidden");
    assert_eq!(c.err_code("key.rename", json!({"key": "outside", "new_key": "user:1:stolen"})), "forbidden");
    // Nothing changed: the in-scope halves of the refused calls did not run either.
    assert_eq!(get(&mut admin, "user:1:a").as_deref(), Some("a"));
    assert_eq!(get(&mut admin, "outside").as_deref(), Some("o"));
    assert!(!exists(&mut admin, "user:1:b"));
    assert!(!exists(&mut admin, "evil"));
    assert!(!exists(&mut admin, "user:1:stolen"));

    // A rename within the scope works.
    assert_eq!(c.ok("key.rename", json!({"key": "user:1:a", "new_key": "user:1:z"}))["renamed"], true);
    assert_eq!(get(&mut admin, "user:1:z").as_deref(), Some("a"));
}

#[test]
fn key_scope_forbids_whole_keyspace_writes() {
    // server.flush would delete keys outside the scope: even a scoped admin may not.
    let (_s, mut admin, mut c) = scoped_setup();
    assert_eq!(c.err_code("server.flush", json!({})), "forbidden");
    let b = c.ok("batch", json!({"operations": [{"method": "server.flush"}]}));
    assert_eq!(b["results"][0]["error"]["code"], "forbidden", "{b}");
    assert_eq!(get(&mut admin, "outside").as_deref(), Some("o"));
    assert_eq!(get(&mut admin, "user:1:a").as_deref(), Some("a"));
    // Key-less reads are fine.
    assert!(c.alive());
    assert!(c.ok("server.info", json!({}))["version"].is_string());
}

#[test]
fn key_scope_batch_operations() {
    let (_s, mut admin, mut c) = scoped_setup();
    let b = c.ok(
        "batch",
        json!({"operations": [
            {"method": "string.set", "params": {"key": "user:1:b", "value": "in"}},
            {"method": "string.set", "params": {"key": "user:2:a", "value": "hijacked"}},
            {"method": "string.mset", "params": {"pairs": {"user:1:c": "c", "outside": "x"}}},
            {"method": "key.del", "params": {"keys": ["outside"]}},
            {"method": "key.rename", "params": {"key": "shared", "new_key": "stolen"}},
            {"method": "string.get", "params": {"key": "outside"}},
            {"method": "string.get", "params": {"key": "shared"}},
        ]}),
    );
    let results = b["results"].as_array().expect("results");
    assert_eq!(results.len(), 7, "{b}");
    assert_eq!(results[0]["result"]["set"], true, "{b}");
    for (i, r) in results.iter().enumerate().take(6).skip(1) {
        assert_eq!(r["error"]["code"], "forbidden", "op {i}: {b}");
    }
    assert_eq!(results[6]["result"]["value"], "s", "{b}");

    assert_eq!(get(&mut admin, "user:1:b").as_deref(), Some("in"));
    assert_eq!(get(&mut admin, "user:2:a").as_deref(), Some("other"));
    assert_eq!(get(&mut admin, "outside").as_deref(), Some("o"));
    assert!(!exists(&mut admin, "user:1:c"));
    assert_eq!(get(&mut admin, "shared").as_deref(), Some("s"));
    assert!(!exists(&mut admin, "stolen"));
}

#[test]
fn key_scope_scan_returns_only_keys_in_scope() {
    let (_s, mut admin, mut c) = scoped_setup();
    let mut pairs = serde_json::Map::new();
    for i in 0..50 {
        pairs.insert(format!("user:1:k{i}"), json!("v"));
        pairs.insert(format!("user:2:k{i}"), json!("v"));
        pairs.insert(format!("zz{i}"), json!("v"));
    }
    admin.ok("string.mset", json!({ "pairs": pairs }));

    let scan_all = |c: &mut Client, extra: Value| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut cursor = "0".to_string();
        for _ in 0..10_000 {
            let mut params = json!({"cursor": cursor, "count": 7});
            if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            let r = c.ok("key.scan", params);
            for k in r["keys"].as_array().expect("keys") {
                seen.insert(k.as_str().expect("key").to_string());
            }
            cursor = r["cursor"].as_str().expect("cursor").to_string();
            if cursor == "0" {
                return seen;
            }
        }
        panic!("scan did not finish");
    };

    let seen = scan_all(&mut c, json!({}));
    let mut want: BTreeSet<String> = (0..50).map(|i| format!("user:1:k{i}")).collect();
    want.insert("user:1:a".into());
    want.insert("shared".into());
    assert_eq!(seen, want, "a scoped scan sees exactly its keys");

    // A match pattern wider than the scope does not widen it.
    let seen = scan_all(&mut c, json!({"match": "user:*"}));
    assert!(seen.iter().all(|k| k.starts_with("user:1:")), "{seen:?}");
    assert_eq!(seen.len(), 51);

    // The admin sees everything.
    let all = scan_all(&mut admin, json!({}));
    assert_eq!(all.len(), 4 + 150);
}

// ---------------------------------------------------------------------------------
// Expiry and refresh
// ---------------------------------------------------------------------------------

#[test]
fn expiry_during_a_connection_closes_with_4001() {
    let s = hs_server();
    let exp = now_s() + 2;
    let mut c = s.client_key(&hs(json!({"sub": "alice", "exp": exp})));
    assert!(c.alive());
    assert_closed_4001_after(&mut c, exp);
    // API-key connections do not expire.
    let mut k = s.client_key(ADMIN_KEY);
    assert!(k.alive());
}

#[test]
fn refresh_before_exp_keeps_the_connection_open() {
    let s = hs_server();
    let exp = now_s() + 2;
    let mut c = s.client_key(&hs(json!({"sub": "alice", "exp": exp})));
    let new_exp = now_s() + 600;
    let r = c.ok("auth.refresh", json!({"token": hs(json!({"sub": "alice", "exp": new_exp}))}));
    assert_eq!(r, json!({"expires_at": new_exp}));

    // Past the old exp (plus a margin), still open and usable.
    let until = Instant::now() + Duration::from_secs(exp.saturating_sub(now_s()) + 2);
    assert_eq!(c.wait_close(until), Ended::StillOpen);
    assert!(c.alive());
    c.ok("string.set", json!({"key": "k", "value": "v"}));
}

#[test]
fn refresh_for_another_subject_is_refused_and_the_old_exp_stands() {
    let s = hs_server();
    let exp = now_s() + 2;
    let mut c = s.client_key(&hs(json!({"sub": "alice", "exp": exp})));
    let code = c.err_code("auth.refresh", json!({"token": hs(json!({"sub": "mallory", "exp": now_s() + 600}))}));
    assert_eq!(code, "unauthorized");
    assert!(c.alive(), "a refused refresh keeps the connection");
    // The old credential remains: role write (not the refused token's anything),
    // and it still expires at the old exp.
    c.ok("string.set", json!({"key": "k", "value": "v"}));
    assert_closed_4001_after(&mut c, exp);
}

#[test]
fn refresh_with_a_weaker_role_or_garbage_is_refused() {
    let s = hs_server();
    let mut c = s.client_key(&hs(claims("alice", json!({"role": "admin"}))));

    let v = c.call("auth.refresh", json!({"token": hs(claims("alice", json!({"role": "read"})))}));
    let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(code == "unauthorized" || code == "forbidden", "weaker role: {v}");
    // Still admin.
    assert_eq!(c.ok("server.flush", json!({}))["flushed"], 0);

    for garbage in [
        json!("garbage"),
        json!("a.b.c"),
        json!(""),
        json!(hs_with("wrong-secret", claims("alice", json!({"role": "admin"})))),
        json!(hs(json!({"sub": "alice", "role": "admin", "exp": now_s() - 30}))),
        json!(alg_none(claims("alice", json!({"role": "admin"})))),
    ] {
        let code = c.err_code("auth.refresh", json!({ "token": garbage }));
        assert_eq!(code, "unauthorized", "refresh with {garbage}");
        assert!(c.alive(), "connection stays open after refresh with {garbage}");
    }
    // A refresh with a missing or non-string token is a parameter error.
    assert_eq!(c.err_code("auth.refresh", json!({})), "invalid_params");

    // The original credential still works, with its role.
    assert_eq!(c.ok("server.flush", json!({}))["flushed"], 0);
    // A refresh with the same role works.
    let exp = now_s() + 900;
    assert_eq!(
        c.ok("auth.refresh", json!({"token": hs(json!({"sub": "alice", "role": "admin", "exp": exp}))})),
        json!({"expires_at": exp})
    );
}

#[test]
fn refresh_may_not_widen_the_key_scope() {
    let (_s, _admin, mut c) = scoped_setup();
    let wider = hs(claims("scoped", json!({"role": "admin"})));
    assert_eq!(c.err_code("auth.refresh", json!({ "token": wider })), "unauthorized");
    assert_eq!(c.err_code("string.get", json!({"key": "outside"})), "forbidden");
    // The same scope is fine.
    c.ok("auth.refresh", json!({ "token": scoped_token() }));
    assert_eq!(c.err_code("string.get", json!({"key": "outside"})), "forbidden");
}

// ---------------------------------------------------------------------------------
// The real binary: logs and protected mode
// ---------------------------------------------------------------------------------

#[test]
fn credentials_never_reach_a_log_line() {
    let api_key = "sEcReT-ApiKey-7f3a9c1e5b";
    let wrong_key = "wRoNg-ApiKey-2d8e6b4a0c";
    let jwt_secret = "jwt-SeCrEt-91b2c3d4e5f6";
    let port = free_port();
    let port_s = port.to_string();
    let mut child = Dbx::spawn(&Opts::memory().envs(&[
        ("DBX_HOST", "127.0.0.1"),
        ("DBX_PORT", &port_s),
        ("DBX_LOG", "debug"),
        ("DBX_API_KEYS", &format!("{api_key}:admin")),
        ("DBX_JWT_SECRET", jwt_secret),
    ]));
    child.wait_listening(Instant::now() + Duration::from_secs(10));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let token = hs_with(jwt_secret, claims("alice", json!({})));
    let bad_token = hs_with("some-other-secret", claims("mallory", json!({})));
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_string();

    // Accepted, in every place.
    let mut a = Client::connect(addr, &format!("api_key={api_key}&client_id=logtest"), &[]).expect("api key in query");
    assert!(a.alive());
    let mut b = Client::connect(addr, "", &[("Authorization", &format!("Bearer {token}"))]).expect("token in header");
    assert!(b.alive());
    let mut c = Client::connect(addr, "", &[("Sec-WebSocket-Protocol", &format!("dbx.v1, bearer.{token}"))])
        .expect("token in subprotocol");
    assert!(c.alive());
    let mut d = Client::connect(addr, &format!("api_key={token}"), &[]).expect("token in query");
    let refreshed = hs_with(jwt_secret, claims("alice", json!({"exp": now_s() + 900})));
    d.ok("auth.refresh", json!({ "token": refreshed }));
    d.err_code("auth.refresh", json!({"token": bad_token}));
    // Refused, in every place (these are logged as refusals).
    raw_upgrade(addr, &format!("api_key={wrong_key}"), &[]).assert_unauthorized();
    raw_upgrade(addr, &format!("api_key={bad_token}&token={bad_token}"), &[]).assert_unauthorized();
    raw_upgrade(addr, "", &[("Authorization", &format!("Bearer {bad_token}"))]).assert_unauthorized();
    raw_upgrade(addr, "", &[("Sec-WebSocket-Protocol", &format!("dbx.v1, bearer.{wrong_key}"))]).assert_unauthorized();
    // An unknown path and a bad request with a key in the query.
    let r = http_answer(addr, &format!("GET /nope?api_key={api_key} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 404);
    let r = http_answer(
        addr,
        &format!("GET /ws?api_key={api_key}&version=9 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    );
    assert_eq!(r.status, 400);
    drop((a, b, c, d));

    let status = child.term_within(Duration::from_secs(10));
    let log = child.stderr();
    assert!(status.success(), "dbx stopped with {status}; log:\n{log}");
    assert!(log.contains("open") && log.contains("refused"), "the debug log has connection lines:\n{log}");
    for (what, secret) in [
        ("api key", api_key.to_string()),
        ("wrong api key", wrong_key.to_string()),
        ("jwt secret", jwt_secret.to_string()),
        ("token", token.clone()),
        ("token signature", signature(&token)),
        ("refreshed token", signature(&refreshed)),
        ("bad token", bad_token.clone()),
        ("bad token signature", signature(&bad_token)),
    ] {
        assert!(!log.contains(&secret), "the {what} appears in the log:\n{log}");
    }
}

#[test]
fn protected_mode_refuses_a_public_address_without_credentials() {
    let port = free_port().to_string();
    let mut child = Dbx::spawn(&Opts::memory().envs(&[("DBX_HOST", "0.0.0.0"), ("DBX_PORT", &port)]));
    let status = child.wait_exit(Duration::from_secs(10)).expect("dbx did not exit in time");
    let err = child.stderr();
    assert!(!status.success(), "dbx must not start: {status}\n{err}");
    assert!(err.contains("protected mode") && err.contains("DBX_ALLOW_ANONYMOUS"), "a clear message: {err}");
}

#[test]
fn protected_mode_allows_anonymous_when_asked() {
    let port = free_port();
    let port_s = port.to_string();
    let mut child = Dbx::spawn(&Opts::memory().envs(&[
        ("DBX_HOST", "0.0.0.0"),
        ("DBX_PORT", &port_s),
        ("DBX_ALLOW_ANONYMOUS", "true"),
    ]));
    child.wait_listening(Instant::now() + Duration::from_secs(10));
    assert!(child.try_wait().is_none(), "dbx is running");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr, "", &[]).expect("anonymous connect");
    assert!(c.alive());
    drop(c);
    child.kill();
}

#[test]
fn protected_mode_allows_a_public_address_with_credentials() {
    let port = free_port();
    let port_s = port.to_string();
    let mut child = Dbx::spawn(&Opts::memory().envs(&[
        ("DBX_HOST", "0.0.0.0"),
        ("DBX_PORT", &port_s),
        ("DBX_API_KEYS", "pm-key-0123"),
    ]));
    child.wait_listening(Instant::now() + Duration::from_secs(10));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    raw_upgrade(addr, "", &[]).assert_unauthorized();
    let mut c = Client::connect(addr, "api_key=pm-key-0123", &[]).expect("connect");
    assert!(c.alive());
    drop(c);
    child.kill();
}
