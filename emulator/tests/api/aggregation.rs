//! The aggregation layer: an APIService hands its group/version to a backend behind a Service's
//! EndpointSlice. The emulator authorizes first (a refused caller never reaches the backend),
//! then proxies over TLS checked against `caBundle`, showing the front-proxy certificate whose CA
//! `kube-system/extension-apiserver-authentication` publishes and naming the user in headers in
//! place of the caller's credentials; without a ready endpoint it answers 503.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use keysmith_emulator::{Config, Emulator, Identity, serving_certificate};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};

/// An extension API server on 127.0.0.1 that accepts only clients whose certificate chains to
/// `client_ca`, and records the headers of every request it serves.
async fn backend(client_ca: &str) -> (SocketAddr, String, Arc<Mutex<Vec<HeaderMap>>>) {
    let certificate = serving_certificate(&["widgets.extension.svc"]).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let router = axum::Router::new().route(
        "/apis/extension.example.com/v1/namespaces/{ns}/widgets/{name}",
        get(move |headers: HeaderMap| async move {
            recorded.lock().unwrap().push(headers);
            axum::Json(json!({"kind": "Widget", "apiVersion": "extension.example.com/v1"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // A client without the front-proxy certificate fails the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                    .await;
            });
        }
    });
    (addr, certificate.ca_pem, seen)
}

fn registration(ca_pem: &str, endpoint: SocketAddr) -> Vec<Value> {
    use base64::Engine as _;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extension"}}),
        json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.extension.example.com"},
            "spec": {"group": "extension.example.com", "version": "v1", "caBundle": ca_bundle,
                "service": {"name": "widgets", "namespace": "extension", "port": 443},
                "groupPriorityMinimum": 1000, "versionPriority": 15},
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "widgets", "namespace": "extension"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "widgets-1", "namespace": "extension",
                "labels": {"kubernetes.io/service-name": "widgets"}},
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": endpoint.port()}],
            "endpoints": [{"addresses": [endpoint.ip().to_string()], "conditions": {"ready": true}}],
        }),
    ]
}

/// GET `path` as `identity`: the status and the body. kube-rs retries a 503 with backoff for
/// minutes by default; the first answer is the one under test.
async fn get_as(emu: &Emulator, identity: &Identity, path: &str) -> (u16, Value) {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&emu.kubeconfig(identity)).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let request = axum::http::Request::get(path).body(Vec::new()).unwrap();
    match client.request::<Value>(request).await {
        Ok(body) => (200, body),
        Err(kube::Error::Api(status)) => (status.code, json!({"message": status.message})),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn an_apiservice_hands_its_group_to_a_backend_after_rbac() {
    let emu = Emulator::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let authentication = emu
        .get(
            "v1",
            "ConfigMap",
            "kube-system",
            "extension-apiserver-authentication",
        )
        .expect("the front-proxy configuration is published");
    let data = &authentication["data"];
    assert_eq!(
        data["requestheader-allowed-names"],
        r#"["front-proxy-client"]"#
    );
    let client_ca = data["requestheader-client-ca-file"].as_str().unwrap();
    let (endpoint, ca_pem, seen) = backend(client_ca).await;
    for object in registration(&ca_pem, endpoint) {
        emu.apply_object(&object).unwrap();
    }
    let path = "/apis/extension.example.com/v1/namespaces/extension/widgets/w";
    let alice = Identity::user("alice", &["devs"]);

    // Discovery lists the group.
    let (_, groups) = get_as(&emu, &alice, "/apis").await;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "extension.example.com"),
        "{groups}"
    );

    // Not allowed: refused here, the backend never asked.
    let (code, body) = get_as(&emu, &alice, path).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(
            "User \"alice\" cannot get resource \"widgets\" in API group \"extension.example.com\""
        ),
        "{body}"
    );
    assert!(seen.lock().unwrap().is_empty());

    // Allowed: proxied, the user named by the front proxy, the caller's token left behind.
    emu.apply_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: widget-reader, namespace: extension}
rules: [{apiGroups: [extension.example.com], resources: [widgets], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice, namespace: extension}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: widget-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
"#,
    )
    .unwrap();
    let (code, body) = get_as(&emu, &alice, path).await;
    assert_eq!((code, &body["kind"]), (200, &json!("Widget")), "{body}");
    let headers = seen.lock().unwrap().pop().expect("the backend was asked");
    assert_eq!(headers["x-remote-user"], "alice");
    let groups: Vec<&str> = headers
        .get_all("x-remote-group")
        .iter()
        .map(|g| g.to_str().unwrap())
        .collect();
    assert_eq!(groups, ["devs", "system:authenticated"]);
    assert!(headers.get("authorization").is_none(), "{headers:?}");

    // No ready endpoint: 503, as the aggregator answers.
    emu.apply_object(&json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "widgets-1", "namespace": "extension",
            "labels": {"kubernetes.io/service-name": "widgets"}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": endpoint.port()}],
        "endpoints": [{"addresses": [endpoint.ip().to_string()], "conditions": {"ready": false}}],
    }))
    .unwrap();
    let (code, body) = get_as(&emu, &alice, path).await;
    assert_eq!(code, 503, "{body}");
}
