//! TLS (`--tls-cert --tls-key --tls-ca`) on a three-node cluster with `--auth`: peers elect
//! and replicate over mutual TLS, a client with the CA and a token writes through a follower;
//! a plaintext client, a client trusting another CA, a node certificate that has expired, and
//! a caller of the internal service without a cluster certificate are all refused.
//! The same port answers HTTPS JSON with the same credentials (token or admin certificate).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use percy_proto::internal::raft_service_client::RaftServiceClient;
use percy_proto::internal::ReadIndexRequest;
use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::config_service_client::ConfigServiceClient;
use percy_proto::v1::{ClusterStatusRequest, PutConfigRequest, RemoveNodeRequest};
use percy_server::tls::TlsFiles;
use percy_server::{admin_token_path, Node, NodeConfig, NodeHandle};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

/// Per attempt: a refused handshake must fail fast, not hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf certificate for 127.0.0.1 that also names `name` (node certificates are named
/// `node-<id>`, as `percyctl certs init` makes them), written as `<name>.crt` / `<name>.key`.
fn leaf(ca: &Ca, dir: &Path, name: &str, expired: bool) -> (PathBuf, PathBuf) {
    let sans = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        name.to_owned(),
    ];
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn tls_config(
    slot: &Slot,
    peers: &std::collections::BTreeMap<u64, String>,
    ca: &Ca,
    certs: &Path,
) -> NodeConfig {
    let mut config = config(slot, peers);
    let (cert, key) = leaf(ca, certs, &format!("node-{}", slot.id), false);
    let ca_path = certs.join("ca.crt");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    config.tls = Some(TlsFiles {
        cert,
        key,
        ca: ca_path,
    });
    config.auth = true;
    config
}

async fn tls_channel(addr: &str, ca_pem: &str, identity: Option<(PathBuf, PathBuf)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .connect_lazy()
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn status(channel: Channel, token: &str) -> Result<(), tonic::Status> {
    ClusterServiceClient::new(channel)
        .status(with_token(ClusterStatusRequest::default(), token))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_ca_and_refuses_everyone_else() {
    let certs = tempfile::tempdir().unwrap();
    let ca = new_ca("percy test CA");
    let mut slots = slots(&[1, 2, 3]).await;
    let peers = peers_of(&slots);
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for slot in slots.iter_mut() {
        let config = tls_config(slot, &peers, &ca, certs.path());
        let listener = slot.listener.take().unwrap();
        nodes.push(Node::start_with_listener(config, listener).await.unwrap());
    }
    // Elections and the bootstrap token's commit travel over mutual TLS.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    let addr = follower.addr().to_string();
    assert!(follower.endpoint().starts_with("https://"));
    let token_file = admin_token_path(slots[0].dir.path());
    let admin = eventually("the bootstrap admin token", SETTLE, || async {
        std::fs::read_to_string(&token_file).ok()
    })
    .await
    .trim()
    .to_owned();

    let good = tls_channel(&addr, &ca.pem, None).await;
    eventually("a TLS client with the CA and a token", SETTLE, || {
        let good = good.clone();
        let admin = admin.clone();
        async move { status(good, &admin).await.ok() }
    })
    .await;
    // A write through the follower is forwarded to the leader over mutual TLS.
    ConfigServiceClient::new(good.clone())
        .put(with_token(
            PutConfigRequest {
                key: "k".into(),
                value: b"v".to_vec(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("a write through a follower");

    // A client certificate naming the admin is a credential of its own; another
    // certificate of the CA is not.
    let admin_cert = leaf(&ca, certs.path(), "admin", false);
    let as_admin = tls_channel(&addr, &ca.pem, Some(admin_cert.clone())).await;
    ClusterServiceClient::new(as_admin.clone())
        .add_node(Request::new(percy_proto::v1::AddNodeRequest {
            header: None,
            node_id: 0,
            addr: String::new(),
        }))
        .await
        .map(drop)
        .map_err(|s| assert_eq!(s.code(), Code::InvalidArgument, "admin passes auth: {s:?}"))
        .unwrap_err();
    // Such a caller has no token a follower could pass on, and the leader would see the
    // follower's certificate: the follower points at the leader instead of relaying a
    // membership change, and the leader answers it.
    let redirected = ClusterServiceClient::new(as_admin)
        .remove_node(Request::new(RemoveNodeRequest {
            header: None,
            node_id: 9,
        }))
        .await
        .unwrap_err();
    assert_eq!(redirected.code(), Code::Unavailable, "{redirected:?}");
    let named_leader = redirected
        .metadata()
        .get(percy_proto::routing::LEADER_ID)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    assert_eq!(named_leader, Some(leader), "{redirected:?}");
    let leader_addr = nodes
        .iter()
        .find(|n| n.node_id() == leader)
        .unwrap()
        .addr()
        .to_string();
    let at_leader = tls_channel(&leader_addr, &ca.pem, Some(admin_cert)).await;
    let answered = ClusterServiceClient::new(at_leader)
        .remove_node(Request::new(RemoveNodeRequest {
            header: None,
            node_id: 9,
        }))
        .await
        .unwrap_err();
    assert_eq!(answered.code(), Code::NotFound, "{answered:?}");
    let probe = leaf(&ca, certs.path(), "some-client", false);
    let anonymous = tls_channel(&addr, &ca.pem, Some(probe)).await;
    let refused = ClusterServiceClient::new(anonymous)
        .status(Request::new(ClusterStatusRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Plaintext to a TLS port.
    let plain = channel(&addr).await;
    let refused = status(plain, &admin).await.unwrap_err();
    assert_ne!(refused.code(), Code::Ok);

    // A client that trusts another CA does not accept the node's certificate.
    let other_ca = new_ca("someone else's CA");
    let wrong = tls_channel(&addr, &other_ca.pem, None).await;
    let refused = status(wrong, &admin).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // The internal service: without a client certificate → refused by the guard; with a
    // certificate of another CA → refused by the handshake; with a cluster certificate →
    // answered (the read index).
    let read_index = |channel: Channel| async move {
        RaftServiceClient::new(channel)
            .read_index(ReadIndexRequest::default())
            .await
            .map(drop)
    };
    let anonymous = read_index(tls_channel(&addr, &ca.pem, None).await)
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    assert!(anonymous.message().contains("cluster CA"), "{anonymous:?}");
    let stranger = leaf(&other_ca, certs.path(), "stranger", false);
    let foreign = read_index(tls_channel(&addr, &ca.pem, Some(stranger)).await)
        .await
        .unwrap_err();
    // A transport failure, not an answer: TLS 1.3 clients learn that their certificate was
    // refused only after the handshake (an UnknownCA alert or a closed connection).
    assert!(
        matches!(
            foreign.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        ),
        "{foreign:?}"
    );
    // Certificates of the cluster CA that name no member: refused.
    for name in ["peer-probe", "node-9"] {
        let cert = leaf(&ca, certs.path(), name, false);
        let refused = read_index(tls_channel(&addr, &ca.pem, Some(cert)).await)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{name}: {refused:?}"
        );
        assert!(refused.message().contains("only members"), "{refused:?}");
    }
    // A member's certificate passes every check (whatever the read index then answers).
    let member_cert = leaf(&ca, certs.path(), &format!("node-{leader}"), false);
    let member = read_index(tls_channel(&addr, &ca.pem, Some(member_cert)).await).await;
    assert!(
        !matches!(&member, Err(s) if matches!(
            s.code(),
            Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable
        )),
        "a member's certificate passes the TLS checks: {member:?}"
    );

    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_node_certificate_is_refused_by_clients() {
    let certs = tempfile::tempdir().unwrap();
    let ca = new_ca("percy test CA");
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let mut config = tls_config(&slots[0], &peers, &ca, certs.path());
    let (cert, key) = leaf(&ca, certs.path(), "expired", true);
    if let Some(tls) = config.tls.as_mut() {
        tls.cert = cert;
        tls.key = key;
    }
    let listener = slots[0].listener.take().unwrap();
    let node = Node::start_with_listener(config, listener).await.unwrap();
    let channel = tls_channel(&node.addr().to_string(), &ca.pem, None).await;
    let refused = status(channel, "percy_whatever").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn unreadable_tls_files_stop_the_node_with_a_clear_error() {
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let mut config = config(&slots[0], &peers);
    let missing = slots[0].dir.path().join("missing.crt");
    config.tls = Some(TlsFiles {
        cert: missing.clone(),
        key: missing.clone(),
        ca: missing,
    });
    let listener = slots[0].listener.take().unwrap();
    let error = match Node::start_with_listener(config, listener).await {
        Ok(_) => panic!("a node started without its certificate"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("--tls-cert") && error.contains("missing.crt"),
        "{error}"
    );
}

/// curl against `url` with `args`: (HTTP status, body); status 0 when no HTTP answer came.
async fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl runs (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_https_json_with_the_same_credentials() {
    let certs = tempfile::tempdir().unwrap();
    let ca = new_ca("percy test CA");
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let config = tls_config(&slots[0], &peers, &ca, certs.path());
    let listener = slots[0].listener.take().unwrap();
    let node = Node::start_with_listener(config, listener).await.unwrap();
    let port = slots[0].addr.rsplit_once(':').unwrap().1.to_owned();
    let base = format!("https://127.0.0.1:{port}");
    let ca_file = certs.path().join("ca.crt").display().to_string();

    // Probes are open; /v1 needs a credential, as gRPC does.
    let ready = eventually("/readyz over HTTPS", SETTLE, || {
        let (url, ca_file) = (format!("{base}/readyz"), ca_file.clone());
        async move {
            let (status, body) = curl(&url, &["--cacert", &ca_file]).await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert!(ready.contains("\"ok\""), "{ready}");
    let (status, body) = curl(
        &format!("{base}/v1/cluster/status"),
        &["--cacert", &ca_file],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("UNAUTHENTICATED"), "{body}");

    // The bootstrap admin token, and the admin client certificate, are accepted.
    let token_file = admin_token_path(slots[0].dir.path());
    let admin = eventually("the bootstrap admin token", SETTLE, || async {
        std::fs::read_to_string(&token_file)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
    .await;
    let auth = format!("authorization: Bearer {admin}");
    let (status, body) = curl(
        &format!("{base}/v1/cluster/status"),
        &["--cacert", &ca_file, "-H", &auth],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Leader\""), "{body}");
    let (cert, key) = leaf(&ca, certs.path(), "admin", false);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let (status, body) = curl(
        &format!("{base}/v1/cluster/status"),
        &["--cacert", &ca_file, "--cert", &cert, "--key", &key],
    )
    .await;
    assert_eq!(status, 200, "the admin certificate is a credential: {body}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let (status, _) = curl(&format!("http://127.0.0.1:{port}/livez"), &[]).await;
    assert_ne!(status, 200);
    node.shutdown().await;
}
