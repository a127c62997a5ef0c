//! How a credential is checked: API keys by digest in constant time, JWTs by
//! signature, algorithm, expiry, issuer and audience; and loading the keys.

use super::{invalid, ApiKey, AuthError, Authenticator, Identity, PublicKey, Role};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// DER encoding of the OID prime256v1 (1.2.840.10045.3.1.7), the P-256 curve.
const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

impl Authenticator {
    /// Constant time in the number of configured keys and independent of the
    /// candidate's length (SHA-256 digests are compared, never the keys).
    pub(super) fn match_api_key(&self, candidate: &str) -> Option<(Role, &str)> {
        if self.api_keys.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let mut found = Choice::from(0u8);
        let mut role = 0u8;
        let mut at = 0u32;
        for (i, k) in self.api_keys.iter().enumerate() {
            let eq = k.digest.as_slice().ct_eq(digest.as_slice());
            role = u8::conditional_select(&role, &k.role.to_u8(), eq);
            at = u32::conditional_select(&at, &(i as u32), eq);
            found |= eq;
        }
        if bool::from(found) {
            let label = self.api_keys.get(at as usize).map_or("", |k| k.label.as_str());
            Some((Role::from_u8(role), label))
        } else {
            None
        }
    }

    pub(super) fn verify_jwt(&self, token: &str, now_s: u64) -> Result<Identity, AuthError> {
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
        let label = subject.clone().unwrap_or_else(|| "jwt".to_string());
        Ok(Identity { role, subject, expires_at: Some(exp), key_globs, label, is_api_key: false })
    }
}

pub(super) fn non_empty(var: &str, v: Option<&str>) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Err(format!("{var}: the value is empty")),
        Some(s) => Ok(Some(s.to_string())),
    }
}

/// `key[:role],…`; a bare key is admin. Errors never contain a key.
pub(super) fn parse_api_keys<'a>(entries: impl Iterator<Item = &'a str>, at: &str) -> Result<Vec<ApiKey>, String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut keys = Vec::new();
    for (i, entry) in entries.enumerate() {
        let n = i + 1;
        let entry = entry.trim();
        if entry.is_empty() && at.ends_with("line") {
            continue; // blank lines and comments in a file
        }
        let (key, role, label) = split_entry(entry).ok_or_else(|| {
            format!("{at} {n} has an unknown role after ':' (expected read, write or admin, then an optional label)")
        })?;
        if key.is_empty() {
            return Err(format!("{at} {n} has an empty key"));
        }
        if !seen.insert(key) {
            return Err(format!("{at} {n} repeats an earlier key"));
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let label = match label {
            Some(l) if l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) => {
                return Err(format!("{at} {n} has a label that is not made of letters, digits, '.', '_' and '-'"));
            }
            Some(l) => l.to_string(),
            // A fingerprint names the key without revealing it.
            None => format!("key-{}", digest.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()),
        };
        keys.push(ApiKey { digest, role, label });
    }
    Ok(keys)
}

/// `key`, `key:role` or `key:role:label` (a key may itself hold ':'): the role is the
/// last field, or the one before a label. None: no role where one must be.
fn split_entry(entry: &str) -> Option<(&str, Role, Option<&str>)> {
    let Some((rest, last)) = entry.rsplit_once(':') else {
        return Some((entry, Role::Admin, None));
    };
    if let Some(role) = Role::parse(last.trim()) {
        return Some((rest.trim(), role, None));
    }
    let (key, role) = rest.rsplit_once(':')?;
    Some((key.trim(), Role::parse(role.trim())?, Some(last.trim())))
}

/// Read a credential file named by `var`. A relative path is taken in
/// `$CREDENTIALS_DIRECTORY` when that is set (systemd's `LoadCredential=`).
pub(super) fn read_secret_file(var: &str, path: &Path) -> Result<(String, String), String> {
    let full = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() => Path::new(&dir).join(path),
        _ => path.to_path_buf(),
    };
    let shown = full.display().to_string();
    let text = std::fs::read_to_string(&full).map_err(|e| format!("{var}: cannot read {shown}: {e}"))?;
    Ok((shown, text))
}

/// Loads `DBX_JWT_PUBLIC_KEY`; the key type decides the one accepted algorithm:
/// RSA → RS256, EC P-256 → ES256, Ed25519 → EdDSA.
pub(super) fn load_public_key(path: &Path) -> Result<PublicKey, String> {
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
pub(super) fn first_pem_block(text: &str) -> Option<(String, Vec<u8>)> {
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

pub(super) fn is_b64url(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Three dot-separated base64url parts (the signature may be empty, as in `alg: none`).
pub(super) fn looks_like_jwt(s: &str) -> bool {
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(sig), None) => {
            !h.is_empty() && !p.is_empty() && is_b64url(h) && is_b64url(p) && is_b64url(sig)
        }
        _ => false,
    }
}

/// The `alg` of a JWT header, read without trusting anything else.
pub(super) fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// A JWT NumericDate as whole seconds: fractions round down for `exp` and up for
/// `nbf` (the stricter side); negative or non-numeric → `None`.
pub(super) fn numeric_date(v: Option<&Value>, round_up: bool) -> Option<u64> {
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

pub(super) fn jwt_error(kind: &ErrorKind) -> AuthError {
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
