//! The rustls client configuration shared by DBX's own clients (`dbx-bench` and
//! `dbx-cli`): trust the system's CAs, a CA file, or with `--insecure` any certificate.
//! Same rustls line (0.23) and crypto provider (ring, X25519 first) as the server.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// How the client checks the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The system's CA store (rustls-native-certs reads what curl and openssl read).
    System,
    /// The CAs in this PEM file (a self-made CA, e.g. from scripts/dev-cert.sh).
    CaFile(PathBuf),
    /// No check at all (`--insecure`): for trying things out only.
    Insecure,
}

/// A client configuration offering ALPN `http/1.1` (what the server expects for the
/// WebSocket upgrade). The error is one line naming the file.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = crate::server::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match trust {
        Trust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("--ca {}: cannot read it: {e}", path.display()))?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("--ca {}: bad PEM: {e}", path.display()))?;
                roots.add(c).map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {}: no certificate in the file", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no CA certificates in the system store: give --ca FILE (or --insecure)".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts every certificate but still checks the handshake signatures (so the
/// connection is encrypted to whoever holds the key, just not authenticated).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
