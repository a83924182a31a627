//! TLS for the HTTP Verdict sends (the SCIM client, `sdk.fetch` and `verdict bench`), for
//! `https://` URLs, and the HTTP/1.1 client connection they share ([`http1`]).
//!
//! Trust: the Mozilla root certificates compiled into the binary (`webpki-roots`, so a
//! distroless image needs no CA bundle), plus every PEM certificate of an optional `ca_file`
//! (a private CA, or a self-signed upstream). The server's certificate must name the host of
//! the URL (a DNS name, or an IP address in the certificate's IP SANs). HTTP/1.1 is offered
//! by ALPN. No client certificates.
//!
//! Configurations are built on first use and kept, keyed by the CA file's path, length and
//! times (and, on Unix, its inode and change time, which no copy tool can set back): a CA file
//! rewritten or replaced on disk is read again, even with its size and mtime kept, and a sync
//! or fetch does not parse the roots each time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A trust configuration that cannot be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The CA file cannot be read, or holds no usable certificate.
    #[error("CA file `{}`: {message}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS client configuration: {0}")]
    Config(String),
}

/// Kept configurations; a handful at most (one per distinct CA file).
const MAX_KEPT: usize = 16;

/// The kept configuration's key: `None` for the built-in roots alone.
type Key = Option<(PathBuf, Stamp)>;

/// What identifies one version of a CA file: length, mtime, and on Unix the device, inode and
/// change time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    changed: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            changed: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
        }
    }
}

static KEPT: parking_lot::Mutex<Vec<(Key, Arc<rustls::ClientConfig>)>> = parking_lot::Mutex::new(Vec::new());

/// The client configuration trusting the built-in roots and, if given, `ca_file`'s
/// certificates.
pub fn config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let key = match ca_file {
        None => None,
        Some(path) => {
            let meta = std::fs::metadata(path).map_err(|e| ca_error(path, e))?;
            Some((path.to_path_buf(), Stamp::of(&meta)))
        }
    };
    if let Some((_, kept)) = KEPT.lock().iter().find(|(k, _)| *k == key) {
        return Ok(Arc::clone(kept));
    }
    let built = Arc::new(build(ca_file)?);
    let mut kept = KEPT.lock();
    if kept.len() >= MAX_KEPT {
        kept.remove(0);
    }
    kept.push((key, Arc::clone(&built)));
    Ok(built)
}

fn build(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in pem_certs(path).map_err(|m| ca_error(path, m))? {
            roots.add(cert).map_err(|e| ca_error(path, e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate in the PEM file at `path`, or why there is none to use. Shared with the
/// listener's certificate and client-CA files.
pub(crate) fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".to_owned());
    }
    Ok(certs)
}

fn ca_error(path: &Path, message: impl ToString) -> Error {
    Error::CaFile { path: path.to_path_buf(), message: message.to_string() }
}

/// Why [`http1`] could not start a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS handshake failed (an untrusted certificate, one for another name, …).
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("cannot start HTTP: {0}")]
    Http(hyper::Error),
}

/// An HTTP/1.1 client connection over `tcp`, through TLS with the server `host` when `tls` is
/// given; its connection task is spawned on the current runtime and ends when the returned
/// sender is dropped or the server closes the connection.
pub async fn http1(
    tcp: TcpStream,
    tls: Option<(Arc<rustls::ClientConfig>, &str)>,
) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
    match tls {
        None => start(tcp).await,
        Some((config, host)) => start(connect(config, host, tcp).await.map_err(ConnectError::Tls)?).await,
    }
}

async fn start<T>(io: T) -> Result<SendRequest<Full<Bytes>>, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(ConnectError::Http)?;
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    Ok(sender)
}

/// The TLS handshake over `tcp` with `host` (a DNS name or an IP address, IPv6 with or
/// without brackets), verifying its certificate against `config`.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("`{host}` is not a TLS server name: {e}")))?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn built_in_roots_and_ca_files() {
        let plain = config(None).unwrap();
        assert!(Arc::ptr_eq(&plain, &config(None).unwrap()), "kept, not rebuilt");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["upstream.test".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let with_ca = config(Some(&ca)).unwrap();
        assert!(!Arc::ptr_eq(&plain, &with_ca));
        assert!(Arc::ptr_eq(&with_ca, &config(Some(&ca)).unwrap()));

        // The same bytes written again with the mtime set back (as `cp -p` would): still read
        // again, by the change time.
        let modified = std::fs::metadata(&ca).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::File::options().write(true).open(&ca).unwrap().set_modified(modified).unwrap();
        assert_eq!(std::fs::metadata(&ca).unwrap().modified().unwrap(), modified);
        let rewritten = config(Some(&ca)).unwrap();
        assert!(!Arc::ptr_eq(&with_ca, &rewritten), "a rewritten CA file is read again");
        assert!(Arc::ptr_eq(&rewritten, &config(Some(&ca)).unwrap()));

        let missing = config(Some(&dir.path().join("nope.pem"))).unwrap_err().to_string();
        assert!(missing.contains("nope.pem"), "{missing}");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let empty = config(Some(&ca)).unwrap_err().to_string();
        assert!(empty.contains("no PEM certificate"), "{empty}");
    }
}
