//! JWT makers for the authentication tests: HS/RS/ES/EdDSA tokens from the keys in
//! `tests/fixtures`, unsigned tokens, and claims.

use super::Value;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// HS256 secret used by the JWT servers of these tests.
pub const SECRET: &str = "e2e-hs256-secret-5c1f0d9b7a3e4f62";

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("encode token")
}

/// HS256 with [`SECRET`].
pub fn hs(claims: Value) -> String {
    hs_with(SECRET, claims)
}

pub fn hs_with(secret: &str, claims: Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), &claims)
}

pub fn rs(claims: Value) -> String {
    rs_with("rsa_private.pem", claims)
}

pub fn rs_with(private_pem: &str, claims: Value) -> String {
    let k = EncodingKey::from_rsa_pem(&fixture(private_pem)).expect("rsa key");
    sign(Algorithm::RS256, &k, &claims)
}

pub fn es(claims: Value) -> String {
    let k = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    sign(Algorithm::ES256, &k, &claims)
}

pub fn ed(claims: Value) -> String {
    let k = EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).expect("ed key");
    sign(Algorithm::EdDSA, &k, &claims)
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsigned token: header `{"alg":"none","typ":"JWT"}` and an empty signature.
pub fn alg_none(claims: Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!("{}.{}.", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// Claims valid for ten minutes for subject `sub`, plus `extra` fields.
pub fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({"sub": sub, "exp": now_s() + 600});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}
