//! Client side of RFC 6455, just what the generator needs.
//!
//! tungstenite cost more than the requests it carried: a zero-filled read buffer,
//! a `Message` allocation per reply, and a read that ends in EAGAIN after every
//! reply. Here a connection reads into a reusable buffer, parses frames in place,
//! and appends masked request frames to one write buffer that goes out in one
//! write per loop turn.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::request::Rng;
use dbx::server::frame::{read_header, write_header};

/// Largest frame / message accepted from the server (tungstenite's defaults).
const MAX_FRAME: usize = 16 << 20;
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

pub(crate) const OP_CONT: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

pub(crate) struct Ws {
    pub(crate) sock: TcpStream,
    /// wss://: the rustls client connection, driven over `sock` without blocking.
    pub(crate) tls: Option<Box<rustls::ClientConnection>>,
    /// Bytes read from the socket: frames not yet consumed are `rbuf[rpos..rend]`.
    /// `rbuf.len()` is its capacity (never shrunk, so never zero-filled again).
    pub(crate) rbuf: Vec<u8>,
    pub(crate) rpos: usize,
    rend: usize,
    /// Bytes to write: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// A fragmented message being assembled (opcode of its first frame, or 0).
    pub(crate) frag: Vec<u8>,
    pub(crate) frag_op: u8,
    /// Source of masking keys.
    mask_rng: Rng,
    /// Registered for WRITABLE too (only while output waits for socket space: a
    /// write interest would otherwise wake the loop for every incoming ACK).
    pub(crate) want_write: bool,
}

/// `recv` / `send` as plain system calls: the libc wrappers are cancellation
/// points and toggle the thread's cancel state around every call (measurable at
/// one call per request).
#[cfg(target_os = "linux")]
fn sock_read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; no address is asked for.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            s.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(target_os = "linux")]
fn sock_write(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes; no address is given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            s.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn sock_read(mut s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    s.read(buf)
}

#[cfg(not(target_os = "linux"))]
fn sock_write(mut s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    s.write(buf)
}

/// The socket as `Read`/`Write` for rustls (the same plain system calls).
struct SockIo<'a>(&'a TcpStream);

impl Read for SockIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sock_read(self.0, buf)
    }
}

impl Write for SockIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sock_write(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `Ws::fill` over TLS: plaintext rustls already holds, else one socket read through
/// rustls. `Some((n, short))`: `n` plaintext bytes landed in `out`; `short` when the
/// socket read was short and rustls holds no more plaintext (nothing is left for
/// which no new edge would come).
fn tls_fill(tls: &mut rustls::ClientConnection, sock: &TcpStream, out: &mut [u8]) -> io::Result<Option<(usize, bool)>> {
    loop {
        match tls.reader().read(out) {
            Ok(0) if !out.is_empty() => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => return Ok(Some((n, false))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let mut probe = Probe { inner: SockIo(sock), asked: 0, got: 0 };
        match tls.read_tls(&mut probe) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        let avail = state.plaintext_bytes_to_read();
        if avail == 0 {
            if probe.got < probe.asked {
                return Ok(Some((0, true)));
            }
            continue;
        }
        let n = match tls.reader().read(out) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        return Ok(Some((n, probe.got < probe.asked && n == avail)));
    }
}

/// Remembers whether the one socket read rustls made was short.
struct Probe<'a> {
    inner: SockIo<'a>,
    asked: usize,
    got: usize,
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked = buf.len();
        let n = self.inner.read(buf)?;
        self.got = n;
        Ok(n)
    }
}

/// One complete frame at the front of the read buffer.
pub(crate) struct FrameRef {
    pub(crate) fin: bool,
    pub(crate) op: u8,
    /// Payload position in `rbuf`.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(crate) enum Parse {
    Frame(FrameRef),
    Incomplete,
    /// Protocol error: the connection is unusable.
    Error,
}

impl Ws {
    pub(crate) fn new(
        sock: TcpStream,
        tls: Option<Box<rustls::ClientConnection>>,
        leftover: &[u8],
        read_buf: usize,
        mask_seed: u64,
    ) -> Ws {
        let mut rbuf = vec![0u8; read_buf.max(leftover.len()).max(256)];
        rbuf[..leftover.len()].copy_from_slice(leftover);
        Ws {
            sock,
            tls,
            rbuf,
            rpos: 0,
            rend: leftover.len(),
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            frag: Vec::new(),
            frag_op: 0,
            mask_rng: Rng::new(mask_seed),
            want_write: false,
        }
    }

    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        self.wpos < self.wbuf.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Append one masked frame carrying `payload` (client frames must be masked).
    pub(crate) fn push_frame(&mut self, op: u8, payload: &[u8]) {
        let key = (self.mask_rng.next() >> 32) as u32;
        push_masked_frame(&mut self.wbuf, op, payload, key);
    }

    /// Write as much pending output as the socket takes. `Err` means the
    /// connection is broken; `Ok` with output left means wait for WRITABLE.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_deref_mut() {
            // Everything queued becomes TLS records, written in one vectored call.
            if self.wpos < self.wbuf.len() {
                tls.writer().write_all(&self.wbuf[self.wpos..])?;
                self.wbuf.clear();
                self.wpos = 0;
            }
            while tls.wants_write() {
                match tls.write_tls(&mut SockIo(&self.sock)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
        while self.wpos < self.wbuf.len() {
            match sock_write(&self.sock, &self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > 64 * 1024 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Read once from the socket. `Ok(Some(short))`: data arrived, `short` when the
    /// read did not fill the free space (the socket is drained: with edge-triggered
    /// readiness, later data raises a new event). `Ok(None)`: nothing to read.
    /// `Err`: closed or broken.
    pub(crate) fn fill(&mut self) -> io::Result<Option<bool>> {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            if self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                self.rend -= self.rpos;
                self.rpos = 0;
            } else {
                // One frame larger than the buffer (bounded by MAX_FRAME in parse).
                let n = self.rbuf.len() * 2;
                self.rbuf.resize(n, 0);
            }
        }
        let space = self.rbuf.len() - self.rend;
        if let Some(tls) = self.tls.as_deref_mut() {
            return tls_fill(tls, &self.sock, &mut self.rbuf[self.rend..]).map(|r| {
                if let Some((n, _)) = r {
                    self.rend += n;
                }
                r.map(|(_, short)| short)
            });
        }
        loop {
            match sock_read(&self.sock, &mut self.rbuf[self.rend..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.rend += n;
                    return Ok(Some(n < space));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The frame at the front of the read buffer, if complete (not consumed).
    pub(crate) fn parse(&self) -> Parse {
        parse_frame(&self.rbuf[self.rpos..self.rend], self.rpos)
    }
}

/// The frame at the start of `b` (which starts at `off` in the read buffer).
pub(crate) fn parse_frame(b: &[u8], off: usize) -> Parse {
    // The same header reader as the server's (`dbx::server::frame`).
    let Some(h) = read_header(b) else {
        return Parse::Incomplete;
    };
    let (fin, op) = (h.fin, h.op);
    // No extension was negotiated; the server must not mask.
    if h.rsv != 0 || h.masked {
        return Parse::Error;
    }
    let (len, hdr) = (usize::try_from(h.len).unwrap_or(usize::MAX), h.size);
    match op {
        OP_CONT | OP_TEXT | OP_BINARY => {
            if len > MAX_FRAME {
                return Parse::Error;
            }
        }
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len > 125 {
                return Parse::Error;
            }
        }
        _ => return Parse::Error,
    }
    if b.len() - hdr < len {
        return Parse::Incomplete;
    }
    let start = off + hdr;
    Parse::Frame(FrameRef { fin, op, start, end: start + len })
}

/// Append one frame carrying `payload`, masked with `key`.
pub(crate) fn push_masked_frame(w: &mut Vec<u8>, op: u8, payload: &[u8], key: u32) {
    w.reserve(payload.len() + 14);
    write_header(w, op, payload.len(), true);
    let m = key.to_ne_bytes();
    w.extend_from_slice(&m);
    let m8 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = payload.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        w.extend_from_slice(&(u64::from_ne_bytes(b) ^ m8).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key phase restarts at 0.
    for (i, b) in chunks.remainder().iter().enumerate() {
        w.push(b ^ m[i & 3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        let (len, hdr) = match frame[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (usize::from(n), 2),
        };
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let m = &frame[hdr..hdr + 4];
        let p = &frame[hdr + 4..];
        assert_eq!(p.len(), len);
        (frame[0], p.iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect())
    }

    #[test]
    fn masked_frames_round_trip() {
        for len in [0usize, 1, 7, 8, 9, 125, 126, 127, 1000, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut w = Vec::new();
            push_masked_frame(&mut w, OP_TEXT, &payload, 0xdead_beef);
            let (b0, p) = unmask(&w);
            assert_eq!(b0, 0x80 | OP_TEXT);
            assert_eq!(p, payload, "len {len}");
        }
    }

    fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | op];
        let n = payload.len();
        if n < 126 {
            f.push(n as u8);
        } else if n <= 0xffff {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_parse() {
        for n in [0usize, 5, 125, 126, 300, 65_535, 65_536] {
            let p = vec![b'a'; n];
            let f = server_frame(true, OP_TEXT, &p);
            match parse_frame(&f, 3) {
                Parse::Frame(fr) => {
                    assert!(fr.fin);
                    assert_eq!(fr.op, OP_TEXT);
                    assert_eq!(fr.end - fr.start, n);
                    assert_eq!(fr.end - 3, f.len());
                }
                _ => panic!("frame of {n} bytes not parsed"),
            }
            for cut in [0, 1, f.len() / 2, f.len().saturating_sub(1)] {
                if cut < f.len() {
                    assert!(matches!(parse_frame(&f[..cut], 0), Parse::Incomplete), "n {n} cut {cut}");
                }
            }
        }
        // Masked frame from the server, reserved bits, unknown opcode, long or
        // fragmented control frames: protocol errors.
        assert!(matches!(parse_frame(&[0x81, 0x80, 0, 0, 0, 0], 0), Parse::Error));
        assert!(matches!(parse_frame(&[0xc1, 0x00], 0), Parse::Error));
        assert!(matches!(parse_frame(&[0x83, 0x00], 0), Parse::Error));
        assert!(matches!(parse_frame(&server_frame(true, OP_PING, &[0; 126]), 0), Parse::Error));
        assert!(matches!(parse_frame(&server_frame(false, OP_PING, b"x"), 0), Parse::Error));
    }
}
