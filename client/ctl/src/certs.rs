//! `percyctl certs init DIR --nodes 1=HOST,…`: a development CA and certificates for a TLS
//! cluster, made with rcgen. DIR gets `ca.crt` + `ca.key`, `node-N.crt` + `node-N.key` per
//! node (subject `node-N`; SANs: its host and `node-N`, the name peers are known by), and
//! `admin.crt` + `admin.key` (a client certificate naming `admin`: with it, percyctl needs no
//! token). Keys are written with mode 0600; existing files are never
//! overwritten.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Mode of private key files: the owner only.
const KEY_MODE: u32 = 0o600;
/// Mode of certificates: public.
const CERT_MODE: u32 = 0o644;
/// Common name of the development CA.
const CA_NAME: &str = "Percy development CA";
/// Subject of the admin client certificate.
pub const ADMIN_SUBJECT: &str = "admin";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a development CA and node/admin certificates into DIR and print the flags to use.
    Init(InitArgs),
}

#[derive(Debug, ClapArgs)]
pub struct InitArgs {
    /// Directory to write into (created if missing).
    dir: PathBuf,
    /// The nodes, as ID=HOST,… (HOST: the name or IP address clients and peers dial).
    #[arg(long, value_parser = parse_nodes)]
    nodes: BTreeMap<u64, String>,
}

fn parse_nodes(raw: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut nodes = BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, host) = entry
            .split_once('=')
            .ok_or_else(|| format!("bad node {entry:?}: expected ID=HOST"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("bad node id in {entry:?}"))?;
        // A port is welcome (it is what --peers says) but not part of a certificate.
        let host = host.trim();
        let host = match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
            _ => host,
        };
        if id == 0 || host.is_empty() {
            return Err(format!("bad node {entry:?}: expected ID=HOST"));
        }
        if nodes.insert(id, host.to_owned()).is_some() {
            return Err(format!("node {id} appears twice"));
        }
    }
    if nodes.is_empty() {
        return Err("no nodes given".to_owned());
    }
    Ok(nodes)
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Init(args) => {
            let written = init(&args.dir, &args.nodes)?;
            print_flags(&args.dir, &args.nodes, &written);
            Ok(())
        }
    }
}

/// Writes everything; returns the files written.
pub fn init(dir: &Path, nodes: &BTreeMap<u64, String>) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut names = vec!["ca.crt".to_owned(), "ca.key".to_owned()];
    for id in nodes.keys() {
        names.push(format!("node-{id}.crt"));
        names.push(format!("node-{id}.key"));
    }
    names.push("admin.crt".to_owned());
    names.push("admin.key".to_owned());
    for name in &names {
        if dir.join(name).exists() {
            bail!(
                "{} exists already: certs init never overwrites (use an empty directory)",
                dir.join(name).display()
            );
        }
    }

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, CA_NAME);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut written = Vec::new();
    let mut write = |name: &str, contents: &str, mode: u32| -> anyhow::Result<()> {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        file.write_all(contents.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    write("ca.crt", &ca_cert.pem(), CERT_MODE)?;
    write("ca.key", &ca_key_pem, KEY_MODE)?;
    for (id, host) in nodes {
        let subject = format!("node-{id}");
        let sans = vec![host.clone(), subject.clone()];
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, &subject);
        // Nodes are servers to clients and peers, and clients of their peers (mutual TLS).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write(&format!("{subject}.crt"), &cert.pem(), CERT_MODE)?;
        write(&format!("{subject}.key"), &key.serialize_pem(), KEY_MODE)?;
    }
    // The name is in the SANs too: that is where percyd looks for it.
    let mut params = CertificateParams::new(vec![ADMIN_SUBJECT.to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, ADMIN_SUBJECT);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write("admin.crt", &cert.pem(), CERT_MODE)?;
    write("admin.key", &key.serialize_pem(), KEY_MODE)?;
    Ok(written)
}

fn print_flags(dir: &Path, nodes: &BTreeMap<u64, String>, written: &[PathBuf]) {
    let d = dir.display();
    println!(
        "wrote {} files into {d} (keys are mode 0600)",
        written.len()
    );
    println!();
    println!("percyd, on each node N:");
    for id in nodes.keys() {
        println!(
            "  node {id}: percyd --node-id {id} --tls-cert {d}/node-{id}.crt --tls-key {d}/node-{id}.key --tls-ca {d}/ca.crt --auth …"
        );
    }
    println!();
    println!("percyctl:");
    println!("  export PERCY_CACERT={d}/ca.crt");
    println!("  # optionally a client certificate: --cert {d}/admin.crt --key {d}/admin.key");
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_every_file_with_private_keys_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = parse_nodes("1=127.0.0.1,2=localhost:7002,3=node3.lan").unwrap();
        assert_eq!(nodes[&2], "localhost");
        let written = init(dir.path(), &nodes).unwrap();
        assert_eq!(written.len(), 2 + 3 * 2 + 2);
        for path in &written {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let is_key = path.extension().is_some_and(|e| e == "key");
            assert_eq!(
                mode,
                if is_key { 0o600 } else { 0o644 },
                "{}",
                path.display()
            );
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN"), "{}", path.display());
        }
        let again = init(dir.path(), &nodes).unwrap_err();
        assert!(again.to_string().contains("never overwrites"), "{again}");
    }

    #[test]
    fn bad_node_lists_are_refused() {
        assert!(parse_nodes("").is_err());
        assert!(parse_nodes("1").is_err());
        assert!(parse_nodes("0=a").is_err());
        assert!(parse_nodes("1=a,1=b").is_err());
    }
}
