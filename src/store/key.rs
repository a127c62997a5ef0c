//! A compact string for keys: up to [`INLINE`] bytes live inside the 24-byte value
//! itself, longer ones in a `Box<str>`. Most keys are short, so this saves the separate
//! allocation (32 bytes under glibc for a 16-byte key) and, more importantly, the
//! pointer chase when `Store::find` compares a probed slot's key: the bytes sit in the
//! slot the probe has already loaded.
//!
//! No `unsafe`: the inline bytes are only ever a whole `&str` copied in, so they are
//! valid UTF-8 by construction and `as_str` re-checks them with `std::str::from_utf8`
//! (cheap for short keys) rather than trusting them. Comparisons on the hot path go
//! through `as_bytes`, which needs no check at all.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest key kept inline: 24 bytes minus the enum tag and the length byte.
pub const INLINE: usize = 22;

#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

impl Key {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Cannot fail: the bytes were copied from a whole `&str` (see `From<&str>`).
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Heap(s) => s,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// Heap bytes owned beyond the 24 bytes of the value itself (memory accounting).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Heap(s) => super::mem::str_mem(s),
        }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        let mut buf = [0u8; INLINE];
        match buf.get_mut(..s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                // s.len() <= INLINE < 256, so the cast is lossless.
                Key(Repr::Inline { len: s.len() as u8, buf })
            }
            None => Key(Repr::Heap(s.into())),
        }
    }
}

impl From<Box<str>> for Key {
    /// Reuses the allocation for a long key.
    fn from(s: Box<str>) -> Key {
        if s.len() <= INLINE {
            Key::from(&*s)
        } else {
            Key(Repr::Heap(s))
        }
    }
}

impl From<&Key> for Box<str> {
    fn from(k: &Key) -> Box<str> {
        k.as_str().into()
    }
}

impl Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Lets maps keyed by `Key` be looked up with `&str`; `Hash` and `Eq` agree with str's.
impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Hash for Key {
    /// Exactly str's hash (hashers may special-case `write_str`), so `Borrow<str>` holds.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests;
