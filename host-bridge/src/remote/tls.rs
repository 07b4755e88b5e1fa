//! TLS toward sandbox hosts (`https://`, `wss://`): the public roots
//! (webpki-roots, as reqwest's rustls-tls trusts them) plus, when given, a
//! CA file's certificates (a fleet's own CA, or a host's self-signed
//! certificate); rustls on the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls;

use super::hosts::{RemoteError, CONNECT_TIMEOUT};

/// The HTTP client for deploys and the TLS configuration for sessions.
pub(crate) fn clients(
    ca: Option<&Path>,
) -> Result<(reqwest::Client, Arc<rustls::ClientConfig>), RemoteError> {
    let bad = |why: String| RemoteError::Tls(why);
    let extra: Vec<CertificateDer<'static>> = match ca {
        None => Vec::new(),
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| bad(format!("CA file {}: {e}", path.display())))?,
    };
    if let (Some(path), true) = (ca, extra.is_empty()) {
        return Err(bad(format!(
            "CA file {}: no CERTIFICATE in it",
            path.display()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut http = reqwest::Client::builder().timeout(CONNECT_TIMEOUT);
    for cert in &extra {
        roots
            .add(cert.clone())
            .map_err(|e| bad(format!("a CA certificate: {e}")))?;
        let c = reqwest::Certificate::from_der(cert)
            .map_err(|e| bad(format!("a CA certificate: {e}")))?;
        http = http.add_root_certificate(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = http
        .build()
        .map_err(|e| bad(format!("cannot make an HTTP client: {e}")))?;
    Ok((http, Arc::new(config)))
}
