//! What one MCP session remembers for the model: which agent it is, the claim token of every
//! task it claimed, the fencing token of every path it locked, and how far it has read the
//! agent's mailboxes. Tools look tokens up here, so the model names a task or a path and never
//! has to copy a token.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percy_client::proto::RegisterAgentRequest;
use percy_client::{Client, ClientError};
use tokio::sync::Mutex;

/// How the session's agent registers (again, after an expiry, or through `register_agent`).
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub capabilities: Vec<String>,
    pub labels: HashMap<String, String>,
    pub max_concurrent: u32,
    /// 0 = the server's default.
    pub ttl_ms: u64,
}

/// What a registration told us.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    pub agent_id: u64,
    /// A new agent (rather than the live agent of that name, refreshed).
    pub created: bool,
    /// How often to heartbeat.
    pub interval: Duration,
    /// The revision of the registration: messages after it are this agent's news.
    pub revision: u64,
}

#[derive(Debug, Default)]
struct State {
    agent_id: u64,
    /// Whether this session created the agent (then it deregisters it at the end).
    created: bool,
    /// Task id → claim token.
    claims: BTreeMap<String, u64>,
    /// Path → fencing token.
    fences: BTreeMap<String, u64>,
    /// Highest message id read from the agent's own mailbox and from the broadcast mailbox.
    read_direct: u64,
    read_broadcast: u64,
}

/// A session's state; cheap to share between the tools and the background tasks.
#[derive(Debug)]
pub struct Session {
    client: Client,
    registration: Mutex<Registration>,
    state: Mutex<State>,
    /// The least severe notification level the client wants (`logging/setLevel`), as the
    /// rank [`super::announce::rank`] gives it.
    log_level: AtomicU8,
}

impl Session {
    /// Registers the agent and starts a session for it.
    pub async fn register(
        client: Client,
        registration: Registration,
    ) -> Result<(Arc<Session>, Registered), ClientError> {
        let session = Arc::new(Session {
            client,
            registration: Mutex::new(registration),
            state: Mutex::new(State::default()),
            log_level: AtomicU8::new(0),
        });
        let registered = session.reregister(None).await?;
        Ok((session, registered))
    }

    pub async fn name(&self) -> String {
        self.registration.lock().await.name.clone()
    }

    /// How the agent registers now.
    pub async fn registration(&self) -> Registration {
        self.registration.lock().await.clone()
    }

    pub async fn agent_id(&self) -> u64 {
        self.state.lock().await.agent_id
    }

    /// Registers the agent again, with `update` applied to how it registers. When the
    /// cluster gives it a new id (the old agent expired or was deregistered), the tokens the
    /// session held died with the old agent and are forgotten.
    pub async fn reregister(
        &self,
        update: Option<Registration>,
    ) -> Result<Registered, ClientError> {
        let mut registration = self.registration.lock().await;
        let wanted = update.unwrap_or_else(|| registration.clone());
        let response = self
            .client
            .register_agent(RegisterAgentRequest {
                header: None,
                name: wanted.name.clone(),
                node: percy_worker::host_name().unwrap_or_default(),
                capabilities: wanted.capabilities.clone(),
                labels: wanted.labels.clone(),
                max_concurrent: wanted.max_concurrent,
                ttl_ms: wanted.ttl_ms,
            })
            .await?;
        *registration = wanted;
        let agent = response.agent.unwrap_or_default();
        let mut state = self.state.lock().await;
        if state.agent_id != agent.id {
            state.claims.clear();
            state.fences.clear();
            state.created = response.created;
        }
        state.agent_id = agent.id;
        Ok(Registered {
            agent_id: agent.id,
            created: response.created,
            interval: percy_worker::heartbeat_interval(
                response.heartbeat_interval_ms,
                agent.ttl_ms,
            ),
            revision: response.header.map_or(0, |h| h.revision),
        })
    }

    pub fn set_log_level(&self, rank: u8) {
        self.log_level.store(rank, Ordering::Relaxed);
    }

    pub fn log_level(&self) -> u8 {
        self.log_level.load(Ordering::Relaxed)
    }

    pub async fn claim_token(&self, task_id: &str) -> Option<u64> {
        self.state.lock().await.claims.get(task_id).copied()
    }

    pub async fn remember_claim(&self, task_id: &str, token: u64) {
        self.state
            .lock()
            .await
            .claims
            .insert(task_id.to_owned(), token);
    }

    pub async fn forget_claim(&self, task_id: &str) {
        self.state.lock().await.claims.remove(task_id);
    }

    pub async fn remember_fence(&self, path: &str, token: u64) {
        self.state
            .lock()
            .await
            .fences
            .insert(path.to_owned(), token);
    }

    /// Forgets the fencing tokens of `paths` (all of them when empty).
    pub async fn forget_fences(&self, paths: &[String]) {
        let mut state = self.state.lock().await;
        if paths.is_empty() {
            state.fences.clear();
        } else {
            for path in paths {
                state.fences.remove(path);
            }
        }
    }

    /// The claims and fences held, for `cluster_status`.
    pub async fn held(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let state = self.state.lock().await;
        (state.claims.clone(), state.fences.clone())
    }

    /// The read positions of the direct and broadcast mailboxes.
    pub async fn read_positions(&self) -> (u64, u64) {
        let state = self.state.lock().await;
        (state.read_direct, state.read_broadcast)
    }

    /// Moves the read positions forward (never back).
    pub async fn mark_read(&self, direct: u64, broadcast: u64) {
        let mut state = self.state.lock().await;
        state.read_direct = state.read_direct.max(direct);
        state.read_broadcast = state.read_broadcast.max(broadcast);
    }

    /// The session is over: an agent this session created is deregistered (nobody else holds
    /// its tokens, so its tasks and locks would only wait for its TTL); a reused one is left
    /// as it was.
    pub async fn end(&self) {
        let (agent_id, created) = {
            let state = self.state.lock().await;
            (state.agent_id, state.created)
        };
        if created {
            if let Err(err) = self.client.deregister_agent(agent_id).await {
                tracing::warn!(agent_id, error = %err, "could not deregister the session's agent");
            }
        }
    }
}
