//! Node configuration: the library struct [`NodeConfig`] that `Node::start` takes, and the
//! `percyd` command line ([`Cli`]) that produces one. Parsing and checking only; nothing here
//! binds a port or touches the data dir.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::tls::TlsFiles;
use crate::types::NodeId;

/// The single-node default: `percyd` with no flags.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_DATA_DIR: &str = "percy-data";
pub const DEFAULT_NODE_ID: NodeId = 1;
/// Raft leader heartbeat.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// Election timeouts, wide enough that a loaded 2-core CI box does not start spurious
/// elections (a stalled tokio worker for 100+ ms is normal there).
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 600;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 1_200;
/// Log entries between snapshots (the log is purged behind each snapshot).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;
/// Agent TTL used when a registration does not ask for one (ARCHITECTURE.md, Design §3).
pub const DEFAULT_AGENT_TTL_MS: u64 = percy_statemachine::limits::DEFAULT_AGENT_TTL_MS;
/// How often agents are told to heartbeat.
pub const DEFAULT_AGENT_HEARTBEAT_INTERVAL_MS: u64 = 2_000;
/// Watch history kept in memory for resuming watchers (in revisions that had events).
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;
/// ... and at most this many events in those revisions (each holds a copy of its entity:
/// ~400 B for a task, so the default history stays under ~10 MB).
pub const DEFAULT_WATCH_HISTORY_EVENTS: usize = 20_000;
/// Most runtime worker threads `--worker-threads` accepts.
pub const MAX_WORKER_THREADS: u16 = 256;

/// Everything one node needs to run. Build it with [`NodeConfig::single`] or
/// [`NodeConfig::cluster`] and adjust the tunables; `percyd` builds it from [`Cli`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// The one port: public API, internal Raft service, reflection, health, `/metrics`.
    pub listen: SocketAddr,
    /// Every initial voter, by id, with the address peers reach it at. Must contain `node_id`.
    /// The lowest id initialises the cluster when its log is empty.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_every: u64,
    pub agent_ttl_ms: u64,
    pub agent_heartbeat_interval_ms: u64,
    pub watch_history: usize,
    pub watch_history_events: usize,
    /// Every public call needs a token (`auth`); off by default.
    pub auth: bool,
    /// TLS on the port and to peers (`--tls-cert --tls-key --tls-ca`); off by default.
    pub tls: Option<TlsFiles>,
    /// Allow a non-loopback `listen` without TLS and auth (`--insecure`).
    pub insecure: bool,
    /// `POST /v1/webhooks/github` turns labelled issues into tasks; `None`: the endpoint
    /// refuses every delivery (no secret to verify them with).
    pub github: Option<GithubWebhook>,
}

/// The GitHub webhook's settings (`--github-webhook-secret-file`, `--github-trigger-label`,
/// `--github-label-capabilities`).
#[derive(Clone)]
pub struct GithubWebhook {
    /// The webhook's secret: deliveries are signed with it (`X-Hub-Signature-256`).
    pub secret: Vec<u8>,
    /// Only issues carrying this label become tasks.
    pub trigger_label: String,
    /// Issue label → capability the task requires.
    pub label_capabilities: BTreeMap<String, String>,
}

impl std::fmt::Debug for GithubWebhook {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubWebhook")
            .field("trigger_label", &self.trigger_label)
            .field("label_capabilities", &self.label_capabilities)
            .finish_non_exhaustive()
    }
}

/// The trigger label when `--github-trigger-label` is not given.
pub const DEFAULT_GITHUB_TRIGGER_LABEL: &str = "percy";
/// The label → capability mapping when `--github-label-capabilities` is not given: the
/// specialised agents of the PoC users come from.
pub const DEFAULT_GITHUB_LABEL_CAPABILITIES: &str =
    "backend=backend,frontend=frontend,testing=testing,devops=devops";

/// `label=capability,...` → the mapping.
pub fn parse_label_capabilities(raw: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((label, capability))
                if !label.trim().is_empty() && !capability.trim().is_empty() =>
            {
                map.insert(label.trim().to_owned(), capability.trim().to_owned());
            }
            _ => return Err(ConfigError::BadLabelCapability(entry.to_owned())),
        }
    }
    Ok(map)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("node id {0} is not in --peers ({1})")]
    NodeNotInPeers(NodeId, String),
    #[error("node id must be at least 1")]
    ZeroNodeId,
    #[error("bad --peers entry {0:?}: expected ID=HOST:PORT")]
    BadPeer(String),
    #[error("node id {0} appears twice in --peers")]
    DuplicatePeer(NodeId),
    #[error("--listen {listen} is not node {node_id}'s address in --peers ({advertised}): peers would call another process, or nobody")]
    ListenNotOwnAddress {
        listen: SocketAddr,
        node_id: NodeId,
        advertised: String,
    },
    #[error("election timeout min ({min} ms) must be below max ({max} ms) and above the heartbeat ({heartbeat} ms)")]
    BadTimeouts { min: u64, max: u64, heartbeat: u64 },
    #[error("--snapshot-every must be at least 1")]
    ZeroSnapshotEvery,
    #[error("--agent-ttl-ms {0} is outside {1}..={2}")]
    BadAgentTtl(u64, u64, u64),
    #[error("--peers gives node {0} port 0: only this node's own entry may (with --listen on port 0, it becomes the port this node binds)")]
    PeerPortZero(NodeId),
    #[error("bad --github-label-capabilities entry {0:?}: expected LABEL=CAPABILITY")]
    BadLabelCapability(String),
    #[error("reading --github-webhook-secret-file {0}: {1}")]
    WebhookSecret(PathBuf, String),
    #[error("refusing to listen on {0} without TLS and --auth: anyone who reaches it could act as any agent. Give --tls-cert/--tls-key/--tls-ca and --auth (`percyctl certs init` makes certificates), or --insecure to accept the risk")]
    Insecure(SocketAddr),
}

impl NodeConfig {
    /// A one-node cluster of `node_id` at `listen`.
    pub fn single(node_id: NodeId, listen: SocketAddr, data_dir: PathBuf) -> Self {
        let peers = BTreeMap::from([(node_id, listen.to_string())]);
        Self::cluster(node_id, listen, peers, data_dir)
    }

    /// A member of the cluster `peers` with default tunables.
    pub fn cluster(
        node_id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            node_id,
            listen,
            peers,
            data_dir,
            heartbeat: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            election_timeout_min: Duration::from_millis(DEFAULT_ELECTION_TIMEOUT_MIN_MS),
            election_timeout_max: Duration::from_millis(DEFAULT_ELECTION_TIMEOUT_MAX_MS),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            agent_ttl_ms: DEFAULT_AGENT_TTL_MS,
            agent_heartbeat_interval_ms: DEFAULT_AGENT_HEARTBEAT_INTERVAL_MS,
            watch_history: DEFAULT_WATCH_HISTORY,
            watch_history_events: DEFAULT_WATCH_HISTORY_EVENTS,
            auth: false,
            tls: None,
            insecure: false,
            github: None,
        }
    }

    /// Checks what cannot be expressed in types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        let Some(advertised) = self.peers.get(&self.node_id) else {
            let ids: Vec<String> = self.peers.keys().map(|id| id.to_string()).collect();
            return Err(ConfigError::NodeNotInPeers(self.node_id, ids.join(",")));
        };
        if let Some((&id, _)) = self
            .peers
            .iter()
            .find(|(&id, addr)| id != self.node_id && port_of(addr) == Some(0))
        {
            return Err(ConfigError::PeerPortZero(id));
        }
        if !listen_serves(self.listen, advertised) {
            return Err(ConfigError::ListenNotOwnAddress {
                listen: self.listen,
                node_id: self.node_id,
                advertised: advertised.clone(),
            });
        }
        let (min, max, hb) = (
            self.election_timeout_min.as_millis() as u64,
            self.election_timeout_max.as_millis() as u64,
            self.heartbeat.as_millis() as u64,
        );
        if min >= max || hb == 0 || hb >= min {
            return Err(ConfigError::BadTimeouts {
                min,
                max,
                heartbeat: hb,
            });
        }
        if self.snapshot_every == 0 {
            return Err(ConfigError::ZeroSnapshotEvery);
        }
        use percy_statemachine::limits::{MAX_AGENT_TTL_MS, MIN_AGENT_TTL_MS};
        if !(MIN_AGENT_TTL_MS..=MAX_AGENT_TTL_MS).contains(&self.agent_ttl_ms) {
            return Err(ConfigError::BadAgentTtl(
                self.agent_ttl_ms,
                MIN_AGENT_TTL_MS,
                MAX_AGENT_TTL_MS,
            ));
        }
        if self.is_exposed() && !self.insecure {
            return Err(ConfigError::Insecure(self.listen));
        }
        Ok(())
    }

    /// Listening beyond loopback without both TLS and auth: refused unless `insecure`.
    pub fn is_exposed(&self) -> bool {
        let protected = self.tls.is_some() && self.auth;
        !(self.listen.ip().is_loopback() || protected)
    }

    /// The configuration once `--listen` is bound at `bound`: with port 0 the kernel chose the
    /// port, and this node's own `--peers` address (its membership address when it
    /// bootstraps) takes it too. Nothing changes for a fixed port.
    pub fn bound_at(mut self, bound: SocketAddr) -> Self {
        if self.listen.port() != 0 {
            return self;
        }
        self.listen = bound;
        if let Some(advertised) = self.peers.get_mut(&self.node_id) {
            if port_of(advertised) == Some(0) {
                if let Some((host, _)) = advertised.rsplit_once(':') {
                    *advertised = format!("{host}:{}", bound.port());
                }
            }
        }
        self
    }

    /// Whether this node bootstraps the cluster when its log is empty.
    pub fn is_bootstrapper(&self) -> bool {
        self.peers.keys().next() == Some(&self.node_id)
    }
}

/// Whether a node listening on `listen` is reached at `advertised`, its own `--peers` address:
/// the same port, and the same IP unless the node listens on every interface (0.0.0.0, ::).
/// A host name other than `localhost` is not resolved here (that is I/O, and the name may
/// well resolve differently for the peers): only its port is compared.
fn listen_serves(listen: SocketAddr, advertised: &str) -> bool {
    if let Ok(addr) = advertised.parse::<SocketAddr>() {
        return addr.port() == listen.port()
            && (listen.ip().is_unspecified() || addr.ip() == listen.ip());
    }
    let Some((host, port)) = advertised.rsplit_once(':') else {
        return false;
    };
    if port.parse() != Ok(listen.port()) {
        return false;
    }
    !host.eq_ignore_ascii_case("localhost")
        || listen.ip().is_unspecified()
        || listen.ip().is_loopback()
}

/// The port of `HOST:PORT`, if it has one.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002`.
pub fn parse_peers(raw: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::BadPeer(entry.to_string()))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadPeer(entry.to_string()))?;
        let addr = addr.trim();
        if id == 0 || addr.is_empty() || !addr.contains(':') {
            return Err(ConfigError::BadPeer(entry.to_string()));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(ConfigError::DuplicatePeer(id));
        }
    }
    Ok(peers)
}

/// `percyd`: one node of Percy's replicated coordination service.
///
/// With no flags it runs a single-node cluster on 127.0.0.1:7070 with data in ./percy-data.
/// The port serves the gRPC API, node-to-node Raft traffic, server reflection,
/// grpc.health.v1 and Prometheus metrics at `GET /metrics`.
#[derive(Debug, Parser)]
#[command(name = "percyd", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Without a subcommand percyd runs a node.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// This node's id (≥ 1); must appear in --peers.
    #[arg(long, env = "PERCY_NODE_ID", default_value_t = DEFAULT_NODE_ID)]
    pub node_id: NodeId,
    /// Address to listen on (gRPC, Raft, reflection, health, /metrics). Port 0 lets the
    /// kernel choose (see --address-file); a node that must rejoin peers after a restart
    /// needs a fixed port.
    #[arg(long, env = "PERCY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Once listening, write the address this node serves on (HOST:PORT and a newline) to
    /// this file, replacing it atomically: how a script or test learns the port chosen for
    /// --listen …:0 without racing anyone for a port.
    #[arg(long, env = "PERCY_ADDRESS_FILE")]
    pub address_file: Option<PathBuf>,
    /// Initial voters as ID=HOST:PORT,…; the lowest id initialises an empty cluster.
    /// Default: this node alone, at --listen.
    #[arg(long, env = "PERCY_PEERS")]
    pub peers: Option<String>,
    /// Where the Raft log, vote and snapshots live.
    #[arg(long, env = "PERCY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Raft leader heartbeat interval.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Minimum Raft election timeout.
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT_MIN_MS)]
    pub election_timeout_min_ms: u64,
    /// Maximum Raft election timeout.
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT_MAX_MS)]
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and purge the log behind it) every N applied commands (or N log
    /// entries, whichever comes first: one entry may carry many commands).
    #[arg(long, default_value_t = DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: u64,
    /// TTL of agents that register without one: silent longer than this → expired.
    #[arg(long, default_value_t = DEFAULT_AGENT_TTL_MS)]
    pub agent_ttl_ms: u64,
    /// Heartbeat interval advertised to agents when they register.
    #[arg(long, default_value_t = DEFAULT_AGENT_HEARTBEAT_INTERVAL_MS)]
    pub agent_heartbeat_interval_ms: u64,
    /// Revisions of watch history kept in memory for resuming watchers.
    #[arg(long, default_value_t = DEFAULT_WATCH_HISTORY)]
    pub watch_history: usize,
    /// Most events the watch history holds (one revision can change many entities, e.g. a
    /// plan's tasks): older revisions go first; the newest is always kept. A watcher resuming
    /// from before the history is told "compacted".
    #[arg(long, default_value_t = DEFAULT_WATCH_HISTORY_EVENTS)]
    pub watch_history_events: usize,
    /// Threads of the async runtime that serves requests and runs Raft. Default: one per core.
    /// Nodes that share a machine do better with the cores split between them: every thread
    /// beyond that only adds wake-ups and context switches (`percyctl bench --local N` gives
    /// each node cores / N).
    #[arg(long, env = "PERCY_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKER_THREADS)))]
    pub worker_threads: Option<u16>,
    /// Require a token on every public call (health and /metrics stay open). On first start
    /// the bootstrapping node writes an admin token to <data-dir>/admin.token.
    #[arg(long, env = "PERCY_AUTH")]
    pub auth: bool,
    /// This node's TLS certificate (PEM); with --tls-key and --tls-ca, the port speaks TLS
    /// and peers are called with mutual TLS (`percyctl certs init` makes a development set).
    #[arg(long, env = "PERCY_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "PERCY_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers must present a certificate it signed.
    #[arg(long, env = "PERCY_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS and --auth anyway (anyone who reaches
    /// the port can then act as any agent); logs a warning.
    #[arg(long)]
    pub insecure: bool,
    /// A file holding the GitHub webhook's secret: enables `POST /v1/webhooks/github`, which
    /// accepts only deliveries signed with it (X-Hub-Signature-256).
    #[arg(long, env = "PERCY_GITHUB_WEBHOOK_SECRET_FILE")]
    pub github_webhook_secret_file: Option<PathBuf>,
    /// The label that makes a GitHub issue a task.
    #[arg(long, default_value = DEFAULT_GITHUB_TRIGGER_LABEL)]
    pub github_trigger_label: String,
    /// Issue labels that become required capabilities: LABEL=CAPABILITY,...
    #[arg(long, default_value = DEFAULT_GITHUB_LABEL_CAPABILITIES)]
    pub github_label_capabilities: String,
}

/// What `percyd` does other than run a node.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seed this node of a NEW cluster from a backup file (`percyctl snapshot save`), like
    /// `etcdutl snapshot restore`. Run it once per node, each with its own --node-id and the
    /// same file and --peers (they derive the same new cluster id from both), then start
    /// every node with that --node-id, --data-dir and --peers.
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file (`percyctl snapshot save FILE`).
    #[arg(long)]
    pub from: PathBuf,
    /// The new node's data dir: must not exist or be empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster (≥ 1); must appear in --peers.
    #[arg(long)]
    pub node_id: NodeId,
    /// The new cluster's voters as ID=HOST:PORT,… (the same on every node restored).
    #[arg(long)]
    pub peers: String,
}

impl Cli {
    pub fn into_config(self) -> Result<NodeConfig, ConfigError> {
        let peers = match &self.peers {
            Some(raw) => parse_peers(raw)?,
            None => BTreeMap::from([(self.node_id, self.listen.to_string())]),
        };
        let mut config = NodeConfig::cluster(self.node_id, self.listen, peers, self.data_dir);
        config.heartbeat = Duration::from_millis(self.heartbeat_ms);
        config.election_timeout_min = Duration::from_millis(self.election_timeout_min_ms);
        config.election_timeout_max = Duration::from_millis(self.election_timeout_max_ms);
        config.snapshot_every = self.snapshot_every;
        config.agent_ttl_ms = self.agent_ttl_ms;
        config.agent_heartbeat_interval_ms = self.agent_heartbeat_interval_ms;
        config.watch_history = self.watch_history;
        config.watch_history_events = self.watch_history_events;
        config.auth = self.auth;
        config.insecure = self.insecure;
        config.tls = match (self.tls_cert, self.tls_key, self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            _ => None,
        };
        config.github = match &self.github_webhook_secret_file {
            Some(path) => {
                let raw = std::fs::read(path)
                    .map_err(|e| ConfigError::WebhookSecret(path.clone(), e.to_string()))?;
                // Secret files usually end with a newline the secret does not contain.
                let secret = raw.trim_ascii().to_vec();
                if secret.is_empty() {
                    return Err(ConfigError::WebhookSecret(
                        path.clone(),
                        "it is empty".into(),
                    ));
                }
                Some(GithubWebhook {
                    secret,
                    trigger_label: self.github_trigger_label.clone(),
                    label_capabilities: parse_label_capabilities(&self.github_label_capabilities)?,
                })
            }
            None => None,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `percyd` with `args`, as clap parses it.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["percyd"], args].concat())
    }

    fn cli(args: &[&str]) -> Result<NodeConfig, ConfigError> {
        parse(args).unwrap().into_config()
    }

    #[test]
    fn port_zero_takes_the_bound_port_for_this_node_only() {
        let c = cli(&["--listen", "127.0.0.1:0"]).unwrap();
        let bound: SocketAddr = "127.0.0.1:45678".parse().unwrap();
        let c = c.bound_at(bound);
        assert_eq!(c.listen, bound);
        assert_eq!(c.peers[&1], "127.0.0.1:45678", "its membership address");
        c.validate().unwrap();

        // A joiner: its own entry is :0, the seed's is real.
        let c = cli(&[
            "--node-id",
            "2",
            "--listen",
            "0.0.0.0:0",
            "--peers",
            "1=10.0.0.1:7070,2=box-b:0",
            "--insecure",
        ])
        .unwrap()
        .bound_at("0.0.0.0:40001".parse().unwrap());
        assert_eq!(c.peers[&2], "box-b:40001");
        assert_eq!(c.peers[&1], "10.0.0.1:7070");

        // A fixed port is left alone.
        let c = cli(&[])
            .unwrap()
            .bound_at("127.0.0.1:7070".parse().unwrap());
        assert_eq!(c.peers[&1], "127.0.0.1:7070");

        // Nobody can know another node's port 0.
        let err = cli(&[
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:0,2=127.0.0.1:0",
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::PeerPortZero(2)), "{err}");
    }

    #[test]
    fn no_flags_is_a_single_node_on_7070() {
        let c = cli(&[]).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[&1], "127.0.0.1:7070");
        assert_eq!(c.data_dir, PathBuf::from("percy-data"));
        assert!(c.is_bootstrapper());
    }

    #[test]
    fn peers_form_a_cluster_and_the_lowest_id_bootstraps() {
        let peers = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003";
        let c = cli(&[
            "--node-id",
            "2",
            "--listen",
            "127.0.0.1:7002",
            "--peers",
            peers,
        ])
        .unwrap();
        assert_eq!(c.peers.len(), 3);
        assert!(!c.is_bootstrapper());
        let c = cli(&[
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7001",
            "--peers",
            peers,
        ])
        .unwrap();
        assert!(c.is_bootstrapper());
    }

    #[test]
    fn node_not_in_peers_is_refused_by_name() {
        let err = cli(&["--node-id", "4", "--peers", "1=a:1,2=b:2"]).unwrap_err();
        assert_eq!(err.to_string(), "node id 4 is not in --peers (1,2)");
    }

    #[test]
    fn listen_must_be_this_nodes_own_peer_address() {
        let peers = "1=127.0.0.1:7001,2=127.0.0.1:7002";
        let err = cli(&[
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7002",
            "--peers",
            peers,
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--listen 127.0.0.1:7002 is not node 1's address in --peers (127.0.0.1:7001): \
             peers would call another process, or nobody"
        );
        cli(&[
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7001",
            "--peers",
            peers,
        ])
        .unwrap();
    }

    #[test]
    fn a_listen_address_serves_the_addresses_it_is_reached_at() {
        let listen = |addr: &str| addr.parse::<SocketAddr>().unwrap();
        assert!(listen_serves(listen("127.0.0.1:7001"), "127.0.0.1:7001"));
        assert!(!listen_serves(listen("127.0.0.1:7001"), "127.0.0.1:7002"));
        assert!(!listen_serves(listen("127.0.0.1:7001"), "127.0.0.2:7001"));
        // Every interface serves any address with the port.
        assert!(listen_serves(listen("0.0.0.0:7001"), "10.1.2.3:7001"));
        assert!(listen_serves(listen("[::]:7001"), "[fd00::1]:7001"));
        assert!(!listen_serves(listen("0.0.0.0:7001"), "10.1.2.3:7002"));
        assert!(listen_serves(listen("[::1]:7001"), "[::1]:7001"));
        // Host names: localhost only for loopback; others by port alone.
        assert!(listen_serves(listen("127.0.0.1:7001"), "localhost:7001"));
        assert!(listen_serves(listen("[::1]:7001"), "LOCALHOST:7001"));
        assert!(!listen_serves(listen("10.1.2.3:7001"), "localhost:7001"));
        assert!(listen_serves(
            listen("10.1.2.3:7001"),
            "node1.internal:7001"
        ));
        assert!(!listen_serves(
            listen("10.1.2.3:7001"),
            "node1.internal:7002"
        ));
        assert!(!listen_serves(listen("10.1.2.3:7001"), "node1.internal"));
    }

    #[test]
    fn malformed_peers_are_refused() {
        assert!(matches!(parse_peers("1:a"), Err(ConfigError::BadPeer(_))));
        assert!(matches!(parse_peers("x=a:1"), Err(ConfigError::BadPeer(_))));
        assert!(matches!(
            parse_peers("1=a:1,1=b:2"),
            Err(ConfigError::DuplicatePeer(1))
        ));
    }

    #[test]
    fn worker_threads_default_to_the_runtime_and_zero_is_refused() {
        assert_eq!(parse(&[]).unwrap().worker_threads, None);
        assert_eq!(
            parse(&["--worker-threads", "1"]).unwrap().worker_threads,
            Some(1)
        );
        assert!(parse(&["--worker-threads", "0"]).is_err());
        assert!(parse(&["--worker-threads", "257"]).is_err());
    }

    #[test]
    fn a_non_loopback_listen_needs_tls_and_auth_or_insecure() {
        let exposed = ["--listen", "0.0.0.0:7070"];
        let err = cli(&exposed).unwrap_err();
        assert!(matches!(err, ConfigError::Insecure(_)), "{err}");
        assert!(err.to_string().contains("--insecure"));
        // Auth alone, or TLS alone, is not enough.
        assert!(cli(&["--listen", "0.0.0.0:7070", "--auth"]).is_err());
        let tls = [
            "--listen",
            "0.0.0.0:7070",
            "--tls-cert",
            "n.crt",
            "--tls-key",
            "n.key",
            "--tls-ca",
            "ca.crt",
        ];
        assert!(cli(&tls).is_err());
        let both = cli(&[&tls[..], &["--auth"]].concat()).unwrap();
        assert!(!both.is_exposed());
        let insecure = cli(&["--listen", "0.0.0.0:7070", "--insecure"]).unwrap();
        assert!(insecure.is_exposed(), "percyd warns at start");
        // Loopback needs nothing: the zero-config default.
        assert!(!cli(&[]).unwrap().is_exposed());
        // The TLS flags go together.
        assert!(parse(&["--tls-cert", "n.crt"]).is_err());
    }

    #[test]
    fn inverted_timeouts_are_refused() {
        let err = cli(&[
            "--election-timeout-min-ms",
            "900",
            "--election-timeout-max-ms",
            "300",
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::BadTimeouts { .. }));
    }

    #[test]
    fn the_github_webhook_reads_its_secret_file_and_label_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let secret_arg = secret.to_str().unwrap();
        let c = cli(&["--github-webhook-secret-file", secret_arg]).unwrap();
        let github = c.github.expect("configured");
        assert_eq!(github.secret, b"s3cret");
        assert_eq!(github.trigger_label, "percy");
        assert_eq!(github.label_capabilities["frontend"], "frontend");
        assert_eq!(github.label_capabilities.len(), 4);
        assert!(
            !format!("{github:?}").contains("s3cret"),
            "Debug hides the secret"
        );

        let c = cli(&[
            "--github-webhook-secret-file",
            secret_arg,
            "--github-trigger-label",
            "agents",
            "--github-label-capabilities",
            "ui=frontend, db=backend",
        ])
        .unwrap();
        let github = c.github.expect("configured");
        assert_eq!(github.trigger_label, "agents");
        assert_eq!(github.label_capabilities.len(), 2);
        assert_eq!(github.label_capabilities["ui"], "frontend");
        assert!(cli(&[]).unwrap().github.is_none());
    }

    #[test]
    fn a_bad_github_webhook_setting_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = cli(&["--github-webhook-secret-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::WebhookSecret(..)), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = cli(&["--github-webhook-secret-file", empty.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::write(&empty, "x").unwrap();
        let err = cli(&[
            "--github-webhook-secret-file",
            empty.to_str().unwrap(),
            "--github-label-capabilities",
            "ui",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("\"ui\""), "{err}");
    }
}
