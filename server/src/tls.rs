//! TLS for a node (`--tls-cert --tls-key --tls-ca`): the server side of its one port, the
//! client side of its calls to peers, and the internal service's rule that only a peer with a
//! certificate of the cluster CA may call it (mutual TLS).
//!
//! The port serves clients and peers alike, so the server asks for a client certificate but
//! does not demand one at the handshake (`client_auth_optional`): rustls verifies any
//! certificate offered against the cluster CA, the public services need none (they take
//! tokens), and [`PeerCertGuard`] refuses internal calls that came without one.

use std::path::{Path, PathBuf};

use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

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

/// On a node with TLS, the internal service answers only callers that presented a
/// certificate of the cluster CA (rustls has verified the chain by the time a call arrives).
#[derive(Debug, Clone, Copy)]
pub struct PeerCertGuard {
    pub required: bool,
}

impl Interceptor for PeerCertGuard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(request);
        }
        match request.peer_certs() {
            Some(certs) if !certs.is_empty() => Ok(request),
            _ => Err(Status::unauthenticated(
                "the internal service answers only peers presenting a certificate of the \
                 cluster CA",
            )),
        }
    }
}
