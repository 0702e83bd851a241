//! TLS for a node (`--tls-cert --tls-key --tls-ca`): the server side of its one port, the
//! client side of its calls to peers, and the internal service's rule that only a peer with a
//! certificate of the cluster CA may call it (mutual TLS).
//!
//! The port serves clients and peers alike, so the server asks for a client certificate but
//! does not demand one at the handshake (`client_auth_optional`): rustls verifies any
//! certificate offered against the cluster CA, the public services need none (they take
//! tokens), and [`PeerCertGuard`] refuses internal calls that came without one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

use tonic::codegen::http;
use tonic::service::Interceptor;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::types::NodeId;

/// The three files of `--tls-cert --tls-key --tls-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (PEM), for clients and, as a client certificate, for peers.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster CA (PEM): peers' certificates must chain to it.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {path}: not a PEM {what}")]
    NotPem {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
}

/// The files, read and checked once at start.
#[derive(Debug, Clone)]
pub struct NodeTls {
    identity: Identity,
    ca: Certificate,
}

impl NodeTls {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let cert = read_pem(&files.cert, "--tls-cert", "CERTIFICATE")?;
        let key = read_pem(&files.key, "--tls-key", "PRIVATE KEY")?;
        let ca = read_pem(&files.ca, "--tls-ca", "CERTIFICATE")?;
        Ok(Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        })
    }

    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
    }

    /// How this node dials peers: their certificate must chain to the cluster CA, and it
    /// presents its own as a client certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

fn read_pem(path: &Path, flag: &'static str, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })?;
    // A clear error at start instead of a handshake failure later ("PRIVATE KEY" also matches
    // "RSA PRIVATE KEY" and "EC PRIVATE KEY").
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") || !text.contains(what) {
        return Err(TlsError::NotPem {
            flag,
            path: path.to_owned(),
            what,
        });
    }
    Ok(bytes)
}

/// How a node dials other nodes (peers, the leader, a node being added): plaintext, or TLS
/// with its own certificate.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<ClientTlsConfig>,
}

impl Dialer {
    pub fn new(tls: Option<&NodeTls>) -> Self {
        Self {
            tls: tls.map(NodeTls::client_config),
        }
    }

    /// An endpoint for `addr` (`host:port`).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {addr}: {e}")),
            None => Ok(endpoint),
        }
    }
}

/// The DNS name a node's certificate carries (`percyctl certs init` puts it in the SANs):
/// what the internal service takes as the caller's node id.
pub fn node_name(id: NodeId) -> String {
    format!("{NODE_NAME_PREFIX}{id}")
}
const NODE_NAME_PREFIX: &str = "node-";

/// Raft metrics, where the guard reads the current membership.
pub type RaftMetricsWatch =
    tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>;

/// On a node with TLS, the internal service answers only callers that presented a
/// certificate of the cluster CA (rustls has verified the chain by the time a call arrives)
/// naming a current member (`node-<id>` in its SANs). A node that has no membership yet (it
/// was just started or added, and has not heard from the leader) takes any node certificate
/// of the CA: it cannot know the members before one of them tells it.
#[derive(Clone)]
pub struct PeerCertGuard {
    pub required: bool,
    pub metrics: RaftMetricsWatch,
}

impl Interceptor for PeerCertGuard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(request);
        }
        let Some(certs) = request.peer_certs().filter(|certs| !certs.is_empty()) else {
            return Err(Status::unauthenticated(
                "the internal service answers only peers presenting a certificate of the \
                 cluster CA",
            ));
        };
        let names = node_ids_named(&certs[0]);
        let members: BTreeSet<NodeId> = {
            let metrics = self.metrics.borrow();
            let membership = metrics.membership_config.membership();
            membership.nodes().map(|(id, _)| *id).collect()
        };
        let allowed = if members.is_empty() {
            !names.is_empty()
        } else {
            names.iter().any(|id| members.contains(id))
        };
        if allowed {
            return Ok(request);
        }
        let named = if names.is_empty() {
            "no node".to_owned()
        } else {
            let names: Vec<String> = names.iter().map(|id| node_name(*id)).collect();
            names.join(", ")
        };
        Err(Status::permission_denied(format!(
            "the internal service answers only members; this certificate names {named}"
        )))
    }
}

/// The node ids a certificate's DNS names give (`node-<id>`).
fn node_ids_named(cert: &CertificateDer<'_>) -> Vec<NodeId> {
    dns_names(cert)
        .iter()
        .filter_map(|name| name.strip_prefix(NODE_NAME_PREFIX)?.parse().ok())
        .collect()
}

/// The DNS names in a certificate's SANs (empty if it does not parse).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => parsed.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// The name an admin client certificate carries (`percyctl certs init` makes `admin.crt`).
pub const ADMIN_CERT_NAME: &str = "admin";

/// Whether the client certificate of this connection (verified against the cluster CA by
/// rustls) names the admin: such a caller needs no token.
pub fn presents_admin_cert<B>(request: &http::Request<B>) -> bool {
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| certs.first().map(dns_names))
        .is_some_and(|names| names.iter().any(|name| name == ADMIN_CERT_NAME))
}
