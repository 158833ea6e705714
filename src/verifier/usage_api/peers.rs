//! The verifier's replicas: found from the EndpointSlices of its own Service (label
//! `kubernetes.io/service-name`), each asked for its own activity (`?local=true`) over the
//! usage API's HTTPS port. A replica authenticates to its peers with its ServiceAccount token and
//! checks their certificate against the usage API's CA under the Service's DNS name, so the
//! peers authenticate and authorize it like any caller.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use kube::config::{AuthInfo, Config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::object::ApiKeyUsage;

/// How long a peer has to answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Name of the Service port the usage API is published on.
pub const PORT_NAME: &str = "usage";

/// How to reach the other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// Namespace of the Service.
    pub namespace: String,
    /// The Service whose EndpointSlices list the replicas.
    pub service: String,
    /// CA bundle (PEM) the replicas' serving certificates chain to.
    pub ca_file: PathBuf,
    /// Bearer token file sent to the peers (the ServiceAccount token, re-read as it rotates).
    pub token_file: PathBuf,
}

/// One replica to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its pod name, else its host name, else its address.
    pub name: String,
    /// `https://ip:port`.
    pub url: String,
}

/// The ready endpoints of `slices`, on the port named [`PORT_NAME`] (else the slice's only
/// port).
pub fn peers_of(slices: &[EndpointSlice]) -> Vec<Peer> {
    let mut peers = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(PORT_NAME))
            .or_else(|| ports.first().filter(|_| ports.len() == 1))
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let Some(address) = endpoint.addresses.first().filter(|_| ready) else {
                continue;
            };
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            let name = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .or_else(|| endpoint.hostname.clone())
                .unwrap_or_else(|| format!("{host}:{port}"));
            peers.push(Peer {
                name,
                url: format!("https://{host}:{port}"),
            });
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers.dedup();
    peers
}

impl PeerSettings {
    /// The replicas behind the Service now.
    pub async fn peers(&self, client: kube::Client) -> Result<Vec<Peer>, kube::Error> {
        let api: Api<EndpointSlice> = Api::namespaced(client, &self.namespace);
        let selector = format!("kubernetes.io/service-name={}", self.service);
        let slices = api.list(&ListParams::default().labels(&selector)).await?;
        Ok(peers_of(&slices.items))
    }

    /// Ask `peer` for its own activity at `path_and_query` (which carries `local=true`).
    pub async fn ask(&self, peer: &Peer, path_and_query: &str) -> Result<ApiKeyUsage, String> {
        let ca = CertificateDer::pem_file_iter(&self.ca_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("reading the peer CA {}: {e}", self.ca_file.display()))?;
        let mut config = Config::new(peer.url.parse().map_err(|e| format!("{e}"))?);
        config.root_cert = Some(ca.into_iter().map(|c| c.to_vec()).collect());
        config.tls_server_name = Some(format!("{}.{}.svc", self.service, self.namespace));
        config.connect_timeout = Some(PEER_TIMEOUT);
        config.read_timeout = Some(PEER_TIMEOUT);
        config.auth_info = AuthInfo {
            token_file: Some(self.token_file.display().to_string()),
            ..AuthInfo::default()
        };
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let request = hyper::Request::get(path_and_query)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(PEER_TIMEOUT, client.request::<ApiKeyUsage>(request))
            .await
            .map_err(|_| format!("no answer within {PEER_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_endpoints_on_the_usage_port() {
        let slices: Vec<EndpointSlice> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "a"}, "addressType": "IPv4",
             "ports": [{"name": "http", "port": 8080}, {"name": "usage", "port": 8443}],
             "endpoints": [
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "verifier-1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "hostname": "replica-3"}]},
            {"metadata": {"name": "b"}, "addressType": "IPv6",
             "ports": [{"port": 9443}], "endpoints": [{"addresses": ["fd00::1"]}]},
            {"metadata": {"name": "c"}, "addressType": "IPv4",
             "ports": [{"name": "http", "port": 8080}, {"name": "other", "port": 1}],
             "endpoints": [{"addresses": ["10.0.0.9"]}]},
        ]))
        .unwrap();
        let peers = peers_of(&slices);
        let urls: Vec<(&str, &str)> = peers
            .iter()
            .map(|p| (p.name.as_str(), p.url.as_str()))
            .collect();
        assert_eq!(
            urls,
            [
                ("[fd00::1]:9443", "https://[fd00::1]:9443"),
                ("replica-3", "https://10.0.0.3:8443"),
                ("verifier-1", "https://10.0.0.1:8443"),
            ]
        );
    }
}
