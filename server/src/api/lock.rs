//! `percy.v1.LockService`: all-or-nothing multi-path acquire (optionally waiting in the FIFO
//! queue), release, and listing. Paths are normalised here, at the edge, so the log only ever
//! carries canonical paths.

use std::sync::Arc;
use std::time::Duration;

use percy_proto::v1::lock_service_server::LockService;
use percy_proto::v1::*;
use percy_statemachine::{LockGrant as SmGrant, Op, Outcome, StateMachine};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::{observe, paging, read, required_id, unexpected, write};
use crate::context::NodeContext;
use crate::convert::{
    command_error_to_status, lock_grant_to_proto, lock_mode_from_proto, lock_to_proto,
    lock_waiter_to_proto, non_empty, non_zero,
};

pub struct LockApi {
    pub ctx: Arc<NodeContext>,
}

fn normalize(paths: Vec<String>) -> Result<Vec<String>, Status> {
    paths
        .iter()
        .map(|p| percy_statemachine::normalize_lock_path(p).map_err(command_error_to_status))
        .collect()
}

/// What a queued acquire is waiting for.
struct Queued {
    agent_id: u64,
    paths: Vec<String>,
    queued_revision: u64,
}

enum WaitState {
    Granted(Vec<SmGrant>),
    /// Still in the FIFO queue.
    Waiting,
    /// Neither granted nor queued any more (its wait deadline passed, or the agent expired).
    Dropped,
}

impl Queued {
    /// Granted when every path has this agent as holder through a grant made after queueing.
    fn check(&self, sm: &StateMachine) -> WaitState {
        let mut grants = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            let holder = sm.lock(path).and_then(|l| {
                l.holders
                    .iter()
                    .find(|h| h.agent_id == self.agent_id && h.fencing_token > self.queued_revision)
                    .map(|h| SmGrant {
                        path: l.path.clone(),
                        mode: l.mode,
                        agent_id: h.agent_id,
                        fencing_token: h.fencing_token,
                        expires_at_ms: h.expires_at_ms,
                    })
            });
            match holder {
                Some(grant) => grants.push(grant),
                None => {
                    return if sm.lock_waiter(self.queued_revision).is_some() {
                        WaitState::Waiting
                    } else {
                        WaitState::Dropped
                    };
                }
            }
        }
        WaitState::Granted(grants)
    }
}

/// Waits for a queued acquire to be granted, up to `wait`. On timeout the queued request is
/// withdrawn (a release of those paths, which also undoes a grant that raced the deadline)
/// and the call fails with DEADLINE_EXCEEDED; a request the state machine dropped (its agent
/// expired or left, or released those paths) fails with FAILED_PRECONDITION.
async fn wait_for_grant(
    ctx: &NodeContext,
    queued: Queued,
    wait: Duration,
) -> Result<(Vec<SmGrant>, Option<ResponseHeader>), Status> {
    let deadline = Instant::now() + wait;
    // The acquire may have been forwarded to the leader: this node's replica has to catch up
    // to the revision that queued the request before it can tell "still queued" from
    // "dropped". Checking earlier would see neither and withdraw a healthy request.
    if !ctx
        .state
        .wait_for_revision(queued.queued_revision, deadline)
        .await
    {
        tracing::debug!(
            queued_revision = queued.queued_revision,
            "replica did not reach the queued revision before the deadline"
        );
    }
    // Woken straight from apply (not through the watch feed) and only when this request
    // leaves the queue, so a handoff wakes the one caller it granted, not the whole queue.
    let mut wakeup = ctx.state.lock_wakeup(queued.queued_revision);
    let dropped = loop {
        // Before the read: a wake-up that lands after it ends the wait below at once.
        wakeup.mark_seen();
        let (state, revision) = ctx.state.read(|sm| (queued.check(sm), sm.revision()));
        match state {
            WaitState::Granted(grants) => return Ok((grants, ctx.header(revision, false))),
            WaitState::Dropped => break true,
            WaitState::Waiting => {}
        }
        if !wakeup.woken(deadline).await {
            break false;
        }
    };
    drop(wakeup);
    if dropped {
        // Nothing to withdraw: the state machine already took the request out of the queue,
        // and a release now could undo a later acquire of the same paths by the same agent.
        return Err(Status::failed_precondition(format!(
            "the request for locks {} left the queue without a grant (its agent expired, \
             left, or released those paths)",
            queued.paths.join(", ")
        )));
    }
    let withdraw = Op::ReleaseLocks {
        agent_id: queued.agent_id,
        paths: queued.paths.clone(),
    };
    if let Err(status) = write(ctx, None, withdraw).await {
        tracing::warn!(error = %status.message(), "could not withdraw a timed-out lock request");
    }
    Err(Status::deadline_exceeded(format!(
        "locks {} not granted within {} ms; the request was withdrawn",
        queued.paths.join(", "),
        wait.as_millis()
    )))
}

#[tonic::async_trait]
impl LockService for LockApi {
    async fn acquire(
        &self,
        request: Request<AcquireLocksRequest>,
    ) -> Result<Response<AcquireLocksResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "LockService/Acquire", async {
            let r = request.into_inner();
            let agent_id = required_id(r.agent_id, "agent_id")?;
            if r.paths.is_empty() {
                return Err(Status::invalid_argument(
                    "at least one lock path is required",
                ));
            }
            let paths = normalize(r.paths)?;
            let op = Op::AcquireLocks {
                agent_id,
                paths: paths.clone(),
                mode: lock_mode_from_proto(r.mode)?,
                task_id: non_empty(r.task_id),
                ttl_ms: non_zero(r.ttl_ms),
                wait_ms: non_zero(r.wait_ms),
            };
            let (grants, header) = match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::LocksAcquired(grants), header) => (grants, header),
                (
                    Outcome::LockQueued {
                        queued_revision, ..
                    },
                    _,
                ) => {
                    let queued = Queued {
                        agent_id,
                        paths,
                        queued_revision,
                    };
                    wait_for_grant(ctx, queued, Duration::from_millis(r.wait_ms)).await?
                }
                (other, _) => return Err(unexpected(other)),
            };
            Ok(AcquireLocksResponse {
                header,
                grants: grants.iter().map(lock_grant_to_proto).collect(),
            })
        })
        .await
    }

    async fn release(
        &self,
        request: Request<ReleaseLocksRequest>,
    ) -> Result<Response<ReleaseLocksResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "LockService/Release", async {
            let r = request.into_inner();
            let agent_id = required_id(r.agent_id, "agent_id")?;
            let op = if r.paths.is_empty() {
                Op::ReleaseAllLocks { agent_id }
            } else {
                Op::ReleaseLocks {
                    agent_id,
                    paths: normalize(r.paths)?,
                }
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::LocksReleased { released, granted }, header) => {
                    Ok(ReleaseLocksResponse {
                        header,
                        released,
                        granted_to_waiters: granted.iter().map(lock_grant_to_proto).collect(),
                    })
                }
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn list(
        &self,
        request: Request<ListLocksRequest>,
    ) -> Result<Response<ListLocksResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "LockService/List", async {
            let r = request.into_inner();
            let prefix = r.prefix;
            let page_size = paging::page_size(r.limit)?;
            let after = paging::key_token(&r.page_token);
            let ((locks, next_page_token, waiters), header) = read(ctx, r.header.as_ref(), |sm| {
                let (locks, next) = paging::take_page(
                    sm.locks_after(&prefix, after),
                    page_size,
                    usize::MAX,
                    |_| 0,
                    |l| l.path.clone(),
                );
                // Bounded by MAX_LOCK_WAITERS; with the first page only.
                let waiters: Vec<_> = match after {
                    Some(_) => Vec::new(),
                    None => sm
                        .lock_waiters()
                        .into_iter()
                        .filter(|w| w.paths.iter().any(|p| p.starts_with(&prefix)))
                        .cloned()
                        .collect(),
                };
                (locks, next, waiters)
            })
            .await?;
            Ok(ListLocksResponse {
                header,
                locks: locks.iter().map(lock_to_proto).collect(),
                waiters: waiters.iter().map(lock_waiter_to_proto).collect(),
                next_page_token,
            })
        })
        .await
    }
}
