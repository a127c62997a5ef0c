//! The JSON protocol (PROTOCOL.md §2, §3), no store, no socket:
//! - `scan`: the validating JSON scanner everything reads with;
//! - `request`: the one parser of operations (requests, batch operations, log replay);
//! - `fast`: the common request shape read in one tight pass before `request`'s parser;
//! - `params`: typed parameter access whose errors name the parameter;
//! - `envelope`: the one writer of replies, errors, events, hello and heartbeat;
//! - `json`: the writer that appends JSON into a reused byte buffer;
//! - `error`: error codes and the request-level error.

pub mod envelope;
pub mod error;
mod fast;
pub mod json;
pub mod params;
pub mod request;
pub mod scan;

pub use envelope::{rfc3339_ms, write_error};
pub use error::{Code, Error, Result};
pub use json::{write_f64, write_i64, write_str, write_u64, Arr, Json};
pub use params::{
    array_elements, first_duplicate, object_fields, raw_str, recycle, value_text, Fields, Params, Raw, SpareFields,
};
pub use request::{parse_incoming, parse_incoming_with, Incoming, Request, MAX_DEPTH};

#[cfg(test)]
mod tests;
