//! The global connection flags that say who percyctl is and whom it trusts: a token
//! (`--token`, `PERCY_TOKEN`, `--token-file`) for `percyd --auth`, and TLS (`--cacert`,
//! optionally `--cert/--key`) for nodes started with `--tls-cert`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use percy_client::{Security, TlsOptions};

#[derive(Debug, Clone, Args)]
pub struct Flags {
    /// Bearer token for clusters started with `percyd --auth` (`percyctl token create`
    /// prints one; the first admin token is in the bootstrap node's <data-dir>/admin.token).
    /// Give it before the subcommand (`percyctl --token T task …`): after it, `--token` is a
    /// task's claim token.
    #[arg(long, env = "PERCY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the token from this file (e.g. <data-dir>/admin.token); --token wins when both
    /// are given.
    #[arg(
        long,
        id = "client_token_file",
        value_name = "FILE",
        global = true,
        env = "PERCY_TOKEN_FILE"
    )]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) the nodes' TLS certificates must chain to; turns TLS on.
    #[arg(
        long,
        id = "client_cacert",
        value_name = "PEM_FILE",
        global = true,
        env = "PERCY_CACERT"
    )]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM) to present over TLS; needs --key.
    // Distinct ids: global flags share clap's id space with every subcommand's arguments
    // (`config get KEY` has an argument called `key`); the value names hide them from help.
    #[arg(
        long = "cert",
        id = "client_cert",
        value_name = "PEM_FILE",
        global = true,
        env = "PERCY_CERT"
    )]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        id = "client_key",
        value_name = "PEM_FILE",
        global = true,
        env = "PERCY_KEY"
    )]
    key: Option<PathBuf>,
}

impl Flags {
    /// Reads the files the flags name. Half a pair (a certificate without its key) is a usage
    /// error.
    pub fn security(&self) -> anyhow::Result<Security> {
        let token = match (&self.token, &self.token_file) {
            // A token on the command line (or PERCY_TOKEN) overrides a token file from the
            // environment, so one agent's command works in an admin's shell.
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(path)) => Some(read_text(path, "--token-file")?.trim().to_owned()),
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            bail!("the token is empty");
        }
        let client_cert_pem = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read(cert, "--cert")?, read(key, "--key")?)),
            (None, None) => None,
            _ => bail!("--cert and --key go together"),
        };
        let tls = match &self.cacert {
            Some(ca) => Some(TlsOptions {
                ca_pem: read(ca, "--cacert")?,
                client_cert_pem,
            }),
            None if client_cert_pem.is_some() => bail!("--cert/--key need --cacert (TLS)"),
            None => None,
        };
        Ok(Security { token, tls })
    }

    /// Whether calls carry a token (then the server names message senders).
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

fn read_text(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}
