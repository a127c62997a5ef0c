//! Error codes (PROTOCOL.md §3) and the request-level error every layer returns.

/// Error codes of PROTOCOL.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    NotFound,
    WrongType,
    NotInteger,
    Forbidden,
    RateLimited,
    Oom,
    Unavailable,
    /// Gateway mode: too many requests wait on the backend (`retry_after_ms` says when).
    Overloaded,
    Unauthorized,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::MethodNotFound => "method_not_found",
            Code::InvalidParams => "invalid_params",
            Code::NotFound => "not_found",
            Code::WrongType => "wrong_type",
            Code::NotInteger => "not_integer",
            Code::Forbidden => "forbidden",
            Code::RateLimited => "rate_limited",
            Code::Oom => "oom",
            Code::Unavailable => "unavailable",
            Code::Overloaded => "overloaded",
            Code::Unauthorized => "unauthorized",
            Code::Internal => "internal",
        }
    }

    pub const ALL: [Code; 13] = [
        Code::InvalidRequest,
        Code::MethodNotFound,
        Code::InvalidParams,
        Code::NotFound,
        Code::WrongType,
        Code::NotInteger,
        Code::Forbidden,
        Code::RateLimited,
        Code::Oom,
        Code::Unavailable,
        Code::Overloaded,
        Code::Unauthorized,
        Code::Internal,
    ];

    /// The code named `s` (an error the backend reported); None for an unknown name.
    pub fn from_name(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A request-level error: a code, a human message, and for `rate_limited` the time
/// until enough tokens are back.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub code: Code,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), retry_after_ms: None }
    }
    pub fn invalid_params(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidParams, message)
    }
    pub fn wrong_type() -> Error {
        Error::new(Code::WrongType, "Operation against a key holding the wrong kind of value")
    }
    pub fn key_not_found(key: &str) -> Error {
        Error::new(Code::NotFound, format!("Key '{key}' not found"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
