//! HTTPS: a rustls server configuration (ring provider, TLS 1.2 and 1.3)
//! from PEM files, for `scrip serve --tls-cert … --tls-key …`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {0}: {1}")]
    Certificate(String, String),
    #[error("TLS private key {0}: {1}")]
    Key(String, String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Reads a certificate chain and its private key (PEM) into a server
/// configuration that speaks HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Certificate(shown(cert), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(shown(cert), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(
            shown(cert),
            "no certificate in the file".into(),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(shown(key), e.to_string()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
