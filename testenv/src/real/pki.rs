//! The certificates of a throwaway control plane: one CA that signs the API server's serving
//! certificate and the client certificates people and components authenticate with (the real
//! server's x509 authenticator maps CN to the user name and O to groups), plus the key pair that
//! signs ServiceAccount tokens. A second CA, the front proxy's, signs the client certificate the
//! API server's aggregator presents to aggregated API servers.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// The cluster's certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate clients and the server trust.
    pub ca_pem: String,
}

impl Authority {
    /// A fresh CA.
    pub fn new() -> Result<Authority, rcgen::Error> {
        Authority::named("keysmith-testenv-ca")
    }

    /// A fresh CA with Common Name `name`.
    pub fn named(name: &str) -> Result<Authority, rcgen::Error> {
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
        Ok(Authority {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The API server's serving certificate: loopback plus the in-cluster names and service IP.
    pub fn serving(&self) -> Result<Pem, rcgen::Error> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        for ip in ["127.0.0.1", "10.0.0.1"] {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().expect("a literal IP")));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for user `name`, in `group` when given (rcgen writes one O at most,
    /// so a certificate carries at most one group).
    pub fn client(&self, name: &str, group: Option<&str>) -> Result<Pem, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Pem, rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// The ServiceAccount token signing key pair (ECDSA P-256, which the API server accepts).
pub fn service_account_keys() -> Result<Pem, rcgen::Error> {
    let key = KeyPair::generate()?;
    Ok(Pem {
        cert: key.public_key_pem(),
        key: key.serialize_pem(),
    })
}
