//! How a client proves who it is and checks whom it talks to: a bearer token sent with every
//! call (`authorization: Bearer <token>`, for `percyd --auth`), and TLS — the CA that signed
//! the nodes' certificates, and optionally a client certificate.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use crate::error::ClientError;

/// Credentials and TLS settings for [`crate::Client::connect_secure`]. The default is what
/// `percyd` with no flags expects: plaintext, no token.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Sent with every call.
    pub token: Option<String>,
    /// When set, endpoints are dialled with TLS (`https://`).
    pub tls: Option<TlsOptions>,
}

/// PEM contents (not paths: the caller reads files and reports their errors).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The CA the nodes' certificates must chain to (a dev CA: `percyctl certs init`).
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, for nodes that ask for one.
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client_cert_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }
}

/// Adds the bearer token, if any, to every request.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Credential {
    pub(crate) fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let authorization = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(
                format!("{}{token}", percy_proto::auth::BEARER_PREFIX)
                    .parse()
                    .map_err(|_| ClientError::InvalidToken)?,
            ),
        };
        Ok(Self { authorization })
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert(percy_proto::auth::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}
