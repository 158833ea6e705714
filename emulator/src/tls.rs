//! Throwaway certificate authorities, generated at start-up: one signs the serving certificate
//! for `localhost`/`127.0.0.1`, so kubeconfigs can point at `https://` like real ones (rustls
//! refuses a self-signed leaf as its own trust anchor, hence a separate CA); one signs the
//! front-proxy client certificate the aggregator shows extension API servers.
//! [`serving_certificate`] makes a CA and a serving certificate for an extension API server's
//! Service, as a chart would.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Failure to build the TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The CA (for kubeconfigs) and the acceptor (for the server).
#[derive(Clone)]
pub struct TlsMaterial {
    /// PEM of the CA certificate clients must trust.
    pub ca_pem: String,
    /// Acceptor presenting the serving certificate.
    pub acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// A certificate, its key and the CA that signed it, in PEM.
#[derive(Clone)]
pub struct Certificate {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The CA certificate it chains to.
    pub ca_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// A fresh CA named `name`: its certificate and what signs with it.
fn authority(name: &str) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert, Issuer::new(params, key)))
}

/// A leaf certificate with Common Name `common_name` and `names` as subject alternative names,
/// signed by a fresh CA named `ca_name`.
fn issue(
    ca_name: &str,
    common_name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Certificate, TlsError> {
    let (ca, issuer) = authority(ca_name)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let leaf = params.signed_by(&key, &issuer)?;
    Ok(Certificate {
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.pem(),
    })
}

/// Generate a CA and a serving certificate for `localhost`/`127.0.0.1` signed by it.
pub fn generate() -> Result<TlsMaterial, TlsError> {
    let issued = issue(
        "keysmith-emulator-ca",
        "keysmith-emulator",
        vec!["localhost".to_string(), "127.0.0.1".to_string()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let chain = [&issued.cert_pem, &issued.ca_pem]
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).expect("rcgen writes valid PEM"));
    let key = PrivatePkcs8KeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .expect("rcgen writes valid PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain.to_vec(), PrivateKeyDer::Pkcs8(key))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: issued.ca_pem,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// The Common Name of the front-proxy client certificate, as kubeadm names it.
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The aggregator's client certificate, with Common Name [`FRONT_PROXY_CLIENT`], signed by its
/// own CA (the `requestheader-client-ca-file` extension API servers trust).
pub fn front_proxy() -> Result<Certificate, TlsError> {
    issue(
        "keysmith-emulator-front-proxy-ca",
        FRONT_PROXY_CLIENT,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// A serving certificate for `names` signed by a fresh CA, as `helm template` generates one for
/// an APIService's Service (`<service>.<namespace>.svc`): the CA goes into its `caBundle`.
pub fn serving_certificate(names: &[&str]) -> Result<Certificate, TlsError> {
    let common_name = names.first().copied().unwrap_or_default();
    issue(
        &format!("{common_name}-ca"),
        common_name,
        names.iter().map(|n| n.to_string()).collect(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}
