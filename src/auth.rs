//! Authentication (PROTOCOL.md §6): API keys and JWTs.
//!
//! Pure: no sockets and no clock reads (the caller passes `now`), so every rule
//! here is testable with fixed times. Credentials never appear in an error
//! message, a `Debug` output or anything else this module produces.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// The subprotocol a browser offers next to `bearer.<token>`; the 101 answers it.
pub const SUBPROTOCOL: &str = "dbx.v1";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// DER encoding of the OID prime256v1 (1.2.840.10045.3.1.7), the P-256 curve.
const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Query parameters whose values [`redact_query`] hides.
const SECRET_PARAMS: [&str; 5] = ["api_key", "apikey", "token", "access_token", "jwt"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    /// `read`, `write` or `admin` (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Read, Role::Write, Role::Admin].into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Role::Read => 0,
            Role::Write => 1,
            Role::Admin => 2,
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            0 => Role::Read,
            1 => Role::Write,
            _ => Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a connection is: what it may do, until when, and on which keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// JWT `sub`.
    pub subject: Option<String>,
    /// Unix seconds (JWT `exp`); `None` for API keys and anonymous clients.
    /// The token stops being accepted at `expires_at + leeway` (see
    /// [`Authenticator::leeway`]).
    pub expires_at: Option<u64>,
    /// JWT `keys` claim; `None` = all keys.
    pub key_globs: Option<Vec<String>>,
}

impl Identity {
    /// Anonymous client (no credential configured): admin, no expiry, all keys.
    pub fn anonymous() -> Identity {
        Identity { role: Role::Admin, subject: None, expires_at: None, key_globs: None }
    }

    fn api_key(role: Role) -> Identity {
        Identity { role, subject: None, expires_at: None, key_globs: None }
    }

    /// Whether `key` is inside the connection's key scope.
    pub fn key_allowed(&self, key: &str) -> bool {
        match &self.key_globs {
            None => true,
            Some(globs) => globs.iter().any(|g| crate::glob::glob_match(g, key)),
        }
    }

    /// Whether the credential has expired at `now_s` given the clock `leeway`.
    pub fn is_expired(&self, now_s: u64, leeway: u64) -> bool {
        self.expires_at.is_some_and(|exp| now_s >= exp.saturating_add(leeway))
    }
}

/// The raw authentication settings (`DBX_API_KEYS`, `DBX_JWT_*`).
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Raw `DBX_API_KEYS`.
    pub api_keys: Option<String>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key_path: Option<std::path::PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway: u64,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("api_keys", &self.api_keys.as_ref().map(|_| "<redacted>"))
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("jwt_public_key_path", &self.jwt_public_key_path)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .finish()
    }
}

/// Why a credential was refused (both map to HTTP 401 / `unauthorized`).
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum AuthError {
    /// No credential was given although one is required.
    Missing,
    /// The credential was refused; the message is safe to show and log (it
    /// never contains the credential).
    Invalid(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("missing credential"),
            AuthError::Invalid(m) => f.write_str(m),
        }
    }
}

fn invalid(msg: &str) -> AuthError {
    AuthError::Invalid(msg.to_string())
}

struct ApiKey {
    digest: [u8; 32],
    role: Role,
}

struct PublicKey {
    alg: Algorithm,
    alg_name: &'static str,
    key: DecodingKey,
}

/// Verifies credentials. Built once at start from [`AuthConfig`].
pub struct Authenticator {
    api_keys: Vec<ApiKey>,
    hmac: Option<DecodingKey>,
    public: Option<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_keys", &self.api_keys.len())
            .field("jwt_secret", &self.hmac.is_some())
            .field("jwt_public_key", &self.public.as_ref().map(|p| p.alg_name))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Authenticator {
    /// Checks and loads the configuration. `Err` is a one-line message naming
    /// the variable (unreadable or unsupported PEM, unknown role or empty key in
    /// `DBX_API_KEYS`, empty secret …); it never contains a key or secret.
    /// The one place the server's settings become an `Authenticator` (`dbx::run`
    /// builds it once and hands it to the server).
    pub fn from_config(cfg: &crate::config::Config) -> Result<Authenticator, String> {
        Authenticator::new(&AuthConfig {
            api_keys: cfg.api_keys.clone(),
            jwt_secret: cfg.jwt_secret.clone(),
            jwt_public_key_path: cfg.jwt_public_key.clone(),
            jwt_issuer: cfg.jwt_issuer.clone(),
            jwt_audience: cfg.jwt_audience.clone(),
            jwt_leeway: cfg.jwt_leeway,
        })
    }

    pub fn new(cfg: &AuthConfig) -> Result<Authenticator, String> {
        let api_keys = match cfg.api_keys.as_deref() {
            Some(raw) if !raw.trim().is_empty() => parse_api_keys(raw)?,
            _ => Vec::new(),
        };
        let hmac = match cfg.jwt_secret.as_deref() {
            None => None,
            Some("") => return Err("DBX_JWT_SECRET: the secret is empty".to_string()),
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
        };
        let public = match cfg.jwt_public_key_path.as_deref() {
            None => None,
            Some(p) => Some(load_public_key(p)?),
        };
        let issuer = non_empty("DBX_JWT_ISSUER", cfg.jwt_issuer.as_deref())?;
        let audience = non_empty("DBX_JWT_AUDIENCE", cfg.jwt_audience.as_deref())?;
        Ok(Authenticator { api_keys, hmac, public, issuer, audience, leeway: cfg.jwt_leeway })
    }

    /// True if any credential is configured (API keys, secret or public key).
    pub fn enabled(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt_enabled()
    }

    /// True if JWTs can be verified (secret or public key configured).
    pub fn jwt_enabled(&self) -> bool {
        self.hmac.is_some() || self.public.is_some()
    }

    /// `DBX_JWT_LEEWAY` in seconds: a JWT identity expires at `expires_at + leeway`.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Verifies a credential (an API key or a JWT) at unix time `now_s`.
    /// With no credential configured, anything (or nothing) is the anonymous admin.
    pub fn authenticate(&self, credential: Option<&str>, now_s: u64) -> Result<Identity, AuthError> {
        if !self.enabled() {
            return Ok(Identity::anonymous());
        }
        let cred = match credential {
            Some(c) if !c.is_empty() => c,
            _ => return Err(AuthError::Missing),
        };
        // API keys first (an API key may contain dots), always compared in full.
        if let Some(role) = self.match_api_key(cred) {
            return Ok(Identity::api_key(role));
        }
        if self.jwt_enabled() && looks_like_jwt(cred) {
            return self.verify_jwt(cred, now_s);
        }
        Err(invalid("invalid credential"))
    }

    /// `auth.refresh`: verifies `token` as a JWT and returns the new identity,
    /// refusing one for another subject, with a lower role, or with a wider key
    /// scope (the new `keys` globs must be a subset of the current ones when the
    /// current identity is confined). With no credential configured it returns
    /// the current identity unchanged.
    pub fn refresh(&self, current: &Identity, token: &str, now_s: u64) -> Result<Identity, AuthError> {
        if !self.enabled() {
            return Ok(current.clone());
        }
        if !self.jwt_enabled() {
            return Err(invalid("token refresh needs JWT authentication (DBX_JWT_SECRET or DBX_JWT_PUBLIC_KEY)"));
        }
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if !looks_like_jwt(token) {
            return Err(invalid("malformed token"));
        }
        let new = self.verify_jwt(token, now_s)?;
        if new.subject != current.subject {
            return Err(invalid("token is for another subject"));
        }
        if new.role < current.role {
            return Err(invalid("token has a lower role than the current credential"));
        }
        let within = match (&new.key_globs, &current.key_globs) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(n), Some(c)) => n.iter().all(|g| c.contains(g)),
        };
        if !within {
            return Err(invalid("token has a wider key scope than the current credential"));
        }
        Ok(new)
    }

    /// Constant time in the number of configured keys and independent of the
    /// candidate's length (SHA-256 digests are compared, never the keys).
    fn match_api_key(&self, candidate: &str) -> Option<Role> {
        if self.api_keys.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let mut found = Choice::from(0u8);
        let mut role = 0u8;
        for k in &self.api_keys {
            let eq = k.digest.as_slice().ct_eq(digest.as_slice());
            role = u8::conditional_select(&role, &k.role.to_u8(), eq);
            found |= eq;
        }
        if bool::from(found) {
            Some(Role::from_u8(role))
        } else {
            None
        }
    }

    fn verify_jwt(&self, token: &str, now_s: u64) -> Result<Identity, AuthError> {
        let alg_name = header_alg(token).ok_or_else(|| invalid("malformed token"))?;
        // The algorithm follows the configured key; the header only picks which
        // configured key it claims, and anything else (`none` included) is refused.
        let (alg, key) = match (&self.hmac, &self.public) {
            (Some(secret), _) if alg_name == "HS256" => (Algorithm::HS256, secret),
            (_, Some(p)) if alg_name == p.alg_name => (p.alg, &p.key),
            _ => return Err(invalid("token algorithm not allowed")),
        };

        let mut validation = Validation::new(alg);
        // exp/nbf are checked below against the injected `now_s`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // No audience configured: `aud` is not checked (PROTOCOL.md §6).
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| jwt_error(e.kind()))?;
        let claims = data.claims.as_object().ok_or_else(|| invalid("malformed token claims"))?;

        let exp = numeric_date(claims.get("exp"), false).ok_or_else(|| invalid("token has no valid exp claim"))?;
        if now_s >= exp.saturating_add(self.leeway) {
            return Err(invalid("token expired"));
        }
        match claims.get("nbf") {
            None | Some(Value::Null) => {}
            v => {
                let nbf = numeric_date(v, true).ok_or_else(|| invalid("invalid nbf claim"))?;
                if nbf > now_s.saturating_add(self.leeway) {
                    return Err(invalid("token not yet valid"));
                }
            }
        }
        let subject = match claims.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("invalid sub claim")),
        };
        let role = match claims.get("role") {
            None | Some(Value::Null) => Role::Write,
            Some(Value::String(s)) => Role::parse(s).ok_or_else(|| invalid("invalid role claim"))?,
            Some(_) => return Err(invalid("invalid role claim")),
        };
        let key_globs = match claims.get("keys") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| invalid("invalid keys claim"))?,
            ),
            Some(_) => return Err(invalid("invalid keys claim")),
        };
        Ok(Identity { role, subject, expires_at: Some(exp), key_globs })
    }
}

fn non_empty(var: &str, v: Option<&str>) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Err(format!("{var}: the value is empty")),
        Some(s) => Ok(Some(s.to_string())),
    }
}

/// `key[:role],…`; a bare key is admin. Errors never contain a key.
fn parse_api_keys(raw: &str) -> Result<Vec<ApiKey>, String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut keys = Vec::new();
    for (i, entry) in raw.split(',').enumerate() {
        let n = i + 1;
        let entry = entry.trim();
        let (key, role) = match entry.rsplit_once(':') {
            None => (entry, Role::Admin),
            Some((k, r)) => {
                let role = Role::parse(r.trim()).ok_or_else(|| {
                    format!("DBX_API_KEYS: entry {n} has an unknown role after ':' (expected read, write or admin)")
                })?;
                (k.trim(), role)
            }
        };
        if key.is_empty() {
            return Err(format!("DBX_API_KEYS: entry {n} has an empty key"));
        }
        if !seen.insert(key) {
            return Err(format!("DBX_API_KEYS: entry {n} repeats an earlier key"));
        }
        keys.push(ApiKey { digest: Sha256::digest(key.as_bytes()).into(), role });
    }
    Ok(keys)
}

/// Loads `DBX_JWT_PUBLIC_KEY`; the key type decides the one accepted algorithm:
/// RSA → RS256, EC P-256 → ES256, Ed25519 → EdDSA.
fn load_public_key(path: &Path) -> Result<PublicKey, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("DBX_JWT_PUBLIC_KEY: cannot read {shown}: {e}"))?;
    let text = std::str::from_utf8(&pem).map_err(|_| format!("DBX_JWT_PUBLIC_KEY: {shown} is not a PEM file"))?;
    let (label, der) = first_pem_block(text).ok_or_else(|| format!("DBX_JWT_PUBLIC_KEY: {shown} is not a PEM file"))?;
    if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
        return Err(format!(
            "DBX_JWT_PUBLIC_KEY: {shown} holds a \"{label}\" block; expected a public key (BEGIN PUBLIC KEY)"
        ));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(PublicKey { alg: Algorithm::RS256, alg_name: "RS256", key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        if !der.windows(P256_OID_DER.len()).any(|w| w == P256_OID_DER) {
            return Err(format!("DBX_JWT_PUBLIC_KEY: {shown}: only P-256 EC keys (ES256) are supported"));
        }
        return Ok(PublicKey { alg: Algorithm::ES256, alg_name: "ES256", key });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok(PublicKey { alg: Algorithm::EdDSA, alg_name: "EdDSA", key });
    }
    Err(format!("DBX_JWT_PUBLIC_KEY: {shown} is not an RSA, EC P-256 or Ed25519 public key"))
}

/// The label and decoded body of the first PEM block in `text`.
fn first_pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let mut lines = text.lines().map(str::trim);
    let label = lines.find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))?;
    let mut body = String::new();
    for line in lines {
        if line.starts_with("-----END ") {
            let der = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).ok()?;
            return Some((label.to_string(), der));
        }
        body.push_str(line);
    }
    None
}

fn is_b64url(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Three dot-separated base64url parts (the signature may be empty, as in `alg: none`).
fn looks_like_jwt(s: &str) -> bool {
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(sig), None) => {
            !h.is_empty() && !p.is_empty() && is_b64url(h) && is_b64url(p) && is_b64url(sig)
        }
        _ => false,
    }
}

/// The `alg` of a JWT header, read without trusting anything else.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// A JWT NumericDate as whole seconds: fractions round down for `exp` and up for
/// `nbf` (the stricter side); negative or non-numeric → `None`.
fn numeric_date(v: Option<&Value>, round_up: bool) -> Option<u64> {
    let n = v?.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f < 0.0 || f >= u64::MAX as f64 {
        return None;
    }
    let r = if round_up { f.ceil() } else { f.floor() };
    Some(r as u64)
}

fn jwt_error(kind: &ErrorKind) -> AuthError {
    let msg = match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => "invalid token signature",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => "token algorithm not allowed",
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "token has no valid exp claim",
            "iss" => "token has no valid iss claim",
            "aud" => "token has no valid aud claim",
            _ => "token misses a required claim",
        },
        ErrorKind::InvalidIssuer => "token issuer not accepted",
        ErrorKind::InvalidAudience => "token audience not accepted",
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidClaimFormat(_) => "malformed token claim",
        _ => "malformed token",
    };
    invalid(msg)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Extracts the credential from the handshake: the `api_key` query value
/// (already percent-decoded by the caller), the `Authorization` header value,
/// and the `Sec-WebSocket-Protocol` header value (several headers joined with
/// `,`). Returns `(credential, subprotocol_to_answer)`; the latter is
/// `Some("dbx.v1")` when the client offered `dbx.v1`. Priority: `api_key`, then
/// `Authorization: Bearer`, then the `bearer.<token>` subprotocol. Empty values
/// count as absent.
pub fn extract_credential<'a>(
    api_key: Option<&'a str>,
    authorization: Option<&'a str>,
    protocols: Option<&'a str>,
) -> (Option<&'a str>, Option<&'static str>) {
    let mut answer = None;
    let mut from_protocol = None;
    for p in protocols.unwrap_or("").split(',').map(str::trim) {
        if p == SUBPROTOCOL {
            answer = Some(SUBPROTOCOL);
        } else if let Some(t) = strip_prefix_ignore_case(p, BEARER_PROTOCOL_PREFIX) {
            if from_protocol.is_none() && !t.is_empty() {
                from_protocol = Some(t);
            }
        }
    }
    let credential =
        api_key.filter(|k| !k.is_empty()).or_else(|| authorization.and_then(bearer_token)).or(from_protocol);
    (credential, answer)
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let h = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().map(|ip| ip.to_canonical().is_loopback()).unwrap_or(false)
}

/// Protected mode: with no credential configured, the server may listen only on
/// a loopback address unless anonymous access is allowed explicitly.
pub fn check_protected_mode(auth_enabled: bool, allow_anonymous: bool, host: &str) -> Result<(), String> {
    if auth_enabled || allow_anonymous || is_loopback_host(host) {
        return Ok(());
    }
    Err(format!(
        "protected mode: no credential is configured (DBX_API_KEYS, DBX_JWT_SECRET or DBX_JWT_PUBLIC_KEY) \
         and DBX_HOST={host} is not a loopback address; configure a credential or set DBX_ALLOW_ANONYMOUS=true"
    ))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_lossy(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).copied().and_then(hex_value);
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request target safe to log: the values of `api_key` (and `apikey`,
/// `token`, `access_token`, `jwt`; names compared percent-decoded and
/// case-insensitively) become `REDACTED`.
pub fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let decoded = percent_decode_lossy(name);
        if SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(&decoded)) {
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

/// A `Sec-WebSocket-Protocol` value safe to log: `bearer.<token>` entries
/// become `bearer.REDACTED`.
pub fn redact_protocols(value: &str) -> String {
    value
        .split(',')
        .map(|p| {
            let p = p.trim();
            if strip_prefix_ignore_case(p, BEARER_PROTOCOL_PREFIX).is_some() {
                "bearer.REDACTED"
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
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
            Identity { role: Role::Write, subject: Some("alice".into()), expires_at: Some(NOW + 60), key_globs: None }
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
        assert_eq!(a.authenticate(Some("not-a-jwt"), NOW), err("invalid credential"));
        assert_eq!(a.authenticate(Some("a.b"), NOW), err("invalid credential"));
        assert_eq!(a.authenticate(Some("a.b.c.d"), NOW), err("invalid credential"));
        assert_eq!(a.authenticate(Some("a b.c.d"), NOW), err("invalid credential"));
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
        assert!(a
            .authenticate(Some(&hs(json!({"exp":NOW+60,"iss":"https://issuer.example","aud":"dbx"}))), NOW)
            .is_ok());
        assert_eq!(
            a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":"https://evil.example","aud":"dbx"}))), NOW),
            err("token issuer not accepted")
        );
        assert_eq!(
            a.authenticate(Some(&hs(json!({"exp":NOW+60,"aud":"dbx"}))), NOW),
            err("token has no valid iss claim")
        );
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
        assert_eq!(
            a.authenticate(Some(&hs(json!({"exp":NOW+60,"iss":iss}))), NOW),
            err("token has no valid aud claim")
        );
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
        assert_eq!(
            role(json!({"exp":NOW+60,"role":"superuser"})),
            Err(AuthError::Invalid("invalid role claim".into()))
        );
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
        assert_eq!(role("k-read:read"), Err(AuthError::Invalid("invalid credential".into())));
        assert_eq!(role("k-rea"), Err(AuthError::Invalid("invalid credential".into())));
        assert_eq!(role("K-READ"), Err(AuthError::Invalid("invalid credential".into())));
        assert_eq!(a.authenticate(None, NOW), Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some(""), NOW), Err(AuthError::Missing));
        // A JWT is not accepted when only API keys are configured.
        assert_eq!(a.authenticate(Some(&hs(json!({"exp":NOW+60}))), NOW), err("invalid credential"));
    }

    #[test]
    fn api_keys_and_jwt_together() {
        let a = auth(AuthConfig { api_keys: Some("k1:read".into()), jwt_secret: Some(SECRET.into()), ..cfg() });
        assert_eq!(a.authenticate(Some("k1"), NOW).map(|i| i.role), Ok(Role::Read));
        assert_eq!(
            a.authenticate(Some(&hs(json!({"exp":NOW+60,"role":"admin"}))), NOW).map(|i| i.role),
            Ok(Role::Admin)
        );
        assert_eq!(a.authenticate(Some("k2"), NOW), err("invalid credential"));
    }

    #[test]
    fn api_key_config_errors() {
        let e = |raw: &str| {
            Authenticator::new(&AuthConfig { api_keys: Some(raw.into()), ..cfg() }).err().unwrap_or_default()
        };
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
            let m = Authenticator::new(&AuthConfig { jwt_public_key_path: Some(p.clone()), ..cfg() })
                .err()
                .unwrap_or_default();
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
        let m = Authenticator::new(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            jwt_audience: Some(" ".into()),
            ..cfg()
        })
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
        assert_eq!(
            a.refresh(&cur, &hs(json!({"exp":NOW+100,"keys":["a:*"]})), NOW),
            err("token is for another subject")
        );
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
    fn extract_credential_priority() {
        assert_eq!(
            extract_credential(Some("q"), Some("Bearer h"), Some("dbx.v1, bearer.p")),
            (Some("q"), Some("dbx.v1"))
        );
        assert_eq!(extract_credential(None, Some("Bearer h"), Some("dbx.v1, bearer.p")), (Some("h"), Some("dbx.v1")));
        assert_eq!(extract_credential(None, None, Some("dbx.v1, bearer.p")), (Some("p"), Some("dbx.v1")));
        assert_eq!(extract_credential(Some(""), Some("bearer  h "), None), (Some("h"), None));
        assert_eq!(extract_credential(None, Some("Basic dXNlcjpwYXNz"), None), (None, None));
        assert_eq!(extract_credential(None, Some("Bearer"), None), (None, None));
        assert_eq!(extract_credential(None, Some("Bearer   "), None), (None, None));
        assert_eq!(extract_credential(None, None, Some("dbx.v1")), (None, Some("dbx.v1")));
        assert_eq!(extract_credential(None, None, Some("bearer.abc.def.ghi")), (Some("abc.def.ghi"), None));
        assert_eq!(extract_credential(None, None, Some("Bearer.t,dbx.v1")), (Some("t"), Some("dbx.v1")));
        assert_eq!(extract_credential(None, None, Some("bearer., chat")), (None, None));
        assert_eq!(extract_credential(None, None, Some("DBX.V1")), (None, None));
        assert_eq!(extract_credential(None, None, None), (None, None));
        assert_eq!(extract_credential(None, None, Some("é,bearer")), (None, None));
    }

    #[test]
    fn protected_mode() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"] {
            assert!(check_protected_mode(false, false, host).is_ok(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.1", "example.com", ""] {
            let m = check_protected_mode(false, false, host).err().unwrap_or_default();
            assert!(m.contains("DBX_ALLOW_ANONYMOUS"), "{host}: {m}");
            assert!(check_protected_mode(true, false, host).is_ok());
            assert!(check_protected_mode(false, true, host).is_ok());
        }
    }

    #[test]
    fn redact() {
        assert_eq!(redact_query("/ws"), "/ws");
        assert_eq!(redact_query("/ws?api_key=s3cr3t&client_id=c1"), "/ws?api_key=REDACTED&client_id=c1");
        assert_eq!(
            redact_query("/ws?client_id=c1&token=a.b.c&access_token=x&version=1.0"),
            "/ws?client_id=c1&token=REDACTED&access_token=REDACTED&version=1.0"
        );
        assert_eq!(redact_query("/ws?api%5Fkey=s3cr3t"), "/ws?api%5Fkey=REDACTED");
        assert_eq!(redact_query("/ws?API_KEY=s3cr3t"), "/ws?API_KEY=REDACTED");
        assert_eq!(redact_query("/ws?api_key"), "/ws?api_key=REDACTED");
        assert_eq!(redact_query("/ws?a=1&&b=%zz"), "/ws?a=1&&b=%zz");
        assert_eq!(redact_query("/ws?api_key=1&api_key=2"), "/ws?api_key=REDACTED&api_key=REDACTED");
        assert_eq!(redact_protocols("dbx.v1, bearer.abc"), "dbx.v1, bearer.REDACTED");
    }

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
}
