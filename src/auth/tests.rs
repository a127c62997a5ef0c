use super::*;
use base64::Engine as _;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use serde_json::Value;
use std::path::PathBuf;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture")
}

fn tok(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).expect("encode")
}

fn hs(claims: Value) -> String {
    tok(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), claims)
}

fn rs(claims: Value) -> String {
    let k = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa key");
    tok(Algorithm::RS256, &k, claims)
}

fn es(claims: Value) -> String {
    let k = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    tok(Algorithm::ES256, &k, claims)
}

fn ed(claims: Value) -> String {
    let k = EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).expect("ed key");
    tok(Algorithm::EdDSA, &k, claims)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn cfg() -> AuthConfig {
    AuthConfig::default()
}

fn auth(c: AuthConfig) -> Authenticator {
    Authenticator::new(&c).expect("config")
}

fn hs_auth() -> Authenticator {
    auth(AuthConfig { jwt_secret: Some(SECRET.into()), ..cfg() })
}

fn pub_auth(file: &str) -> Authenticator {
    auth(AuthConfig { jwt_public_key_path: Some(fixture_path(file)), ..cfg() })
}

fn err(msg: &str) -> Result<Identity, AuthError> {
    Err(AuthError::Invalid(msg.to_string()))
}

fn temp_file(name: &str, content: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dbx-auth-test-{}-{name}", std::process::id()));
    std::fs::write(&p, content).expect("write temp");
    p
}

// ---- JWT: valid tokens for every algorithm ----

#[test]
fn valid_hs256() {
    let a = hs_auth();
    assert!(a.enabled() && a.jwt_enabled());
    let id = a.authenticate(Some(&hs(json!({"sub":"alice","exp":NOW+60}))), NOW).expect("valid");
    assert_eq!(
        id,
        Identity {
            role: Role::Write,
            subject: Some("alice".into()),
            expires_at: Some(NOW + 60),
            key_globs: None,
            label: "alice".into(),
            is_api_key: false,
        }
    );
}

#[test]
fn valid_rs256_es256_eddsa() {
    let claims = json!({"sub":"bob","exp":NOW+60,"role":"read"});
    for (file, token) in [
        ("rsa_public.pem", rs(claims.clone())),
        ("ec_public.pem", es(claims.clone())),
        ("ed25519_public.pem", ed(claims.clone())),
    ] {
        let id = pub_auth(file).authenticate(Some(&token), NOW).expect(file);
        assert_eq!(id.role, Role::Read, "{file}");
        assert_eq!(id.subject.as_deref(), Some("bob"));
        assert_eq!(id.expires_at, Some(NOW + 60));
    }
}

#[test]
fn algorithm_follows_the_key() {
    let claims = json!({"exp":NOW+60});
    // A token of another family than the configured key is refused.
    assert_eq!(
        pub_auth("ec_public.pem").authenticate(Some(&rs(claims.clone())), NOW),
        err("token algorithm not allowed")
    );
    assert_eq!(
        pub_auth("rsa_public.pem").authenticate(Some(&ed(claims.clone())), NOW),
        err("token algorithm not allowed")
    );
    // RS384 with the right RSA key: still only RS256 is allowed.
    let k = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa");
    let t = tok(Algorithm::RS384, &k, claims.clone());
    assert_eq!(pub_auth("rsa_public.pem").authenticate(Some(&t), NOW), err("token algorithm not allowed"));
    // HS256 when only a public key is configured.
    assert_eq!(
        pub_auth("rsa_public.pem").authenticate(Some(&hs(claims.clone())), NOW),
        err("token algorithm not allowed")
    );
    // HS384 with the right secret: only HS256.
    let t = tok(Algorithm::HS384, &EncodingKey::from_secret(SECRET.as_bytes()), claims);
    assert_eq!(hs_auth().authenticate(Some(&t), NOW), err("token algorithm not allowed"));
}

#[test]
fn secret_and_public_key_together() {
    let a = auth(AuthConfig {
        jwt_secret: Some(SECRET.into()),
        jwt_public_key_path: Some(fixture_path("ec_public.pem")),
        ..cfg()
    });
    let claims = json!({"exp":NOW+60});
    assert!(a.authenticate(Some(&hs(claims.clone())), NOW).is_ok());
    assert!(a.authenticate(Some(&es(claims.clone())), NOW).is_ok());
    assert_eq!(a.authenticate(Some(&rs(claims)), NOW), err("token algorithm not allowed"));
}

// ---- JWT: time ----

#[test]
fn expired() {
    let a = hs_auth();
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW-1}))), NOW), err("token expired"));
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW}))), NOW), err("token expired"));
    assert!(a.authenticate(Some(&hs(json!({"exp":NOW+1}))), NOW).is_ok());
    // fractional NumericDate rounds down for exp
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW as f64 + 0.5}))), NOW), err("token expired"));
}

#[test]
fn not_yet_valid() {
    let a = hs_auth();
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"nbf":NOW+1}))), NOW), err("token not yet valid"));
    assert!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"nbf":NOW}))), NOW).is_ok());
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"nbf":"soon"}))), NOW), err("invalid nbf claim"));
}

#[test]
fn leeway() {
    let a = auth(AuthConfig { jwt_secret: Some(SECRET.into()), jwt_leeway: 30, ..cfg() });
    assert_eq!(a.leeway(), 30);
    let id = a.authenticate(Some(&hs(json!({"exp":NOW-10}))), NOW).expect("within leeway");
    assert!(!id.is_expired(NOW, a.leeway()));
    assert!(id.is_expired(NOW + 20, a.leeway()));
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW-30}))), NOW), err("token expired"));
    assert!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"nbf":NOW+30}))), NOW).is_ok());
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"nbf":NOW+31}))), NOW), err("token not yet valid"));
}

#[test]
fn missing_or_bad_exp() {
    let a = hs_auth();
    for claims in [json!({"sub":"x"}), json!({"exp":"tomorrow"}), json!({"exp":null})] {
        assert_eq!(a.authenticate(Some(&hs(claims.clone())), NOW), err("token has no valid exp claim"), "{claims}");
    }
    assert_eq!(
        pub_auth("rsa_public.pem").authenticate(Some(&rs(json!({"sub":"x"}))), NOW),
        err("token has no valid exp claim")
    );
}

// ---- JWT: signatures and algorithms ----

#[test]
fn wrong_secret() {
    let t = tok(Algorithm::HS256, &EncodingKey::from_secret(b"another-secret"), json!({"exp":NOW+60}));
    assert_eq!(hs_auth().authenticate(Some(&t), NOW), err("invalid token signature"));
}

#[test]
fn wrong_key() {
    let k = EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).expect("rsa");
    let t = tok(Algorithm::RS256, &k, json!({"exp":NOW+60}));
    assert_eq!(pub_auth("rsa_public.pem").authenticate(Some(&t), NOW), err("invalid token signature"));
}

#[test]
fn tampered_payload() {
    let t = rs(json!({"exp":NOW+60,"role":"read"}));
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&json!({"exp":NOW+60,"role":"admin"})), parts[2]);
    assert_eq!(pub_auth("rsa_public.pem").authenticate(Some(&forged), NOW), err("invalid token signature"));
}

#[test]
fn alg_none_refused() {
    let payload = b64(&json!({"sub":"eve","exp":NOW+60,"role":"admin"}));
    for alg in ["none", "None", "NONE"] {
        let header = b64(&json!({"alg":alg,"typ":"JWT"}));
        for t in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
            assert_eq!(hs_auth().authenticate(Some(&t), NOW), err("token algorithm not allowed"));
            assert_eq!(pub_auth("rsa_public.pem").authenticate(Some(&t), NOW), err("token algorithm not allowed"));
        }
    }
    // The classic hand-written form.
    let t = format!("eyJhbGciOiJub25lIn0.{payload}.");
    assert_eq!(hs_auth().authenticate(Some(&t), NOW), err("token algorithm not allowed"));
}

#[test]
fn hs_rs_confusion() {
    // HS256 signed with the RSA public key PEM as the HMAC secret.
    let pem = fixture("rsa_public.pem");
    let t = tok(Algorithm::HS256, &EncodingKey::from_secret(&pem), json!({"exp":NOW+60,"role":"admin"}));
    assert_eq!(pub_auth("rsa_public.pem").authenticate(Some(&t), NOW), err("token algorithm not allowed"));
    // With a (different) secret configured too, the header's HS256 picks the secret.
    let a = auth(AuthConfig {
        jwt_secret: Some(SECRET.into()),
        jwt_public_key_path: Some(fixture_path("rsa_public.pem")),
        ..cfg()
    });
    assert_eq!(a.authenticate(Some(&t), NOW), err("invalid token signature"));
}

#[test]
fn malformed_tokens() {
    let a = hs_auth();
    assert_eq!(a.authenticate(Some("not-a-jwt"), NOW), err("not a token"));
    assert_eq!(a.authenticate(Some("a.b"), NOW), err("not a token"));
    assert_eq!(a.authenticate(Some("a.b.c.d"), NOW), err("not a token"));
    assert_eq!(a.authenticate(Some("a b.c.d"), NOW), err("not a token"));
    assert_eq!(a.authenticate(Some("abc.def.ghi"), NOW), err("malformed token"));
    let header = b64(&json!({"alg":"HS256"}));
    assert!(a.authenticate(Some(&format!("{header}.bm90anNvbg.c2ln")), NOW).is_err());
}

// ---- JWT: issuer and audience ----

fn iss_aud_auth() -> Authenticator {
    auth(AuthConfig {
        jwt_secret: Some(SECRET.into()),
        jwt_issuer: Some("https://issuer.example".into()),
        jwt_audience: Some("dbx".into()),
        ..cfg()
    })
}

#[test]
fn issuer() {
    let a = iss_aud_auth();
    assert!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":"https://issuer.example","aud":"dbx"}))), NOW).is_ok());
    assert_eq!(
        a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":"https://evil.example","aud":"dbx"}))), NOW),
        err("token issuer not accepted")
    );
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"aud":"dbx"}))), NOW), err("token has no valid iss claim"));
}

#[test]
fn audience() {
    let a = iss_aud_auth();
    let iss = "https://issuer.example";
    assert!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":iss,"aud":["other","dbx"]}))), NOW).is_ok());
    assert_eq!(
        a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":iss,"aud":"other"}))), NOW),
        err("token audience not accepted")
    );
    assert_eq!(
        a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":iss,"aud":["other"]}))), NOW),
        err("token audience not accepted")
    );
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":iss}))), NOW), err("token has no valid aud claim"));
    // No audience configured: aud is not checked; no issuer configured: iss is not.
    assert!(hs_auth().authenticate(Some(&hs(json!({"exp":NOW+60,"iss":"x","aud":"y"}))), NOW).is_ok());
}

// ---- JWT: claims ----

#[test]
fn role_claim() {
    let a = hs_auth();
    let role = |claims: Value| a.authenticate(Some(&hs(claims)), NOW).map(|i| i.role);
    assert_eq!(role(json!({"exp":NOW+60})), Ok(Role::Write));
    assert_eq!(role(json!({"exp":NOW+60,"role":null})), Ok(Role::Write));
    assert_eq!(role(json!({"exp":NOW+60,"role":"read"})), Ok(Role::Read));
    assert_eq!(role(json!({"exp":NOW+60,"role":"admin"})), Ok(Role::Admin));
    assert_eq!(role(json!({"exp":NOW+60,"role":"Admin"})), Ok(Role::Admin));
    assert_eq!(role(json!({"exp":NOW+60,"role":"superuser"})), Err(AuthError::Invalid("invalid role claim".into())));
    assert_eq!(role(json!({"exp":NOW+60,"role":2})), Err(AuthError::Invalid("invalid role claim".into())));
}

#[test]
fn keys_claim() {
    let a = hs_auth();
    let id = a.authenticate(Some(&hs(json!({"exp":NOW+60,"keys":["user:*","cfg"]}))), NOW).expect("valid");
    assert_eq!(id.key_globs, Some(vec!["user:*".to_string(), "cfg".to_string()]));
    assert!(id.key_allowed("user:1"));
    assert!(id.key_allowed("cfg"));
    assert!(!id.key_allowed("admin:1"));
    let none = a.authenticate(Some(&hs(json!({"exp":NOW+60,"keys":[]}))), NOW).expect("valid");
    assert!(!none.key_allowed("anything"));
    assert!(Identity::anonymous().key_allowed("anything"));
    for bad in [json!("user:*"), json!([1]), json!({"a":1})] {
        assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"keys":bad}))), NOW), err("invalid keys claim"));
    }
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"sub":42}))), NOW), err("invalid sub claim"));
}

// ---- API keys ----

fn keys_auth(raw: &str) -> Authenticator {
    auth(AuthConfig { api_keys: Some(raw.into()), ..cfg() })
}

#[test]
fn api_keys_with_roles() {
    let a = keys_auth("k-read:read, k-write:write ,k-admin, k-adm2:ADMIN,a.b.c");
    assert!(a.enabled());
    assert!(!a.jwt_enabled());
    let role = |k: &str| a.authenticate(Some(k), NOW).map(|i| i.role);
    assert_eq!(role("k-read"), Ok(Role::Read));
    assert_eq!(role("k-write"), Ok(Role::Write));
    assert_eq!(role("k-admin"), Ok(Role::Admin));
    assert_eq!(role("k-adm2"), Ok(Role::Admin));
    assert_eq!(role("a.b.c"), Ok(Role::Admin));
    let id = a.authenticate(Some("k-read"), NOW).expect("ok");
    assert_eq!((id.subject, id.expires_at, id.key_globs), (None, None, None));
    assert_eq!(role("k-read:read"), Err(AuthError::Invalid("not a known API key".into())));
    assert_eq!(role("k-rea"), Err(AuthError::Invalid("not a known API key".into())));
    assert_eq!(role("K-READ"), Err(AuthError::Invalid("not a known API key".into())));
    assert_eq!(a.authenticate(None, NOW), Err(AuthError::Missing));
    assert_eq!(a.authenticate(Some(""), NOW), Err(AuthError::Missing));
    // A JWT is not accepted when only API keys are configured.
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60}))), NOW), err("not a known API key"));
}

#[test]
fn api_keys_and_jwt_together() {
    let a = auth(AuthConfig { api_keys: Some("k1:read".into()), jwt_secret: Some(SECRET.into()), ..cfg() });
    assert_eq!(a.authenticate(Some("k1"), NOW).map(|i| i.role), Ok(Role::Read));
    assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60,"role":"admin"}))), NOW).map(|i| i.role), Ok(Role::Admin));
    assert_eq!(a.authenticate(Some("k2"), NOW), err("neither a known API key nor a token"));
}

#[test]
fn api_key_config_errors() {
    let e =
        |raw: &str| Authenticator::new(&AuthConfig { api_keys: Some(raw.into()), ..cfg() }).err().unwrap_or_default();
    let m = e("sekrit:owner");
    assert!(m.starts_with("DBX_API_KEYS:") && m.contains("unknown role"), "{m}");
    assert!(!m.contains("sekrit") && !m.contains("owner"), "{m}");
    assert!(e("a,,b").contains("entry 2 has an empty key"));
    assert!(e("a,").contains("entry 2 has an empty key"));
    assert!(e(":read").contains("empty key"));
    assert!(e("sekrit,sekrit:read").contains("entry 2 repeats"));
    // Empty or blank: nothing configured.
    for raw in ["", "  "] {
        assert!(!keys_auth(raw).enabled());
    }
}

#[test]
fn anonymous_when_nothing_configured() {
    let a = auth(cfg());
    assert!(!a.enabled());
    assert_eq!(a.authenticate(None, NOW), Ok(Identity::anonymous()));
    assert_eq!(a.authenticate(Some("whatever"), NOW), Ok(Identity::anonymous()));
    let anon = Identity::anonymous();
    assert_eq!(anon.role, Role::Admin);
    assert_eq!(anon.expires_at, None);
    assert!(!anon.is_expired(u64::MAX, 0));
    assert_eq!(a.refresh(&anon, "x.y.z", NOW), Ok(anon));
}

// ---- configuration of JWT keys ----

#[test]
fn public_key_config_errors() {
    let e = |p: PathBuf| {
        let m =
            Authenticator::new(&AuthConfig { jwt_public_key_path: Some(p.clone()), ..cfg() }).err().unwrap_or_default();
        let is_temp = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("dbx-auth-test-"));
        if is_temp {
            let _ = std::fs::remove_file(&p);
        }
        m
    };
    let m = e(fixture_path("does-not-exist.pem"));
    assert!(m.starts_with("DBX_JWT_PUBLIC_KEY: cannot read"), "{m}");
    let m = e(fixture_path("rsa_private.pem"));
    assert!(m.contains("PRIVATE KEY") && m.starts_with("DBX_JWT_PUBLIC_KEY"), "{m}");
    let m = e(temp_file("garbage.pem", b"hello"));
    assert!(m.contains("not a PEM file"), "{m}");
    let p384 = "-----BEGIN PUBLIC KEY-----\n\
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEJoxXa30ugfVyFxAs6dlAY9MI/CJuCOZm\n\
        enwHkDrXiw3FsxYONSpYEABasZH/XJEg/wQEhNUuvLy6vUz6MMQh6IPNOsF3f54Z\n\
        HX2g1hgSrpaUwbjT1JUrX3sB3xjB23tr\n\
        -----END PUBLIC KEY-----\n";
    let m = e(temp_file("p384.pem", p384.as_bytes()));
    assert!(m.contains("only P-256"), "{m}");
    let bad = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let m = e(temp_file("bad.pem", bad.as_bytes()));
    assert!(m.contains("is not an RSA, EC P-256 or Ed25519 public key"), "{m}");

    let m = Authenticator::new(&AuthConfig { jwt_secret: Some(String::new()), ..cfg() }).err().unwrap_or_default();
    assert!(m.starts_with("DBX_JWT_SECRET"), "{m}");
    let m =
        Authenticator::new(&AuthConfig { jwt_secret: Some(SECRET.into()), jwt_audience: Some(" ".into()), ..cfg() })
            .err()
            .unwrap_or_default();
    assert!(m.starts_with("DBX_JWT_AUDIENCE"), "{m}");
}

#[test]
fn debug_output_hides_secrets() {
    let c = AuthConfig { api_keys: Some("sekrit-key".into()), jwt_secret: Some("sekrit-secret".into()), ..cfg() };
    let a = auth(c.clone());
    let s = format!("{c:?} {a:?}");
    assert!(!s.contains("sekrit"), "{s}");
}

// ---- refresh ----

#[test]
fn refresh_rules() {
    let a = hs_auth();
    let cur = a
        .authenticate(Some(&hs(json!({"sub":"alice","exp":NOW+10,"role":"write","keys":["a:*","b:*"]}))), NOW)
        .expect("valid");
    // same subject, later expiry, same scope, higher role
    let new = a
        .refresh(&cur, &hs(json!({"sub":"alice","exp":NOW+100,"role":"admin","keys":["b:*","a:*"]})), NOW)
        .expect("refresh");
    assert_eq!(new.expires_at, Some(NOW + 100));
    assert_eq!(new.role, Role::Admin);
    // narrower scope is fine
    assert!(a.refresh(&cur, &hs(json!({"sub":"alice","exp":NOW+100,"keys":["a:*"]})), NOW).is_ok());
    assert_eq!(
        a.refresh(&cur, &hs(json!({"sub":"bob","exp":NOW+100,"keys":["a:*"]})), NOW),
        err("token is for another subject")
    );
    assert_eq!(a.refresh(&cur, &hs(json!({"exp":NOW+100,"keys":["a:*"]})), NOW), err("token is for another subject"));
    assert_eq!(
        a.refresh(&cur, &hs(json!({"sub":"alice","exp":NOW+100,"role":"read","keys":["a:*"]})), NOW),
        err("token has a lower role than the current credential")
    );
    assert_eq!(
        a.refresh(&cur, &hs(json!({"sub":"alice","exp":NOW+100})), NOW),
        err("token has a wider key scope than the current credential")
    );
    assert_eq!(
        a.refresh(&cur, &hs(json!({"sub":"alice","exp":NOW+100,"keys":["*"]})), NOW),
        err("token has a wider key scope than the current credential")
    );
    // bad tokens
    assert_eq!(a.refresh(&cur, &hs(json!({"sub":"alice","exp":NOW-1,"keys":["a:*"]})), NOW), err("token expired"));
    assert_eq!(a.refresh(&cur, "", NOW), Err(AuthError::Missing));
    assert_eq!(a.refresh(&cur, "nope", NOW), err("malformed token"));
    // an unconfined identity may take any scope
    let wide = a.authenticate(Some(&hs(json!({"sub":"alice","exp":NOW+10}))), NOW).expect("valid");
    assert!(a.refresh(&wide, &hs(json!({"sub":"alice","exp":NOW+100,"keys":["x"]})), NOW).is_ok());
}

#[test]
fn refresh_needs_jwt() {
    let a = keys_auth("k1");
    let cur = a.authenticate(Some("k1"), NOW).expect("ok");
    assert!(matches!(a.refresh(&cur, "k1", NOW), Err(AuthError::Invalid(_))));
    // An API key is never accepted as a refresh token.
    let b = auth(AuthConfig { api_keys: Some("k1".into()), jwt_secret: Some(SECRET.into()), ..cfg() });
    assert_eq!(b.refresh(&cur, "k1", NOW), err("malformed token"));
}

// ---- handshake helpers ----

#[test]
fn messages_never_contain_the_credential() {
    let a = auth(AuthConfig {
        api_keys: Some("k1".into()),
        jwt_secret: Some(SECRET.into()),
        jwt_issuer: Some("iss".into()),
        ..cfg()
    });
    let tokens = [
        hs(json!({"exp":NOW-5,"iss":"iss"})),
        hs(json!({"exp":NOW+5,"iss":"other"})),
        hs(json!({"exp":NOW+5,"iss":"iss","role":"sekrit-role"})),
        "sekrit-api-key".to_string(),
    ];
    for t in &tokens {
        let m = a.authenticate(Some(t), NOW).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!m.is_empty());
        assert!(!m.contains(t.as_str()) && !m.contains("sekrit"), "{m}");
        let sig = t.rsplit('.').next().unwrap_or_default();
        assert!(!m.contains(sig), "{m}");
    }
}

#[test]
fn role_order_and_names() {
    assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    for r in [Role::Read, Role::Write, Role::Admin] {
        assert_eq!(Role::parse(r.as_str()), Some(r));
        assert_eq!(Role::from_u8(r.to_u8()), r);
    }
    assert_eq!(Role::parse("root"), None);
    assert_eq!(Role::Write.to_string(), "write");
}

#[test]
fn api_keys_carry_labels_and_fingerprints() {
    let a = keys_auth("k1:read:ops-team, k2:write, a:b:c:admin, k4:admin:x.y_z");
    let label = |k: &str| a.authenticate(Some(k), NOW).map(|i| (i.role, i.label));
    assert_eq!(label("k1"), Ok((Role::Read, "ops-team".to_string())));
    assert_eq!(label("a:b:c"), Ok((Role::Admin, label("a:b:c").unwrap().1)));
    assert_eq!(label("k4"), Ok((Role::Admin, "x.y_z".to_string())));
    // No label: a fingerprint of the key's digest, never the key.
    let fp = label("k2").unwrap().1;
    assert!(fp.starts_with("key-") && fp.len() == 12 && !fp.contains("k2"), "{fp}");
    let bad = |raw: &str| Authenticator::new(&AuthConfig { api_keys: Some(raw.into()), ..cfg() }).unwrap_err();
    assert!(bad("k1:read:bad label").contains("label"), "{}", bad("k1:read:bad label"));
    assert!(bad("k1:reader:x").contains("unknown role"));
}

#[test]
fn keys_and_secret_from_files() {
    let keys = temp_file("keys", b"# ops keys\nk1:read:ops\n\n  k2:admin  \n");
    let secret = temp_file("secret", format!("{SECRET}\n").as_bytes());
    let a = auth(AuthConfig { api_keys_file: Some(keys.clone()), jwt_secret_file: Some(secret), ..cfg() });
    assert_eq!(a.authenticate(Some("k1"), NOW).map(|i| (i.role, i.label)), Ok((Role::Read, "ops".to_string())));
    assert_eq!(a.authenticate(Some("k2"), NOW).map(|i| i.role), Ok(Role::Admin));
    assert!(a.authenticate(Some(&hs(json!({"exp":NOW+60}))), NOW).is_ok(), "the trailing newline is not in the secret");
    let e = Authenticator::new(&AuthConfig { api_keys_file: Some(temp_file("bad", b"k1:read\nk2:nope\n")), ..cfg() })
        .unwrap_err();
    assert!(e.starts_with("DBX_API_KEYS_FILE: ") && e.contains("line 2 has an unknown role"), "{e}");
    assert!(!e.contains("k2"), "never the key: {e}");
    let e = Authenticator::new(&AuthConfig { api_keys_file: Some("/nonexistent/keys".into()), ..cfg() }).unwrap_err();
    assert!(e.contains("DBX_API_KEYS_FILE: cannot read /nonexistent/keys"), "{e}");
    let e =
        Authenticator::new(&AuthConfig { api_keys_file: Some(temp_file("empty", b"# none\n")), ..cfg() }).unwrap_err();
    assert!(e.contains("holds no key"), "{e}");
    let e =
        Authenticator::new(&AuthConfig { jwt_secret_file: Some(temp_file("nosecret", b"\n")), ..cfg() }).unwrap_err();
    assert!(e.contains("DBX_JWT_SECRET_FILE") && e.contains("is empty"), "{e}");
}
