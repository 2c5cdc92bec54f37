//! HTTPS: the server's certificate pair, loaded at start and reloaded on SIGHUP.
//!
//! With `http.tls_cert_file` and `http.tls_key_file` set, the server speaks TLS 1.2 or newer
//! (rustls) with the pair. The pair sits behind a certificate resolver: SIGHUP loads the
//! files again and swaps the resolver's pair, so connections already open keep theirs and
//! new ones get the new pair. A pair that fails to load (unreadable, mismatched, or a key
//! file open to group or others) leaves the old pair in place and is logged, with its audit
//! line. The server (`crate::server`) wraps each accepted connection with [`ServerTls::acceptor`].
//!
//! The upstream client verifies certificates against the built-in authorities, plus those of
//! `http.client_ca_file` when set ([`client_authorities`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::audit;
use crate::config::{Http, PEM_ALLOWED, secret_file_problems};

/// The certificate pair cannot be used; the text says which file and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `<key>: "<path>" is not a file; allowed ...`, or `None` for a file.
fn missing(key: &str, path: &Path) -> Option<String> {
    if path.is_file() {
        return None;
    }
    let shown = serde_json::to_string(&path.display().to_string()).unwrap_or_default();
    Some(format!(
        "{key}: {shown} is not a file; allowed {PEM_ALLOWED}"
    ))
}

/// Reads and checks the pair: both files exist, the key file's owner and mode, then both
/// PEM files. One line per problem.
fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let absent: Vec<String> = [
        missing("http.tls_cert_file", cert),
        missing("http.tls_key_file", key),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !absent.is_empty() {
        return Err(TlsError(absent.join("\n")));
    }
    let problems = secret_file_problems(key, "TLS key file");
    if !problems.is_empty() {
        return Err(TlsError(problems.join("\n")));
    }
    let failed = |why: String| {
        TlsError(format!(
            "cannot load the certificate pair {} and {}: {why}",
            cert.display(),
            key.display()
        ))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if chain.is_empty() {
        return Err(failed(format!("no certificate in {}", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| failed(e.to_string()))?;
    let certified =
        CertifiedKey::from_der(chain, private, &provider()).map_err(|e| failed(e.to_string()))?;
    Ok(Arc::new(certified))
}

/// The resolver every handshake asks for the pair: swapped in place on reload.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The server's TLS: the acceptor for new connections and the files it reloads from.
#[derive(Clone)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// Loads the pair; TLS 1.2 and 1.3, HTTP/1.1.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver(RwLock::new(load_pair(cert, key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// What the server wraps each accepted connection with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Loads the pair again for new connections; on failure keeps the old one. Whether it loaded.
    pub fn reload(&self) -> bool {
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *self
                    .resolver
                    .0
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = pair;
                let cert = self.cert.display().to_string();
                tracing::info!(cert = %cert, "TLS certificate reloaded");
                let key = self.key.display().to_string();
                audit::record("certificate reloaded", &[("cert", &cert), ("key", &key)]);
                true
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!(error = %error, "cannot reload the TLS certificate, keeping the old one");
                let cert = self.cert.display().to_string();
                audit::record(
                    "certificate reload failed",
                    &[("cert", &cert), ("error", &error)],
                );
                false
            }
        }
    }
}

/// The server's TLS, or `None` when `http.tls_cert_file` and `http.tls_key_file` are empty.
pub fn server(http: &Http) -> Result<Option<ServerTls>, TlsError> {
    if http.tls_cert_file.as_os_str().is_empty() || http.tls_key_file.as_os_str().is_empty() {
        return Ok(None);
    }
    ServerTls::load(&http.tls_cert_file, &http.tls_key_file).map(Some)
}

/// The authorities of `http.client_ca_file`, trusted by the upstream client besides the
/// built-in ones (none when the key is empty).
pub fn client_authorities(http: &Http) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let path = &http.client_ca_file;
    if path.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    if let Some(line) = missing("http.client_ca_file", path) {
        return Err(TlsError(line));
    }
    let failed = |why: String| {
        TlsError(format!(
            "cannot load the CA bundle {}: {why}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
    if found.is_empty() {
        return Err(failed("no certificate in it".to_string()));
    }
    Ok(found)
}
