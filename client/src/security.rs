//! How a client proves who it is and checks whom it talks to: a bearer token sent with every
//! call (`authorization: Bearer <token>`, for `percyd --auth`), and TLS — the CA that signed
//! the nodes' certificates, and optionally a client certificate.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use crate::error::ClientError;

/// Credentials and TLS settings for [`crate::Client::connect_secure`]. The default is what
/// `percyd` with no flags expects: plaintext, no token. Its `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct Security {
    /// Sent with every call.
    pub token: Option<String>,
    /// When set, endpoints are dialled with TLS (`https://`).
    pub tls: Option<TlsOptions>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// PEM contents (not paths: the caller reads files and reports their errors). Its `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct TlsOptions {
    /// The CA the nodes' certificates must chain to (a dev CA: `percyctl certs init`).
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, for nodes that ask for one.
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish_non_exhaustive()
    }
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
#[derive(Clone, Default)]
pub struct Credential {
    authorization: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.authorization.is_some() {
            "Credential(<redacted>)"
        } else {
            "Credential(none)"
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_token() {
        let security = Security {
            token: Some("percy_secret".into()),
            tls: None,
        };
        assert!(!format!("{security:?}").contains("percy_secret"));
        let credential = Credential::new(Some("percy_secret")).unwrap();
        assert!(!format!("{credential:?}").contains("percy_secret"));
        assert!(matches!(
            Credential::new(Some("bad\ntoken")),
            Err(ClientError::InvalidToken)
        ));
    }
}
