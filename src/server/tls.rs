//! TLS on the client port (issue 15): loading the certificate, key and client CA into a
//! rustls `ServerConfig`, and one connection's rustls `ServerConnection` driven sans-IO
//! by the reactor.
//!
//! The reactor never blocks on TLS: `Wire` (conn.rs) hands socket bytes to
//! `TlsConn::read` (read_tls → process_new_packets → plaintext) and moves queued
//! plaintext through `TlsConn::send` (writer → write_tls, one vectored write per turn).
//! rustls runs with the `ring` provider, which builds with a C compiler alone (the
//! default aws-lc-rs needs cmake).

use crate::config::{Config, TlsMinVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerConfig, ServerConnection, StoresServerSessions, WebPkiClientVerifier};
use rustls::{HandshakeKind, RootCertStore};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// rustls's outbound buffer limit per connection. Plaintext is handed to rustls only
/// while its encrypted backlog is below this, so a slow reader's output waits in our
/// own `Wire` buffer (counted and capped there) instead of inside rustls.
const TLS_SEND_LIMIT: usize = 32 * 1024;

/// Resumed TLS 1.2 sessions kept by ID (TLS 1.3 uses stateless tickets).
const SESSION_CACHE: usize = 4096;

/// The warning starts this many days before the certificate's `notAfter`.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Handshake duration buckets, microseconds.
pub const HANDSHAKE_BUCKETS_US: [u64; 11] =
    [250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 1_000_000, 10_000_000];

/// The crypto provider of the server, `dbx-bench` and `dbx-cli`. rustls 0.23.48
/// deprecated ring's provider for lacking post-quantum key exchange; it is still the
/// one that builds on CI's machine (aws-lc-rs needs cmake), hence the allow.
///
/// Its defaults are reordered for cost: that rustls release lists P-384 first among the
/// key exchange groups, and ring computes P-384 with generic bignum code — about 1 ms of
/// server CPU per handshake here, against a few tens of µs for X25519 (measured with
/// perf on `dbx-bench --connect-only`). X25519 comes first, then P-256, then P-384; and
/// AES-128-GCM suites before AES-256 (SHA-256 key schedule, fewer AES rounds), as
/// nginx and Go do. Every suite and group stays available.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    // Stable sort: within each rank the provider's order (TLS 1.3 suites first) stays.
    p.cipher_suites.sort_by_key(|s| {
        let name = format!("{:?}", s.suite());
        if name.contains("AES_128") {
            0
        } else if name.contains("CHACHA20") {
            1
        } else {
            2
        }
    });
    Arc::new(p)
}

/// What the files say about the certificate in use (logs, `/health`).
#[derive(Clone, Debug, Default)]
pub struct CertFacts {
    /// Serial number of the leaf, hex.
    pub serial: String,
    /// The leaf's `notAfter`, unix seconds.
    pub not_after: Option<i64>,
}

/// The TLS settings in force and what building them needs again on reload.
pub struct TlsSetup {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    min_version: TlsMinVersion,
    /// Kept across reloads so that tickets and session IDs issued before a reload still
    /// resume after it.
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    /// New connections take this; open ones keep the one they started with. Always
    /// `Some` once built.
    config: Option<Arc<ServerConfig>>,
    pub facts: CertFacts,
}

impl TlsSetup {
    /// `Ok(None)` without TLS settings. The error is one line naming the setting and
    /// the file (start-up prints it and exits with status 2).
    pub fn from_config(cfg: &Config) -> Result<Option<TlsSetup>, String> {
        let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
            (None, None) => {
                if cfg.tls_client_ca.is_some() {
                    return Err("DBX_TLS_CLIENT_CA is set but DBX_TLS_CERT and DBX_TLS_KEY are not".into());
                }
                return Ok(None);
            }
            (Some(_), None) => return Err("DBX_TLS_CERT is set but DBX_TLS_KEY is not".into()),
            (None, Some(_)) => return Err("DBX_TLS_KEY is set but DBX_TLS_CERT is not".into()),
            (Some(c), Some(k)) => (c.clone(), k.clone()),
        };
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS session tickets unavailable: {e}"))?;
        let sessions: Arc<dyn StoresServerSessions> = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        let mut s = TlsSetup {
            cert,
            key,
            client_ca: cfg.tls_client_ca.clone(),
            min_version: cfg.tls_min_version,
            ticketer,
            sessions,
            config: None,
            facts: CertFacts::default(),
        };
        let (config, facts) = s.build()?;
        s.config = Some(config);
        s.facts = facts;
        Ok(Some(s))
    }

    /// Read the files again (SIGHUP). On success new connections get the new
    /// certificate; on error nothing changes. Returns a line for the log.
    pub fn reload(&mut self) -> Result<String, String> {
        let (config, facts) = self.build()?;
        self.config = Some(config);
        self.facts = facts;
        Ok(self.describe())
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Option<&Arc<ServerConfig>> {
        self.config.as_ref()
    }

    /// "certificate FILE serial … not_after …" for logs.
    pub fn describe(&self) -> String {
        format!(
            "certificate {} serial {} not_after {}{}",
            self.cert.display(),
            self.facts.serial,
            self.facts.not_after.map_or_else(|| "unknown".into(), rfc3339_secs),
            self.client_ca.as_ref().map_or_else(String::new, |p| format!(", client CA {}", p.display()))
        )
    }

    /// Days until the certificate expires (negative once it has), if known.
    pub fn days_left(&self, now_unix_s: i64) -> Option<i64> {
        self.facts.not_after.map(|na| (na - now_unix_s).div_euclid(86_400))
    }

    fn build(&self) -> Result<(Arc<ServerConfig>, CertFacts), String> {
        let chain = load_certs("DBX_TLS_CERT", &self.cert)?;
        let key = load_key(&self.key)?;
        let facts = chain.first().map(|c| cert_facts(c.as_ref())).unwrap_or_default();
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.min_version {
            TlsMinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsMinVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| format!("DBX_TLS_MIN_VERSION: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in load_certs("DBX_TLS_CLIENT_CA", ca)? {
                    roots.add(c).map_err(|e| format!("DBX_TLS_CLIENT_CA: {}: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| format!("DBX_TLS_CLIENT_CA: {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "DBX_TLS_KEY: the key in {} does not match the certificate in {}",
                self.key.display(),
                self.cert.display()
            ),
            e => format!("DBX_TLS_KEY: {}: {e}", self.key.display()),
        })?;
        // Browsers and the ws clients speak HTTP/1.1 for the upgrade; a client that
        // offers only h2 is refused in the handshake rather than misunderstood after it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ticketer = self.ticketer.clone();
        config.session_storage = self.sessions.clone();
        // One ticket per full handshake is enough for one reconnection at a time.
        config.send_tls13_tickets = 1;
        Ok((Arc::new(config), facts))
    }
}

fn read_file(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))
}

fn load_certs(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(setting, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{setting}: {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{setting}: {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file("DBX_TLS_KEY", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("DBX_TLS_KEY: {} holds no PEM private key", path.display())
        }
        e => format!("DBX_TLS_KEY: {}: bad PEM: {e}", path.display()),
    })
}

// ---- one connection ----

/// Something `/metrics` counts, taken by the reactor after each read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsEvent {
    Handshake { micros: u64, resumed: bool },
}

pub struct TlsConn {
    conn: ServerConnection,
    started: Instant,
    handshaking: bool,
    /// Why rustls gave up (a fatal alert is queued for the peer).
    pub failure: Option<&'static str>,
    event: Option<TlsEvent>,
    /// Plaintext handed to rustls since its outbound buffer was last empty: what
    /// `Wire::pending` adds for backpressure.
    inflight: usize,
    /// The first bytes looked like plaintext HTTP.
    plaintext: bool,
    /// Some bytes arrived already (only the very first one is looked at).
    got_bytes: bool,
}

impl TlsConn {
    pub fn new(config: &Arc<ServerConfig>) -> Result<TlsConn, rustls::Error> {
        let mut conn = ServerConnection::new(config.clone())?;
        conn.set_buffer_limit(Some(TLS_SEND_LIMIT));
        Ok(TlsConn {
            conn,
            started: Instant::now(),
            handshaking: true,
            failure: None,
            event: None,
            inflight: 0,
            plaintext: false,
            got_bytes: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    pub fn take_event(&mut self) -> Option<TlsEvent> {
        self.event.take()
    }

    /// rustls holds bytes for the socket (handshake messages, alerts, records).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn inflight(&self) -> usize {
        if self.conn.wants_write() {
            self.inflight
        } else {
            0
        }
    }

    /// The client's certificate chain (mutual TLS).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Plaintext for the layer above: `Ok(0)` is the end of the stream (close_notify or
    /// a TCP EOF), `WouldBlock` means the socket has nothing more now.
    pub fn read(&mut self, sock: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A TCP EOF without close_notify: the WebSocket layer decides whether
                // that was clean (after a close frame) or not.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.failure.is_some() {
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
            let mut peek = Peek { inner: sock, first: !self.got_bytes, http: false, got: false };
            let n = self.conn.read_tls(&mut peek);
            self.got_bytes |= peek.got;
            if peek.http {
                // Plain HTTP on the TLS port: no TLS alert (the client could not read it);
                // `plaintext_answer` says what to write instead.
                self.plaintext = true;
                self.failure = Some("plaintext_http");
                return Err(io::Error::new(io::ErrorKind::InvalidData, "plaintext HTTP on a TLS port"));
            }
            match n {
                // The end before the handshake finished (a port probe, a client that
                // gave up): counted as a failure when the connection is freed.
                Ok(0) if self.handshaking => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                let reason = failure_reason(&e);
                log::debug!("TLS error ({reason}): {e}");
                self.failure = Some(reason);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.handshaking && !self.conn.is_handshaking() {
                self.handshaking = false;
                self.event = Some(TlsEvent::Handshake {
                    micros: self.started.elapsed().as_micros() as u64,
                    resumed: self.conn.handshake_kind() == Some(HandshakeKind::Resumed),
                });
            }
        }
    }

    /// Hand `plain` to rustls (as much as its buffer limit takes) and write what it
    /// holds to the socket. Returns the plaintext bytes taken; `Ok(true)` in the second
    /// place once rustls holds nothing more for the socket.
    pub fn send(&mut self, plain: &[u8], sock: &mut dyn Write) -> io::Result<(usize, bool)> {
        let mut taken = 0;
        loop {
            while taken < plain.len() && !self.handshaking {
                let n = self.conn.writer().write(plain.get(taken..).unwrap_or_default())?;
                if n == 0 {
                    break;
                }
                taken += n;
                self.inflight += n;
            }
            if !self.conn.wants_write() {
                self.inflight = 0;
                return Ok((taken, taken == plain.len() || self.handshaking));
            }
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((taken, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// For a client that spoke plain HTTP to the TLS port: a plaintext 400 answer
    /// naming the mistake (written to the socket as is, outside TLS).
    pub fn plaintext_answer(&self) -> Option<Vec<u8>> {
        self.plaintext.then(|| {
            super::handshake::refusal_response(&super::handshake::Refusal::new(
                400,
                "invalid_request",
                "This port speaks TLS: use https:// or wss://",
            ))
        })
    }

    /// Queue a close_notify alert (after a completed handshake only).
    pub fn close_notify(&mut self) {
        if !self.handshaking && self.failure.is_none() {
            self.conn.send_close_notify();
        }
    }
}

/// Notes whether the first bytes of a connection look like an HTTP request (a client
/// that spoke plaintext to the TLS port), for the failure reason.
struct Peek<'a> {
    inner: &'a mut dyn Read,
    /// This read may bring the connection's first byte.
    first: bool,
    http: bool,
    got: bool,
}

impl Read for Peek<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.first && n > 0 {
            self.first = false;
            self.got = true;
            // A TLS record starts with content type 0x14..0x18; HTTP with a method.
            self.http = buf.first().is_some_and(u8::is_ascii_uppercase);
        }
        Ok(n)
    }
}

/// A short label for `dbx_tls_handshake_failures_total{reason}`.
fn failure_reason(e: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => "no_client_certificate",
        E::InvalidCertificate(_) => "bad_client_certificate",
        E::PeerIncompatible(_) => "incompatible",
        E::NoApplicationProtocol => "no_alpn",
        E::AlertReceived(_) => "alert_received",
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "bad_message"
        }
        E::PeerMisbehaved(_) | E::DecryptError => "peer_misbehaved",
        _ => "other",
    }
}

// ---- certificate facts (a few fields of X.509 DER, no parser crate needed) ----

/// One DER TLV: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)?;
    let (len, hdr) = if l0 < 0x80 {
        (l0 as usize, 2)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, b.get(hdr..end)?, b.get(end..)?))
}

/// Serial and notAfter of a DER certificate; defaults where it cannot be parsed.
pub fn cert_facts(der: &[u8]) -> CertFacts {
    fn parse(der: &[u8]) -> Option<(String, Option<i64>)> {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        let (mut tag, mut item, mut next) = tlv(rest)?;
        if tag == 0xa0 {
            // explicit version
            rest = next;
            (tag, item, next) = tlv(rest)?;
        }
        if tag != 0x02 {
            return None;
        }
        let serial: String = item.iter().map(|b| format!("{b:02x}")).collect();
        let (_, _sigalg, next) = tlv(next)?;
        let (_, _issuer, next) = tlv(next)?;
        let (_, validity, _) = tlv(next)?;
        let (_, _not_before, after) = tlv(validity)?;
        let (t, na, _) = tlv(after)?;
        Some((serial, parse_time(t, na)))
    }
    parse(der).map(|(serial, not_after)| CertFacts { serial, not_after }).unwrap_or_default()
}

/// UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ) → unix s.
fn parse_time(tag: u8, b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi, se) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339_secs(s: i64) -> String {
    let ms = s.max(0) as u64 * 1000;
    let t = crate::proto::rfc3339_ms(ms);
    // "…T12:00:00.000Z" → "…T12:00:00Z"
    t.strip_suffix(".000Z").map_or(t.clone(), |p| format!("{p}Z"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, b"20000301000000Z"), Some(11_017 * 86_400));
        assert_eq!(parse_time(0x17, b"garbage"), None);
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn facts_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2031, 7, 4);
        p.serial_number = Some(rcgen::SerialNumber::from(vec![0x0a, 0xbc]));
        let cert = p.self_signed(&key).unwrap();
        let f = cert_facts(cert.der());
        assert_eq!(f.serial, "0abc");
        assert_eq!(f.not_after.map(rfc3339_secs).as_deref(), Some("2031-07-04T00:00:00Z"));
        assert!(cert_facts(b"\x30\x03\x02\x01").serial.is_empty());
        assert!(cert_facts(&[]).not_after.is_none());
    }
}
