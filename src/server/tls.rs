//! TLS for the decision listener: PEM certificate and key, optional client CA for mTLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

/// TLS set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or parsed.
    #[error("cannot read `{}`: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls rejected the configuration.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// Builds the acceptor, with ALPN for h2 and HTTP/1.1.
pub fn acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let chain = certs(&tls.cert)?;
    let key = key(&tls.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| Error::Config(format!("client CA `{}`: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| Error::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn pem_err(path: &Path, message: impl ToString) -> Error {
    Error::Pem { path: path.to_path_buf(), message: message.to_string() }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    crate::tls_client::pem_certs(path).map_err(|m| pem_err(path, m))
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = std::fs::read(path).map_err(|e| pem_err(path, e))?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| pem_err(path, e))?
        .ok_or_else(|| pem_err(path, "no private key found"))
}
