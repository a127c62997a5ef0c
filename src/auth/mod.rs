//! Authentication (PROTOCOL.md §6): API keys and JWTs — roles, key scopes, the
//! `Authenticator` and its rules (`verify`: how a key or a token is checked). Taking
//! the credential out of an HTTP request is the handshake's job
//! (`server::handshake::extract_credential`); where the server may listen without one
//! is the configuration's (`config::check_protected_mode`).
//!
//! Pure: no sockets and no clock reads (the caller passes `now`), so every rule
//! here is testable with fixed times. Credentials never appear in an error
//! message, a `Debug` output or anything else this module produces.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey};

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
    /// A name for the credential that is safe to log and to use as a metric label: an
    /// API key's `label` (or `key-` and the first 8 hex digits of its SHA-256), a JWT's
    /// `sub` (or `jwt`), `anonymous`. Never the secret.
    pub label: String,
    /// Authenticated by an API key (its label is one of a fixed set: a metric label).
    pub is_api_key: bool,
}

impl Identity {
    /// Anonymous client (no credential configured): admin, no expiry, all keys.
    pub fn anonymous() -> Identity {
        Identity {
            role: Role::Admin,
            subject: None,
            expires_at: None,
            key_globs: None,
            label: "anonymous".into(),
            is_api_key: false,
        }
    }

    fn api_key(role: Role, label: &str) -> Identity {
        Identity { role, subject: None, expires_at: None, key_globs: None, label: label.to_string(), is_api_key: true }
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
    /// `DBX_API_KEYS_FILE`: one `key:role[:label]` a line (read when the authenticator is
    /// built, so a rebuild on SIGHUP re-reads it).
    pub api_keys_file: Option<std::path::PathBuf>,
    pub jwt_secret: Option<String>,
    /// `DBX_JWT_SECRET_FILE`.
    pub jwt_secret_file: Option<std::path::PathBuf>,
    pub jwt_public_key_path: Option<std::path::PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway: u64,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("api_keys", &self.api_keys.as_ref().map(|_| "<redacted>"))
            .field("api_keys_file", &self.api_keys_file)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("jwt_secret_file", &self.jwt_secret_file)
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
    label: String,
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
    /// The one place the server's settings become an `Authenticator` (`dbx::run`
    /// builds it once and hands it to the server).
    pub fn from_config(cfg: &crate::config::Config) -> Result<Authenticator, String> {
        Authenticator::new(&AuthConfig {
            api_keys: cfg.api_keys.clone(),
            api_keys_file: cfg.api_keys_file.clone(),
            jwt_secret: cfg.jwt_secret.clone(),
            jwt_secret_file: cfg.jwt_secret_file.clone(),
            jwt_public_key_path: cfg.jwt_public_key.clone(),
            jwt_issuer: cfg.jwt_issuer.clone(),
            jwt_audience: cfg.jwt_audience.clone(),
            jwt_leeway: cfg.jwt_leeway,
        })
    }

    /// Checks and loads the configuration. `Err` is a one-line message naming
    /// the variable (unreadable or unsupported PEM, unknown role or empty key in
    /// `DBX_API_KEYS`, empty secret …); it never contains a key or secret.
    pub fn new(cfg: &AuthConfig) -> Result<Authenticator, String> {
        let mut api_keys = match cfg.api_keys.as_deref() {
            Some(raw) if !raw.trim().is_empty() => parse_api_keys(raw.split(','), "DBX_API_KEYS: entry")?,
            _ => Vec::new(),
        };
        if let Some(path) = &cfg.api_keys_file {
            let (shown, text) = read_secret_file("DBX_API_KEYS_FILE", path)?;
            let lines = text.lines().map(str::trim).map(|l| if l.starts_with('#') { "" } else { l });
            let keys = parse_api_keys(lines, &format!("DBX_API_KEYS_FILE: {shown} line"))?;
            if keys.is_empty() {
                return Err(format!("DBX_API_KEYS_FILE: {shown} holds no key"));
            }
            api_keys.extend(keys);
        }
        let secret_file = match &cfg.jwt_secret_file {
            None => None,
            Some(path) => {
                let (shown, mut text) = read_secret_file("DBX_JWT_SECRET_FILE", path)?;
                // Files end with a newline; the secret does not.
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                if text.is_empty() {
                    return Err(format!("DBX_JWT_SECRET_FILE: {shown} is empty"));
                }
                Some(text)
            }
        };
        let hmac = match cfg.jwt_secret.as_deref().or(secret_file.as_deref()) {
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
        if let Some((role, label)) = self.match_api_key(cred) {
            return Ok(Identity::api_key(role, label));
        }
        if self.jwt_enabled() && looks_like_jwt(cred) {
            return self.verify_jwt(cred, now_s);
        }
        // Says what was expected, once ("Invalid credential: not a known API key").
        Err(invalid(match (self.api_keys.is_empty(), self.jwt_enabled()) {
            (false, true) => "neither a known API key nor a token",
            (true, _) => "not a token",
            (false, false) => "not a known API key",
        }))
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
}

mod verify;

use verify::{load_public_key, looks_like_jwt, non_empty, parse_api_keys, read_secret_file};

#[cfg(test)]
mod tests;
