//! HTTPS for the verification API: a certificate and key from PEM files (a mounted Secret, as
//! cert-manager writes it), reloaded when the files change, so a renewed certificate is served
//! without a restart. A renewal that does not load (half written, a key that does not match) is
//! logged and the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the files are checked for a renewal.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("reading the TLS certificate {path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The key file is unreadable, holds no PEM private key, or the key does not fit.
    #[error("reading the TLS key {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Where the certificate chain and its private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (`tls.crt` of a `kubernetes.io/tls` Secret).
    pub cert: PathBuf,
    /// Private key (`tls.key`).
    pub key: PathBuf,
}

impl TlsFiles {
    fn load(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_error = |message: String| TlsError::Certificate {
            path: self.cert.clone(),
            message,
        };
        let key_error = |message: String| TlsError::Key {
            path: self.key.clone(),
            message,
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| cert_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_error("no PEM certificate in it".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| key_error(e.to_string()))?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| key_error(format!("it does not belong to the certificate: {e}")))?;
        Ok(Arc::new(certified))
    }

    /// When either file last changed (None while one is missing).
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }
}

/// The certificate in service, swapped when the files change.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A TLS acceptor serving `files`, and a task that reloads them every [`RELOAD_INTERVAL`] when
/// they changed. Fails at once when the files do not load: a verifier configured for HTTPS never
/// falls back to plain HTTP.
pub fn acceptor(
    files: TlsFiles,
) -> Result<(TlsAcceptor, impl Future<Output = ()> + Send + 'static), TlsError> {
    reloading_acceptor(files, None, RELOAD_INTERVAL)
}

/// [`acceptor`], asking clients for a certificate that `clients` verifies (the usage API's
/// front-proxy certificates; a verifier that allows unauthenticated clients lets others in).
pub fn acceptor_verifying_clients(
    files: TlsFiles,
    clients: Arc<dyn ClientCertVerifier>,
) -> Result<(TlsAcceptor, impl Future<Output = ()> + Send + 'static), TlsError> {
    reloading_acceptor(files, Some(clients), RELOAD_INTERVAL)
}

fn reloading_acceptor(
    files: TlsFiles,
    clients: Option<Arc<dyn ClientCertVerifier>>,
    interval: Duration,
) -> Result<(TlsAcceptor, impl Future<Output = ()> + Send + 'static), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(Reloading {
        current: RwLock::new(files.load(&provider)?),
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate {
            path: files.cert.clone(),
            message: e.to_string(),
        })?;
    let builder = match clients {
        Some(clients) => builder.with_client_cert_verifier(clients),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let reload = async move {
        let mut seen = files.modified();
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let now = files.modified();
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            match files.load(&provider) {
                Ok(key) => {
                    *resolver.current.write().unwrap_or_else(|e| e.into_inner()) = key;
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; serving the previous one")
                }
            }
        }
    };
    Ok((TlsAcceptor::from(Arc::new(config)), reload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn connector(trust: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in trust {
            roots.add(cert.clone()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn server_name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("verifier.keysmith.svc").unwrap()
    }

    /// The certificate a TLS client is shown by `acceptor` on a fresh connection.
    async fn served_certificate(
        acceptor: &TlsAcceptor,
        trust: &[CertificateDer<'static>],
    ) -> Vec<u8> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let acceptor = acceptor.clone();
        tokio::spawn(async move { acceptor.accept(server).await.map(drop) });
        let stream = connector(trust)
            .connect(server_name(), client)
            .await
            .expect("handshake");
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// An HTTPS server within `limits` answering "verified" until the test ends; its address and
    /// certificate files (in `dir`).
    async fn https_server(
        dir: &Path,
        limits: super::super::server::Limits,
    ) -> (std::net::SocketAddr, TlsFiles) {
        use hyper::body::{Bytes, Incoming};
        let files = write_pair(dir, "verifier.keysmith.svc");
        let (acceptor, _reload) = acceptor(files.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = |_: std::net::SocketAddr, _: hyper::Request<Incoming>| async {
            hyper::Response::new(http_body_util::Full::new(Bytes::from("verified")))
        };
        tokio::spawn(super::super::server::serve(
            listener,
            handler,
            limits,
            Some(acceptor),
            Default::default(),
            std::future::pending(),
        ));
        (addr, files)
    }

    /// The answer to `request` over HTTPS.
    async fn https_answer(addr: std::net::SocketAddr, files: &TlsFiles, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector(&[pem_cert(files)])
            .connect(server_name(), tcp)
            .await
            .expect("handshake");
        tls.write_all(request).await.unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn the_api_server_answers_over_https_and_not_over_plain_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (addr, files) = https_server(dir.path(), Default::default()).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: verifier\r\nConnection: close\r\n\r\n";

        let answer = https_answer(addr, &files, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("verified"), "{answer}");

        // Plain HTTP on the HTTPS port gets no HTTP answer.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain.write_all(request).await.unwrap();
        let mut raw = Vec::new();
        let _ = plain.read_to_end(&mut raw).await;
        assert!(!raw.starts_with(b"HTTP/1.1"), "{raw:?}");
    }

    #[tokio::test]
    async fn clients_that_never_say_hello_are_closed_at_the_handshake_timeout() {
        use super::super::server::Limits;
        use tokio::io::AsyncReadExt;
        // Issue 27: the handshake had the header-read timeout (10 s; here a minute), and the
        // usage port's 256 slots were held by connections that never said hello. Nobody else
        // connects meanwhile: only the handshake timeout can close them.
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_connections: 4,
            max_connections_per_peer: 4,
            header_read_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, files) = https_server(dir.path(), limits).await;
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        for stream in &mut silent {
            let mut buf = [0; 16];
            let closed = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                .await
                .expect("the server closes a connection that never says hello");
            assert_eq!(closed.unwrap_or(0), 0);
        }
        let request = b"GET / HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n";
        let answer = https_answer(addr, &files, request).await;
        assert!(answer.ends_with("verified"), "{answer}");
    }

    fn pem_cert(files: &TlsFiles) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&files.cert).unwrap()
    }

    #[tokio::test]
    async fn serves_the_certificate_and_a_renewed_one_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "verifier.keysmith.svc");
        let first_cert = pem_cert(&first);
        let (acceptor, reload) =
            reloading_acceptor(first.clone(), None, Duration::from_millis(20)).unwrap();
        let reloads = tokio::spawn(reload);
        assert_eq!(
            served_certificate(&acceptor, std::slice::from_ref(&first_cert)).await,
            first_cert.to_vec()
        );

        // A half-written renewal is not served: the previous certificate stays.
        std::fs::write(&first.cert, "-----BEGIN CERT").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let renewed = write_pair(dir.path(), "verifier.keysmith.svc");
        let renewed_cert = pem_cert(&renewed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let served =
                served_certificate(&acceptor, &[first_cert.clone(), renewed_cert.clone()]).await;
            if served == renewed_cert.to_vec() {
                break;
            }
            assert_eq!(
                served,
                first_cert.to_vec(),
                "only the old or the renewed certificate"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the renewal was never served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reloads.abort();
    }

    #[test]
    fn loads_a_pair_and_names_the_file_that_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "verifier.keysmith.svc");
        let provider = rustls::crypto::ring::default_provider();
        assert!(files.load(&provider).is_ok());

        std::fs::write(&files.cert, "not PEM").unwrap();
        let err = files.load(&provider).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");

        // A key of another certificate.
        let other = tempfile::tempdir().unwrap();
        let other = write_pair(other.path(), "other");
        let mixed = TlsFiles {
            cert: write_pair(dir.path(), "verifier").cert,
            key: other.key,
        };
        let err = mixed.load(&provider).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
    }
}
