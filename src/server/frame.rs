//! The WebSocket frame header (RFC 6455 §5.2), written and read in one place: the
//! server writes it for the text frames it queues itself and reads it to find frame
//! boundaries in its output and the peer's frames in its inbound buffer (`conn::In`:
//! plain text frames are read by the server, the rest by tungstenite); `dbx-bench`
//! uses the same for its client frames.

/// A frame header read from the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// The three reserved bits (extensions), shifted down.
    pub rsv: u8,
    pub op: u8,
    pub masked: bool,
    /// Payload length as the header states it.
    pub len: u64,
    /// Header bytes, the masking key included.
    pub size: usize,
}

/// The header at the start of `b`; None while it is incomplete.
pub fn read_header(b: &[u8]) -> Option<Header> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, size) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(n), 10)
        }
        n => (u64::from(n), 2),
    };
    let size = if masked { size + 4 } else { size };
    Some(Header { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x07, op: b0 & 0x0f, masked, len, size })
}

/// Append the header of a final frame of opcode `op` with a `len`-byte payload. With
/// `masked`, the mask bit is set and the caller appends the 4-byte key next.
#[inline]
pub fn write_header(buf: &mut Vec<u8>, op: u8, len: usize, masked: bool) {
    let m = if masked { 0x80 } else { 0 };
    buf.push(0x80 | op);
    if len < 126 {
        buf.push(m | len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(m | 126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(m | 127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for (len, size) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            for masked in [false, true] {
                let mut b = Vec::new();
                write_header(&mut b, 0x1, len, masked);
                let h = read_header(&b).expect("complete header");
                let size = if masked { size + 4 } else { size };
                assert_eq!(h, Header { fin: true, rsv: 0, op: 1, masked, len: len as u64, size });
                assert_eq!(b.len() + if masked { 4 } else { 0 }, size);
                assert!(read_header(&b[..b.len() - 1]).is_none() || b.len() == 2 && len < 126);
            }
        }
        assert!(read_header(&[0x81]).is_none());
    }
}
